"""Outputs appear whole or not at all, even when the writer is killed mid-write."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from scratchgpt.outputs import atomic_dir, atomic_file


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_replaced_only_when_complete(tmp_path):
    target = tmp_path / "models"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError
    assert (target / "a").read_text() == "1"


@pytest.mark.parametrize("writer", ["atomic_file", "atomic_dir"])
def test_killed_writer_leaves_no_partial_output(tmp_path, writer):
    target = tmp_path / "output"
    body = "(tmp / 'weights').write_bytes(b'x' * 1000)" if writer == "atomic_dir" else "tmp.write_bytes(b'x' * 1000)"
    script = textwrap.dedent(f"""
        import os, signal
        from scratchgpt.outputs import {writer}
        with {writer}({str(target)!r}) as tmp:
            {body}
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    assert not target.exists()
    with (atomic_dir if writer == "atomic_dir" else atomic_file)(target) as tmp:  # the next run cleans up
        if writer == "atomic_dir":
            (tmp / "weights").write_text("whole")
        else:
            tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output"]
