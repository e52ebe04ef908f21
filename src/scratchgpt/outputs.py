"""Outputs appear whole or not at all: write under a temporary name, rename when complete.

A stage writes each output through `atomic_file` or `atomic_dir`; everything inside an atomic
folder is written plainly (`write_json`, `write_parquet`), since the folder appears only whole.
A stage killed mid-write (Ctrl-C, kill -9) leaves at most a hidden `.<name>.tmp-<pid>` entry
beside the output, never a partial file under the output's own name; a failed write leaves
nothing. Such a leftover is removed by the next write of the same output, and by the start of
any stage (`stage.run`), since DVC may restore the output from its run-cache without running
the stage that left it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scratchgpt.errors import ScratchGPTError

# Errors that only a write can cause: told as a problem with the output, in one line.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


# `.<output name>.tmp-<pid of the writer>`: the temporary name of an output being written.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)")


def _writer_gone(pid: int) -> bool:
    """Whether the process that wrote a temporary has ended, so that nothing will rename it."""
    if pid == os.getpid() or os.name == "nt":  # ours is from an earlier run; Windows: no cheap check
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def remove_leftovers(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in `folder` (of the output `name`, or of any) whose writer has
    ended: a killed run's, which nothing else would ever remove. Return what was removed."""
    folder = Path(folder)
    removed = []
    for entry in sorted(folder.glob(".*.tmp-*")) if folder.is_dir() else []:
        match = _TEMPORARY.fullmatch(entry.name)
        if match and (name is None or match["name"] == name) and _writer_gone(int(match["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside `path`, after removing any left by a killed earlier run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, path.name)
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
