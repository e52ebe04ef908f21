"""Stages refuse bad inputs with one line naming the file or key, a non-zero exit, and no output."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from conftest import DVC, run, tiny_params


def stage(repo, name: str, *args: str):
    return run([sys.executable, "-m", f"stages.{name}", *args], repo, check=False)


def refused(result, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.e2e
def test_stages_refuse_bad_inputs(project, tmp_path):
    run([*DVC, "repro", "finetune"], project)
    params = tiny_params()

    def set_params(**overrides):
        (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(**overrides), sort_keys=False))

    # download: a missing source, and an empty one.
    set_params(data={"imdb": {"source": str(tmp_path / "nowhere")}})
    refused(stage(project, "download", "out"), "data.imdb.source", "no such file or folder")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n")
    set_params(data={"lyrics": {"source": str(empty)}})
    refused(stage(project, "download", "out"), "data.lyrics.source", "no documents")

    # clean: a corpus with nothing left after the ASCII-only rule.
    persian = tmp_path / "persian.txt"
    persian.write_text("بنی آدم اعضای یکدیگرند\n\n\nکه در آفرینش ز یک گوهرند\n")
    set_params(data={"lyrics": {"source": str(persian)}})
    assert stage(project, "download", "raw_persian").returncode == 0
    refused(stage(project, "clean", "raw_persian", "out"), "lyrics train split is empty after cleaning")

    # params: an unknown key, a typo'd value.
    set_params(train={"max_lrr": 1.0})
    refused(stage(project, "pretrain", "data/tokens", "out", "out_metrics"), "train.max_lrr", "did you mean train.max_lr")
    set_params(sample={"top_p": 1.5})
    refused(stage(project, "sample", "models/pretrained", "models/finetuned", "out.md"), "sample.top_p")

    # sample: a prompt longer than the model's context.
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    set_params(sample={"prompts": ["word " * 100]})
    refused(stage(project, "sample", "models/pretrained", "models/finetuned", "out.md"),
            "sample.prompts[0]", "a prompt needs 1 to 32")

    # finetune and evaluate: model folders with missing or corrupted weights.
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text((project / "models/pretrained/config.json").read_text())
    refused(stage(project, "finetune", str(broken), "data/tokens", "out", "out_metrics"), "model.safetensors: not found")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    refused(stage(project, "evaluate", str(broken), "models/finetuned", "data/tokens", "out.json"), "corrupted")

    # evaluate: shards from another encoding than the model's; pretrain: a truncated shard.
    meta_path = project / "data/tokens/lyrics/meta.json"
    original_meta = meta_path.read_text()
    meta_path.chmod(0o644)
    meta_path.write_text(json.dumps({**json.loads(original_meta), "encoding": "r50k_base"}))
    refused(stage(project, "evaluate", "models/pretrained", "models/finetuned", "data/tokens", "out.json"),
            "tokens are 'r50k_base'", "reads 'gpt2'")
    meta_path.write_text(original_meta)
    shard = project / "data/tokens/imdb" / json.loads((project / "data/tokens/imdb/meta.json").read_text())["splits"]["train"]["shards"][0]
    shard.chmod(0o644)
    shard.write_bytes(shard.read_bytes()[:-10])
    refused(stage(project, "pretrain", "data/tokens", "out", "out_metrics"), "truncated or damaged shard")

    for name in ("out", "out.md", "out.json", "out_metrics"):
        assert not (project / name).exists(), name
