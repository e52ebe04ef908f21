"""What every benchmark shares: interleaved timing and its table, the machine it ran on, the
model's FLOPs per token, the matrix-product peak that MFU is measured against, and one
training step."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:  # an installed checkout (`pip install -e .`) imports as is; a bare one, such as a GPU box
    import scratchgpt  # noqa: F401  with torch and nothing else, finds the package in src/
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))

from scratchgpt.model import GPTConfig  # noqa: E402

# The article's model shape (8 blocks x 256; params.yaml's default is smaller) and GPT-2's 50,257 ids.
SEED_SHAPE = dict(num_heads=8, embed_dim=256, attention_dim=256, num_blocks=8, context_length=256)
GPT2_VOCAB = 50257


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 0, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Seconds per call of each variant, calling them in turn each round so that a noisy
    machine slows them alike; the first `warmup` rounds are not kept. `clock` may be a CPU-time
    clock (`time.process_time`) for a machine too busy for wall-clock times."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + rounds):
        for name, call in variants.items():
            start = clock()
            call()
            if round_ >= warmup:
                times[name].append(clock() - start)
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


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    header = list(header)
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


# --- How much work a step is ---------------------------------------------------------------


def flops_per_token(config: GPTConfig) -> int:
    """Model FLOPs of one training token (forward + backward), counted as nanoGPT's
    `estimate_mfu` counts them (PaLM paper, appendix B).

    Each weight of a matrix product costs 2 FLOPs a token forward and 4 backward (gradients
    of the input and of the weight): 6 per weight, the LM head included (it is the biggest
    matrix: about two thirds of the total at the article's size). Attention's QK^T and AV are
    products of activations, not weights: 2 x 2 x context x width forward per layer, x3 with
    the backward. Embedding lookups, biases, LayerNorm, softmax and the optimizer are left
    out, as is the causal mask's halving of attention (a fused kernel need not skip it).
    At the article's size: 6 x 19.2M weights + 6.3M = about 121 MFLOP a token.
    """
    width, attention, layers = config.embed_dim, config.attention_dim, config.num_blocks
    per_block = width * 3 * attention + attention * width + 2 * width * 4 * width  # QKV, out, up, down
    matrix_weights = layers * per_block + width * config.padded_vocab_size  # + the LM head
    return 6 * matrix_weights + 12 * layers * config.context_length * attention


# --- The machine ---------------------------------------------------------------------------

# /proc/cpuinfo flag -> the name people know it by; what decides which kernels a CPU runs.
CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 bf16", "amx_bf16": "AMX bf16"}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """One line naming the CPU, the vector units it has, and the kernels torch picked."""
    flags = cpu_flags()
    has = ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for flag, name in CPU_FEATURES.items())
    return (
        f"{cpu_model()} ({os.cpu_count()} cores; {has}); torch {torch.__version__}, "
        f"kernels {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    )


def peak_rss_gib() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over
    exec from the forked parent, so a child spawned by a big parent reports the parent's peak.
    VmHWM belongs to the process's own address space."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    raise OSError("no VmHWM in /proc/self/status (not Linux?)")


# --- The limit: how fast this machine multiplies matrices ----------------------------------

PEAK_SHAPES = {"4096 x 4096 x 4096": (4096, 4096, 4096), "LM head, 8192 x 256 x 50304": (8192, 256, 50304)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeats: int = 3) -> float:
    """Best TFLOP/s of an (m x k) @ (k x n) product. The output is preallocated, so a 1.6 GB
    result is not page-faulted in again on every call; what is timed is the arithmetic."""
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(m, k, device=device, dtype=dtype, generator=generator)
    b = torch.randn(k, n, device=device, dtype=dtype, generator=generator)
    out = torch.empty(m, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: kernel choice, weight packing, caches
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e12


# --- One training step ---------------------------------------------------------------------


def train_step(
    loss: Callable[[], torch.Tensor], model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip: float = 1.0
) -> torch.Tensor:
    """What the training loop does each step (train.py): forward and loss, backward, gradient
    clipping, the optimizer's update. `loss` runs the forward pass under whatever autocast the
    caller wants. Returns the loss, not read back, so that a GPU is not made to wait."""
    value = loss()
    value.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value.detach()


def random_batch(
    batch_size: int, context_length: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, (batch, context) each, from a fixed seed."""
    tokens = torch.randint(0, GPT2_VOCAB, (batch_size, context_length + 1), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)
    return tokens[:, :-1], tokens[:, 1:]
