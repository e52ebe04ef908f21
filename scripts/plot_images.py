"""The pipeline's plots as PNG images, rendered from DVC's own Vega-Lite output.

    python scripts/plot_images.py                    # the workspace's curves -> docs/plots/*.png
    python scripts/plot_images.py --diff origin/main --out plots   # a base revision against the workspace

Every plot declared at the top of dvc.yaml (`plots:`, the titled ones) is taken from
`dvc plots show --json` (or `dvc plots diff REV --json`, one colour per revision): the same
Vega-Lite specifications, data included, that `dvc plots show` draws in its HTML page. They are
rendered by vl-convert (the Vega project's renderer), with no browser and no network. One file
per plot, named after its title: `pretraining-loss-imdb.png`, `fine-tuning-loss-lyrics.png`,
`learning-rate.png`. The same data and code give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import vl_convert
import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, SCALE = 560, 300, 2  # points, and pixels per point: readable on a README page


def titled_plots(pipeline: Path = ROOT / "dvc.yaml") -> list[str]:
    """The names of the plots declared at the top of dvc.yaml, in their order."""
    return [next(iter(plot)) for plot in yaml.safe_load(pipeline.read_text()).get("plots", [])]


def vega_specs(diff: str | None) -> dict[str, dict]:
    """DVC's Vega-Lite specification of each plot, its data filled in."""
    command = ["plots", "diff", diff, "--json"] if diff else ["plots", "show", "--json"]
    shown = subprocess.run([sys.executable, "-m", "dvc", *command], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout
    return {name: renders[0]["content"] for name, renders in json.loads(shown)["data"].items()}


def file_name(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + ".png"


def render(diff: str | None, out: Path) -> list[Path]:
    specs = vega_specs(diff)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for title in titled_plots():
        spec = {**specs[title], "width": WIDTH, "height": HEIGHT, "background": "white",
                "config": {"legend": {"labelLimit": 0}}}  # whole file names in the legend
        path = out / file_name(title)
        path.write_bytes(vl_convert.vegalite_to_png(spec, scale=SCALE))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diff", metavar="REV", help="compare the workspace with this git revision")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "plots", help="folder for the PNG files")
    args = parser.parse_args()
    for path in render(args.diff, args.out):
        print(path)


if __name__ == "__main__":
    main()
