"""dvc.yaml tells the truth about each stage, and the pipeline runs end to end on real data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import DVC, ROOT, run
from scratchgpt.params import SECTIONS

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported_modules(path: Path) -> set[str]:
    """The scratchgpt modules `path` imports, directly or through other scratchgpt modules."""
    found: set[str] = set()
    pending = [path]
    while pending:
        tree = ast.parse(pending.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module == "scratchgpt":
                names = [f"scratchgpt.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scratchgpt."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("scratchgpt.")]
            for name in names:
                if name not in found:
                    found.add(name)
                    pending.append(ROOT / "src" / Path(*name.split(".")).with_suffix(".py"))
    return found


@pytest.mark.parametrize("name", list(PIPELINE))
def test_stage_deps_list_exactly_the_code_it_runs(name):
    stage = PIPELINE[name]
    assert stage["cmd"].startswith(f"python -m stages.{name} ")
    script = ROOT / "stages" / f"{name}.py"
    expected = {f"stages/{name}.py"} | {
        f"src/{module.replace('.', '/')}.py" for module in imported_modules(script)
    }
    code_deps = {d for d in stage["deps"] if d.startswith(("src/", "stages/"))}
    assert code_deps == expected


@pytest.mark.parametrize("name", list(PIPELINE))
def test_stage_params_are_whole_known_sections(name):
    assert all(section in SECTIONS for section in PIPELINE[name].get("params", []))


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


@pytest.mark.e2e
def test_data_stages_end_to_end_and_byte_identical(project):
    run([*DVC, "repro", "tokenize"], project)
    meta = yaml.safe_load((project / "data/tokens/imdb/meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] > 10_000 and meta["splits"]["test"]["documents"] == 40
    assert len(meta["splits"]["train"]["shards"]) > 1  # tiny shard size: several files
    first = lock_outs(project)
    assert set(first) == {"data/raw", "data/clean", "data/tokens"}
    run([*DVC, "repro", "--force", "tokenize"], project)
    assert lock_outs(project) == first
