"""A model folder: `model.safetensors` (the weights) and `config.json` (how to rebuild them).

Weights are stored as safetensors, which holds tensors and nothing else: loading a model
never runs pickle, so a downloaded model cannot run code on your machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scratchgpt.errors import ScratchGPTError, reason
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.outputs import atomic_dir, write_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Tokenizer:
    """Which tiktoken encoding the model reads; `vocab_size` is the encoding's, before padding."""

    encoding: str
    vocab_size: int


def save_model(model: GPT, tokenizer: Tokenizer, folder: str | Path) -> None:
    """Write the model folder atomically: both files appear together or not at all."""
    with atomic_dir(folder) as tmp:
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        write_json(
            tmp / CONFIG_FILE,
            {"model": model.config.to_dict(), "tokenizer": {"encoding": tokenizer.encoding, "vocab_size": tokenizer.vocab_size}},
        )


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> tuple[GPT, Tokenizer]:
    """The model saved in `folder`, on `device`, in eval mode, and the tokenizer it expects."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "not found"
        raise ScratchGPTError(f"{folder}: {what}; a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        tokenizer = Tokenizer(**config["tokenizer"])
        # The model's own checks (sizes that fit together) run before any memory is allocated.
        model_config = GPTConfig(**config["model"])
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{config_path}: not found; is {folder} a model folder?") from e
    except (KeyError, TypeError, ValueError) as e:  # ValueError: also bad JSON and bad UTF-8
        raise ScratchGPTError(f"{config_path}: not a valid scratchgpt model config ({reason(e)})") from e
    model = GPT(model_config)
    try:
        weights = load_file(weights_path)
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{weights_path}: not found; the model folder is incomplete") from e
    except (SafetensorError, OSError, ValueError) as e:
        raise ScratchGPTError(f"{weights_path}: corrupted or not a safetensors file ({reason(e)})") from e
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ScratchGPTError(f"{weights_path}: weights do not fit {config_path} ({reason(e)})") from e
    return model.to(device).eval(), tokenizer
