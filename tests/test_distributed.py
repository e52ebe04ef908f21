"""Two processes (gloo on CPU) train like one at the same global batch."""

from __future__ import annotations

import csv

import pytest
import yaml

from conftest import DVC, run, tiny_params

NO_DROPOUT = {"model": {"dropout_rate": 0.0}, "train": {"batch_size": 4, "max_steps": 6, "num_threads": 1}}


def losses(repo, name: str) -> list[float]:
    with open(repo / f"metrics/train/plots/metrics/{name}.tsv") as f:
        return [float(row[name]) for row in csv.DictReader(f, delimiter="\t")]


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_two_processes_match_one(project, optimizer):
    results = {}
    for processes in (1, 2):
        config = tiny_params(**{**NO_DROPOUT, "train": {**NO_DROPOUT["train"], "processes": processes, "optimizer": optimizer}})
        (project / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        run([*DVC, "repro", "pretrain"], project)
        results[processes] = {name: losses(project, name) for name in ("train_loss", "val_loss")}
    assert len(results[2]["train_loss"]) == 6
    for name in ("train_loss", "val_loss"):
        assert results[2][name] == pytest.approx(results[1][name], rel=1e-4)
