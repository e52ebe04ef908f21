"""Token shards: documents to tiktoken ids on disk, and back as memory-mapped windows.

A corpus folder holds, per split, a few large `.npy` shards (uint16 while the vocabulary fits,
else uint32) and one `meta.json` with the encoding, dtype and token and document counts. Every
document is followed by the end-of-text token, so the model sees where one review ends and the
next begins. Readers memory-map the shards: memory does not grow with the corpus.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tiktoken
import torch

from scratchgpt.encodings import load_encoding
from scratchgpt.errors import ScratchGPTError, reason
from scratchgpt.outputs import write_json
from scratchgpt.progress import progress

META_FILE = "meta.json"
ENCODE_BATCH_DOCS = 2048  # documents encoded per batch: bounds memory, keeps every core busy


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 for GPT-2's 50,257."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_documents(
    encoding: tiktoken.Encoding, texts: list[str], dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Yield the ids of `texts`, batch by batch, each document followed by end-of-text.

    Same ids as `encode_ordinary_batch`, faster: tiktoken's `encode_to_numpy` writes each
    document's ids straight into a NumPy buffer (no Python list per document) and releases the
    GIL while it works, so a thread per core keeps every core busy (bench/tokenize_throughput.py).
    `disallowed_special=()` encodes special-token text as ordinary text, as encode_ordinary does.
    """
    eot = np.array([encoding.eot_token], dtype=np.uint32)
    encode = functools.partial(encoding.encode_to_numpy, disallowed_special=())
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(texts), ENCODE_BATCH_DOCS):
            documents = pool.map(encode, texts[start : start + ENCODE_BATCH_DOCS])
            yield np.concatenate([part for ids in documents for part in (ids, eot)]).astype(dtype)


def write_shards(
    chunks: Iterable[np.ndarray], folder: Path, split: str, shard_tokens: int
) -> tuple[list[str], int]:
    """Concatenate `chunks` into files of `shard_tokens` ids (the last may be shorter).

    Returns the shard file names and the number of tokens written.
    """
    names: list[str] = []
    pending: list[np.ndarray] = []
    pending_tokens = total = 0

    def flush(count: int) -> None:
        nonlocal pending, pending_tokens
        joined = np.concatenate(pending)
        name = f"{split}-{len(names):03d}.npy"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / name, joined[:count])  # inside the stage's atomic_dir
        names.append(name)
        pending = [joined[count:]]
        pending_tokens = len(pending[0])

    for chunk in chunks:
        pending.append(chunk)
        pending_tokens += len(chunk)
        total += len(chunk)
        while pending_tokens >= shard_tokens:
            flush(shard_tokens)
    if pending_tokens:
        flush(pending_tokens)
    return names, total


def tokenize_split(
    encoding: tiktoken.Encoding, texts: list[str], folder: Path, split: str, shard_tokens: int
) -> dict[str, object]:
    """Write one split's shards into `folder`; return its entry for meta.json."""
    batches = progress(
        encode_documents(encoding, texts, token_dtype(encoding.n_vocab)),
        desc=f"tokenize {folder.name}/{split}",
        total=math.ceil(len(texts) / ENCODE_BATCH_DOCS),
        unit="batch",
    )
    shards, tokens = write_shards(batches, folder, split, shard_tokens)
    return {"documents": len(texts), "tokens": tokens, "shards": shards}


def write_meta(folder: Path, encoding: tiktoken.Encoding, splits: dict[str, object]) -> None:
    write_json(
        folder / META_FILE,
        {
            "encoding": encoding.name,
            "vocab_size": encoding.n_vocab,
            "eot_token": encoding.eot_token,
            "dtype": token_dtype(encoding.n_vocab).name,
            "splits": splits,
        },
    )


def read_meta(folder: str | Path) -> dict:
    """A corpus folder's meta.json; a missing or unreadable one is a one-line error."""
    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{path}: not found (run the tokenize stage first)") from e
    except json.JSONDecodeError as e:
        raise ScratchGPTError(f"{path}: not valid JSON ({reason(e)})") from e


class TokenShards:
    """One split's tokens as a single sequence, read lazily from memory-mapped shards."""

    def __init__(self, folder: str | Path, split: str):
        self.folder = folder = Path(folder)
        self.meta = read_meta(folder)
        if split not in self.meta["splits"]:
            raise ScratchGPTError(f"{folder / META_FILE}: no split {split!r}")
        info = self.meta["splits"][split]
        self.encoding = self.meta["encoding"]
        self.shards = [self._open(folder / name) for name in info["shards"]]
        self.ends = np.cumsum([len(s) for s in self.shards])
        if not self.shards or self.ends[-1] != info["tokens"]:
            found = int(self.ends[-1]) if self.shards else 0
            raise ScratchGPTError(
                f"{folder}: split {split!r} has {found} tokens in its shards, meta.json says "
                f"{info['tokens']} (re-run the tokenize stage)"
            )

    def load_encoding(self) -> tiktoken.Encoding:
        """The tokenizer that made these ids; a trained one is saved beside the corpus folders."""
        return load_encoding(self.encoding, self.folder.parent)

    def require_encoding(
        self, encoding: str, reader: str | Path, fix: str = "re-run the tokenize stage with the model's encoding"
    ) -> None:
        """Refuse ids from another tokenizer than the one the model `reader` was trained with;
        the line ends with `fix`, what the user should do."""
        if self.encoding != encoding:
            raise ScratchGPTError(f"{self.folder}: tokens are {self.encoding!r} but {reader} reads {encoding!r}; {fix}")

    def _open(self, path: Path) -> np.ndarray:
        try:
            shard = np.load(path, mmap_mode="r")
        except FileNotFoundError as e:
            raise ScratchGPTError(f"{path}: shard missing (re-run the tokenize stage)") from e
        except ValueError as e:
            raise ScratchGPTError(f"{path}: truncated or damaged shard ({reason(e)})") from e
        if shard.dtype.name != self.meta["dtype"] or shard.ndim != 1:
            raise ScratchGPTError(f"{path}: expected a flat {self.meta['dtype']} array")
        return shard

    def __len__(self) -> int:
        return int(self.ends[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64, across shard boundaries if need be."""
        pieces = []
        while length > 0:
            index = int(np.searchsorted(self.ends, start, side="right"))
            offset = start - (int(self.ends[index - 1]) if index else 0)
            piece = self.shards[index][offset : offset + length]
            pieces.append(piece)
            start, length = start + len(piece), length - len(piece)
        return np.concatenate(pieces).astype(np.int64)


class Windows:
    """A split cut into non-overlapping examples: `length` input tokens and the next token of each.

    Window i covers tokens [i * length, (i + 1) * length]; its inputs are all but the last token
    and its targets all but the first. A split shorter than one context gives one shorter window.
    """

    def __init__(self, tokens: TokenShards, context_length: int):
        self.tokens = tokens
        self.length = min(context_length, len(tokens) - 1)
        if self.length < 1:
            raise ScratchGPTError(f"a split of {len(tokens)} token(s) holds no training example")
        self.count = (len(tokens) - 1) // self.length

    def batch(self, indices: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each (len(indices), length), for the windows `indices`."""
        rows = np.stack([self.tokens.read(int(i) * self.length, self.length + 1) for i in indices])
        ids = torch.from_numpy(rows)
        return ids[:, :-1], ids[:, 1:]

    def shuffled(self, seed: int, epoch: int) -> torch.Tensor:
        """Every window index once, in an order fixed by `seed` and `epoch`."""
        # Wrapped to the generator's 64 bits: a large seed times the stride would overflow them.
        mixed = (seed * 100_003 + epoch) % 2**64
        return torch.randperm(self.count, generator=torch.Generator().manual_seed(mixed))

    def evenly_spaced(self, count: int) -> list[int]:
        """`count` window indices spread over the whole split (all of them if it has fewer)."""
        count = min(count, self.count)
        return [i * self.count // count for i in range(count)]
