"""One command turns the pipeline's plot data into the README's images."""

from __future__ import annotations

import struct
import subprocess
import sys

from conftest import ROOT

COMMAND = [sys.executable, str(ROOT / "scripts/plot_images.py")]
IMAGES = ["pretraining-loss-imdb.png", "fine-tuning-loss-lyrics.png", "learning-rate.png"]


def test_renders_every_titled_plot_the_same_twice(tmp_path):
    for out in ("a", "b"):
        subprocess.run([*COMMAND, "--out", str(tmp_path / out)], cwd=ROOT, check=True, capture_output=True)
    for name in IMAGES:
        image = (tmp_path / "a" / name).read_bytes()
        assert image[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", image[16:24])
        assert width > 1000 and height > 500  # 560 x 300 points at 2 pixels per point, with axes
        assert image == (tmp_path / "b" / name).read_bytes()  # no timestamps: same data, same bytes


def test_the_results_page_shows_the_committed_images():
    results = (ROOT / "docs/results.md").read_text()
    assert "python scripts/plot_images.py" in results
    for name in IMAGES:
        assert f"(plots/{name})" in results and (ROOT / "docs/plots" / name).exists()
