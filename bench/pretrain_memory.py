"""Peak memory (RSS) of pretraining against corpus size: the same short run of the default model
(params.yaml's shape and batch) on a 1x and a 10x token corpus, each in a fresh process,
interleaved. Shards are memory-mapped, so the corpus should not count.
Run: python bench/pretrain_memory.py [--tokens 21000000] [--steps 3]"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from measure import ROOT, peak_rss_gib


def write_corpus(folder: Path, train_tokens: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", train_tokens), ("val", 200_000)):
        names = []
        for start in range(0, count, 1 << 25):  # shards of 2^25 tokens, as the tokenize stage writes
            name = f"{split}-{len(names):03d}.npy"
            np.save(folder / name, rng.integers(0, 50257, min(1 << 25, count - start), dtype=np.uint16))
            names.append(name)
        splits[split] = {"documents": 1, "tokens": count, "shards": names}
    meta = {"encoding": "gpt2", "vocab_size": 50257, "eot_token": 50256, "dtype": "uint16", "splits": splits}
    (folder / "meta.json").write_text(json.dumps(meta))


def child(folder: Path, steps: int) -> None:
    from scratchgpt.model import GPT
    from scratchgpt.params import load_sections
    from scratchgpt.tokens import TokenShards, Windows
    from scratchgpt.train import train

    loaded = load_sections(["model", "train"], ROOT / "params.yaml")
    shape = loaded.model
    settings = dataclasses.replace(loaded.train, max_steps=steps, warmup_steps=1, eval_freq=steps, eval_batches=1)
    torch.manual_seed(0)
    model = GPT(num_heads=shape.num_heads, vocab_size=50304, embed_dim=shape.embed_dim,
                attention_dim=shape.attention_dim, num_blocks=shape.num_blocks,
                context_length=shape.context_length, dropout_rate=shape.dropout_rate)
    windows = {split: Windows(TokenShards(folder, split), shape.context_length) for split in ("train", "val")}
    train(model, windows["train"], windows["val"], settings, "train")
    print(peak_rss_gib() * 1024)  # MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=21_000_000, help="1x corpus (IMDb train is ~21M)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        corpora = {scale: Path(scratch) / f"x{scale}" for scale in (1, 10)}
        for scale, folder in corpora.items():
            write_corpus(folder, args.tokens * scale)
        peaks: dict[int, list[float]] = {scale: [] for scale in corpora}
        for _ in range(args.rounds):
            for scale, folder in corpora.items():
                output = subprocess.run([sys.executable, __file__, "--child", str(folder), "--steps", str(args.steps)],
                                        capture_output=True, text=True, check=True).stdout
                peaks[scale].append(float(output.split()[-1]))
    print(f"pretrain, params.yaml's model and batch, {args.steps} steps; corpus 1x = {args.tokens:,} tokens")
    print()
    print("| corpus | tokens | peak RSS (MiB) | vs 1x |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(peaks[1])
    for scale, measured in peaks.items():
        print(f"| {scale}x | {args.tokens * scale:,} | {statistics.median(measured):,.0f} | {statistics.median(measured) / base:.2f}x |")


if __name__ == "__main__":
    main()
