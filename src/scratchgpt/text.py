"""Text rules: the article's ASCII-only cleaning, and a validation split that never moves.

The split is decided by a hash of each document's own cleaned text, not by its position or a
random draw, so a document stays on the same side when the corpus grows, is re-ordered, or is
capped with `max_docs`; identical documents always land on the same side (no leakage).

That hash is salted apart from the one that orders documents and picks those `max_docs` keeps
(`sources`): with one hash for both, the documents a cap keeps are the low-hash ones, which
are also the validation ones, and a capped corpus sent up to 44% of itself to validation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scratchgpt.errors import ScratchGPTError, reason
from scratchgpt.outputs import write_parquet

_NON_ASCII = re.compile(r"[^\x00-\x7F]+")  # the article's keep_english_only rule
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)  # IMDb marks line breaks as <br />
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # invisible bytes, never useful text
_SPACES = re.compile(r"[ \t\f\v]+")
_SPACE_AT_LINE_END = re.compile(r" *\n *")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """ASCII only, `<br />` as a newline, runs of spaces as one, at most one blank line, stripped."""
    text = _NON_ASCII.sub("", text)
    text = _HTML_BREAK.sub("\n", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_AT_LINE_END.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


_VALIDATION_SALT = b"validation"


def stable_hash(text: str, salt: bytes = b"") -> int:
    """A 64-bit hash of `text` that is the same on every machine and Python run; hashes with
    different `salt`s (up to 16 bytes) are independent of each other."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, salt=salt)
    return int.from_bytes(digest.digest(), "big")


def is_validation(text: str, val_fraction: float, seed: int = 0) -> bool:
    """Whether `text` belongs to the validation split: its salted hash falls in the lowest
    fraction. Each `seed` (below 2**48) draws another split; seed 0 is the split IMDb uses."""
    salt = _VALIDATION_SALT + (seed.to_bytes(6, "big") if seed else b"")
    return stable_hash(text, salt) < val_fraction * 2**64


def clean_documents(texts: Iterable[str]) -> list[str]:
    """Every text cleaned; those left empty are dropped."""
    return [cleaned for cleaned in map(clean_text, texts) if cleaned]


def split_validation(texts: list[str], val_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """`{"train": [...], "val": [...]}`, each document placed by `is_validation`."""
    splits: dict[str, list[str]] = {"train": [], "val": []}
    for text in texts:
        splits["val" if is_validation(text, val_fraction, seed) else "train"].append(text)
    return splits


def deduplicate(texts: list[str]) -> list[str]:
    """`texts` without exact repeats (a song and its demo with the same words), first
    copies kept in order: a repeat would count twice in training or in the yardstick."""
    return list(dict.fromkeys(texts))


def read_documents(path: str | Path) -> list[str]:
    """The `text` column of a parquet file written by an earlier stage."""
    try:
        return pq.read_table(path, columns=["text"]).column("text").to_pylist()
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{path}: not found (run the earlier stages first)") from e
    except (pa.ArrowException, KeyError) as e:
        raise ScratchGPTError(f"{path}: cannot read a text column ({reason(e)})") from e


def write_documents(texts: list[str], path: str | Path) -> None:
    write_parquet(pa.table({"text": pa.array(texts, pa.string())}), path)
