"""The GitHub Actions workflow is well-formed and runs what the README promises."""

from __future__ import annotations

import re

import yaml

from conftest import ROOT

WORKFLOW = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())


def commands(job: str) -> str:
    return "\n".join(step.get("run", "") for step in WORKFLOW["jobs"][job]["steps"])


def test_runs_on_every_push_and_pull_request():
    triggers = WORKFLOW[True]  # PyYAML (YAML 1.1) reads the key `on` as true; GitHub reads it as 'on'
    assert set(triggers) == {"push", "pull_request"}


def test_every_job_and_step_is_well_formed():
    for name, job in WORKFLOW["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step  # each step does exactly one thing
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]
    assert WORKFLOW["jobs"]["reproduce"]["needs"] == "test"


def test_installs_and_tests_as_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.txt" in readme and "pytest" in readme
    test = commands("test")
    assert "pip install -r requirements.txt" in test and re.search(r"^pytest$", test, re.M)
    assert "dvc repro --dry --allow-missing" in test and "dvc status" in test


def test_reproduces_only_what_changed_and_reports_it():
    steps = WORKFLOW["jobs"]["reproduce"]["steps"]
    reproduce = commands("reproduce")
    assert "dvc repro --pull --allow-missing" in reproduce
    assert "dvc push --run-cache" in reproduce
    assert "dvc metrics diff --md" in reproduce and "dvc params diff --md" in reproduce
    gated = [s for s in steps if "dvc repro" in s.get("run", "") or "dvc push" in s.get("run", "")]
    assert all("steps.remote.outputs.configured == 'true'" in s["if"] for s in gated)


def test_the_pull_request_report_shows_the_curves_as_images():
    steps = WORKFLOW["jobs"]["reproduce"]["steps"]
    [report] = [s for s in steps if "dvc metrics diff --md" in s.get("run", "")]
    assert 'python scripts/plot_images.py --diff "$BASE"' in report["run"] and "![" in report["run"]
    [post] = [s for s in steps if "comment" in s.get("run", "")]
    assert "cml comment create --publish report.md" in post["run"]
    assert any(s.get("uses", "").startswith("iterative/setup-cml@") for s in steps)
    # Without a remote there is no run to report: every step past the check skips cleanly.
    after_check = steps[[s.get("id") for s in steps].index("remote") + 1:]
    assert after_check and all("steps.remote.outputs.configured == 'true'" in s["if"] for s in after_check)
