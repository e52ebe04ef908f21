"""Stages refuse bad inputs with one line naming the file or key, a non-zero exit, and no output.

One tiny pipeline is run once for the module; each case damages one thing, runs one stage,
and is undone afterwards, so one failing case does not hide the others.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors.torch import load_file, save_file

from conftest import DVC, make_project, run, tiny_params

OUTPUTS = ("out", "out.md", "out.json", "out_metrics")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("bad_input") / "repo")
    run([*DVC, "repro", "finetune@coldplay"], repo)
    return repo


@pytest.fixture
def project(trained, tmp_path):
    """The trained project; params.yaml and the token files a case damages are put back after."""
    kept = [trained / "params.yaml", trained / "data/finetune/coldplay/meta.json", *_shards(trained)]
    saved = {path: path.read_bytes() for path in kept}
    yield trained
    for path, content in saved.items():
        path.chmod(0o644)
        path.write_bytes(content)
    for name in OUTPUTS:
        assert not (trained / name).exists(), f"{name} was written"


def _shards(repo: Path) -> list[Path]:
    meta = json.loads((repo / "data/tokens/imdb/meta.json").read_text())
    return [repo / "data/tokens/imdb" / meta["splits"]["train"]["shards"][0]]


def stage(repo: Path, name: str, *args: str):
    return run([sys.executable, "-m", f"stages.{name}", *args], repo, check=False)


def sample(repo: Path) -> object:
    return stage(repo, "sample", "coldplay", "models/pretrained", "models/finetuned/coldplay", "out.md")


def evaluate_finetuned(repo: Path, finetuned: str, out: str) -> object:
    return stage(repo, "evaluate_finetuned", "models/pretrained", finetuned, "data/tokens", "data/finetune/coldplay", out)


def set_params(repo: Path, **overrides) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(**overrides), sort_keys=False))


def damage(path: Path, content: bytes) -> None:
    path.chmod(0o644)  # DVC leaves its outputs read-only
    path.write_bytes(content)


def missing_source(repo, tmp):
    set_params(repo, data={"imdb": {"source": str(tmp / "nowhere")}})
    return stage(repo, "download", "out"), ["data.imdb.source", "no such file or folder"]


def prepare(repo: Path) -> object:
    return stage(repo, "prepare", "coldplay", "data/tokens", "out")


def empty_lyrics(repo, tmp):
    (tmp / "empty.txt").write_text("\n\n\n")
    set_params(repo, datasets={"coldplay": {"source": str(tmp / "empty.txt")}})
    return prepare(repo), ["datasets.coldplay.source", "no documents"]


def latin1_lyrics(repo, tmp):
    (tmp / "latin1.txt").write_bytes("Caf\xe9 song".encode("latin-1"))
    set_params(repo, datasets={"coldplay": {"source": str(tmp / "latin1.txt")}})
    return prepare(repo), ["latin1.txt", "not UTF-8"]


def dataset_without_source(repo, tmp):
    params = tiny_params()
    del params["datasets"]["coldplay"]["source"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return prepare(repo), ["datasets.coldplay.source: missing"]


def dataset_not_a_mapping(repo, tmp):
    params = tiny_params()
    params["datasets"]["coldplay"] = "coldplay.txt"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return prepare(repo), ["datasets.coldplay = 'coldplay.txt': must be a mapping of keys"]


def dataset_not_in_params(repo, tmp):
    return stage(repo, "prepare", "beatles", "data/tokens", "out"), ["datasets.beatles: missing (known: coldplay, nirvana)"]


def folder_without_text(repo, tmp):
    (tmp / "songs").mkdir()
    (tmp / "songs/notes.md").write_text("not a .txt")
    set_params(repo, datasets={"coldplay": {"source": str(tmp / "songs")}})
    return prepare(repo), ["datasets.coldplay.source", "no 'train' split"]


def null_reviews(repo, tmp):
    folder = tmp / "imdb"
    folder.mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"text": ["Good.", None], "label": [1, 0]}), folder / f"{split}.parquet")
    set_params(repo, data={"imdb": {"source": str(folder)}})
    return (stage(repo, "download", "out"),
            ["train.parquet (data.imdb.source), split 'train', column 'text': 1 of 2 rows are not text (1 null)"])


def nothing_left_after_cleaning(repo, tmp):
    (tmp / "persian.txt").write_text("بنی آدم اعضای یکدیگرند\n\n\nکه در آفرینش ز یک گوهرند\n")
    set_params(repo, datasets={"coldplay": {"source": str(tmp / "persian.txt")}})
    return prepare(repo), ["the coldplay train split is empty (0 documents after cleaning)", "datasets.coldplay.val_fraction"]


def unknown_key(repo, tmp):
    set_params(repo, train={"max_lrr": 1.0})
    return stage(repo, "pretrain", "data/tokens", "out", "out_metrics"), ["train.max_lrr", "did you mean train.max_lr"]


def bad_top_p(repo, tmp):
    set_params(repo, sample={"top_p": 1.5})
    return sample(repo), ["sample.top_p"]


def infinite_temperature(repo, tmp):
    set_params(repo, sample={"temperature": float("inf")})
    return sample(repo), ["sample.temperature", "finite"]


def huge_seed(repo, tmp):
    set_params(repo, sample={"seed": 2**64})
    return sample(repo), ["sample.seed"]


def batch_that_does_not_split(repo, tmp):
    set_params(repo, train={"processes": 3})
    return (stage(repo, "pretrain", "data/tokens", "out", "out_metrics"),
            ["train.batch_size = 4", "must split evenly over train.processes = 3"])


def prompt_too_long(repo, tmp):
    set_params(repo, sample={"prompts": ["word " * 100]})
    return (sample(repo),
            ["sample.prompts[0]", "a prompt needs 1 to 32"])


def _broken_model(repo, tmp) -> Path:
    broken = tmp / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text((repo / "models/pretrained/config.json").read_text())
    return broken


def missing_weights(repo, tmp):
    broken = _broken_model(repo, tmp)
    return (stage(repo, "finetune", "coldplay", str(broken), "data/finetune/coldplay", "out", "out_metrics"),
            ["model.safetensors: not found"])


def corrupted_weights(repo, tmp):
    broken = _broken_model(repo, tmp)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    return stage(repo, "evaluate", str(broken), "data/tokens", "out.json"), ["corrupted"]


def model_is_a_file(repo, tmp):
    return (stage(repo, "evaluate", "models/pretrained/config.json", "data/tokens", "out.json"),
            ["config.json: not a folder"])


def tokens_of_another_encoding(repo, tmp):
    meta = repo / "data/finetune/coldplay/meta.json"
    damage(meta, json.dumps({**json.loads(meta.read_text()), "encoding": "r50k_base"}).encode())
    return (evaluate_finetuned(repo, "models/finetuned/coldplay", "out.json"),
            ["tokens are 'r50k_base'", "reads 'gpt2'"])


def truncated_shard(repo, tmp):
    [shard] = _shards(repo)
    damage(shard, shard.read_bytes()[:-10])
    return stage(repo, "pretrain", "data/tokens", "out", "out_metrics"), ["truncated or damaged shard"]


def unwritable_output(repo, tmp):
    (tmp / "a_file").write_text("in the way")
    return (stage(repo, "evaluate", "models/pretrained", "data/tokens", str(tmp / "a_file/out.json")),
            ["a_file/out.json: cannot write this output here"])


CASES = [missing_source, empty_lyrics, latin1_lyrics, dataset_without_source, dataset_not_a_mapping,
         dataset_not_in_params, folder_without_text, null_reviews, nothing_left_after_cleaning, unknown_key, bad_top_p,
         infinite_temperature, huge_seed, batch_that_does_not_split, prompt_too_long, missing_weights,
         corrupted_weights, model_is_a_file, tokens_of_another_encoding, truncated_shard, unwritable_output]


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_stage_refuses_bad_input(project, tmp_path, case):
    result, words = case(project, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.e2e
def test_evaluate_scores_a_diverged_model(project, tmp_path):
    diverged = tmp_path / "diverged"
    diverged.mkdir()
    (diverged / "config.json").write_text((project / "models/finetuned/coldplay/config.json").read_text())
    weights = load_file(project / "models/finetuned/coldplay/model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] * 1e5  # logits far apart: a loss in the thousands
    save_file(weights, diverged / "model.safetensors")
    result = evaluate_finetuned(project, str(diverged), str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert "too large for a perplexity" in result.stderr
    scores = json.loads((tmp_path / "e.json").read_text())["finetuned"]
    assert scores["imdb_test"]["loss"] > 1000 and scores["imdb_test"]["perplexity"] == float("inf")
