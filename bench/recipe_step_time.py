"""Seconds per training step of each recipe the sweeps compare: tokenizer, optimizer, shape, batch, block.

The sweeps compare recipes at equal wall-clock, so each row's step budget is the default's
budget scaled by how much faster or slower its step is than the default's (the first row). This
prints those ratios, steps interleaved so that a noisy machine slows every row alike: on this
CPU in its native precision, and with --emulate-avx2 on the same CPU capped at AVX2 in fp32 (an
emulation of the common laptop kind, not a real AVX2 machine).

On a busy machine, `--cpu-time` times each step by the CPU time of a single thread instead:
other processes do not inflate it (they take turns on the cores, not this thread's work), so its
ratios hold where wall-clock ones do not; its absolute figures are one core's, not two.

`--json FILE` also writes each row's recipe and median seconds, with the CPU's name, for
scripts/frontier.py, which turns a sweep's steps into minutes with them.

The modern block's rows (`--only 4x192`) put each of its parts alone, then all of them, with AdamW
and with Muon, then the block without the soft cap with each other part left out, beside the
article's block on the default shape; each part is named as its `model` key in params.yaml.

Run: python bench/recipe_step_time.py [--rounds 5] [--emulate-avx2] [--cpu-time] [--only NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from measure import describe_cpu, interleaved, markdown_table, train_step
from scratchgpt.devices import configure_cpu, supports_bf16
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.optimizers import make_optimizer
from scratchgpt.params import TrainParams, parse_section
from train_throughput import AVX2_ENV


def shape(blocks: int, width: int, heads: int, context: int = 256) -> dict[str, int]:
    return dict(num_blocks=blocks, embed_dim=width, attention_dim=width, num_heads=heads, context_length=context)


# Every part of the modern block on: the `model` keys docs/recipe.md's line sets (defaults: the article's block).
MODERN_BLOCK = {"position_encoding": "rope", "norm": "rmsnorm", "qk_norm": True, "activation": "relu2", "bias": False,
                "zero_init_projections": True, "logit_softcap": 15.0}

# The same keys at the article's values (GPTConfig's defaults), less the cap, which the rows leave out anyway.
ARTICLE_BLOCK = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name in MODERN_BLOCK.keys() - {"logit_softcap"}}

# name -> (vocabulary, optimizer, model settings: shape and block, batch size). The first row is the yardstick.
RECIPES = {
    "8x256 (article's shape), 32k, b8": (32768, "adamw", shape(8, 256, 8), 8),
    "8x256, 32k, b8, muon": (32768, "muon", shape(8, 256, 8), 8),
    "8x256, GPT-2, b8": (50257, "adamw", shape(8, 256, 8), 8),
    "8x256, 16k, b8": (16384, "adamw", shape(8, 256, 8), 8),
    "6x256, 32k, b8": (32768, "adamw", shape(6, 256, 8), 8),
    "4x256, 32k, b8": (32768, "adamw", shape(4, 256, 8), 8),
    "6x192, 32k, b8": (32768, "adamw", shape(6, 192, 6), 8),
    "6x192, 32k, b16": (32768, "adamw", shape(6, 192, 6), 16),
    "6x192, 32k, b16, ctx128": (32768, "adamw", shape(6, 192, 6, 128), 16),
    "6x192, 16k, b8": (16384, "adamw", shape(6, 192, 6), 8),
    "4x192, 32k, b8": (32768, "adamw", shape(4, 192, 6), 8),
    "4x192, 32k, b8, muon": (32768, "muon", shape(4, 192, 6), 8),
    **{f"4x192, 32k, b8, {key}={value}": (32768, "adamw", shape(4, 192, 6) | {key: value}, 8)
       for key, value in MODERN_BLOCK.items()},
    "4x192, 32k, b8, modern block": (32768, "adamw", shape(4, 192, 6) | MODERN_BLOCK, 8),
    "4x192, 32k, b8, modern block, muon": (32768, "muon", shape(4, 192, 6) | MODERN_BLOCK, 8),
    # The soft cap is the one part that costs (an elementwise pass or two over every logit): the block without it.
    "4x192, 32k, b8, modern block without the cap": (32768, "adamw", shape(4, 192, 6) | MODERN_BLOCK | {"logit_softcap": None}, 8),
    "4x192, 32k, b8, modern block without the cap, muon": (32768, "muon", shape(4, 192, 6) | MODERN_BLOCK | {"logit_softcap": None}, 8),
    # ... and that block with each part back at the article's value: what leaving one out saves.
    **{f"4x192, 32k, b8, modern block without the cap, {key}={value}":
       (32768, "adamw", shape(4, 192, 6) | MODERN_BLOCK | {"logit_softcap": None, key: value}, 8)
       for key, value in ARTICLE_BLOCK.items()},
    "4x128, 32k, b16": (32768, "adamw", shape(4, 128, 4), 16),
    "4x128, 16k, b16": (16384, "adamw", shape(4, 128, 4), 16),
}


def step_function(vocab_size: int, optimizer: str, model_settings: dict[str, Any], batch_size: int, bf16: bool):
    with open("params.yaml", encoding="utf-8") as f:
        params = yaml.safe_load(f)
    settings: TrainParams = parse_section(TrainParams, params["train"] | {"optimizer": optimizer}, "train")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, dropout_rate=0.0, **model_settings))
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--emulate-avx2", action="store_true", help="re-run capped at AVX2, fp32")
    parser.add_argument("--only", nargs="+", default=[], metavar="TEXT", help="only the rows whose name holds one of these (the first row always runs)")
    parser.add_argument("--cpu-time", action="store_true", help="time one thread's CPU time (for a busy machine)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows here (for scripts/frontier.py)")
    parser.add_argument("--emulated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emulate_avx2:
        command = [sys.executable, __file__, "--emulated", "--rounds", str(args.rounds)]
        command += ["--cpu-time"] * args.cpu_time + (["--only", *args.only] if args.only else [])
        command += ["--json", str(args.json)] if args.json else []
        sys.exit(subprocess.run(command, env=os.environ | AVX2_ENV).returncode)
    configure_cpu(1 if args.cpu_time else None)
    bf16 = supports_bf16(torch.device("cpu")) and not args.emulated
    yardstick = next(iter(RECIPES))
    chosen = {name: recipe for name, recipe in RECIPES.items()
              if name == yardstick or not args.only or any(text in name for text in args.only)}
    steps = {name: step_function(*recipe, bf16) for name, recipe in chosen.items()}
    times = interleaved(steps, args.rounds, warmup=2, clock=time.process_time if args.cpu_time else time.perf_counter)
    kind = "EMULATED AVX2 (this CPU capped at AVX2)" if args.emulated else "native"
    cpu = f"{describe_cpu()}; {kind}, {'bf16 autocast' if bf16 else 'fp32'}"
    print(cpu + f", median of {args.rounds} interleaved steps" + ("; CPU time of one thread" if args.cpu_time else ""))
    print()
    baseline = statistics.median(times[yardstick])
    rows = []
    for name, measured in times.items():
        batch_size, context = chosen[name][3], chosen[name][2]["context_length"]
        median = statistics.median(measured)
        rows.append([name, f"{median:.3f}", f"{batch_size * context / median:,.0f}", f"{baseline / median:.2f}x"])
    markdown_table(["recipe", "s/step", "tokens/s", "steps in the yardstick's time"], rows)
    if args.json:
        recipes = [{"vocab_size": vocab, "optimizer": optimizer, "batch_size": batch, **model_settings,
                    "seconds": round(statistics.median(times[name]), 4)}
                   for name, (vocab, optimizer, model_settings, batch) in chosen.items()]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu, "recipes": recipes}, indent=1) + "\n")


if __name__ == "__main__":
    main()
