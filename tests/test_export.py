"""`scratchgpt export` for the modern block: Qwen3's layout with QK-norm, Llama's without, read by
transformers with the same logits, the same greedy text and the same token ids; every other mix
refused in one line. GPT-2's layout for the article's block is tests/test_gpt2_weights.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import MODERN_BLOCK, logit_gap, randomize, token_batch
from scratchgpt.cli import main
from scratchgpt.encodings import END_OF_TEXT
from scratchgpt.export import export
from scratchgpt.generate import generate, text_to_token_ids, token_ids_to_text
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.saved_model import save_model

transformers = pytest.importorskip("transformers")

# Max abs logit difference in fp32; 5e-6 measured, all of it from RoPE's frequencies, which transformers
# computes otherwise than `model.rotary_angles`, apart in the last bit.
TOLERANCE = 1e-5
MODERN = {**MODERN_BLOCK, "logit_softcap": None}  # the modern block without the soft cap, which no layout has
ARTICLE = {"position_encoding": "learned", "norm": "layernorm", "qk_norm": False, "activation": "gelu", "bias": True}


def save_random(folder: Path, encoding, seed: int, **settings) -> GPT:
    """A random model of `settings` (32 wide, 2 blocks, 64 positions) saved in `folder`."""
    shape = dict(num_heads=2, embed_dim=32, attention_dim=32, num_blocks=2, context_length=64, dropout_rate=0.1)
    model = randomize(GPT(GPTConfig(vocab_size=encoding.n_vocab, **{**shape, **settings})), seed)
    save_model(model, encoding, folder)
    return model


LAYOUTS = {  # attention_dim differs from embed_dim (32) in two; three heads do not divide 32, which Qwen3 allows
    "qwen3": dict(qk_norm=True, num_heads=3, attention_dim=48, tie_embeddings=False),
    "qwen3-tied": dict(qk_norm=True, tie_embeddings=True),
    "llama": dict(qk_norm=False, attention_dim=16, tie_embeddings=True),
}


@pytest.mark.parametrize("kind", LAYOUTS)
def test_a_modern_model_gives_transformers_the_same_logits_and_greedy_text(tmp_path, texts, trained, kind):
    model = save_random(tmp_path / "model", trained, seed=1, **{**MODERN, **LAYOUTS[kind]})
    export(tmp_path / "model", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == ("LlamaForCausalLM" if kind == "llama" else "Qwen3ForCausalLM")
    assert hf.config.vocab_size == trained.n_vocab < model.config.padded_vocab_size
    assert hf.config.tie_word_embeddings == model.config.tie_embeddings
    assert ("lm_head.weight" in load_file(tmp_path / "hf" / "model.safetensors")) != model.config.tie_embeddings
    assert logit_gap(model, hf, trained, texts) < TOLERANCE
    # Greedy, token by token through each side's KV cache; this random model never ends the text.
    prompt = token_batch(trained, texts["lyrics"], 8)[:1]
    ours = generate(model, prompt, 24, model.config.context_length)
    assert trained.eot_token not in ours[0, 8:]
    with torch.no_grad():
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False)
    assert theirs.tolist() == ours.tolist()


def test_a_modern_export_reads_with_auto_classes_and_a_pipeline(tmp_path, texts, trained):
    model = save_random(tmp_path / "model", trained, seed=2, **MODERN)
    main(["export", "--model", str(tmp_path / "model"), str(tmp_path / "hf")])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == trained.eot_token and tokenizer.model_max_length == 64
    tokenizer_config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    for text in texts["raw"] + texts["lyrics"] + texts["awkward"]:
        assert tokenizer.encode(text) == trained.encode(text, allowed_special={END_OF_TEXT}), text[:80]
    prompt = "Lights go out and"
    generator = transformers.pipeline("text-generation", model=str(tmp_path / "hf"))
    assert generator.model.generation_config.eos_token_id == trained.eot_token
    theirs = generator(prompt, max_new_tokens=12, do_sample=False)[0]["generated_text"]
    ours = generate(model, text_to_token_ids(prompt, trained), 12, 64, stop_at=trained.eot_token)
    assert theirs == token_ids_to_text(ours, trained)


@pytest.mark.parametrize("block, architecture", [(ARTICLE, "GPT2LMHeadModel"), (MODERN, "Qwen3ForCausalLM"),
                                                 ({**MODERN, "qk_norm": False}, "LlamaForCausalLM")],
                         ids=["article", "modern", "modern-without-qk-norm"])
def test_each_block_goes_out_in_its_layout(tmp_path, trained, capsys, block, architecture):
    save_random(tmp_path / "model", trained, seed=3, **block)
    main(["export", "--model", str(tmp_path / "model"), str(tmp_path / "hf")])
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [architecture]
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'hf'}: AutoModelForCausalLM.from_pretrained(")


NEAREST = "no layout that transformers reads holds this model; the nearest, "
THE_LAYOUTS = " (the layouts: GPT-2's for the article's block, Qwen3's or Llama's for the modern block)"


@pytest.mark.parametrize("block, message", [
    (MODERN_BLOCK, "model.logit_softcap = 15.0: " + NEAREST + "Qwen3's or Llama's, needs model.logit_softcap = None"
     + THE_LAYOUTS),
    ({**MODERN, "norm": "layernorm"}, "model.norm = 'layernorm': " + NEAREST + "Qwen3's or Llama's, needs "
     "model.norm = 'rmsnorm'" + THE_LAYOUTS),
    ({**ARTICLE, "position_encoding": "rope"}, "model.position_encoding = 'rope': " + NEAREST + "GPT-2's, needs "
     "model.position_encoding = 'learned'" + THE_LAYOUTS),
    ({**ARTICLE, "activation": "relu2", "norm": "rmsnorm"}, "model.activation = 'relu2', model.norm = 'rmsnorm': "
     + NEAREST + "GPT-2's, needs model.activation = 'gelu' or 'gelu_tanh', model.norm = 'layernorm'" + THE_LAYOUTS),
    ({**MODERN, "bias": True}, "model.bias = True: " + NEAREST + "Qwen3's or Llama's, needs model.bias = False"
     + THE_LAYOUTS),
    ({**MODERN, "qk_norm": False, "num_heads": 3, "attention_dim": 48}, "model.num_heads = 3: Llama's layout (the "
     "modern block without QK-norm) needs it to divide model.embed_dim = 32"),
], ids=["soft-cap", "rope-layernorm", "article-rope", "article-relu2-rmsnorm", "modern-biases", "llama-heads"])
def test_a_mix_no_layout_holds_is_one_line_writing_nothing(tmp_path, trained, capsys, block, message):
    save_random(tmp_path / "model", trained, seed=4, **block)
    with pytest.raises(SystemExit) as exit:
        main(["export", "--model", str(tmp_path / "model"), str(tmp_path / "hf")])
    assert exit.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'model' / 'config.json'}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no OUT, no temporary
