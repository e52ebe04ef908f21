"""Seconds per training step of each recipe the sweep compares: vocabulary size x optimizer.

The sweep compares recipes at equal wall-clock, so each row's step budget is the default's
budget scaled by how much faster or slower its step is than the default's (GPT-2, AdamW). This
prints those ratios, steps interleaved so that a noisy machine slows every row alike: on this
CPU in its native precision, and with --emulate-avx2 on the same CPU capped at AVX2 in fp32 (an
emulation of the common laptop kind, not a real AVX2 machine).

On a busy machine, `--cpu-time` times each step by the CPU time of a single thread instead:
other processes do not inflate it (they take turns on the cores, not this thread's work), so its
ratios hold where wall-clock ones do not; its absolute figures are one core's, not two.

Run: python bench/recipe_step_time.py [--batch-size 8] [--rounds 5] [--emulate-avx2] [--cpu-time] [--only TEXT ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import yaml

from measure import SEED_SHAPE, describe_cpu, interleaved, markdown_table, train_step
from scratchgpt.devices import configure_cpu, supports_bf16
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.optimizers import make_optimizer
from scratchgpt.params import TrainParams, parse_section
from train_throughput import AVX2_ENV

VOCABULARIES = {"GPT-2 (50,257)": 50257, "trained 32,768": 32768, "trained 16,384": 16384, "trained 5,000": 5000}
OPTIMIZERS = ("adamw", "muon")


def step_function(vocab_size: int, optimizer: str, batch_size: int, bf16: bool):
    with open("params.yaml", encoding="utf-8") as f:
        params = yaml.safe_load(f)
    settings: TrainParams = parse_section(TrainParams, params["train"] | {"optimizer": optimizer}, "train")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, **{**SEED_SHAPE, "dropout_rate": 0.0}))
    adam_or_muon = make_optimizer(model, settings)
    tokens = torch.randint(0, vocab_size, (batch_size, model.config.context_length + 1),
                           generator=torch.Generator().manual_seed(0))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(inputs, targets=targets)

    return lambda: train_step(loss, model, adam_or_muon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--emulate-avx2", action="store_true", help="re-run capped at AVX2, fp32")
    parser.add_argument("--only", nargs="+", default=[], metavar="TEXT", help="only the rows whose name holds one of these")
    parser.add_argument("--cpu-time", action="store_true", help="time one thread's CPU time (for a busy machine)")
    parser.add_argument("--emulated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emulate_avx2:
        command = [sys.executable, __file__, "--emulated", "--batch-size", str(args.batch_size), "--rounds", str(args.rounds)]
        command += ["--cpu-time"] * args.cpu_time + (["--only", *args.only] if args.only else [])
        sys.exit(subprocess.run(command, env=os.environ | AVX2_ENV).returncode)
    configure_cpu(1 if args.cpu_time else None)
    bf16 = supports_bf16(torch.device("cpu")) and not args.emulated
    steps = {
        f"{vocab_name}, {optimizer}": step_function(vocab, optimizer, args.batch_size, bf16)
        for vocab_name, vocab in VOCABULARIES.items()
        for optimizer in OPTIMIZERS
        if not args.only or any(text in f"{vocab_name}, {optimizer}" for text in args.only)
    }
    times = interleaved(steps, args.rounds, warmup=2, clock=time.process_time if args.cpu_time else time.perf_counter)
    kind = "EMULATED AVX2 (this CPU capped at AVX2)" if args.emulated else "native"
    print(f"{describe_cpu()}; {kind}, {'bf16 autocast' if bf16 else 'fp32'}, batch {args.batch_size} x 256, "
          f"median of {args.rounds} interleaved steps" + ("; CPU time of one thread" if args.cpu_time else ""))
    print()
    baseline = statistics.median(next(iter(times.values())))
    markdown_table(
        ["recipe", "s/step", "tokens/s", "steps in the default's time"],
        [[name, f"{statistics.median(t):.3f}", f"{args.batch_size * 256 / statistics.median(t):,.0f}",
          f"{baseline / statistics.median(t):.2f}x"] for name, t in times.items()],
    )


if __name__ == "__main__":
    main()
