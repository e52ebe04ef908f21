"""A model folder that is not one, or whose config.json is damaged, is refused in one line."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scratchgpt.encodings import train_bpe
from scratchgpt.saved_model import load_model, save_model
from scratchgpt.errors import ScratchGPTError
from scratchgpt.model import GPT

TINY = {"num_heads": 2, "vocab_size": 300, "embed_dim": 16, "attention_dim": 16, "num_blocks": 1,
        "context_length": 8, "dropout_rate": 0.0}
TEXT = [f"review {i}: the film was {word}, the actors were {word} and the plot {i % 7}" for i, word in
        enumerate(["good", "bad", "long", "slow", "funny", "dark"] * 20)]


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "model"
    save_model(GPT(**TINY), train_bpe(TEXT, 300), folder)
    return folder


def test_a_saved_model_loads_with_its_trained_tokenizer(model_folder):
    model, encoding = load_model(model_folder)
    trained = train_bpe(TEXT, 300)
    assert model.config.vocab_size == encoding.n_vocab == 300 and encoding.name == trained.name
    assert encoding.encode(TEXT[3]) == trained.encode(TEXT[3]) and encoding.decode(encoding.encode(TEXT[3])) == TEXT[3]


@pytest.mark.parametrize("damage", ["truncated", "edited-token", "missing"])
def test_a_damaged_trained_tokenizer_is_refused(model_folder, damage):
    ranks = model_folder / "tokenizer.tiktoken"
    lines = ranks.read_bytes().splitlines(keepends=True)
    if damage == "truncated":
        ranks.write_bytes(b"".join(lines[:-5]))  # read as a smaller vocabulary, it would shift no id: refused
    elif damage == "edited-token":  # another token's bytes under the last rank
        ranks.write_bytes(b"".join(lines[:-1]) + base64.b64encode(b"zzqx") + b" " + lines[-1].split()[1] + b"\n")
    else:
        ranks.unlink()
    with pytest.raises(ScratchGPTError, match="tokenizer") as error:
        load_model(model_folder)
    assert "\n" not in str(error.value)


def damage_config(folder: Path, change) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    path.write_text(change(config) if callable(change) else change)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: json.dumps({**c, "model": {**c["model"], "vocab_size": 2**62}}), "vocab_size"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "num_heads": 3}}), "num_heads"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "surprise": 1}}), "surprise"),
        (lambda c: json.dumps({"model": c["model"]}), "tokenizer"),
        ("{not json", "not a valid scratchgpt model config"),
        (b"\xff\xfe".decode("latin-1"), "not a valid scratchgpt model config"),
    ],
    ids=["huge-vocab", "heads-do-not-divide", "unknown-key", "no-tokenizer", "not-json", "not-utf8"],
)
def test_damaged_config_is_refused_in_one_line(model_folder, change, message):
    damage_config(model_folder, change)
    with pytest.raises(ScratchGPTError, match=message) as error:
        load_model(model_folder)
    assert "config.json" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_model_path_that_is_not_a_folder_is_refused(tmp_path, kind):
    path = tmp_path / "model.safetensors"
    if kind == "file":
        path.write_bytes(b"weights")
    with pytest.raises(ScratchGPTError, match="a model folder holds config.json") as error:
        load_model(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: {**c, "notes": "x"}, "notes"),
        (lambda c: {**c, "model": {**c["model"], "num_head": 2}}, "model.num_head"),
        (lambda c: {**c, "tokenizer": {**c["tokenizer"], "merges": []}}, "tokenizer.merges"),
    ],
    ids=["top-level", "model", "tokenizer"],
)
def test_config_with_an_unknown_key_is_refused_naming_it(model_folder, change, key):
    damage_config(model_folder, lambda c: json.dumps(change(c)))
    with pytest.raises(ScratchGPTError) as error:
        load_model(model_folder)
    assert f"config.json: {key}: unknown key (known: " in str(error.value) and "\n" not in str(error.value)


def test_weights_that_do_not_fit_the_config_name_the_tensors_and_shapes(model_folder):
    damage_config(model_folder, lambda c: json.dumps({**c, "model": {**c["model"], "context_length": 4}}))
    with pytest.raises(ScratchGPTError) as error:
        load_model(model_folder)
    message = str(error.value)
    assert message.endswith("weights do not fit " + str(model_folder / "config.json")
                            + ": position_embedding.weight is (8, 16), the config makes (4, 16)"), message


def test_a_modern_block_round_trips_and_saves_no_more_tensors_than_it_learns(tmp_path):
    import torch
    from safetensors.torch import load_file

    from conftest import MODERN_BLOCK

    model = GPT(**TINY, **MODERN_BLOCK).eval()
    save_model(model, train_bpe(TEXT, 300), tmp_path / "model")
    assert json.loads((tmp_path / "model/config.json").read_text())["model"].items() >= MODERN_BLOCK.items()
    assert set(load_file(tmp_path / "model/model.safetensors")) == {name for name, _ in model.named_parameters()}
    loaded, _ = load_model(tmp_path / "model")
    tokens = torch.randint(0, 300, (1, 8))
    assert loaded.config == model.config and torch.equal(loaded(tokens), model(tokens))


def test_a_config_from_before_the_modern_block_loads_as_the_articles_block(model_folder):
    import dataclasses

    from scratchgpt.model import GPTConfig

    new_keys = ("position_encoding", "norm", "qk_norm", "bias", "zero_init_projections", "logit_softcap")
    damage_config(model_folder, lambda c: json.dumps(
        {**c, "model": {key: value for key, value in c["model"].items() if key not in new_keys}}))
    model, _ = load_model(model_folder)
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name in new_keys}
    assert {key: getattr(model.config, key) for key in new_keys} == defaults
    assert defaults == {"position_encoding": "learned", "norm": "layernorm", "qk_norm": False, "bias": True,
                        "zero_init_projections": False, "logit_softcap": None}
