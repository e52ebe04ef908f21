"""What every stage script shares (`stage.run`): its command line, and how it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

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
