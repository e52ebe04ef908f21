"""Every bad value in params.yaml is refused before work starts, in one line naming the key."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, merge
from scratchgpt import params
from scratchgpt.params import ParamsError, load_sections

ALL = list(params.SECTIONS)


def write(tmp_path, overrides: dict) -> str:
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_project_params_are_valid():
    loaded = load_sections(ALL, ROOT / "params.yaml")
    assert loaded.train.peak_lr == 2.0e-3 and loaded.model.num_heads == 6
    assert loaded.sample.prompts[0] == "I want something"
    assert list(loaded.datasets) == ["coldplay", "nirvana"] and loaded.datasets["nirvana"].val_fraction == 0.5


def test_yaml_1_2_floats_are_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("max_lr: null", "max_lr: 1e-4"))
    assert load_sections(["train"], path).train.max_lr == 1e-4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train": {"max_lr": -1.0}}, r"train.max_lr = -1.0: must be > 0"),
        ({"train": {"learning_rate": 0}}, r"train.learning_rate = 0: must be > 0"),
        ({"train": {"max_lr": "fast"}}, r"train.max_lr = 'fast': must be a number"),
        ({"train": {"batch_size": 0}}, r"train.batch_size = 0: must be > 0"),
        ({"train": {"batch_size": 2.5}}, r"train.batch_size = 2.5: must be a whole number"),
        ({"train": {"num_epochs": -3}}, r"train.num_epochs = -3: must be > 0"),
        ({"train": {"max_lr": 3.0e-4, "min_lr": 1.0e-3}}, r"train.min_lr = 0.001: must be <= train.max_lr = 0.0003"),
        ({"train": {"warmup_steps": 500, "max_steps": 100}}, r"train.warmup_steps = 500: must be shorter"),
        ({"train": {"max_lrr": 1.0}}, r"train.max_lrr: unknown key; did you mean train.max_lr\?"),
        ({"train": {"device": "tpu"}}, r"train.device = 'tpu': must be one of auto, cpu, cuda, mps"),
        ({"train": {"compile": "yes"}}, r"train.compile = 'yes': must be true or false"),
        ({"finetune": {"weight_decay": -0.1}}, r"finetune.weight_decay = -0.1: must be >= 0"),
        ({"model": {"num_heads": 5}}, r"model.num_heads = 5: must divide model.attention_dim = 192"),
        ({"model": {"dropout_rate": 1.0}}, r"model.dropout_rate = 1.0: must be in \[0, 1\)"),
        ({"model": {"context_length": 0}}, r"model.context_length = 0: must be > 0"),
        ({"clean": {"val_fraction": 0.0}}, r"clean.val_fraction = 0.0: must be in \(0, 1\)"),
        ({"data": {"imdb": {"source": ""}}}, r"data.imdb.source = '': must not be empty"),
        ({"datasets": {"coldplay": {"max_docs": 0}}}, r"datasets.coldplay.max_docs = 0: must be > 0"),
        ({"datasets": {"nirvana": {"val_fraction": 1.0}}}, r"datasets.nirvana.val_fraction = 1.0: must be in \(0, 1\)"),
        ({"datasets": {"nirvana": {"split_seed": -1}}}, r"datasets.nirvana.split_seed = -1: must be from 0 to"),
        ({"datasets": {"nirvana": {"val_fraktion": 0.5}}}, r"datasets.nirvana.val_fraktion: unknown key; did you mean"),
        ({"datasets": {"beatles": "beatles.txt"}}, r"datasets.beatles = 'beatles.txt': must be a mapping of keys"),
        ({"tokenize": {"shard_tokens": -1}}, r"tokenize.shard_tokens = -1: must be > 0"),
        ({"sample": {"top_p": 1.5}}, r"sample.top_p = 1.5: must be in \(0, 1\]"),
        ({"sample": {"top_p": 0.0}}, r"sample.top_p = 0.0: must be in \(0, 1\]"),
        ({"sample": {"prompts": []}}, r"sample.prompts = \[\]: must not be empty"),
        ({"sample": {"prompts": ["ok", 7]}}, r"sample.prompts\[1\] = 7: must be a string"),
        ({"sample": {"temperature": -0.5}}, r"sample.temperature = -0.5: must be >= 0"),
        ({"sample": {"repetition_penalty": 0.0}}, r"sample.repetition_penalty = 0.0: must be > 0"),
        ({"sample": {"repetition_penalty": "high"}}, r"sample.repetition_penalty = 'high': must be a number"),
        ({"sample": {"min_p": 1.5}}, r"sample.min_p = 1.5: must be in \[0, 1\]"),
        ({"sample": {"min_p": -0.01}}, r"sample.min_p = -0.01: must be in \[0, 1\]"),
        ({"sample": {"quantize": "int4"}}, r"sample.quantize = 'int4': must be one of none, int8"),
        ({"sample": {"quantize": None}}, r"sample.quantize = None: must be one of none, int8"),
        ({"sample": {"stop_at_end_of_text": "no"}}, r"sample.stop_at_end_of_text = 'no': must be true or false"),
        ({"sample": {"stop_at_end_of_text": None}}, r"sample.stop_at_end_of_text = None: must be true or false"),
        ({"evaluate": {"max_tokens": 0}}, r"evaluate.max_tokens = 0: must be > 0"),
        ({"evaluate": {"num_threads": 0}}, r"evaluate.num_threads = 0: must be > 0"),
        ({"sample": {"max_new_tokens": 100_000}}, r"sample.max_new_tokens = 100000: must be from 1 to 4,096: past"),
        ({"trian": {"max_lr": 1.0}}, r"trian: unknown section; did you mean train\?"),
        ({"train": {"seed": 2**64}}, r"train.seed = 18446744073709551616: must be from 0 to"),
        ({"finetune": {"seed": -1}}, r"finetune.seed = -1: must be from 0 to"),
        ({"sample": {"seed": 2**63}}, r"sample.seed = 9223372036854775808: must be from 0 to"),
        ({"sample": {"temperature": float("inf")}}, r"sample.temperature = inf: must be a finite number"),
        ({"sample": {"temperature": float("nan")}}, r"sample.temperature = nan: must be a finite number"),
        ({"train": {"max_lr": float("inf")}}, r"train.max_lr = inf: must be a finite number"),
        ({"train": {"beta1": 1.0}}, r"train.beta1 = 1.0: must be in \[0, 1\)"),
        ({"finetune": {"beta2": -0.1}}, r"finetune.beta2 = -0.1: must be in \[0, 1\)"),
        ({"model": {"tie_embeddings": "yes"}}, r"model.tie_embeddings = 'yes': must be true or false"),
        ({"model": {"logit_softcap": 0.0}}, r"model.logit_softcap = 0.0: must be > 0"),
        ({"model": {"logit_softcap": -15.0}}, r"model.logit_softcap = -15.0: must be > 0"),
        ({"model": {"norm": "batchnorm"}}, r"model.norm = 'batchnorm': must be one of layernorm, rmsnorm"),
        ({"model": {"position_encoding": "alibi"}}, r"model.position_encoding = 'alibi': must be one of learned, rope"),
        ({"model": {"activation": "swiglu"}}, r"model.activation = 'swiglu': must be one of gelu, gelu_tanh, relu2"),
        ({"model": {"qk_norm": "yes"}}, r"model.qk_norm = 'yes': must be true or false"),
        ({"model": {"position_encoding": "rope", "num_heads": 64}},
         r"model.position_encoding = 'rope': needs an even head size, not model.attention_dim / num_heads = 3"),
        ({"train": {"max_lr": None, "learning_rate": 1.0e-5, "min_lr": 1.0e-4}},
         r"train.min_lr = 0.0001: must be <= train.learning_rate = 1e-05"),
        ({"train": {"processes": 3, "batch_size": 4}},
         r"train.batch_size = 4: must split evenly over train.processes = 3"),
    ],
)
def test_bad_values_are_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(ParamsError, match=message) as error:
        load_sections(ALL, write(tmp_path, overrides))
    assert "\n" not in str(error.value)


def test_missing_key_is_refused(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["train"]["patience"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="train.patience: missing"):
        load_sections(["train"], path)


def test_a_dataset_stage_gets_only_its_own_dataset(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    loaded = params.load("prepare", item="nirvana")
    assert loaded.datasets.source == "huggingartists/nirvana" and loaded.tokenize.encoding == "gpt2"
    with pytest.raises(ParamsError, match=r"datasets.beatles: missing \(known: coldplay, nirvana\)"):
        params.load("prepare", item="beatles")


def test_a_stage_gets_only_the_sections_it_declares(monkeypatch):
    monkeypatch.chdir(ROOT)
    loaded = params.load("tokenize")
    assert loaded.tokenize.encoding == "gpt2"
    with pytest.raises(AttributeError):
        loaded.train  # noqa: B018 - an undeclared section is not there to read


def test_the_model_section_offers_exactly_the_models_options(tmp_path):
    """params.yaml's `model` keys are GPTConfig's (but the tokenizer's vocab_size), with the same
    choices; the modern block's values build a model."""
    import dataclasses
    import typing

    from conftest import MODERN_BLOCK
    from scratchgpt import model

    assert [f.name for f in dataclasses.fields(params.ModelParams)] == [
        f.name for f in dataclasses.fields(model.GPTConfig) if f.name != "vocab_size"]
    assert typing.get_args(params.Activation) == tuple(model.ACTIVATIONS)
    assert typing.get_args(params.Norm) == tuple(model.NORMS)
    assert typing.get_args(params.PositionEncoding) == model.POSITION_ENCODINGS
    modern = load_sections(["model"], write(tmp_path, {"model": MODERN_BLOCK})).model
    config = model.GPTConfig(vocab_size=100, **dataclasses.asdict(modern))
    assert {key: getattr(config, key) for key in MODERN_BLOCK} == MODERN_BLOCK


def test_the_defaults_are_the_modern_block_without_the_cap_and_the_recipes_line_restores_the_articles():
    from conftest import ARTICLE_BLOCK, MODERN_BLOCK

    model = yaml.safe_load((ROOT / "params.yaml").read_text())["model"]
    assert {key: model[key] for key in MODERN_BLOCK} == MODERN_BLOCK | {"logit_softcap": None}
    section = (ROOT / "docs/recipe.md").read_text().split("## The modern block")[1].split("\n## ")[0]
    (line,) = [line for line in section.splitlines() if line.startswith("dvc exp run -S model.")]
    settings = dict(flag.split("=", 1) for flag in line.split(" -S ")[1:])
    restored = {key.removeprefix("model."): yaml.safe_load(value) for key, value in settings.items()}
    assert model | restored == model | ARTICLE_BLOCK  # every other part back, the cap already off
