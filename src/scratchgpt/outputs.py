"""Outputs appear whole or not at all: write under a temporary name, rename when complete.

A stage killed mid-write (Ctrl-C, kill -9, a full disk) leaves at most a hidden `.tmp-` entry
beside the output, never a partial file under the output's own name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside `path`, after removing any left by a killed earlier run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` only if the block succeeds."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; it replaces the folder `path` on success."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as stable, readable JSON (sorted keys, trailing newline), atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write `table` as zstd parquet, atomically; same table, same bytes."""
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
