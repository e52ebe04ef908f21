"""Generation in 8 bits: tokens/s of fp32, bf16 autocast (where the CPU has bf16 units), torchao's
int8 linear layers, and `scratchgpt generate --quantize int8`, and what int8 costs in bits per byte.

Speed: 128 and 256 new tokens after a 4-token prompt, batch 1, greedy, KV cache (past the context
of 256 positions, each new token re-runs the whole window, as in `generate`), on the default shape
(params.yaml `model`, the trained tokenizer's 32,768 ids) and the article's (8 x 256, GPT-2's
50,257 ids), random weights (speed does not depend on them); the variants take turns, so a busy
machine slows them alike. torchao's rows are its int8 weight-only and dynamic int8 activation +
int8 weight configs in eager mode, as `quantize_` leaves a model: what `--quantize int8` does
instead, and why, is in src/scratchgpt/quantize.py.

Quality, with `--model` and `--tokens` (the evaluate stage's inputs, such as models/pretrained and
data/tokens): bits per byte on the IMDb test windows that `evaluate` scores (params.yaml
`evaluate.max_tokens`), in fp32, bf16 autocast and int8. Both sides compute the loss from the
logits that generation samples from (evaluate's fused loss takes the LM head's weight as a
matrix, which int8 weights are not), so fp32 agrees with evaluate's figure to rounding. Windows
are scored in batches, so int8's products take its many-rows path (quantize.MANY_ROWS): the same
8-bit weights and bf16 inputs as decoding, another kernel.

On a busy machine, `--cpu-time` times one thread's CPU time instead of wall-clock time (see
bench/recipe_step_time.py): other processes do not inflate it, so its ratios hold.

Run: python bench/quantize_throughput.py [--cpu-time] [--rounds 3] [--profile] [--emulate-avx2]
                                         [--model models/pretrained --tokens data/tokens]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from measure import GPT2_VOCAB, SEED_SHAPE, describe_cpu, interleaved, markdown_table
from scratchgpt.devices import Runtime, configure_cpu, supports_bf16
from scratchgpt.evaluation import score, token_byte_lengths
from scratchgpt.generate import generate
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.params import load_sections
from scratchgpt.quantize import quantize
from scratchgpt.saved_model import load_model
from scratchgpt.tokens import TokenShards, Windows
from train_throughput import AVX2_ENV

# torchao logs, at import, the CUDA-only extensions it cannot load on a CPU-only torch.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_  # noqa: E402

PROMPT_TOKENS = 4
CPU = torch.device("cpu")


def shapes() -> dict[str, GPTConfig]:
    """The default model (params.yaml) over the default tokenizer's ids, and the article's."""
    sections = load_sections(["tokenize", "model"])
    model, vocab = sections.model, sections.tokenize.vocab_size
    return {
        f"default ({model.num_blocks} x {model.embed_dim}, {vocab:,} ids)":
            GPTConfig(vocab_size=vocab, **dataclasses.asdict(model) | {"dropout_rate": 0.0}),
        f"article (8 x 256, {GPT2_VOCAB:,} ids)": GPTConfig(vocab_size=GPT2_VOCAB, **SEED_SHAPE, dropout_rate=0.0),
    }


def torchao(model: GPT, config: object) -> GPT:
    quantized = copy.deepcopy(model)
    quantize_(quantized, config)
    return quantized


def variants(model: GPT, bf16: bool) -> dict[str, tuple[GPT, bool]]:
    """Each row's model and whether it runs under bf16 autocast."""
    rows = {"fp32": (model, False)}
    if bf16:
        rows["bf16 autocast"] = (model, True)
    rows["torchao int8 weight-only (eager)"] = (torchao(model, Int8WeightOnlyConfig()), False)
    rows["torchao int8 dynamic activation + int8 weight (eager)"] = (
        torchao(model, Int8DynamicActivationInt8WeightConfig()), False)
    rows["**scratchgpt `--quantize int8`**"] = (quantize(copy.deepcopy(model), "int8", "--quantize"), False)
    return rows


def generation(model: GPT, bf16: bool, new_tokens: int) -> Callable[[], object]:
    prompt = torch.randint(0, model.config.vocab_size, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))

    def run() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return generate(model, prompt, new_tokens, model.config.context_length)

    return run


def speed_table(args: argparse.Namespace, bf16: bool) -> None:
    clock = time.process_time if args.cpu_time else time.perf_counter
    rows = []
    for shape, config in shapes().items():
        torch.manual_seed(0)
        models = variants(GPT(config).eval(), bf16)
        for new_tokens in args.new_tokens:
            calls = {name: generation(model, autocast, new_tokens) for name, (model, autocast) in models.items()}
            times = interleaved(calls, args.rounds, warmup=1, clock=clock)
            fp32 = statistics.median(times["fp32"])
            for name, measured in times.items():
                median = statistics.median(measured)
                rows.append([shape, name, new_tokens, f"{1000 * median / new_tokens:.2f}",
                             f"{new_tokens / median:,.0f}", f"{fp32 / median:.2f}x"])
    markdown_table(["model", "variant", "new tokens", "ms/token", "tokens/s", "vs fp32"], rows)


def profile(new_tokens: int) -> None:
    """Where the time of generating goes, fp32 against int8: the top operations, default shape."""
    torch.manual_seed(0)
    model = GPT(next(iter(shapes().values()))).eval()
    for name, variant in (("fp32", model), ("int8", quantize(copy.deepcopy(model), "int8", "--quantize"))):
        run = generation(variant, False, new_tokens)
        run()  # warm-up
        with torch.profiler.profile() as profiler:
            run()
        print(f"\n{name}, {new_tokens} new tokens:\n")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


class LogitsLoss(nn.Module):
    """`model`'s mean next-token loss computed from its logits, the ones generation samples from."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(inputs).flatten(0, 1).float(), targets.flatten())


def quality_table(folder: Path, tokens: Path, bf16: bool) -> None:
    """Bits per byte of the model in `folder` on evaluate's IMDb test windows, per precision."""
    settings = load_sections(["evaluate"]).evaluate
    model, encoding = load_model(folder, CPU)
    shards = TokenShards(tokens / "imdb", "test")
    shards.require_encoding(encoding.name, folder)
    windows = Windows(shards, model.config.context_length)
    indices = windows.evenly_spaced(max(1, settings.max_tokens // windows.length))
    byte_lengths = token_byte_lengths(encoding)
    precisions = {"fp32": (model, False)} | ({"bf16 autocast": (model, True)} if bf16 else {})
    precisions["int8 (`--quantize int8`)"] = (quantize(copy.deepcopy(model), "int8", "--quantize"), False)
    rows, fp32 = [], None
    for name, (variant, autocast) in precisions.items():
        result = score(LogitsLoss(variant), windows, indices, settings.batch_size, Runtime(CPU, autocast), byte_lengths)
        fp32 = fp32 if fp32 is not None else result.bits_per_byte
        rows.append([name, f"{result.bits_per_byte:.4f}", f"{result.bits_per_byte - fp32:+.4f}", f"{result.loss:.4f}"])
    print(f"{folder} on IMDb test: {len(indices)} windows of {windows.length} tokens ({len(indices) * windows.length:,} "
          "tokens, evaluate's)")
    print()
    markdown_table(["precision", "bits/byte", "vs fp32", "loss"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[128, 256],
                        help="generation lengths to time (default: 128, inside the context, and 256, where the "
                        "last tokens each re-run the whole window)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true", help="time one thread's CPU time (for a busy machine)")
    parser.add_argument("--emulate-avx2", action="store_true", help="run on this CPU capped at AVX2 (an emulation "
                        "of the common laptop kind, not a real AVX2 machine; the header's kernels say AVX2)")
    parser.add_argument("--profile", action="store_true", help="also print the top operations of fp32 and int8")
    parser.add_argument("--model", type=Path, help="a trained model folder, for the quality table")
    parser.add_argument("--tokens", type=Path, default=Path("data/tokens"), help="the tokenize stage's output")
    args = parser.parse_args()
    if args.emulate_avx2:  # the caps are read when torch loads: run again in a process that has them
        again = [argument for argument in sys.argv[1:] if argument != "--emulate-avx2"]
        sys.exit(subprocess.run([sys.executable, __file__, *again], env=os.environ | AVX2_ENV).returncode)
    configure_cpu(1 if args.cpu_time else None)
    bf16 = supports_bf16(CPU)
    timing = "CPU time of one thread" if args.cpu_time else "wall-clock"
    print(f"{describe_cpu()}; bf16 units: {'yes' if bf16 else 'no (no bf16 row)'}")
    print(f"new tokens after a {PROMPT_TOKENS}-token prompt, batch 1, greedy, KV cache, median of {args.rounds} "
          f"interleaved runs, {timing}")
    print()
    speed_table(args, bf16)
    if args.profile:
        profile(args.new_tokens[0])
    if args.model is None:
        print("\n(no quality table: give --model and --tokens, such as models/pretrained and data/tokens)")
        return
    if not args.model.is_dir() or not (args.tokens / "imdb").is_dir():
        print(f"\n(no quality table: {args.model} or {args.tokens / 'imdb'} is not here; run the pipeline first)")
        return
    print()
    quality_table(args.model, args.tokens, bf16)


if __name__ == "__main__":
    main()
