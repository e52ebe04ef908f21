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


@pytest.mark.parametrize("writer", ["atomic_file", "atomic_dir"])
def test_full_disk_is_one_line_naming_the_output(tmp_path, writer):
    import errno
    import os

    from scratchgpt.errors import ScratchGPTError

    target = tmp_path / "tokens"
    with pytest.raises(ScratchGPTError, match=f"{target}: cannot write it .No space left on device.") as error:
        with (atomic_dir if writer == "atomic_dir" else atomic_file)(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".tokens.tmp-1" / "train-000.npy"))
    assert isinstance(error.value.__cause__, OSError)  # the cause is kept for a debugger
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output", ["a_file/out", "a_file/deeper/out"])
def test_stage_refuses_an_unwritable_output_before_any_work(tmp_path, monkeypatch, capsys, output):
    from scratchgpt import stage

    (tmp_path / "a_file").write_text("in the way")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "input", output])
    called = []

    def main(tokens, model_out):
        called.append(True)

    with pytest.raises(SystemExit) as exit_:
        stage.run(main)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and not called
    assert len(err) == 1 and err[0].startswith(f"error: {output}: cannot write this output here"), err


def test_stage_reports_an_os_error_in_one_line(tmp_path, monkeypatch, capsys):
    from scratchgpt import stage

    monkeypatch.setattr(sys, "argv", ["stages/x.py", str(tmp_path / "out")])

    def main(out):
        open(tmp_path / "missing" / "input.bin", "rb")

    with pytest.raises(SystemExit):
        stage.run(main)
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing' / 'input.bin'}: No such file or directory\n"
