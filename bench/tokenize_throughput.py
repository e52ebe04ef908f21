"""Tokenize speed: the tokenize stage's code (encode, end-of-text, uint16 shards on disk)
against a bare `encode_ordinary_batch` on the same text, interleaved.
Run: python bench/tokenize_throughput.py [data/clean/imdb/train.parquet] [--rounds 3]"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from measure import interleaved, print_table
from scratchgpt.text import read_documents
from scratchgpt.encodings import get_encoding
from scratchgpt.tokens import tokenize_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parquet", nargs="?", default="data/clean/imdb/train.parquet",
                        help="cleaned documents (run `dvc repro clean` first)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    texts = read_documents(args.parquet)
    encoding = get_encoding("gpt2")
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        variants = {
            "raw encode_ordinary_batch": lambda: encoding.encode_ordinary_batch(texts, num_threads=threads),
            "tokenize stage (encode + shards)": lambda: tokenize_split(encoding, texts, Path(scratch), "train", 1 << 25),
        }
        times = interleaved(variants, args.rounds)
        tokens = tokenize_split(encoding, texts, Path(scratch), "train", 1 << 25)["tokens"]
    size = sum(len(t.encode()) for t in texts)
    print_table(
        f"tokenize {len(texts):,} documents ({size / 1e6:.0f} MB, {tokens:,} tokens), {threads} threads",
        times, tokens, "tokens", "s", "raw",
    )


if __name__ == "__main__":
    main()
