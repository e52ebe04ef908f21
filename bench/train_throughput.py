"""Training throughput: tokens/s of a full step (forward, backward, clip, AdamW) on the seed's
model size, ours against the seed-style baseline, interleaved so the ratios hold on a noisy
machine.  Run: python bench/train_throughput.py [--batch-size 32] [--rounds 3]"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from scratchgpt.devices import supports_bf16
from scratchgpt.model import GPT
from seed_baseline import SeedGPT

SHAPE = dict(num_heads=8, embed_dim=256, attention_dim=256, num_blocks=8, context_length=256, dropout_rate=0.1)
GPT2_VOCAB = 50257


def variants(device: torch.device) -> dict[str, dict]:
    bf16 = supports_bf16(device)
    found = {
        "seed-style (per-head modules, mask, fp32)": dict(model="seed", vocab=GPT2_VOCAB, bf16=False, optimizer="default"),
        "fused QKV + SDPA, fp32": dict(model="ours", vocab=GPT2_VOCAB, bf16=False, optimizer="foreach"),
        "+ vocab padded to 50,304": dict(model="ours", vocab=50304, bf16=False, optimizer="foreach"),
    }
    if bf16:
        found["+ bf16 autocast (pipeline default)"] = dict(model="ours", vocab=50304, bf16=True, optimizer="foreach")
        found["+ bf16, fused AdamW"] = dict(model="ours", vocab=50304, bf16=True, optimizer="fused")
        found["+ bf16, torch.compile"] = dict(model="ours", vocab=50304, bf16=True, optimizer="foreach", compile=True)
    return found


def build(spec: dict, device: torch.device):
    torch.manual_seed(0)
    cls = SeedGPT if spec["model"] == "seed" else GPT
    model = cls(vocab_size=spec["vocab"], **SHAPE).to(device).train()
    if spec["optimizer"] == "default":
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, **{spec["optimizer"]: True})
    forward = torch.compile(model) if spec.get("compile") else model
    return model, forward, optimizer


def step(model, forward, optimizer, batch: torch.Tensor, spec: dict, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["bf16"]):
        logits = forward(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per variant, interleaved")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = torch.randint(0, GPT2_VOCAB, (args.batch_size, SHAPE["context_length"] + 1), device=device)
    specs = variants(device)
    built = {name: build(spec, device) for name, spec in specs.items()}
    for name, spec in specs.items():  # warm-up: allocations, compilation
        step(*built[name], batch, spec, device)
    times: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(args.rounds):
        for name, spec in specs.items():
            start = time.perf_counter()
            step(*built[name], batch, spec, device)
            times[name].append(time.perf_counter() - start)
    tokens = args.batch_size * SHAPE["context_length"]
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"training step, batch {args.batch_size} x {SHAPE['context_length']} tokens, {machine}, torch {torch.__version__}")
    print()
    print("| variant | s/step | tokens/s | vs seed-style |")
    print("| --- | --- | --- | --- |")
    baseline = None
    for name, measured in times.items():
        median = statistics.median(measured)
        baseline = baseline or median
        print(f"| {name} | {median:.2f} | {tokens / median:,.0f} | {baseline / median:.2f}x |")


if __name__ == "__main__":
    main()
