"""Unpack what scripts/gpu_recipe.py sent back into metrics/gpu/ and print the figures the
README's GPU section quotes.

Run from the repository root: python scripts/gpu_results.py FOLDER_OR_metrics.tar.gz
metrics/gpu/ then holds train/ and finetune/ (metrics.json, plots/metrics/*.tsv),
evaluate.json, samples.md, timings.json, bench.md and the run's params.yaml, kept apart from
the CPU reference run's metrics/.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

TARGET = Path("metrics/gpu")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    source = Path(sys.argv[1])
    archive = source / "metrics.tar.gz" if source.is_dir() else source
    shutil.rmtree(TARGET, ignore_errors=True)
    TARGET.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(TARGET, filter="data")  # refuses absolute paths and `..`
    print(f"unpacked {archive} into {TARGET}/")

    timings = json.loads((TARGET / "timings.json").read_text(encoding="utf-8"))
    for name, value in timings.items():
        print(f"{name}: {value}")
    for stage in ("train", "finetune"):
        path = TARGET / stage / "metrics.json"
        if path.exists():
            metrics = json.loads(path.read_text(encoding="utf-8"))
            print(f"{stage}: best val loss {metrics['best_val_loss']:.4f} at step {metrics['best_step']} "
                  f"of {metrics['steps']}, {metrics['tokens_seen']:,} tokens, stopped early: {metrics['stopped_early']}")
    if (TARGET / "evaluate.json").exists():
        for model, splits in json.loads((TARGET / "evaluate.json").read_text(encoding="utf-8")).items():
            for split, result in splits.items():
                print(f"{model} on {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
    if (TARGET / "stopped").exists():
        print(f"a training stage was stopped: its saved history is in {TARGET / 'stopped'}/")


if __name__ == "__main__":
    main()
