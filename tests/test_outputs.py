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


def _ended_process_id() -> int:
    """The id of a process that has run and ended (as a `kill -9`ed stage has)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_every_stage_start_removes_what_killed_runs_left(tmp_path, monkeypatch, capsys):
    """DVC may restore the killed stage from its run-cache, running none of our code: the next
    stage to start, whichever it is, removes temporaries of any output and states no run resumes."""
    import yaml

    from scratchgpt import stage

    monkeypatch.chdir(tmp_path)
    pipeline = {"stages": {
        "download": {"cmd": "x", "outs": ["data/raw"]},
        "pretrain": {"cmd": "x", "deps": ["data/tokens"], "params": ["train"], "outs": ["models/pretrained"],
                     "metrics": [{"metrics/train/metrics.json": {"cache": False}}]},
        "evaluate": {"cmd": "x", "metrics": [{"metrics/evaluate.json": {"cache": False}}]},
    }}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"max_lr": 1.0e-4}}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/tokens").write_bytes(b"tokens")
    ended = _ended_process_id()
    left = [f"data/.raw.tmp-{ended}/imdb/train.parquet", f"models/.pretrained.tmp-{ended}/model.safetensors",
            f"metrics/.evaluate.json.tmp-{ended}", f"metrics/train/.metrics.json.tmp-{ended}",
            f".ckpt/.pretrain-0123456789abcdef.tmp-{ended}/state.json",
            ".ckpt/pretrain-0123456789abcdef/state.json", ".ckpt/renamed-0123456789abcdef/state.json"]
    current = f".ckpt/pretrain-{stage.inputs_key('pretrain')}/state.json"
    writing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live writer
    kept = [current, f"data/.clean.tmp-{writing.pid}/x", "data/.notes.tmp-old", "data/clean/.keep"]
    for path in left + kept:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    monkeypatch.setattr(sys, "argv", ["stages/tokenize.py", "data/clean", "data/tokens_out"])
    try:
        stage.run(lambda clean, out: None)
    finally:
        writing.kill()
        writing.wait()
    assert [path for path in left if (tmp_path / path).exists()] == []
    assert [path for path in kept if not (tmp_path / path).exists()] == []
    told = capsys.readouterr().out.splitlines()  # one line for each thing removed, naming it
    assert sorted(line.split(": ")[0] for line in told) == sorted(
        f"removed {name}" for name in [
            f"data/.raw.tmp-{ended}", f"models/.pretrained.tmp-{ended}", f"metrics/.evaluate.json.tmp-{ended}",
            f"metrics/train/.metrics.json.tmp-{ended}", f".ckpt/.pretrain-0123456789abcdef.tmp-{ended}",
            ".ckpt/pretrain-0123456789abcdef", ".ckpt/renamed-0123456789abcdef"]
    ), told
