"""Outputs appear whole or not at all: write under a temporary name, rename when complete.

A stage writes each output through `atomic_file` or `atomic_dir`; everything inside an atomic
folder is written plainly (`write_json`, `write_parquet`), since the folder appears only whole.
A stage killed mid-write (Ctrl-C, kill -9) leaves at most a hidden `.tmp-<pid>` entry beside
the output, never a partial file under the output's own name; a failed write leaves nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scratchgpt.errors import ScratchGPTError

# Errors that only a write can cause: told as a problem with the output, in one line.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


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
def _output_errors(path: Path) -> Iterator[None]:
    """A full disk or read-only file system while writing `path` is one line that names it."""
    try:
        yield
    except OSError as e:
        if e.errno in _WRITE_ERRORS:
            raise ScratchGPTError(f"{path}: cannot write it ({e.strerror})") from e
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` only if the block succeeds."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        with _output_errors(path):
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
        with _output_errors(path):
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as stable, readable JSON (sorted keys, trailing newline).

    Not atomic by itself: write into an `atomic_dir`, or to the path `atomic_file` yields.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write `table` as zstd parquet (same table, same bytes); not atomic by itself either."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
