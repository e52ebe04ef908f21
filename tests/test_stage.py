"""What every stage script shares (`stage.run`): its command line, and how it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hashlib

import pytest
import yaml

from conftest import ROOT
from scratchgpt.stage import remove_stale_states

# A stage that writes its output through `atomic_dir` and is still writing when it is stopped.
SLOW_STAGE = """
import time
from pathlib import Path

from scratchgpt import stage
from scratchgpt.outputs import atomic_dir


def main(out: Path) -> None:
    with atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        print("writing", flush=True)
        time.sleep(60)


stage.run(main)
"""


def test_sigterm_stops_a_stage_in_one_line_without_half_written_output(tmp_path):
    script = tmp_path / "slow_stage.py"
    script.write_text(SLOW_STAGE)
    process = subprocess.Popen([sys.executable, str(script), "out"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == "writing\n"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["stopped by SIGTERM; no output written"]
    assert [p.name for p in tmp_path.iterdir()] == [script.name]  # no output, no temporary


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches the stage's memory map in /proc")
def test_sigterm_while_a_stage_imports_torch_is_one_line(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "stages.pretrain", "tokens", "model", "metrics"],
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while "libtorch" not in maps.read_text():  # torch is being imported: seconds before `stage.run`
        assert process.poll() is None and time.monotonic() < deadline, "the stage never started to import torch"
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.splitlines() == ["stopped by SIGTERM; no output written"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", sorted(p.stem for p in (ROOT / "stages").glob("[a-z]*.py")))
def test_stage_without_its_paths_says_usage_and_error(stage):
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=ROOT, capture_output=True, text=True)
    usage, error = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert usage.startswith(f"usage: python -m stages.{stage} ")
    assert error.startswith(f"error: stages.{stage} takes ") and "got 0" in error


def _pipeline_with_a_state(root: Path) -> Path:
    """A two-stage pipeline that DVC holds done (`make` writes `data`, `train` reads it and
    writes `model`), with a training state of `train` left in `.ckpt/`."""
    (root / "data").mkdir()
    (root / "data/part").write_text("data")
    for name in ("make.py", "train.py", "model"):
        (root / name).write_text(name)
    md5 = {name: hashlib.md5((root / name).read_bytes()).hexdigest() for name in ("make.py", "train.py")}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "make": {"cmd": "python make.py", "deps": ["make.py"], "outs": ["data"]},
        "train": {"cmd": "python train.py", "deps": ["data", "train.py"], "params": ["train"], "outs": ["model"]},
    }}))
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"steps": 3}}))
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "make": {"cmd": "python make.py", "deps": [{"path": "make.py", "md5": md5["make.py"]}],
                 "outs": [{"path": "data", "md5": "1234.dir"}]},
        "train": {"cmd": "python train.py", "deps": [{"path": "data", "md5": "1234.dir"},
                                                      {"path": "train.py", "md5": md5["train.py"]}],
                  "params": {"params.yaml": {"train": {"steps": 3}}}, "outs": [{"path": "model", "md5": "5678"}]},
    }}))
    state = root / ".ckpt/train-0123456789abcdef"
    state.mkdir(parents=True)
    (state / "state.safetensors").write_bytes(bytes(2_500_000))
    return state


def _change_code(root: Path) -> None:
    (root / "train.py").write_text("changed")


def _rerun_make(root: Path) -> None:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"]["make"]["outs"][0]["md5"] = "9999.dir"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))


@pytest.mark.parametrize(
    "change, kept_by_a_command",
    [
        (lambda root: None, False),  # DVC holds `train` done: a kill, then a restore from the run-cache
        (lambda root: (root / "model").unlink(), True),  # DVC deleted the output: a run of it may be under way
        (_change_code, True),
        (lambda root: (root / "params.yaml").write_text(yaml.safe_dump({"train": {"steps": 4}})), True),
        (_rerun_make, True),  # its data changed: `make` ran since, `train` has not
    ],
    ids=["done", "output-missing", "code-changed", "params-changed", "data-changed"],
)
def test_which_training_states_a_command_and_a_stage_start_remove(tmp_path, monkeypatch, change, kept_by_a_command):
    state = _pipeline_with_a_state(tmp_path)
    change(tmp_path)
    monkeypatch.chdir(tmp_path)
    said: list[str] = []
    remove_stale_states(said.append, superseded=False)  # what every `scratchgpt` command does
    assert state.exists() == kept_by_a_command
    if not kept_by_a_command:
        assert said == ["removed .ckpt/train-0123456789abcdef: a training state (2.5 MB) that no run would resume: "
                        "DVC holds train done for its present inputs (as after a restore from its run-cache)"]
        assert not (tmp_path / ".ckpt").exists()
        return
    assert said == []
    remove_stale_states(said.append, superseded=True)  # what every stage start does: the key is another
    assert not state.exists() and said[0].endswith("train's code, data or params have changed since")
