"""An interrupted training stage loses nothing: it resumes and ends with the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import DVC, run, tiny_params

# Long enough (a few seconds) to interrupt after the first saved state.
SLOW = {"model": {"embed_dim": 64, "attention_dim": 64, "num_blocks": 2, "context_length": 32},
        "train": {"max_steps": 48, "eval_freq": 4, "num_threads": 1}}


CURVES = Path("metrics/train/plots/metrics")


def state_files(repo: Path) -> list[Path]:
    try:
        return list((repo / ".ckpt").glob("pretrain-*/state.json"))
    except FileNotFoundError:  # a stage start removed the empty `.ckpt` while it was being listed
        return []


def saved_step(repo: Path) -> int:
    """The step of the saved state (0 while there is none or it is being replaced)."""
    try:
        [state] = state_files(repo)
        return json.loads(state.read_text())["progress"]["steps"]
    except (ValueError, FileNotFoundError):
        return 0


def curve_steps(repo: Path, name: str = "train_loss") -> list[int]:
    """The steps of a curve in the stage's DVCLive folder, as far as it is written."""
    path = repo / CURVES / f"{name}.tsv"
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(line.split("\t")[0]) for line in lines[1:] if "\t" in line]


def interrupt(repo: Path, how: signal.Signals, *flags: str, ready=lambda repo: True) -> subprocess.CompletedProcess:
    """Start `dvc repro [flags] pretrain`, wait for a saved state (and `ready`), then send `how` to the whole
    process group."""
    before = {p: p.stat().st_mtime_ns for p in state_files(repo)}
    process = subprocess.Popen([*DVC, "repro", *flags, "pretrain"], cwd=repo, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(before.get(p) != p.stat().st_mtime_ns for p in state_files(repo)) and ready(repo):
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, how)
    output, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def outputs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["pretrain"]
    return {out["path"]: out["md5"] for out in lock["outs"]}


@pytest.mark.e2e
def test_killed_and_interrupted_training_resumes_to_the_same_bytes(project):
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(**SLOW), sort_keys=False))
    run([*DVC, "repro", "tokenize"], project)

    # Killed two steps after a saved state: the live curve holds steps the state does not.
    killed = interrupt(project, signal.SIGKILL, ready=lambda repo: len(curve_steps(repo)) >= saved_step(repo) + 2)
    assert killed.returncode == -signal.SIGKILL
    assert len(state_files(project)) == 1
    assert not (project / "models/pretrained").exists()  # no half-written output
    assert 0 < saved_step(project) < curve_steps(project)[-1]

    stopped = interrupt(project, signal.SIGINT)
    assert stopped.returncode != 0
    assert "resuming at step" in stopped.stdout and "state saved in" in stopped.stdout
    assert not (project / "models/pretrained").exists()
    assert not (project / "metrics/train").exists()  # stopped: no half-written metrics left behind

    finished = run([*DVC, "repro", "pretrain"], project)
    assert "resuming at step" in finished.stdout
    assert state_files(project) == []  # removed once the outputs are whole
    assert curve_steps(project) == list(range(1, 49))  # no step twice, none missing
    assert curve_steps(project, "val_loss") == list(range(4, 49, 4))
    resumed = outputs(project)
    assert {"metrics/train/metrics.json", "metrics/train/plots/metrics"} <= set(resumed)

    run([*DVC, "repro", "--force", "--no-run-cache", "pretrain"], project)
    assert outputs(project) == resumed


@pytest.mark.e2e
def test_sigterm_stops_training_like_ctrl_c_and_it_resumes_to_the_same_bytes(project):
    """SIGTERM (timeout, systemd, schedulers, cancelled CI jobs) finishes the step and saves."""
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(**SLOW), sort_keys=False))
    run([*DVC, "repro", "tokenize"], project)

    stopped = interrupt(project, signal.SIGTERM)
    assert stopped.returncode != 0
    [line] = [line for line in stopped.stdout.splitlines() if "SIGTERM" in line]
    step = saved_step(project)
    assert line == f"stopped by SIGTERM at step {step}, state saved in {state_files(project)[0].parent.relative_to(project)}; `dvc repro` resumes"
    assert not (project / "models/pretrained").exists()
    assert not (project / "metrics/train").exists()

    finished = run([*DVC, "repro", "pretrain"], project)
    assert f"resuming at step {step}" in finished.stdout
    assert state_files(project) == []
    assert curve_steps(project) == list(range(1, 49))
    resumed = outputs(project)
    run([*DVC, "repro", "--force", "--no-run-cache", "pretrain"], project)
    assert outputs(project) == resumed


@pytest.mark.e2e
def test_the_curves_can_be_read_while_the_stage_runs(project):
    params = tiny_params(**{**SLOW, "train": {**SLOW["train"], "max_steps": 2000}})  # killed long before the end
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "repro", "tokenize"], project)
    process = subprocess.Popen([*DVC, "repro", "pretrain"], cwd=project, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(curve_steps(project, "val_loss")) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, "the stage ended early"
            time.sleep(0.05)
        # What DVC's own tools show, read while the stage still runs.
        shown = json.loads(run([*DVC, "plots", "show", "--json"], project).stdout)
        metrics = json.loads(run([*DVC, "metrics", "show", "--json"], project).stdout)
        assert process.poll() is None, "the stage ended before its curves were read"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [loss] = shown["data"]["Pretraining loss (IMDb)"]
    points = loss["content"]["data"]["values"]
    train = [int(p["step"]) for p in points if p["filename::field"] == "train_loss.tsv::train_loss"]
    val = [int(p["step"]) for p in points if p["filename::field"] == "val_loss.tsv::val_loss"]
    assert 8 <= len(train) < 2000 and train == list(range(1, len(train) + 1))
    assert val[:2] == [4, 8]
    live = metrics[""]["data"]["metrics/train/metrics.json"]["data"]
    assert live["step"] % 4 == 0 and live["step"] >= 8 and "val_loss" in live  # the latest evaluation


@pytest.mark.e2e
def test_changed_params_never_resume_stale_state(project):
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(**SLOW), sort_keys=False))
    run([*DVC, "repro", "tokenize"], project)
    interrupt(project, signal.SIGKILL)
    [stale] = state_files(project)
    changed = tiny_params(**{**SLOW, "train": {**SLOW["train"], "max_lr": 1.0e-4}})
    (project / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    output = run([*DVC, "repro", "pretrain"], project).stdout
    assert "resuming" not in output
    # Not resumed, and removed: were it kept for the old params' return, it would stay for good
    # once DVC restored that run from its run-cache instead of running it.
    assert f"removed .ckpt/{stale.parent.name}: " in output
    assert list((project / ".ckpt").iterdir()) == []


@pytest.mark.e2e
def test_what_killed_runs_leave_goes_even_when_dvc_restores_their_stage(project):
    """DVC restores a stage from its run-cache without running any of our code: what a killed
    run of it left is removed by the next stage that does run."""
    cached = tiny_params(**SLOW)
    (project / "params.yaml").write_text(yaml.safe_dump(cached, sort_keys=False))
    run([*DVC, "repro", "pretrain"], project)  # every stage so far is in the run-cache
    other = tiny_params(**{**SLOW, "train": {**SLOW["train"], "max_lr": 1.0e-4}})
    (project / "params.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    interrupt(project, signal.SIGKILL)
    [stale] = state_files(project)
    # What `kill -9` in `dvc repro -f download` leaves: DVC has deleted data/raw, and the stage's
    # temporary (named after a process that has ended) stays beside it.
    shutil.rmtree(project / "data/raw")
    ended = subprocess.Popen(["true"])
    ended.wait()
    temporary = project / f"data/.raw.tmp-{ended.pid}"
    (temporary / "imdb").mkdir(parents=True)
    (temporary / "imdb/train.parquet").write_bytes(bytes(1 << 20))

    (project / "params.yaml").write_text(yaml.safe_dump(cached, sort_keys=False))
    output = run([*DVC, "repro", "finetune@coldplay"], project).stdout
    for name in ("download", "pretrain"):
        assert f"Stage '{name}' is cached - skipping run" in output, output
    assert "resuming" not in output
    assert f"removed data/{temporary.name}: " in output and not temporary.exists()
    assert f"removed .ckpt/{stale.parent.name}: " in output and not stale.parent.exists()
    assert list((project / ".ckpt").iterdir()) == []  # finetune's own state went on success


@pytest.mark.e2e
def test_a_killed_run_that_dvc_restores_from_its_run_cache_leaves_no_state(project):
    """Killed while running again with inputs that an earlier run finished: DVC restores that
    run's outputs instead of running the stage, so nothing would ever resume the state."""
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(**SLOW), sort_keys=False))
    run([*DVC, "repro", "pretrain"], project)  # these inputs are in the run-cache now
    interrupt(project, signal.SIGKILL, "--force", "--single-item")
    [state] = state_files(project)

    output = run([*DVC, "repro", "finetune@coldplay"], project).stdout
    assert "Stage 'pretrain' is cached - skipping run" in output, output
    assert f"removed .ckpt/{state.parent.name}: " in output
    assert list((project / ".ckpt").glob("*")) == []


@pytest.mark.e2e
def test_a_killed_run_that_dvc_exp_run_restores_is_removed_by_the_next_scratchgpt_command(project):
    """The same kill, then `dvc exp run` of the same params: DVC restores the stage from its
    run-cache and runs no stage of ours, so DVC gives no moment to remove the state. The next
    `scratchgpt` command removes it, saying so on stderr."""
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(**SLOW), sort_keys=False))
    run([*DVC, "repro", "pretrain"], project)
    interrupt(project, signal.SIGKILL, "--force", "--single-item")
    [state] = state_files(project)

    output = run([*DVC, "exp", "run", "pretrain"], project).stdout
    assert "Stage 'pretrain' is cached - skipping run" in output, output
    assert state.exists()  # DVC ran nothing of ours
    generated = run([sys.executable, "-c", "from scratchgpt.cli import main; main()", "generate",
                     "--model", "models/pretrained", "--max-new-tokens", "2", "--seed", "1", "hello"], project)
    assert generated.stdout.startswith("hello")
    [line] = generated.stderr.splitlines()
    assert line.startswith(f"removed .ckpt/{state.parent.name}: a training state (") and " MB) " in line
    assert line.endswith("DVC holds pretrain done for its present inputs (as after a restore from its run-cache)")
    assert not (project / ".ckpt").exists()


def _tiny_training_state(folder: Path):
    from scratchgpt.model import GPT
    from scratchgpt.training_state import save_state

    torch.manual_seed(0)
    model = GPT(num_heads=2, vocab_size=64, embed_dim=16, attention_dim=16, num_blocks=1,
                context_length=8, dropout_rate=0.0)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), targets=torch.zeros(1, 8, dtype=torch.long)).backward()
    optimizer.step()
    best = {k: v.clone() for k, v in model.state_dict().items()}
    save_state(folder, model, optimizer, best, {"steps": 3})
    return model, optimizer


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: _truncate(folder / "state.safetensors"),
        lambda folder: (folder / "state.safetensors").write_bytes(b""),
        lambda folder: (folder / "state.json").write_text("{half"),
        lambda folder: (folder / "state.json").unlink(),
        lambda folder: (folder / "state.json").write_text('{"progress": {}}'),
    ],
    ids=["truncated-tensors", "empty-tensors", "bad-json", "no-json", "json-missing-keys"],
)
def test_damaged_state_is_reported_discarded_and_training_starts_fresh(tmp_path, capsys, damage):
    from scratchgpt.training_state import load_state

    folder = tmp_path / ".ckpt" / "pretrain-0123"
    model, optimizer = _tiny_training_state(folder)
    damage(folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_state(folder, model, optimizer) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged training state" in err[0] and str(folder) in err[0], err
    assert not folder.exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_state_of_another_shape_is_discarded(tmp_path, capsys):
    from scratchgpt.model import GPT
    from scratchgpt.training_state import load_state

    folder = tmp_path / "state"
    _tiny_training_state(folder)
    other = GPT(num_heads=2, vocab_size=64, embed_dim=32, attention_dim=32, num_blocks=1,
                context_length=8, dropout_rate=0.0)
    assert load_state(folder, other, torch.optim.AdamW(other.parameters())) is None
    assert "has shape" in capsys.readouterr().err and not folder.exists()
