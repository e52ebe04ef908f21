"""GPT-2's layout both ways: an exported model reads in transformers with the same logits and token
ids, and GPT-2-format weights load into the article's GPT with transformers' logits. Nothing is
trained and nothing downloaded: the models are random, the GPT-2 is a tiny one built here."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import logit_gap, randomize, requires_shared_data, token_batch
from scratchgpt.cli import main
from scratchgpt.encodings import END_OF_TEXT, get_encoding
from scratchgpt.errors import ScratchGPTError
from scratchgpt.export import export
from scratchgpt.gpt2_weights import gpt2_config, load_gpt2, require_gpt2_tokens
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.params import ModelParams
from scratchgpt.saved_model import save_model
from scratchgpt.tokens import TokenShards

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-3  # max abs logit difference in fp32; the logits themselves span several units


def export_random(tmp_path: Path, encoding, seed: int, **settings) -> tuple[GPT, Path]:
    config = GPTConfig(vocab_size=encoding.n_vocab, num_heads=2, embed_dim=32, attention_dim=32, num_blocks=2,
                       context_length=64, dropout_rate=0.1, **settings)
    model = randomize(GPT(config), seed)
    save_model(model, encoding, tmp_path / "model")
    export(tmp_path / "model", tmp_path / "hf")
    return model, tmp_path / "hf"


EXPORTS = {  # the project's trained BPE and the article's block; GPT-2's encoding and GPT-2's block
    "trained-bpe": dict(tie_embeddings=False, activation="gelu", qkv_bias=False),
    "gpt2": dict(tie_embeddings=True, activation="gelu_tanh", qkv_bias=True),
}


@pytest.mark.parametrize("kind", EXPORTS)
def test_an_exported_model_gives_transformers_the_same_logits(tmp_path, texts, trained, kind):
    encoding = trained if kind == "trained-bpe" else get_encoding("gpt2")
    model, out = export_random(tmp_path, encoding, seed=1, **EXPORTS[kind])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config.vocab_size == encoding.n_vocab < model.config.padded_vocab_size
    assert hf.config.tie_word_embeddings == model.config.tie_embeddings
    assert load_file(out / "model.safetensors").keys().isdisjoint({"lm_head.weight"}) == model.config.tie_embeddings
    assert logit_gap(model, hf, encoding, texts) < TOLERANCE


@pytest.mark.parametrize("kind", EXPORTS)
def test_an_exported_tokenizer_gives_the_same_ids(tmp_path, texts, trained, kind):
    encoding = trained if kind == "trained-bpe" else get_encoding("gpt2")
    _, out = export_random(tmp_path, encoding, seed=2, **EXPORTS[kind])
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == encoding.eot_token
    assert tokenizer.model_max_length == 64
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    for name, documents in texts.items():
        for text in documents:
            ids = encoding.encode(text, allowed_special={END_OF_TEXT})  # as text_to_token_ids reads a prompt
            assert tokenizer.encode(text) == ids, (name, text[:80])
            assert tokenizer.decode(ids) == text
    # The token shards' layout: each document's ordinary ids, then end-of-text.
    documents = texts["clean"][:20]
    shard = [id for text in documents for id in (*encoding.encode_ordinary(text), encoding.eot_token)]
    assert tokenizer.encode("".join(text + END_OF_TEXT for text in documents)) == shard


def test_export_refuses_an_existing_folder_writing_nothing(tmp_path, trained, capsys):
    save_model(GPT(vocab_size=trained.n_vocab, num_heads=2, embed_dim=32, attention_dim=32, num_blocks=1,
                   context_length=16), trained, tmp_path / "model")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit:
        main(["export", "--model", str(tmp_path / "model"), str(tmp_path / "hf")])
    error = capsys.readouterr().err
    assert exit.value.code == 1 and error.count("\n") == 1
    assert error.startswith(f"error: {tmp_path / 'hf'}: already exists")
    assert [p.name for p in (tmp_path / "hf").iterdir()] == ["notes.txt"] and len(list(tmp_path.iterdir())) == 2


def test_export_refuses_a_model_gpt2_cannot_hold_naming_the_key(tmp_path, trained, capsys):
    save_model(GPT(vocab_size=trained.n_vocab, num_heads=2, embed_dim=32, attention_dim=16, num_blocks=1,
                   context_length=16), trained, tmp_path / "model")
    with pytest.raises(SystemExit):
        main(["export", "--model", str(tmp_path / "model"), str(tmp_path / "hf")])
    error = capsys.readouterr().err
    assert error == (f"error: {tmp_path / 'model' / 'config.json'}: model.attention_dim = 16: GPT-2's layout "
                     "needs it equal to model.embed_dim = 32\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no OUT, no temporary


@pytest.mark.parametrize("option, value", [("norm", "rmsnorm"), ("position_encoding", "rope"), ("qk_norm", True),
                                           ("activation", "relu2"), ("logit_softcap", 30.0), ("bias", False)])
def test_the_modern_blocks_options_are_refused_by_name(option, value):
    config = types.SimpleNamespace(**{**GPTConfig(vocab_size=300).to_dict(), option: value})
    with pytest.raises(ScratchGPTError, match=rf"^config.json: model.{option} = {value!r}: GPT-2's layout has only"):
        gpt2_config(config, "config.json")


# GPT-2 checkpoints made by transformers itself, as init_from meets them.

@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A small random GPT-2 saved by transformers (safetensors), and the model itself."""
    requires_shared_data()  # the gpt2 encoding, offline
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50257)
    model = randomize(transformers.GPT2LMHeadModel(config), seed=3)
    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
    return folder, model


def logits_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.fixture(scope="module")
def gpt2_ids(texts) -> torch.Tensor:
    return token_batch(get_encoding("gpt2"), texts["raw"], 64)


def test_gpt2_weights_load_with_transformers_logits(tiny_gpt2, gpt2_ids):
    folder, hf = tiny_gpt2
    model, encoding = load_gpt2(str(folder), "train.init_from")
    assert encoding.name == "gpt2" and model.config.tie_embeddings and model.config.qkv_bias
    assert model.config.activation == "gelu_tanh" and model.config.context_length == 64
    expected = logits_of(hf, gpt2_ids)
    assert expected.std() > 1 and (logits_of(model.eval(), gpt2_ids) - expected).abs().max() < 1e-4


def test_openai_hub_layout_loads_too(tiny_gpt2, gpt2_ids, tmp_path):
    """OpenAI's `gpt2` on the Hub names tensors without `transformer.` and keeps each block's mask."""
    folder, hf = tiny_gpt2
    weights = {name.removeprefix("transformer."): tensor for name, tensor in load_file(folder / "model.safetensors").items()}
    weights |= {f"h.{i}.attn.bias": torch.ones(1, 1, 64, 64).tril() for i in range(2)}
    (tmp_path / "gpt2").mkdir()
    save_file(weights, tmp_path / "gpt2" / "model.safetensors")
    (tmp_path / "gpt2" / "config.json").write_bytes((folder / "config.json").read_bytes())
    model, _ = load_gpt2(str(tmp_path / "gpt2"), "train.init_from")
    assert (logits_of(model.eval(), gpt2_ids) - logits_of(hf, gpt2_ids)).abs().max() < 1e-4


def model_params(**changes) -> ModelParams:
    shape = dict(num_heads=2, embed_dim=32, attention_dim=32, num_blocks=2, context_length=64, dropout_rate=0.0,
                 vocab_multiple=64, tie_embeddings=True, activation="gelu_tanh", qkv_bias=True,
                 position_encoding="learned", norm="layernorm", qk_norm=False, bias=True,
                 zero_init_projections=False, logit_softcap=None)
    return ModelParams(**{**shape, **changes})


def test_params_that_agree_set_dropout_padding_and_a_shorter_context(tiny_gpt2, gpt2_ids):
    folder, hf = tiny_gpt2
    model, _ = load_gpt2(str(folder), "train.init_from", model_params(context_length=32, dropout_rate=0.2, vocab_multiple=128))
    assert (model.config.context_length, model.config.dropout_rate, model.config.padded_vocab_size) == (32, 0.2, 50304)
    short = gpt2_ids[:, :32]
    assert (logits_of(model.eval(), short) - logits_of(hf, short)).abs().max() < 1e-4


@pytest.mark.parametrize("change, message", [
    (dict(embed_dim=192, attention_dim=192), "model.embed_dim = 192: train.init_from = '{folder}' has 32"),
    (dict(num_blocks=4), "model.num_blocks = 4: train.init_from = '{folder}' has 2"),
    (dict(qkv_bias=False), "model.qkv_bias = False: train.init_from = '{folder}' has True"),
    (dict(activation="gelu"), "model.activation = 'gelu': train.init_from = '{folder}' has 'gelu_tanh'"),
    (dict(context_length=128), "model.context_length = 128: train.init_from = '{folder}' has 64; it may be shorter"),
])
def test_params_that_disagree_with_the_checkpoint_are_one_line(tiny_gpt2, change, message):
    folder, _ = tiny_gpt2
    with pytest.raises(ScratchGPTError) as error:
        load_gpt2(str(folder), "train.init_from", model_params(**change))
    assert str(error.value).startswith("params.yaml: " + message.format(folder=folder)) and "\n" not in str(error.value)


def damaged_copy(folder: Path, tmp_path: Path, config_change=None, weights: bool = True) -> Path:
    copy = tmp_path / "checkpoint"
    copy.mkdir()
    config = json.loads((folder / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config_change(config) if config_change else config))
    if weights:
        (copy / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    return copy


@pytest.mark.parametrize("damage, message", [
    (dict(config_change=lambda c: {**c, "model_type": "llama"}), "config.json: model_type = 'llama': not a GPT-2 checkpoint"),
    (dict(config_change=lambda c: {**c, "vocab_size": 32000}), "config.json: vocab_size = 32000: a GPT-2 checkpoint is read with GPT-2's tokenizer"),
    (dict(config_change=lambda c: {**c, "activation_function": "relu"}), "config.json: activation_function = 'relu'"),
    (dict(config_change=lambda c: {**c, "n_layer": 3}), "transformer.h.2.ln_1.weight missing"),
    (dict(config_change=lambda c: {**c, "n_embd": 64}), "transformer.wte.weight is (50257, 32), which does not fit"),
    (dict(config_change=lambda c: {k: v for k, v in c.items() if k != "n_head"}), "config.json: n_head missing"),
    (dict(weights=False), "the folder has no model.safetensors"),
])
def test_a_folder_that_is_not_a_gpt2_checkpoint_is_one_line(tiny_gpt2, tmp_path, damage, message):
    folder = damaged_copy(tiny_gpt2[0], tmp_path, **damage)
    with pytest.raises(ScratchGPTError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_gpt2(str(folder), "train.init_from")
    assert "\n" not in str(error.value)


def test_pickle_weights_are_refused_not_loaded(tiny_gpt2, tmp_path):
    folder = damaged_copy(tiny_gpt2[0], tmp_path, weights=False)
    (folder / "pytorch_model.bin").write_bytes(b"a pickle that must never be loaded")
    with pytest.raises(ScratchGPTError, match="no model.safetensors .its pytorch_model.bin is pickle"):
        load_gpt2(str(folder), "train.init_from")


def test_an_id_neither_on_disk_nor_in_the_offline_hub_cache_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ScratchGPTError, match=r"^params.yaml: train.init_from = 'gpt2': no such folder, and the "
                       r"Hugging Face Hub did not give its config.json .*point train.init_from at a local folder$"):
        load_gpt2("gpt2", "train.init_from")


def test_a_hub_id_reads_the_cache_and_warns_until_pinned(tiny_gpt2, gpt2_ids, tmp_path, monkeypatch, capsys):
    """The Hub's cache layout, offline: `gpt2` resolves through refs/main and says which commit it
    read; `gpt2@<commit>` reads that commit and says nothing."""
    import huggingface_hub

    commit = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    snapshot = tmp_path / "models--gpt2" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((tiny_gpt2[0] / name).read_bytes())
    (tmp_path / "models--gpt2" / "refs").mkdir()
    (tmp_path / "models--gpt2" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    expected = logits_of(tiny_gpt2[1], gpt2_ids)
    for source, warning in (("gpt2", f"this run reads gpt2@{commit}: put that in params.yaml"), (f"gpt2@{commit}", None)):
        model, _ = load_gpt2(source, "finetune.init_from")
        assert (logits_of(model.eval(), gpt2_ids) - expected).abs().max() < 1e-4
        err = capsys.readouterr().err
        assert (warning in err and err.startswith("warning: params.yaml: finetune.init_from = 'gpt2' is not pinned")
                if warning else err == "")


@pytest.mark.parametrize("settings", [EXPORTS["gpt2"], EXPORTS["trained-bpe"]])  # the second untied, no qkv bias
def test_export_then_init_from_gives_the_same_logits(tmp_path, gpt2_ids, settings):
    model, out = export_random(tmp_path, get_encoding("gpt2"), seed=4, **settings)
    loaded, _ = load_gpt2(str(out), "train.init_from")
    assert loaded.config.tie_embeddings == settings["tie_embeddings"] and loaded.config.dropout_rate == 0.1
    assert (logits_of(loaded.eval(), gpt2_ids) - logits_of(model, gpt2_ids)).abs().max() < 1e-4


def test_an_export_of_another_tokenizer_is_no_starting_point(tmp_path, trained):
    _, out = export_random(tmp_path, trained, seed=5, **EXPORTS["trained-bpe"])
    with pytest.raises(ScratchGPTError, match="vocab_size = 600: a GPT-2 checkpoint is read with GPT-2's tokenizer"):
        load_gpt2(str(out), "train.init_from")


def test_tokens_of_another_tokenizer_say_how_to_get_gpt2s(tmp_path):
    shards = TokenShards.__new__(TokenShards)  # only what require_encoding reads
    shards.folder, shards.encoding = tmp_path / "imdb", "bpe32768-0123456789ab"
    with pytest.raises(ScratchGPTError) as error:
        require_gpt2_tokens(shards, "train.init_from")
    assert str(error.value) == (f"{tmp_path / 'imdb'}: tokens are 'bpe32768-0123456789ab' but train.init_from (GPT-2's "
                                "weights) reads 'gpt2'; set tokenize.vocab_size: null and tokenize.encoding: gpt2 in "
                                "params.yaml, and run the tokenize stage again")


@pytest.mark.e2e
def test_pretrain_and_finetune_start_from_gpt2_weights(project, tiny_gpt2):
    """train.init_from and finetune.init_from through `dvc repro`: at a learning rate of 1e-6 both
    models end where the checkpoint began (random weights would be ~0.3 away). Pretraining takes
    the shorter context of params' model section; fine-tuning, which reads no model section, the
    checkpoint's."""
    import yaml

    from conftest import ARTICLE_BLOCK, DVC, run, tiny_params

    folder, _ = tiny_gpt2
    shape = ARTICLE_BLOCK | {"num_heads": 2, "embed_dim": 32, "attention_dim": 32, "num_blocks": 2, "context_length": 32,
                             "tie_embeddings": True, "activation": "gelu_tanh", "qkv_bias": True}  # GPT-2's block
    slow = {"init_from": str(folder), "learning_rate": 1.0e-6, "min_lr": 0.0}
    params = tiny_params(model=shape, train=slow, finetune=slow)  # tokenize: GPT-2's encoding
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "repro", "finetune@coldplay"], project)
    start = load_file(folder / "model.safetensors")["transformer.h.1.attn.c_attn.weight"].T
    for name, context in (("pretrained", 32), ("finetuned/coldplay", 64)):
        weights = load_file(project / "models" / name / "model.safetensors")
        assert weights["position_embedding.weight"].shape == (context, 32)
        assert (weights["blocks.1.attention.qkv.weight"] - start).abs().max() < 1e-4
