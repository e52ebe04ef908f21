"""A model folder: `model.safetensors` (the weights), `config.json` (how to rebuild them) and,
for a tokenizer trained on the corpus, its `tokenizer.*` files: everything a model needs to
read and write text.

Weights are stored as safetensors, which holds tensors and nothing else: loading a model
never runs pickle, so a downloaded model cannot run code on your machine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import tiktoken
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scratchgpt.encodings import is_trained, load_encoding, save_encoding
from scratchgpt.errors import ScratchGPTError, reason
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.outputs import atomic_dir, write_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model(model: GPT, encoding: tiktoken.Encoding, folder: str | Path) -> None:
    """Write the model folder atomically: its files appear together or not at all."""
    if encoding.n_vocab != model.config.vocab_size:
        raise ValueError(f"the encoding has {encoding.n_vocab} ids, the model {model.config.vocab_size}")
    with atomic_dir(folder) as tmp:
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        write_json(
            tmp / CONFIG_FILE,
            {"model": model.config.to_dict(), "tokenizer": {"encoding": encoding.name, "vocab_size": encoding.n_vocab}},
        )
        if is_trained(encoding):
            save_encoding(encoding, tmp)


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> tuple[GPT, tiktoken.Encoding]:
    """The model saved in `folder`, on `device`, in eval mode, and the tokenizer it reads."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "not found"
        raise ScratchGPTError(f"{folder}: {what}; a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        _require_known_keys(config, config_path)
        encoding_name = config["tokenizer"]["encoding"]
        # The model's own checks (sizes that fit together) run before any memory is allocated.
        model_config = GPTConfig(**config["model"])
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{config_path}: not found; is {folder} a model folder?") from e
    except (KeyError, TypeError, ValueError) as e:  # ValueError: also bad JSON and bad UTF-8
        raise ScratchGPTError(f"{config_path}: not a valid scratchgpt model config ({reason(e)})") from e
    encoding = load_encoding(encoding_name, folder)
    if encoding.n_vocab != model_config.vocab_size:
        raise ScratchGPTError(f"{config_path}: the model has {model_config.vocab_size} ids, its tokenizer "
                              f"{encoding_name!r} {encoding.n_vocab}")
    model = GPT(model_config)
    try:
        weights = load_file(weights_path)
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{weights_path}: not found; the model folder is incomplete") from e
    except (SafetensorError, OSError, ValueError) as e:
        raise ScratchGPTError(f"{weights_path}: corrupted or not a safetensors file ({reason(e)})") from e
    mismatches = _mismatches(model.state_dict(), weights)
    if mismatches:
        raise ScratchGPTError(f"{weights_path}: weights do not fit {config_path}: {mismatches}")
    model.load_state_dict(weights)
    return model.to(device).eval(), encoding


# config.json's sections and the keys each may hold: anything else is a mistake, never ignored.
_CONFIG_KEYS = {"model": [f.name for f in dataclasses.fields(GPTConfig)], "tokenizer": ["encoding", "vocab_size"]}


def _require_known_keys(config: Any, config_path: Path) -> None:
    """Refuse a key that config.json should not have, naming it: `model.num_head`, say."""
    if not isinstance(config, dict):
        raise TypeError("not a JSON object")
    for section, value in config.items():
        if section not in _CONFIG_KEYS:
            raise ScratchGPTError(f"{config_path}: {section}: unknown key (known: {', '.join(_CONFIG_KEYS)})")
        known = _CONFIG_KEYS[section]
        for key in value if isinstance(value, dict) else []:
            if key not in known:
                raise ScratchGPTError(f"{config_path}: {section}.{key}: unknown key (known: {', '.join(known)})")


def _mismatches(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], shown: int = 3) -> str:
    """The tensors that differ between the model a config builds and the saved weights, in
    words: a missing or extra name, or a shape (saved, then expected); '' when they fit."""
    problems = [f"{name} missing" for name in sorted(expected.keys() - weights.keys())]
    problems += [f"{name} not in the model" for name in sorted(weights.keys() - expected.keys())]
    problems += [
        f"{name} is {tuple(weights[name].shape)}, the config makes {tuple(expected[name].shape)}"
        for name in sorted(expected.keys() & weights.keys())
        if weights[name].shape != expected[name].shape
    ]
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more
