"""The run's DVCLive folder grows step by step, resumes without a step twice, and ends the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scratchgpt.live_metrics import RunLog

SUMMARY = {"best_val_loss": 5.5, "best_step": 8, "final_train_loss": 5.25, "steps": 10,
           "tokens_seen": 1280, "stopped_early": False}


def rows(count: int = 10, eval_freq: int = 4) -> list[dict[str, float | int]]:
    made = []
    for step in range(1, count + 1):
        row: dict[str, float | int] = {"step": step, "train_loss": 10 - step / 3, "learning_rate": 1e-4 * step,
                                       "tokens_seen": 128 * step}
        if step % eval_freq == 0 or step == count:
            row["val_loss"] = 10.5 - step / 4
        made.append(row)
    return made


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def curve(folder: Path, name: str) -> list[tuple[str, ...]]:
    lines = (folder / "plots/metrics" / f"{name}.tsv").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines]


def uninterrupted(folder: Path) -> dict[str, bytes]:
    with RunLog(folder, []) as log:
        for row in rows():
            log.log(row)
        log.finish(SUMMARY)
    return files(folder)


@pytest.fixture(autouse=True)
def outside_any_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a DVC repository from the working directory


def test_the_curves_are_on_disk_after_every_step(tmp_path):
    folder = tmp_path / "metrics/train"
    with RunLog(folder, []) as log:
        for row in rows()[:5]:
            log.log(row)
            step = row["step"]
            assert curve(folder, "train_loss") == [("step", "train_loss")] + [
                (str(r["step"]), str(r["train_loss"])) for r in rows()[:step]]
            if "val_loss" in row:  # metrics.json follows every evaluation
                assert json.loads((folder / "metrics.json").read_text())["step"] == step
        assert curve(folder, "val_loss") == [("step", "val_loss"), ("4", str(rows()[3]["val_loss"]))]
        log.finish(SUMMARY)
    assert json.loads((folder / "metrics.json").read_text()) == {**SUMMARY, "step": 5}
    assert sorted(files(folder)) == ["metrics.json", "plots/metrics/learning_rate.tsv",
                                     "plots/metrics/tokens_seen.tsv", "plots/metrics/train_loss.tsv",
                                     "plots/metrics/val_loss.tsv"]


def test_the_final_files_hold_no_timestamps_and_repeat_byte_for_byte(tmp_path):
    first = uninterrupted(tmp_path / "a")
    assert first == uninterrupted(tmp_path / "b")
    for name, content in first.items():
        if name.endswith(".tsv"):
            assert content.decode().splitlines()[0] == f"step\t{Path(name).stem}"
    assert first["metrics.json"] == (json.dumps({**SUMMARY, "step": 10}, indent=4) + "\n").encode()


@pytest.mark.parametrize("saved", [1, 4, 8, 10])
def test_a_resumed_run_ends_with_the_same_bytes(tmp_path, saved):
    reference = uninterrupted(tmp_path / "reference")
    folder = tmp_path / "metrics/train"
    # A killed run logged two steps past its last saved state: those rows must not stay twice.
    with pytest.raises(KeyboardInterrupt), RunLog(folder, []) as log:
        for row in rows()[: saved + 2]:
            log.log(row)
        shutil.copytree(folder, tmp_path / "left-behind")
        raise KeyboardInterrupt
    shutil.copytree(tmp_path / "left-behind", folder)
    with RunLog(folder, rows()[:saved]) as log:
        assert [s for s, _ in curve(folder, "train_loss")[1:]] == [str(s) for s in range(1, saved + 1)]
        for row in rows()[saved:]:
            log.log(row)
        log.finish(SUMMARY)
    assert files(folder) == reference


def test_a_run_that_stops_leaves_no_half_written_metrics(tmp_path):
    folder = tmp_path / "metrics/train"
    with pytest.raises(RuntimeError), RunLog(folder, rows()[:3]) as log:
        log.log(rows()[3])
        assert folder.exists()
        raise RuntimeError("the loss became nan")
    assert not folder.exists()


def test_other_ranks_write_nothing(tmp_path):
    with RunLog(None, rows()[:3]) as log:
        log.log(rows()[3])
        log.finish(SUMMARY)
    assert list(tmp_path.iterdir()) == []
