"""The sample stage's prompts under a grid of sampling settings, to choose its defaults by reading.

    python scripts/sampling_grid.py --model models/finetuned/coldplay > grid.md
    python scripts/sampling_grid.py --model models/pretrained --temperature 0.8 --repetition-penalty 1 1.3 --min-p 0 0.1

Prints a markdown table: one row per setting (temperature x repetition_penalty x min_p), one
column per prompt of params.yaml's `sample` section, each drawn as the stage draws it (the same
seeds, top-k, top-p, length and quantization); change a default in params.yaml and
`dvc repro sample` gives the chosen row's text. Run from the project root.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stage scripts, which are not part of the installed package

from scratchgpt.devices import prepare  # noqa: E402
from scratchgpt.errors import exit_on_error  # noqa: E402
from scratchgpt.explore.server import flag_name  # noqa: E402
from scratchgpt.generate import Sampling  # noqa: E402
from scratchgpt.params import SampleParams, load_sections, parse_flag  # noqa: E402
from scratchgpt.quantize import quantize  # noqa: E402
from scratchgpt.saved_model import load_model  # noqa: E402
from stages.sample import cell, continuations  # noqa: E402

# The values tried by default, as a user types them; each is checked like its params.yaml key.
GRID = {"temperature": ["0.7", "0.8", "1.0"], "repetition_penalty": ["1.0", "1.2", "1.5"],
        "min_p": ["0.0", "0.05", "0.1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/finetuned/coldplay", help="model folder (default: %(default)s)")
    for name, values in GRID.items():
        parser.add_argument(flag_name(name), nargs="+", default=values, help=f"values to try (default: {' '.join(values)})")
    args = parser.parse_args()
    with exit_on_error():
        settings = load_sections(["sample"]).sample
        grid = {name: [parse_flag(SampleParams, name, text, flag_name(name)) for text in getattr(args, name)]
                for name in GRID}
        device = prepare(settings.device, "fp32", None, "sample").device
        model, encoding = load_model(args.model, device)
        model = quantize(model, settings.quantize, "sample.quantize")
        print(f"{args.model}: top_k {settings.top_k}, top_p {settings.top_p}, {settings.max_new_tokens} new tokens, "
              f"seed {settings.seed}\n")
        prompts = " | ".join(f"**{cell(prompt)}**" for prompt in settings.prompts)
        print(f"| temperature, repetition_penalty, min_p | {prompts} |")
        print("| --- |" + " --- |" * len(settings.prompts))
        for temperature, penalty, min_p in itertools.product(*grid.values()):
            sampling = Sampling.of(dataclasses.asdict(settings) | {
                "temperature": temperature, "repetition_penalty": penalty, "min_p": min_p})
            setting = f"{temperature}, {penalty}, {min_p}"
            texts = continuations(model, encoding, settings, sampling, device, setting)
            print(f"| {setting} | " + " | ".join(cell(text) for text in texts) + " |", flush=True)


if __name__ == "__main__":
    main()
