"""GPU training throughput: tokens/s and MFU of a full step (forward, backward, clip, fused
AdamW, bf16 autocast, TF32 on) at the article's model size, eager and torch.compile'd, at the
article's batch of 32 and at larger ones; the best row is the GPU's number.

MFU is the model's FLOPs per second (measure.flops_per_token) over the GPU's dense bf16 peak
from its data sheet (PEAK_BF16_TFLOPS, or --peak-tflops); the matrix products this GPU
actually reaches are printed beside it. Needs only torch: src/ is found without installing.
Run: python bench/gpu_throughput.py [--batch-sizes 32 64 128 256] [--steps 20] [--no-compile]"""

from __future__ import annotations

import argparse
import time

import torch

from measure import (
    GPT2_VOCAB, PEAK_SHAPES, SEED_SHAPE, flops_per_token, markdown_table, matmul_tflops, random_batch, synchronize,
    train_step,
)
from scratchgpt.model import GPT, GPTConfig

# Dense (not 2:4 sparse) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets; the first
# name found in torch.cuda.get_device_name() wins, so the specific names come first.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.5,
    "H100 NVL": 835.5,
    "H100": 989.4,  # SXM ("NVIDIA H100 80GB HBM3")
    "H200": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
}


def known_peak(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def time_training(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch_size: int, warmup: int, steps: int
) -> tuple[float, float]:
    """Seconds per step and peak GiB allocated. `model` may be compiled: the warm-up steps,
    not timed, include compiling it for this batch shape."""
    inputs, targets = random_batch(batch_size, SEED_SHAPE["context_length"], "cuda")

    def loss() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(inputs, targets=targets)

    for _ in range(warmup):
        train_step(loss, model, optimizer)
    torch.cuda.reset_peak_memory_stats()
    synchronize(inputs.device)  # the GPU runs behind the CPU: time whole steps, not launches
    start = time.perf_counter()
    for _ in range(steps):
        train_step(loss, model, optimizer)
    synchronize(inputs.device)
    return (time.perf_counter() - start) / steps, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compiling happens here)")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this GPU, if it is not in the table")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU here, nothing to measure")
        return

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops or known_peak(name)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as devices.prepare does
    config = GPTConfig(vocab_size=GPT2_VOCAB, dropout_rate=0.0, **SEED_SHAPE)
    flops = flops_per_token(config)
    print(f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; data-sheet dense bf16 peak: "
          f"{f'{peak:.1f} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}")
    print()
    measured = {shape: matmul_tflops(*dims, torch.bfloat16, device, repeats=10) for shape, dims in PEAK_SHAPES.items()}
    markdown_table(["bf16 matrix product", "TFLOP/s measured"], [(shape, f"{v:.0f}") for shape, v in measured.items()])
    print()

    torch.manual_seed(0)
    model = GPT(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)  # as train.py on GPU
    modes = {"eager": model} | ({} if args.no_compile else {"torch.compile": torch.compile(model)})
    rows, best = [], (0.0, "")
    for label, forward in modes.items():
        for batch_size in args.batch_sizes:
            try:
                seconds, memory = time_training(forward, optimizer, batch_size, args.warmup, args.steps)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                rows.append([label, batch_size, "out of memory", "", "", ""])
                continue
            tokens = batch_size * config.context_length / seconds
            mfu = f"{100 * tokens * flops / (peak * 1e12):.1f}%" if peak else "?"
            rows.append([label, batch_size, f"{1000 * seconds:.1f}", f"{tokens:,.0f}", mfu, f"{memory:.1f}"])
            best = max(best, (tokens, f"{label}, batch {batch_size}: {tokens:,.0f} tokens/s, MFU {mfu}"))
    print(f"Training step, the article's model size, {flops / 1e6:.1f} MFLOP/token; mean of {args.steps} steps after {args.warmup}")
    print()
    markdown_table(["mode", "batch", "ms/step", "tokens/s", "MFU", "peak GiB"], rows)
    print()
    print(f"best: {best[1]}")


if __name__ == "__main__":
    main()
