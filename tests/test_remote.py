"""Shared artifacts: a clone restores every output from a DVC remote without running a stage."""

from __future__ import annotations

import pytest
import yaml

from conftest import DVC, run
from test_pipeline import ran_stages


@pytest.mark.e2e
def test_fresh_clone_pulls_instead_of_recomputing(project, tmp_path):
    run([*DVC, "remote", "add", "-d", "shared", str(tmp_path / "remote")], project)
    run([*DVC, "repro"], project)
    run([*DVC, "push", "--run-cache"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "pipeline run"], project)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    # Nothing changed since the push: CI checks the whole pipeline and computes nothing.
    output = run([*DVC, "repro", "--pull", "--allow-missing"], clone).stdout
    assert ran_stages(output) == []

    # A changed param re-runs its stage on pulled inputs, not the stages before it.
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["sample"]["max_new_tokens"] = 3
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert sorted(ran_stages(run([*DVC, "repro", "--pull", "--allow-missing"], clone).stdout)) == [
        "sample@coldplay", "sample@nirvana"]

    # `dvc pull` brings every output, the models included, byte for byte.
    other = tmp_path / "other"
    run(["git", "clone", "-q", str(project), str(other)], tmp_path)
    run([*DVC, "pull"], other)
    assert "Data and pipelines are up to date" in run([*DVC, "status"], other).stdout
    assert (other / "models/finetuned/coldplay/model.safetensors").read_bytes() == (
        project / "models/finetuned/coldplay/model.safetensors"
    ).read_bytes()
