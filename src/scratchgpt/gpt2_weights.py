"""GPT-2's weight layout and the article's GPT, both ways: `to_gpt2` and `gpt2_config` give
`export.export` what it writes for the article's block, and `load_gpt2` reads GPT-2-format
weights (a local folder or a Hub id) as a starting point for training.

The article's block is GPT-2's: token and learned position embeddings, pre-LayerNorm attention
and a 4x GELU feed-forward, each added back to its input, a final LayerNorm and an LM head. Only
the names and one orientation differ: GPT-2's `Conv1D` layers keep a Linear's weight transposed,
(in, out). One table (`_names`) pairs every tensor and serves both directions. Where the
article's model has no tensor GPT-2 has (the query, key and value biases when `qkv_bias` is
false), GPT-2 gets zeros, which add nothing. GPT-2's embedding and head have exactly the
tokenizer's rows, the article's are padded (`vocab_multiple`): the export slices the padding off,
so no padding id can ever be generated, and the import pads with zero rows.

Weights travel as safetensors only: a checkpoint whose weights are pickle (`pytorch_model.bin`)
is refused, since loading pickle can run code.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tiktoken
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from scratchgpt.encodings import get_encoding
from scratchgpt.errors import ScratchGPTError, reason, warn
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.params import ModelParams, bad_value
from scratchgpt.tokens import TokenShards

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GPT2_ENCODING = "gpt2"  # tiktoken's: the tokenizer every GPT-2 checkpoint is read with
GPT2_VOCAB_SIZE = 50257

# GPT-2's module names in a GPT2LMHeadModel beside the article's, per Decoder block, and whether
# GPT-2's Conv1D keeps the weight transposed. Both fuse q | k | v in that order, heads contiguous.
_BLOCK = (
    ("ln_1", "attention_norm", False),
    ("attn.c_attn", "attention.qkv", True),
    ("attn.c_proj", "attention.out", True),
    ("ln_2", "feed_forward_norm", False),
    ("mlp.c_fc", "feed_forward.up", True),
    ("mlp.c_proj", "feed_forward.down", True),
)
_VOCAB_ROWS = ("token_embedding.weight", "lm_head.weight")  # padded here, exactly the tokenizer's in GPT-2
_POSITIONS = "position_embedding.weight"

# The tensors OpenAI's checkpoint on the Hub (`gpt2`) holds that are no weights: each block's
# causal mask, saved as a buffer. That checkpoint also names its tensors without `transformer.`.
_MASK_BUFFER = re.compile(r"(?:transformer\.)?h\.\d+\.attn\.(?:bias|masked_bias)")

# GPT-2's activation_function names for the article's activations; gelu_pytorch_tanh, another
# name for the tanh approximation, is read too.
_GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
_ACTIVATIONS = {**{gpt2: ours for ours, gpt2 in _GPT2_ACTIVATIONS.items()}, "gelu_pytorch_tanh": "gelu_tanh"}

# What GPT-2's layout can express, per GPTConfig field; a model holding another value has no place
# in it. The modern block's options are read with getattr, so a config without them reads as the
# article's block; `zero_init_projections` needs no row, since it only initialises.
GPT2_EXPRESSES: dict[str, tuple[object, ...]] = {
    "activation": tuple(_GPT2_ACTIVATIONS),
    "position_encoding": ("learned",),
    "norm": ("layernorm",),
    "qk_norm": (False,),
    "bias": (True,),
    "logit_softcap": (None,),
}

# config.json keys of GPT-2 that change its maths, with GPT2Config's defaults: the article's block
# computes only these values.
_GPT2_FIXED = {
    "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}

# model.* keys that decide how training goes, not what the weights are: params set them.
_TRAINING_CHOICES = ("dropout_rate", "vocab_multiple", "zero_init_projections")

# A Hub model id, `gpt2` or `owner/name`, with an optional revision: `gpt2@<commit>`.
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?:@(?P<revision>[\w./-]+))?")


def _names(config: GPTConfig) -> Iterator[tuple[str, str, bool]]:
    """(GPT-2's name, the article's, whether transposed) for every tensor of GPT-2's layout."""
    yield "transformer.wte.weight", "token_embedding.weight", False
    yield "transformer.wpe.weight", _POSITIONS, False
    for i in range(config.num_blocks):
        for gpt2, ours, transposed in _BLOCK:
            yield f"transformer.h.{i}.{gpt2}.weight", f"blocks.{i}.{ours}.weight", transposed
            yield f"transformer.h.{i}.{gpt2}.bias", f"blocks.{i}.{ours}.bias", False
    yield "transformer.ln_f.weight", "final_norm.weight", False
    yield "transformer.ln_f.bias", "final_norm.bias", False
    if not config.tie_embeddings:
        yield "lm_head.weight", "lm_head.weight", False


def to_gpt2(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under GPT2LMHeadModel's names and orientation, without vocabulary padding."""
    state = model.state_dict()
    weights = {}
    for gpt2, ours, transposed in _names(model.config):
        if ours in state:
            tensor = state[ours]
        else:  # a bias the article's model leaves out: GPT-2's is zero
            tensor = torch.zeros(len(state[ours.removesuffix(".bias") + ".weight"]))
        if ours in _VOCAB_ROWS:
            tensor = tensor[: model.config.vocab_size]
        weights[gpt2] = (tensor.T if transposed else tensor).detach().cpu().contiguous()
    return weights


def from_gpt2(weights: dict[str, torch.Tensor], config: GPTConfig, where: str | Path) -> GPT:
    """The article's GPT of `config` holding the GPT-2-layout `weights` (those of GPT2LMHeadModel
    or of OpenAI's `gpt2` on the Hub); `where` names their file in errors. A shorter context than
    the checkpoint's keeps the first positions (nanoGPT's crop_block_size)."""
    weights = {
        name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}": tensor
        for name, tensor in weights.items()
        if not _MASK_BUFFER.fullmatch(name)
    }
    model = GPT(config)
    expected = model.state_dict()
    state = {}
    for gpt2, ours, transposed in _names(config):
        if gpt2 not in weights:
            raise ScratchGPTError(f"{where}: {gpt2} missing; its config.json makes a GPT-2 that has it")
        tensor = weights[gpt2].T if transposed else weights[gpt2]
        if ours == _POSITIONS:
            tensor = tensor[: config.context_length]
        if ours in _VOCAB_ROWS and len(tensor) == config.vocab_size:  # zero rows for the padding ids
            tensor = torch.cat([tensor, tensor.new_zeros(config.padded_vocab_size - len(tensor), tensor.size(1))])
        if tensor.shape != expected[ours].shape:
            raise ScratchGPTError(f"{where}: {gpt2} is {tuple(weights[gpt2].shape)}, which does not fit its config.json")
        state[ours] = tensor
    # A tied head's matrix is the token embedding's, whether or not the file repeats it.
    unknown = sorted(weights.keys() - {gpt2 for gpt2, _, _ in _names(config)} - {"lm_head.weight"})
    if unknown:
        raise ScratchGPTError(f"{where}: {unknown[0]} is not in GPT-2's layout ({len(unknown)} such tensors)")
    model.load_state_dict(state)
    return model


def gpt2_config(config: GPTConfig, where: str | Path) -> dict[str, Any]:
    """config.json's settings of GPT-2's layout for a model of `config`; a value GPT-2's layout
    cannot hold is one line naming its key (`where` is the model's config.json)."""
    for name, expressible in GPT2_EXPRESSES.items():
        value = getattr(config, name, expressible[0])
        if value not in expressible:
            raise ScratchGPTError(f"{where}: model.{name} = {value!r}: GPT-2's layout has only "
                                  f"{' or '.join(map(repr, expressible))}, so transformers cannot run this model")
    if config.attention_dim != config.embed_dim:
        raise ScratchGPTError(f"{where}: model.attention_dim = {config.attention_dim}: GPT-2's layout needs "
                              f"it equal to model.embed_dim = {config.embed_dim}")
    dropout = config.dropout_rate
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.embed_dim,
        "n_layer": config.num_blocks,
        "n_head": config.num_heads,
        "activation_function": _GPT2_ACTIVATIONS[config.activation],
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": dropout,
        "tie_word_embeddings": config.tie_embeddings,
    }


def load_gpt2(source: str, key: str, shape: ModelParams | None = None) -> tuple[GPT, tiktoken.Encoding]:
    """The GPT-2-format checkpoint `source` as the article's GPT (qkv_bias on; activation and tied
    embeddings as the checkpoint has them), and tiktoken's `gpt2` encoding, which reads it.

    `source` is a local folder in Hugging Face's format (config.json with model_type gpt2, and
    model.safetensors), or a Hub id, `gpt2` or `owner/name`, best pinned to a commit as
    `gpt2@<commit>`: unpinned, it warns and names the commit it read. `key` is the params key that
    named it. The checkpoint sets the model's shape; given `shape` (params' `model` section), its
    training choices (dropout, vocabulary padding) apply, its context may be shorter, and any other
    value that differs from the checkpoint's is one line naming it.
    """
    config_path = _checkpoint_file(source, key, CONFIG_FILE)
    checkpoint = _checkpoint_config(config_path)
    config = checkpoint if shape is None else _agree(checkpoint, shape, key, source)
    # From the Hub, the weights of the commit the config came from, even if the branch moves.
    commit = None if Path(source).expanduser().exists() else _commit(source, config_path, key)
    weights_path = _checkpoint_file(source, key, WEIGHTS_FILE, commit)
    try:
        weights = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ScratchGPTError(f"{weights_path}: corrupted or not a safetensors file ({reason(e)})") from e
    return from_gpt2(weights, config, weights_path), get_encoding(GPT2_ENCODING)


def require_gpt2_tokens(shards: TokenShards, key: str) -> None:
    """Refuse token shards of another tokenizer than GPT-2's, the one GPT-2's weights read."""
    shards.require_encoding(
        GPT2_ENCODING, f"{key} (GPT-2's weights)",
        fix="set tokenize.vocab_size: null and tokenize.encoding: gpt2 in params.yaml, and run the tokenize stage again",
    )


def _checkpoint_file(source: str, key: str, name: str, commit: str | None = None) -> Path:
    """The file `name` of the checkpoint `source`: in the local folder `source`, or downloaded
    from the Hugging Face Hub into its cache (at `commit`, if given)."""
    folder = Path(source).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise bad_value(key, source, f"not a folder; a GPT-2 checkpoint folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
        if not (folder / name).is_file():
            pickle = " (its pytorch_model.bin is pickle, which scratchgpt never loads)" if name == WEIGHTS_FILE else ""
            raise bad_value(key, source, f"the folder has no {name}{pickle}; a GPT-2 checkpoint folder holds "
                            f"{CONFIG_FILE} and {WEIGHTS_FILE}")
        return folder / name
    hub = _HUB_ID.fullmatch(source)
    if hub is None:
        raise bad_value(key, source, "no such folder, and not a Hugging Face Hub id (gpt2 or owner/name, @commit to pin)")
    from huggingface_hub import hf_hub_download  # only a Hub id needs it
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return Path(hf_hub_download(hub["repo"], name, revision=commit or hub["revision"]))
    except RemoteEntryNotFoundError as e:
        why = "its weights are pickle only, which scratchgpt never loads" if name == WEIGHTS_FILE else "not a transformers model"
        raise bad_value(key, source, f"the Hub repository has no {name}: {why}") from e
    except Exception as e:  # offline, no such repository or revision, no access: all mean "use a folder"
        raise bad_value(key, source, f"no such folder, and the Hugging Face Hub did not give its {name} "
                        f"({reason(e)}); without network access, point {key} at a local folder") from e


def _commit(source: str, downloaded: Path, key: str) -> str:
    """The commit that `downloaded` came from (the Hub's cache names each snapshot folder by its
    commit); a warning when `source` did not pin it, since the same params could then read other
    weights next month."""
    repo, _, revision = source.partition("@")
    commit = downloaded.parent.name
    if revision != commit:
        warn(f"params.yaml: {key} = {source!r} is not pinned to a commit, so a later run may read other "
             f"weights; this run reads {repo}@{commit}: put that in params.yaml")
    return commit


def _checkpoint_config(path: Path) -> GPTConfig:
    """The article's GPTConfig for the GPT-2 config.json at `path`; one line for anything else."""
    try:
        gpt2 = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # bad JSON or bad UTF-8
        raise ScratchGPTError(f"{path}: not valid JSON ({reason(e)})") from e
    if not isinstance(gpt2, dict) or gpt2.get("model_type") != "gpt2":
        found = gpt2.get("model_type") if isinstance(gpt2, dict) else None
        raise ScratchGPTError(f"{path}: model_type = {found!r}: not a GPT-2 checkpoint (model_type gpt2)")
    for name, value in _GPT2_FIXED.items():
        if gpt2.get(name, value) != value:
            raise ScratchGPTError(f"{path}: {name} = {gpt2[name]!r}: the article's block computes only {value!r}")
    activation = gpt2.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise ScratchGPTError(f"{path}: activation_function = {activation!r}: the article's block computes "
                              f"only {', '.join(_ACTIVATIONS)}")
    try:
        if gpt2.get("n_inner") not in (None, 4 * gpt2["n_embd"]):
            raise ScratchGPTError(f"{path}: n_inner = {gpt2['n_inner']!r}: the article's feed-forward is 4 x "
                                  f"n_embd = {4 * gpt2['n_embd']} wide")
        if gpt2["vocab_size"] != GPT2_VOCAB_SIZE:
            raise ScratchGPTError(f"{path}: vocab_size = {gpt2['vocab_size']!r}: a GPT-2 checkpoint is read with "
                                  f"GPT-2's tokenizer (tiktoken's gpt2), of {GPT2_VOCAB_SIZE:,} ids")
        return GPTConfig(
            vocab_size=GPT2_VOCAB_SIZE,
            num_heads=gpt2["n_head"],
            embed_dim=gpt2["n_embd"],
            attention_dim=gpt2["n_embd"],
            num_blocks=gpt2["n_layer"],
            context_length=gpt2["n_positions"],
            dropout_rate=gpt2.get("resid_pdrop", 0.1),
            tie_embeddings=gpt2.get("tie_word_embeddings", True),
            activation=_ACTIVATIONS[activation],
            qkv_bias=True,
        )
    except KeyError as e:
        raise ScratchGPTError(f"{path}: {e.args[0]} missing; a GPT-2 config.json has it") from e
    except (TypeError, ValueError) as e:
        raise ScratchGPTError(f"{path}: not a usable GPT-2 config ({reason(e)})") from e


def _agree(checkpoint: GPTConfig, shape: ModelParams, key: str, source: str) -> GPTConfig:
    """`checkpoint`, with the params' training choices and context length; any other `model.*`
    value that differs from the checkpoint's is one line naming it."""
    chosen = {}
    for field in dataclasses.fields(shape):
        wanted, has = getattr(shape, field.name), getattr(checkpoint, field.name)
        if field.name in _TRAINING_CHOICES or (field.name == "context_length" and wanted <= has):
            chosen[field.name] = wanted  # a shorter context keeps the first positions
        elif wanted != has:
            at_most = "; it may be shorter, not longer" if field.name == "context_length" else ""
            raise bad_value(f"model.{field.name}", wanted, f"{key} = {source!r} has {has!r}{at_most}")
    return dataclasses.replace(checkpoint, **chosen)
