"""Resumable training state, so an interrupted stage picks up where it stopped.

The state (model, optimizer, best weights, random generator, step and metric history) lives
in `.ckpt/<stage>-<key>/`, outside DVC's outputs, which DVC deletes before a stage runs. The
key hashes everything the stage declares in dvc.yaml (code, data and params), so a changed
input never resumes stale state. What is removed, and when:

- the stage's own state, once its outputs are written (`clear`);
- a damaged state, when it is found (`load_state`);
- a state that no run would resume (another key, a stage no longer in dvc.yaml, or a stage
  that DVC holds done for the present inputs, as after restoring it from its run-cache), at
  the start of any stage (`stage.tidy`); the last two also at any `scratchgpt` command, since
  after a restore no stage may run again (`stage.remove_stale_states`). So each training stage
  keeps at most one state, the one that its next run resumes, and none once DVC holds it done.

Tensors are stored as safetensors and the rest as JSON: no pickle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scratchgpt.errors import reason, warn
from scratchgpt.outputs import atomic_dir
from scratchgpt.stage import STATE_ROOT, inputs_key

TENSORS_FILE = "state.safetensors"
PROGRESS_FILE = "state.json"


def state_folder(stage: str) -> Path:
    """Where `stage` keeps its state for the present code, data and params."""
    return STATE_ROOT / f"{stage}-{inputs_key(stage)}"


def save_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_weights: dict[str, torch.Tensor],
    progress: dict[str, Any],
) -> None:
    """Write the whole state at once: a kill mid-save leaves the previous state intact."""
    optimizer_state = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v for k, v in best_weights.items()}
    for index, values in optimizer_state["state"].items():
        tensors |= {f"optimizer.{index}.{name}": value for name, value in values.items()}
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    with atomic_dir(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / TENSORS_FILE)
        (tmp / PROGRESS_FILE).write_text(
            json.dumps({"progress": progress, "param_groups": optimizer_state["param_groups"]}), encoding="utf-8"
        )


def load_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Restore model, optimizer and random generator from `folder`; return the best weights and
    progress, or None when there is no saved state.

    A damaged state (a truncated file, missing or misshapen tensors) is reported in one line and
    deleted, and training starts fresh: it would otherwise fail every later run until someone
    found and deleted the folder. Everything is read and checked before anything is restored,
    so a damaged state never leaves the model half-loaded.
    """
    if not folder.exists():
        return None
    try:
        saved, tensors = _read_state(folder, model)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        warn(f"{folder}: damaged training state ({reason(e)}); deleted it, training starts from step 0")
        clear(folder)
        return None
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count())])
    return best, saved["progress"]


def _read_state(folder: Path, model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The saved progress and tensors, after checking that they fit `model`."""
    saved = json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))
    tensors = load_file(folder / TENSORS_FILE)
    for name, expected in model.state_dict().items():
        for prefix in ("model.", "best."):
            if tensors[prefix + name].shape != expected.shape:
                raise ValueError(f"{prefix}{name} has shape {tuple(tensors[prefix + name].shape)}")
    if not isinstance(saved.get("progress"), dict) or not isinstance(saved.get("param_groups"), list):
        raise ValueError(f"{PROGRESS_FILE} lacks progress or param_groups")
    return saved, tensors


def clear(folder: Path) -> None:
    """Forget the state once the stage's outputs are complete."""
    shutil.rmtree(folder, ignore_errors=True)
