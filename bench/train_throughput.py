"""Training throughput on CPU: tokens/s and MFU of a full step (forward, backward, clip, AdamW)
at the article's model size, the article-style baseline and each loss path side by side, steps
interleaved so that the ratios hold on a noisy machine.

Rows: the article-style model (bench/seed_baseline.py, logits of the whole batch at once); the
previous pipeline's loss (128-position slices, recomputed in the backward pass); the fused
chunked loss that `GPT.forward` uses now, at three slice sizes; and the pipeline's path with
dropout 0.1, with freed memory returned to the kernel, and in fp32 with MKL's reproducible
mode off (see devices.configure_cpu). Everything else runs at dropout 0, the default recipe.
bf16 rows only where the CPU has native bf16 (AMX or AVX-512 bf16); fp32 rows always. MFU is
the model's FLOPs per second (measure.flops_per_token, the same for every row, so MFU ratios
are speed ratios) over this machine's fp32 or bf16 4096-cube matrix product on the same threads.

Run: python bench/train_throughput.py [--batch-size 32] [--rounds 3] [--memory] [--profile]
     python bench/train_throughput.py --emulate-avx2   (this CPU capped at AVX2, fp32 only)"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from measure import (
    GPT2_VOCAB, PEAK_SHAPES, SEED_SHAPE, describe_cpu, flops_per_token, markdown_table, matmul_tflops, peak_rss_gib,
    random_batch,
    train_step,
)
from scratchgpt import model as model_module
from scratchgpt.devices import configure_cpu, supports_bf16
from scratchgpt.model import GPT, GPTConfig
from seed_baseline import SeedGPT

WARMUP_STEPS = 2  # the first steps grow the heap, pack weights and warm caches: not timed

# What --emulate-avx2 sets: each caps one library's kernels at AVX2. ATen's own kernels
# (softmax, GELU, AdamW...), oneDNN's (bf16 and some fp32 products), MKL's (fp32 GEMM).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


# The model's loss and slice size, kept before any variant swaps them.
FUSED = model_module.chunked_cross_entropy
PIPELINE_SLICE = model_module.LOSS_SLICE
PREVIOUS_SLICE = 128  # positions per slice of the previous pipeline's loss


@dataclass(frozen=True)
class Variant:
    model: str  # "seed": bench/seed_baseline.py; "ours": scratchgpt.model.GPT
    loss: str  # "full": all logits at once; "recomputed": the previous pipeline; "fused": chunked_cross_entropy
    bf16: bool
    loss_slice: int = 0  # LOSS_SLICE of the fused loss
    dropout: float = 0.0
    # Our model runs as the pipeline runs it (devices.configure_cpu keeps freed memory for
    # reuse), except in the row that measures what that buys; the article-style model as the
    # article runs it.
    keeps_freed_memory: bool = True
    # ...and MKL in its reproducible mode (configure_cpu sets MKL_CBWR), except in the row that
    # measures what that costs. Both are process-wide: each setting gets its own process.
    mkl_reproducible: bool = True

    def __post_init__(self) -> None:
        if self.model == "seed":
            object.__setattr__(self, "keeps_freed_memory", False)
            object.__setattr__(self, "mkl_reproducible", False)

    @property
    def process(self) -> tuple[bool, bool]:
        """The process-wide settings this row runs under."""
        return self.keeps_freed_memory, self.mkl_reproducible


def variants(bf16: bool) -> dict[str, Variant]:
    """The table's rows, the baseline first; `bf16`: whether this CPU gets bf16 rows."""
    rows = {"article-style (seed_baseline.py), fp32": Variant("seed", "full", bf16=False)}
    precisions = [True, False] if bf16 else [False]
    for half in precisions:
        name = "bf16" if half else "fp32"
        rows[f"previous pipeline: {PREVIOUS_SLICE}-position slices, recomputed, {name}"] = Variant("ours", "recomputed", half)
        for size in sorted({512, 1024, 2048, PIPELINE_SLICE}):
            now = " (the pipeline)" if half == precisions[0] and size == PIPELINE_SLICE else ""
            rows[f"fused chunked loss, slice {size}, {name}{now}"] = Variant("ours", "fused", half, size)
    name = "bf16" if precisions[0] else "fp32"  # the precision the pipeline picks on this CPU
    rows[f"fused chunked loss, slice {PIPELINE_SLICE}, {name}, dropout 0.1"] = Variant(
        "ours", "fused", precisions[0], PIPELINE_SLICE, dropout=0.1
    )
    rows[f"fused chunked loss, slice {PIPELINE_SLICE}, {name}, freed memory returned"] = Variant(
        "ours", "fused", precisions[0], PIPELINE_SLICE, keeps_freed_memory=False
    )
    # fp32: MKL runs the fp32 products (bf16 ones are oneDNN's, which the mode does not touch)
    rows[f"fused chunked loss, slice {PIPELINE_SLICE}, fp32, MKL reproducible mode off"] = Variant(
        "ours", "fused", False, PIPELINE_SLICE, mkl_reproducible=False
    )
    return rows


def recomputed_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int, softcap: None = None
) -> torch.Tensor:
    """The previous pipeline's loss (GPT.next_token_loss before commit 32d6189), copied: the LM
    head and cross-entropy 128 positions at a time, each slice's logits recomputed in the
    backward pass instead of stored. As then, the padding columns are not masked, and there is
    no soft cap (the bench's models are the article's block: `softcap` is always None)."""
    nats = sum(
        checkpoint(_summed_loss, hidden[start : start + PREVIOUS_SLICE], weight, targets[start : start + PREVIOUS_SLICE],
                   use_reentrant=False)
        for start in range(0, len(targets), PREVIOUS_SLICE)
    )
    return nats / len(targets)


def _summed_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


def build(variant: Variant) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    if variant.model == "seed":  # the article's AdamW: default options, one parameter at a time on CPU
        model = SeedGPT(vocab_size=GPT2_VOCAB, dropout_rate=variant.dropout, **SEED_SHAPE).train()
        return model, torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    model = GPT(GPTConfig(vocab_size=GPT2_VOCAB, dropout_rate=variant.dropout, **SEED_SHAPE)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, foreach=True)  # as train.py on CPU


def step(
    variant: Variant, model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor
) -> None:
    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.bf16):
            if variant.model == "seed":
                return F.cross_entropy(model(inputs).float().flatten(0, 1), targets.flatten())
            return model(inputs, targets=targets)

    # GPT.forward calls the module's `chunked_cross_entropy`, which reads LOSS_SLICE at each
    # call: swapping them swaps the loss path and nothing else.
    if variant.loss == "fused":
        model_module.LOSS_SLICE = variant.loss_slice
    model_module.chunked_cross_entropy = recomputed_loss if variant.loss == "recomputed" else FUSED
    train_step(loss, model, optimizer)


def worker(process: tuple[bool, bool], variants_: dict[str, Variant], batch_size: int, connection: Connection) -> None:
    """Holds the models of one `Variant.process` setting (process-wide, so one process each);
    runs one step of the variant it is sent, answers its seconds; `None` asks for peak RSS."""
    keeps_freed_memory, mkl_reproducible = process
    # What configure_cpu sets, or MKL's default (an empty value is off; configure_cpu keeps it)
    os.environ["MKL_CBWR"] = "AUTO" if mkl_reproducible else ""
    if keeps_freed_memory:
        configure_cpu(None)
    inputs, targets = random_batch(batch_size, SEED_SHAPE["context_length"])
    built = {name: build(variant) for name, variant in variants_.items()}
    connection.send("ready")
    while (name := connection.recv()) is not None:
        start = time.perf_counter()
        step(variants_[name], *built[name], inputs, targets)
        connection.send(time.perf_counter() - start)
    connection.send(peak_rss_gib())


class Workers:
    """Worker processes; `step(name)` runs one step of a variant in whichever process holds it."""

    def __init__(self, groups: list[dict[str, Variant]], batch_size: int):
        context = mp.get_context("spawn")  # a fresh heap and allocator setting per process
        self.processes: list[tuple[mp.Process, Connection]] = []
        self.owner: dict[str, Connection] = {}
        for group in groups:
            parent, child = context.Pipe()
            setting = next(iter(group.values())).process
            process = context.Process(target=worker, args=(setting, group, batch_size, child))
            process.start()
            child.close()  # so a worker that dies raises EOFError here instead of hanging
            self.processes.append((process, parent))
            self.owner.update(dict.fromkeys(group, parent))
        for _, connection in self.processes:
            connection.recv()

    def step(self, name: str) -> float:
        self.owner[name].send(name)
        return self.owner[name].recv()

    def close(self) -> list[float]:
        """Stop the workers; their peak RSS in GiB."""
        peaks = []
        for process, connection in self.processes:
            connection.send(None)
            peaks.append(connection.recv())
            process.join()
        return peaks


def time_steps(rows: dict[str, Variant], batch_size: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of every row, one step of each in turn per round (measure.interleaved's
    order), with each process-wide setting in its own process."""
    settings = dict.fromkeys(v.process for v in rows.values())
    groups = [{n: v for n, v in rows.items() if v.process == setting} for setting in settings]
    workers = Workers(groups, batch_size)
    times: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for round_ in range(WARMUP_STEPS + rounds):
            for name in rows:
                elapsed = workers.step(name)
                if round_ >= WARMUP_STEPS:
                    times[name].append(elapsed)
    finally:
        workers.close()
    return times


def peak_memory(rows: dict[str, Variant], batch_size: int) -> dict[str, float]:
    """Peak RSS (GiB) of each row alone in a fresh process over two steps: models of every row
    held side by side would not fit in memory on small machines, and would share one peak."""
    peaks = {}
    for name, variant in rows.items():
        workers = Workers([{name: variant}], batch_size)
        for _ in range(2):
            workers.step(name)
        peaks[name] = workers.close()[0]
    return peaks


MATRIX_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}  # what "the rest" is measured against


def profile(name: str, variant: Variant, batch_size: int) -> None:
    """Top ops by self CPU time in one step: where the step goes beyond the matrix products."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    configure_cpu(None)
    model, optimizer = build(variant)
    inputs, targets = random_batch(batch_size, SEED_SHAPE["context_length"])
    for _ in range(WARMUP_STEPS):
        step(variant, model, optimizer, inputs, targets)
    with torch_profile(activities=[ProfilerActivity.CPU]) as trace:
        step(variant, model, optimizer, inputs, targets)
    ops = trace.key_averages()
    total = sum(op.self_cpu_time_total for op in ops)
    products = sum(op.self_cpu_time_total for op in ops if op.key in MATRIX_OPS)
    print(f"One step of '{name}', batch {batch_size}: {total / 1e6:.2f} s of self CPU time, "
          f"{100 * products / total:.0f}% of it in matrix products ({', '.join(sorted(MATRIX_OPS))})")
    print(ops.table(sort_by="self_cpu_time_total", row_limit=15))


# --- --emulate-avx2: does each variable take effect? ---------------------------------------


def probe() -> None:
    """Print what this process's libraries run on: ATen's kernels, MKL's and oneDNN's ISA (from
    their verbose modes, which write to stdout) and an fp32 product's speed; then JSON."""
    a = torch.randn(64, 64)
    with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
        a @ a  # fp32 GEMM: MKL
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        torch._C._nn.mkldnn_linear(a.to_mkldnn(), a.to_mkldnn())  # a oneDNN primitive, whatever the ISA
    tflops = matmul_tflops(2048, 2048, 2048, torch.float32, torch.device("cpu"))
    print(json.dumps({"aten": torch.backends.cpu.get_cpu_capability(), "fp32_tflops": tflops}), flush=True)


def run_probe(env: dict[str, str]) -> dict[str, str | float]:
    output = subprocess.run(
        [sys.executable, __file__, "--probe"], env=os.environ | env, capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(output.strip().splitlines()[-1])
    mkl = re.search(r"for Intel\(R\) 64 architecture Intel\(R\) .*?\(Intel\(R\) ([^)]*)\)", output)
    onednn = re.search(r"onednn_verbose,.*?,cpu,isa:(.*)$", output, re.M)
    found["mkl"] = mkl.group(1) if mkl else "?"
    found["onednn"] = onednn.group(1) if onednn else "?"
    return found


def verify_emulation() -> None:
    """Each variable alone, then all three, against none: the one it names must change."""
    print("AVX2 emulation: each variable checked in a fresh process (ATen: get_cpu_capability; MKL and oneDNN: their")
    print("verbose modes; speed: an fp32 2048-cube product, which MKL runs)")
    print()
    settings = {"(none)": {}} | {f"{k}={v}": {k: v} for k, v in AVX2_ENV.items()} | {"all three": AVX2_ENV}
    rows = []
    for label, env in settings.items():
        found = run_probe(env)
        rows.append((label, found["aten"], found["mkl"], found["onednn"], f"{found['fp32_tflops'] * 1000:.0f}"))
    markdown_table(["environment", "ATen kernels", "MKL", "oneDNN", "fp32 GFLOP/s"], rows)
    print()


# --- The table -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help=f"timed steps per variant, after {WARMUP_STEPS} warm-up steps")
    parser.add_argument("--memory", action="store_true", help="also peak RSS of each variant alone (a fresh process each)")
    parser.add_argument("--profile", action="store_true", help="only profile one step of the pipeline's path")
    parser.add_argument("--emulate-avx2", action="store_true", help="re-run capped at AVX2 in a subprocess, fp32 only")
    parser.add_argument("--emulated", action="store_true", help=argparse.SUPPRESS)  # the subprocess of --emulate-avx2
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe()
    if args.emulate_avx2:
        verify_emulation()
        command = [sys.executable, __file__, "--emulated", "--batch-size", str(args.batch_size), "--rounds", str(args.rounds)]
        command += ["--memory"] * args.memory + ["--profile"] * args.profile
        sys.exit(subprocess.run(command, env=os.environ | AVX2_ENV).returncode)

    cpu = torch.device("cpu")
    bf16 = supports_bf16(cpu) and not args.emulated
    rows = variants(bf16)
    if args.profile:
        # the pipeline's path: the first precision, the model's own slice size, dropout 0
        name, variant = next((n, v) for n, v in rows.items() if v.loss == "fused" and v.loss_slice == PIPELINE_SLICE)
        return profile(name, variant, args.batch_size)

    kind = "EMULATED AVX2 (this CPU with AVX2_ENV set; not a real AVX2 machine)" if args.emulated else "native"
    print(f"CPU, {kind}: {describe_cpu()}")
    print()
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32} if bf16 else {"fp32": torch.float32}
    peaks = {
        (shape, name): matmul_tflops(*dims, dtype, cpu) for shape, dims in PEAK_SHAPES.items() for name, dtype in dtypes.items()
    }
    print("The limit: matrix products on the same threads, TFLOP/s (best of 3)")
    print()
    markdown_table(["product", *dtypes], [(shape, *(f"{peaks[shape, n]:.2f}" for n in dtypes)) for shape in PEAK_SHAPES])
    print()

    times = time_steps(rows, args.batch_size, args.rounds)
    memory = peak_memory(rows, args.batch_size) if args.memory else {}
    tokens = args.batch_size * SEED_SHAPE["context_length"]
    flops = flops_per_token(GPTConfig(vocab_size=GPT2_VOCAB, **SEED_SHAPE))
    cube = next(iter(PEAK_SHAPES))
    baseline = statistics.median(next(iter(times.values())))
    table = []
    for name, variant in rows.items():
        seconds = statistics.median(times[name])
        precision = "bf16" if variant.bf16 else "fp32"
        mfu = tokens / seconds * flops / (peaks[cube, precision] * 1e12)
        table.append([name, f"{seconds:.2f}", f"{tokens / seconds:,.0f}", f"{100 * mfu:.1f}%", f"{baseline / seconds:.2f}x"])
        if memory:
            table[-1].append(f"{memory[name]:.1f}")
    print(
        f"Training step, batch {args.batch_size} x {SEED_SHAPE['context_length']} tokens, the article's model size, "
        f"{flops / 1e6:.1f} MFLOP/token; median of {args.rounds} steps; MFU against the {cube} product in the "
        f"row's precision"
    )
    print()
    markdown_table(["variant", "s/step", "tokens/s", "MFU", "vs article-style"] + ["peak RSS (GiB)"] * bool(memory), table)


if __name__ == "__main__":
    main()
