"""What every benchmark shares: interleaved timing, and the table it prints."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each variant, calling them in turn each round so that a noisy
    machine slows them alike; the first `warmup` rounds are not kept."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + rounds):
        for name, call in variants.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def print_table(title: str, times: dict[str, list[float]], work: int, unit: str, seconds: str, against: str) -> None:
    """Median seconds, `work` units a second, and the speed-up over the first variant."""
    print(title)
    print()
    print(f"| variant | {seconds} | {unit}/s | vs {against} |")
    print("| --- | --- | --- | --- |")
    baseline = statistics.median(next(iter(times.values())))
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"| {name} | {median:.2f} | {work / median:,.0f} | {baseline / median:.2f}x |")
