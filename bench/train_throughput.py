"""Training throughput: tokens/s of a full step (forward, backward, clip, AdamW) at the article's
model size, ours against a faithful copy of the article's implementation, steps interleaved so the ratios
hold on a noisy machine.

The memory-allocator setting (`devices.configure_cpu`) is process-wide, so each setting gets its
own worker process holding its variants; the parent interleaves single steps across all of them.
Run: python bench/train_throughput.py [--batch-size 32] [--rounds 3]"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time

import torch
import torch.nn.functional as F

from measure import print_table

SHAPE = dict(num_heads=8, embed_dim=256, attention_dim=256, num_blocks=8, context_length=256, dropout_rate=0.1)
GPT2_VOCAB = 50257

# name: (keep freed memory, model, vocabulary, bf16, optimizer, sliced loss). torch.compile is
# left out: on a 2-core CPU it gained nothing (6.84 against 6.67 s/step, measured in one process).
VARIANTS = {
    "seed-style: a module per head, explicit mask, fp32": (False, "seed", GPT2_VOCAB, False, "default", False),
    "fused QKV + SDPA, fp32": (False, "ours", GPT2_VOCAB, False, "foreach", False),
    "+ vocabulary padded to 50,304": (False, "ours", 50304, False, "foreach", False),
    "+ bf16 autocast": (False, "ours", 50304, True, "foreach", False),
    "+ bf16, fused AdamW": (False, "ours", 50304, True, "fused", False),
    "+ bf16, loss in slices": (False, "ours", 50304, True, "foreach", True),
    "+ bf16, loss in slices, freed memory kept (the pipeline)": (True, "ours", 50304, True, "foreach", True),
    "+ bf16, loss in slices, freed memory kept, vocabulary not padded": (True, "ours", GPT2_VOCAB, True, "foreach", True),
}


def worker(keep_memory: bool, names: list[str], batch_size: int, connection) -> None:
    from scratchgpt.devices import configure_cpu, supports_bf16
    from scratchgpt.model import GPT
    from seed_baseline import SeedGPT

    if keep_memory:
        configure_cpu(None)
    device = torch.device("cpu")
    batch = torch.randint(0, GPT2_VOCAB, (batch_size, SHAPE["context_length"] + 1), generator=torch.Generator().manual_seed(0))
    built = {}
    for name in names:
        _, kind, vocab, bf16, optimizer_kind, sliced = VARIANTS[name]
        if bf16 and not supports_bf16(device):
            continue
        torch.manual_seed(0)
        model = (SeedGPT if kind == "seed" else GPT)(vocab_size=vocab, **SHAPE).train()
        options = {} if optimizer_kind == "default" else {optimizer_kind: True}
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, **options)
        built[name] = (model, optimizer, bf16, sliced)
    connection.send(sorted(built))
    while (name := connection.recv()) is not None:
        model, optimizer, bf16, sliced = built[name]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if sliced:
                loss = model(batch[:, :-1], targets=batch[:, 1:])
            else:  # the whole batch of logits at once, as the article computes its loss
                loss = F.cross_entropy(model(batch[:, :-1]).float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        connection.send(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per variant, after 2 warm-up steps")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    workers = {}
    for keep_memory in (False, True):
        names = [n for n, v in VARIANTS.items() if v[0] == keep_memory]
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(keep_memory, names, args.batch_size, child))
        process.start()
        child.close()  # so a worker that dies raises EOFError here instead of hanging
        workers[keep_memory] = (process, parent)
    available = {name for _, connection in workers.values() for name in connection.recv()}
    names = [n for n in VARIANTS if n in available]
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds + 2):
        for name in names:
            connection = workers[VARIANTS[name][0]][1]
            connection.send(name)
            elapsed = connection.recv()
            if round_ >= 2:  # the first steps grow the heap and warm caches
                times[name].append(elapsed)
    for process, connection in workers.values():
        connection.send(None)
        process.join()
    print_table(
        f"training step, batch {args.batch_size} x {SHAPE['context_length']} tokens, seed model size, "
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        times, args.batch_size * SHAPE["context_length"], "tokens", "s/step", "seed-style",
    )


if __name__ == "__main__":
    main()
