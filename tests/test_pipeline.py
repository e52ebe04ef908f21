"""dvc.yaml tells the truth about each stage, and the pipeline runs end to end on real data."""

from __future__ import annotations

import ast
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import DVC, ROOT, run
from scratchgpt.params import SECTIONS

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
DATASET_STAGES = ["prepare", "finetune", "evaluate_finetuned", "sample"]
DATASETS = ["coldplay", "nirvana"]  # the tiny project's, as params.yaml's


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
    stage = PIPELINE[name].get("do", PIPELINE[name])  # a foreach stage declares in its `do`
    assert stage["cmd"].startswith(f"python -m stages.{name} ")
    script, package = ROOT / "stages" / f"{name}.py", ROOT / "stages" / "__init__.py"  # Python runs both
    expected = {f"stages/{name}.py", "stages/__init__.py"} | {
        f"src/{module.replace('.', '/')}.py" for module in imported_modules(script) | imported_modules(package)
    }
    code_deps = {d for d in stage["deps"] if d.startswith(("src/", "stages/"))}
    assert code_deps == expected


@pytest.mark.parametrize("name", list(PIPELINE))
def test_stage_params_are_whole_known_sections_or_its_own_dataset(name):
    stage = PIPELINE[name].get("do", PIPELINE[name])
    own = ["datasets.${key}"] if "foreach" in PIPELINE[name] else []
    assert all(section in SECTIONS or section in own for section in stage.get("params", []))


def test_every_dataset_stage_runs_once_per_dataset():
    per_dataset = [name for name, stage in PIPELINE.items() if "foreach" in stage]
    assert per_dataset == ["prepare", "finetune", "evaluate_finetuned", "sample"]
    assert all(PIPELINE[name]["foreach"] == "${datasets}" for name in per_dataset)


@pytest.mark.e2e
def test_data_stages_end_to_end_and_byte_identical(project):
    run([*DVC, "repro", "tokenize"], project)
    meta = yaml.safe_load((project / "data/tokens/imdb/meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] > 10_000 and meta["splits"]["test"]["documents"] == 40
    assert len(meta["splits"]["train"]["shards"]) > 1  # tiny shard size: several files
    first = lock_hashes(project)
    assert set(first) == {"data/raw", "data/clean", "data/tokens"}
    run([*DVC, "repro", "--force", "tokenize"], project)
    assert lock_hashes(project) == first


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def run_dvc(repo: Path, *args: str) -> str:
    return run([*DVC, *args], repo).stdout


@pytest.mark.e2e
def test_the_experiment_workflow(project):
    # dvc repro builds everything; a second one has nothing to do.
    ran = ran_stages(run_dvc(project, "repro"))
    assert ran[:5] == ["download", "clean", "tokenize", "pretrain", "evaluate"]
    assert sorted(ran[5:]) == sorted(f"{stage}@{dataset}" for stage in DATASET_STAGES for dataset in DATASETS)
    assert "Data and pipelines are up to date" in run_dvc(project, "repro")
    for dataset in DATASETS:
        for path in (f"metrics/evaluate/{dataset}.json", f"metrics/samples/{dataset}.md",
                     f"metrics/finetune/{dataset}/plots/metrics/val_loss.tsv",
                     f"models/finetuned/{dataset}/model.safetensors", "metrics/evaluate.json"):
            assert (project / path).exists(), path
        assert f"fine-tuned ({dataset})" in (project / f"metrics/samples/{dataset}.md").read_text()
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "reference run"], project)

    # Fine-tuning starts from the pretrained weights: a few tiny steps move them only slightly.
    before = load_file(project / "models/pretrained/model.safetensors")
    after = load_file(project / "models/finetuned/coldplay/model.safetensors")
    drift = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0 < drift < 1e-2  # AdamW moves a weight by about the learning rate a step: 4 steps, peak 1e-3

    # A learning-rate experiment re-runs training and what follows, never the data stages.
    output = run_dvc(project, "exp", "run", "-S", "train.max_lr=1e-4")
    assert sorted(ran_stages(output)) == sorted(
        ["pretrain", "evaluate"] + [f"{stage}@{dataset}" for stage in DATASET_STAGES[1:] for dataset in DATASETS])
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["max_lr"] == 1e-4
    params_diff = run_dvc(project, "params", "diff", "--md")
    assert re.search(r"train.max_lr +\| +- +\| +0.0001", params_diff)  # null (the peak is learning_rate) to 1e-4
    metrics_diff = run_dvc(project, "metrics", "diff", "--md")
    assert "metrics/train/metrics.json" in metrics_diff and "best_val_loss" in metrics_diff
    assert "finetuned.imdb_test.bits_per_byte" in metrics_diff and "pretrained.imdb_test.bits_per_byte" in metrics_diff
    for dataset in DATASETS:  # each dataset's figures by name
        assert f"metrics/evaluate/{dataset}.json" in metrics_diff and f"metrics/finetune/{dataset}/metrics.json" in metrics_diff

    # A change to one dataset re-runs only that dataset's stages.
    output = run_dvc(project, "exp", "run", "-S", "datasets.nirvana.max_docs=20")
    assert sorted(ran_stages(output)) == sorted(f"{stage}@nirvana" for stage in DATASET_STAGES)

    # A sampling experiment re-runs only the sample stage.
    output = run_dvc(project, "exp", "run", "-S", "sample.temperature=0.5")
    assert sorted(ran_stages(output)) == ["sample@coldplay", "sample@nirvana"]
    assert "temperature 0.5" in (project / "metrics/samples/coldplay.md").read_text()
    shown = run_dvc(project, "exp", "show", "--md")
    assert shown.count("[") >= 2  # both experiments listed by name

    run_dvc(project, "plots", "show", "-o", "dvc_plots")
    page = (project / "dvc_plots/index.html").read_text()
    assert "Pretraining loss (IMDb)" in page and "Learning rate" in page

    # Queued experiments run when the queue starts.
    for lr in ("2.0e-4", "5.0e-4"):
        run_dvc(project, "exp", "run", "--queue", "-S", f"train.max_lr={lr}")
    run_dvc(project, "queue", "start")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = run_dvc(project, "queue", "status")
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        assert status.count("Success") == 2, status
    finally:
        run([*DVC, "queue", "stop", "--kill"], project, check=False)


def lock_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


@pytest.mark.e2e
def test_two_runs_from_scratch_give_the_same_bytes(project):
    run_dvc(project, "repro")
    first = lock_hashes(project)
    assert len(first) == 7 + 6 * len(DATASETS)  # every output, metrics and plots included
    for path in ("data", "models", "metrics", ".dvc/cache"):
        shutil.rmtree(project / path, ignore_errors=True)
    run_dvc(project, "repro", "--force", "--no-run-cache")
    assert lock_hashes(project) == first


@pytest.mark.e2e
def test_a_trained_tokenizer_and_muon_end_to_end(project):
    """`tokenize.vocab_size` trains a BPE that every model folder carries; Muon trains both
    stages; every score is in bits per byte; the CLI needs nothing but the model folder."""
    import json
    import sys

    from conftest import tiny_params

    params = tiny_params(tokenize={"vocab_size": 400}, train={"optimizer": "muon"}, finetune={"optimizer": "muon"})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "repro"], project)
    meta = json.loads((project / "data/tokens/imdb/meta.json").read_text())
    assert re.fullmatch(r"bpe400-[0-9a-f]{12}", meta["encoding"]) and meta["vocab_size"] == 400
    for name in ("tokenizer.tiktoken", "tokenizer.json"):
        for model in ("pretrained", "finetuned/coldplay", "finetuned/nirvana"):
            assert (project / "models" / model / name).read_bytes() == (project / "data/tokens" / name).read_bytes()
    for metrics_dir in ("train", "finetune/coldplay", "finetune/nirvana"):
        metrics = json.loads((project / f"metrics/{metrics_dir}/metrics.json").read_text())
        assert 0 < metrics["best_val_bpb"] < 20
        assert (project / f"metrics/{metrics_dir}/plots/metrics/val_bpb.tsv").exists()
    scores = json.loads((project / "metrics/evaluate/coldplay.json").read_text())
    assert list(scores["finetuned"]["val"])[0] == "bits_per_byte"
    generated = run([sys.executable, "-c", "from scratchgpt.cli import main; main()", "generate", "--model",
                     "models/finetuned/coldplay", "--max-new-tokens", "5", "--seed", "1", "Lights go out"], project)
    assert generated.stdout.startswith("Lights go out") and len(generated.stdout) > len("Lights go out\n")


@pytest.mark.e2e
def test_the_modern_block_end_to_end(project):
    """Every part of the modern block on, and Muon: the tiny pipeline trains, fine-tunes, evaluates
    and samples, and `scratchgpt explore` traces and scores text with the models it made."""
    import json

    from conftest import MODERN_BLOCK, tiny_params
    from scratchgpt.explore.server import Explorer, load

    params = tiny_params(model=MODERN_BLOCK, train={"optimizer": "muon"}, finetune={"optimizer": "muon"})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "repro"], project)
    config = json.loads((project / "models/pretrained/config.json").read_text())["model"]
    assert config.items() >= MODERN_BLOCK.items()
    saved = load_file(project / "models/finetuned/coldplay/model.safetensors")
    assert not any("position" in name or "bias" in name for name in saved)
    scores = json.loads((project / "metrics/evaluate/coldplay.json").read_text())
    assert 0 < scores["finetuned"]["val"]["bits_per_byte"] < 20
    assert "I want something" in (project / "metrics/samples/coldplay.md").read_text()
    explorer = Explorer(load(project / "models/finetuned/coldplay", "cpu"), load(project / "models/pretrained", "cpu"))
    form = {"prompt": "Lights go out", "temperature": "0.8", "top_k": "50", "top_p": "0.95",
            "repetition_penalty": "1.0", "min_p": "0.0", "max_new_tokens": "6", "seed": "1", "stop_at_end_of_text": "false"}
    events = list(explorer.events(explorer.parse(form)))
    assert [event["type"] for event in events] == ["start"] + ["token"] * 6 + ["compare", "end"]
    compared = events[-2]["tokens"]
    assert len(compared) == len(events[0]["tokens"]) + 6
    assert all(0 < token["probability"] <= 1 for token in compared[1:])
