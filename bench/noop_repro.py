"""How long `dvc repro` takes when there is nothing to do (run it in a built pipeline).
Run: python bench/noop_repro.py [--rounds 5]"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "dvc", "repro"], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if "didn't change" not in result.stdout and "up to date" not in result.stdout:
            sys.exit("the pipeline had work to do: run `dvc repro` once first, then this benchmark")
    print("| command | median s | max s |")
    print("| --- | --- | --- |")
    print(f"| dvc repro, nothing to do | {statistics.median(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main()
