"""A model folder that transformers reads: GPT-2's layout for the article's block, Qwen3's or
Llama's for the modern one.

The article's block is GPT-2's, and goes out in GPT-2's layout (`gpt2_weights`). The modern block
(rotary positions, RMSNorm without gains, ReLU^2, no biases) is a Llama block in all but two
parts. Its QK-norm is Qwen3's, which is Llama's with an RMSNorm over each head's queries and keys
before RoPE: with QK-norm the model goes out as a `Qwen3ForCausalLM`, without it as a
`LlamaForCausalLM`. And both have a gated feed-forward, down(act(gate(x)) * up(x)), where ours is
down(relu(up(x))^2); that one is exact with act = relu and gate = up (see `modern_weights`). Both
rotate the pairs of dimensions (i, i + head_dim / 2), as `model.rotate` does, by the same angles.
The norms' gains, which our model has not, are ones, and the vocabulary padding is sliced off as
for GPT-2. Any other mix of the block's parts (RoPE with LayerNorm, a soft cap on the logits) is
in none of these layouts, and is refused in one line that names its keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from scratchgpt.encodings import hugging_face_tokenizer
from scratchgpt.errors import ScratchGPTError
from scratchgpt.gpt2_weights import CONFIG_FILE, GPT2_EXPRESSES, WEIGHTS_FILE, gpt2_config, to_gpt2
from scratchgpt.model import GPT, ROPE_BASE, GPTConfig
from scratchgpt.outputs import atomic_dir, write_json
from scratchgpt.saved_model import load_model

# What Qwen3's and Llama's layouts can express, per GPTConfig field, as GPT2_EXPRESSES says for
# GPT-2's; `qk_norm` is not here, since it picks between the two.
MODERN_EXPRESSES: dict[str, tuple[object, ...]] = {
    "activation": ("relu2",),
    "position_encoding": ("rope",),
    "norm": ("rmsnorm",),
    "qkv_bias": (False,),
    "bias": (False,),
    "logit_softcap": (None,),
}
GPT2_LAYOUT, MODERN_LAYOUT = "GPT-2's", "Qwen3's or Llama's"
LAYOUTS = {GPT2_LAYOUT: GPT2_EXPRESSES, MODERN_LAYOUT: MODERN_EXPRESSES}


def layout(config: GPTConfig, where: str | Path) -> str:
    """The layout (a key of LAYOUTS) that holds a model of `config`; where none does, one line
    naming the keys that keep it out of the nearest (`where` is the model's config.json)."""
    misfits = {
        name: [(key, getattr(config, key)) for key, values in expresses.items() if getattr(config, key) not in values]
        for name, expresses in LAYOUTS.items()
    }
    nearest = min(LAYOUTS, key=lambda name: len(misfits[name]))
    if misfits[nearest]:
        found = ", ".join(f"model.{key} = {value!r}" for key, value in misfits[nearest])
        needed = ", ".join(f"model.{key} = {' or '.join(map(repr, LAYOUTS[nearest][key]))}"
                           for key, _ in misfits[nearest])
        raise ScratchGPTError(f"{where}: {found}: no layout that transformers reads holds this model; the nearest, "
                              f"{nearest}, needs {needed} (the layouts: {GPT2_LAYOUT} for the article's block, "
                              f"{MODERN_LAYOUT} for the modern block)")
    return nearest


def modern_config(config: GPTConfig, where: str | Path) -> dict[str, Any]:
    """config.json's settings of Qwen3's (with QK-norm) or Llama's layout for a modern-block model
    of `config`; `where` (the model's config.json) names it in the one line for a shape Llama's
    layout refuses."""
    qwen3 = config.qk_norm
    if not qwen3 and config.embed_dim % config.num_heads:  # LlamaConfig's own check
        raise ScratchGPTError(f"{where}: model.num_heads = {config.num_heads}: Llama's layout (the modern block "
                              f"without QK-norm) needs it to divide model.embed_dim = {config.embed_dim}")
    return {
        "model_type": "qwen3" if qwen3 else "llama",
        "architectures": ["Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.embed_dim,
        "intermediate_size": 4 * config.embed_dim,
        "num_hidden_layers": config.num_blocks,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "head_dim": config.head_dim,  # attention_dim / num_heads, which may differ from embed_dim / num_heads
        "hidden_act": "relu",
        "max_position_embeddings": config.context_length,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE},
        # Ours is F.rms_norm's default, finfo(dtype).eps: fp32's, the dtype their RMSNorm computes in.
        "rms_norm_eps": torch.finfo(torch.float32).eps,
        "attention_bias": False,
        **({} if qwen3 else {"mlp_bias": False}),
        # The one dropout these layouts have: ours drops the attention weights too (and also the
        # embeddings and each block's outputs, which theirs cannot).
        "attention_dropout": config.dropout_rate,
        "tie_word_embeddings": config.tie_embeddings,
    }


def modern_weights(model: GPT) -> dict[str, torch.Tensor]:
    """The modern-block model's weights under Qwen3ForCausalLM's names (LlamaForCausalLM's without
    QK-norm), without vocabulary padding."""
    config = model.config
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    no_gain = torch.ones(config.embed_dim)
    weights = {"model.embed_tokens.weight": state["token_embedding.weight"][: config.vocab_size],
               "model.norm.weight": no_gain}
    for i in range(config.num_blocks):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        queries, keys, values = state[ours + "attention.qkv.weight"].chunk(3)  # q | k | v, heads contiguous in each
        up = state[ours + "feed_forward.up.weight"]
        weights |= {
            theirs + "input_layernorm.weight": no_gain,
            theirs + "self_attn.q_proj.weight": queries,
            theirs + "self_attn.k_proj.weight": keys,
            theirs + "self_attn.v_proj.weight": values,
            theirs + "self_attn.o_proj.weight": state[ours + "attention.out.weight"],
            theirs + "post_attention_layernorm.weight": no_gain,
            # The one trick: relu(z) * z = relu(z)^2 for every z, so the gated feed-forward
            # down(relu(gate(x)) * up(x)) with gate = up is our ReLU^2 one exactly. It stores
            # the up matrix twice.
            theirs + "mlp.gate_proj.weight": up,
            theirs + "mlp.up_proj.weight": up,
            theirs + "mlp.down_proj.weight": state[ours + "feed_forward.down.weight"],
        }
        if config.qk_norm:
            weights |= {theirs + "self_attn.q_norm.weight": torch.ones(config.head_dim),
                        theirs + "self_attn.k_norm.weight": torch.ones(config.head_dim)}
    if not config.tie_embeddings:
        weights["lm_head.weight"] = state["lm_head.weight"][: config.vocab_size]
    # safetensors refuses tensors that share memory: the gains, q | k | v, gate and up.
    return {name: tensor.clone() for name, tensor in weights.items()}


def export(model_folder: str | Path, out: str | Path) -> None:
    """Write the model in `model_folder` to the new folder `out` in Hugging Face's format, which
    `AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)` read: in
    GPT-2's layout for the article's block, in Qwen3's or Llama's for the modern one, with the
    same tokenizer files. `out` appears whole or not at all."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ScratchGPTError(f"{out}: already exists; export writes a new folder (remove it, or name another)")
    model, encoding = load_model(model_folder)
    where = Path(model_folder) / CONFIG_FILE
    if layout(model.config, where) == GPT2_LAYOUT:
        settings, weights = gpt2_config(model.config, where), to_gpt2(model)
    else:
        settings, weights = modern_config(model.config, where), modern_weights(model)
    from transformers import AutoConfig  # slow to import; only an export needs it

    with atomic_dir(out) as tmp:
        end_of_text = encoding.eot_token
        AutoConfig.for_model(**settings, bos_token_id=end_of_text, eos_token_id=end_of_text).save_pretrained(tmp)
        save_file(weights, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        hugging_face_tokenizer(encoding, model.config.context_length).save_pretrained(tmp)
        # transformers 5 writes its own name of the class, which transformers 4 does not know;
        # PreTrainedTokenizerFast names it for both (as Llama 3's tokenizer_config.json does).
        tokenizer_config = json.loads((tmp / "tokenizer_config.json").read_text(encoding="utf-8"))
        write_json(tmp / "tokenizer_config.json", {**tokenizer_config, "tokenizer_class": "PreTrainedTokenizerFast"})
