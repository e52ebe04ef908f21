"""What every stage script shares: paths from its dvc.yaml command, one-line failures, and
tidying what killed runs left behind.

DVC restores a stage from its run-cache without running any of our code, so no stage can
count on running again to clean up after itself. Instead, every stage starts by removing what
any killed run left: temporaries beside any output of the pipeline (see `outputs`) and training
states in `.ckpt/` that no run will resume (see `_stale_state`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from scratchgpt.errors import ScratchGPTError, exit_on_error
from scratchgpt.outputs import remove_leftovers
from scratchgpt.params import PARAMS_FILE, PIPELINE_FILE, read_yaml

# Resumable training states, `<stage>-<inputs_key(stage)>`, outside DVC's outputs.
STATE_ROOT = Path(".ckpt")
LOCK_FILE = "dvc.lock"


def is_output(name: str) -> bool:
    """Stage functions name their outputs `out` or `<something>_out`; the rest are inputs."""
    return name == "out" or name.endswith("_out")


def require_writable(path: Path) -> None:
    """Refuse an output that cannot be written before any work, not after an hour of training."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise ScratchGPTError(f"{path}: cannot write this output here ({e.strerror or e})") from e


def _hash_file(digest: "hashlib._Hash", file: Path) -> None:
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def _hash_path(digest: "hashlib._Hash", path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else file.name.encode())
        _hash_file(digest, file)


def inputs_key(stage: str, pipeline: dict[str, Any] | None = None) -> str:
    """A hash of everything `stage` declares in dvc.yaml: its code, data and params sections."""
    declared = (pipeline or read_yaml(PIPELINE_FILE)["stages"])[stage]
    params = read_yaml(PARAMS_FILE)
    digest = hashlib.sha256(json.dumps({s: params.get(s) for s in declared.get("params", [])}, sort_keys=True).encode())
    for dep in declared.get("deps", []):
        _hash_path(digest, Path(dep))
    return digest.hexdigest()[:16]


def _declared_paths(entries: list[Any]) -> list[Path]:
    """The paths of a dvc.yaml `outs`, `metrics` or `plots` list (plain, or `path: {options}`)."""
    return [Path(next(iter(entry)) if isinstance(entry, dict) else entry) for entry in entries or []]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    _hash_file(digest, path)
    return digest.hexdigest()


def _up_to_date(stage: str, declared: dict[str, Any]) -> bool:
    """Whether DVC holds `stage` done for the present params and code: its outputs are all in
    place, and dvc.lock records it with the present values of its params and the present bytes
    of its files (DVC's md5 of a file is that of its bytes; a folder's is DVC's own, and is not
    re-computed here: a folder's contents are in the state's key already)."""
    locked = (read_yaml(LOCK_FILE) or {}).get("stages", {}).get(stage)
    if not locked:
        return False
    outputs = [path for kind in ("outs", "metrics", "plots") for path in _declared_paths(declared.get(kind))]
    params = read_yaml(PARAMS_FILE)
    present = {section: params.get(section) for section in declared.get("params", [])}
    files = [dep for dep in locked.get("deps", []) if Path(dep["path"]).is_file()]
    return (all(path.exists() for path in outputs)
            and locked.get("params", {}).get(PARAMS_FILE, {}) == present
            and all(_md5(Path(dep["path"])) == dep.get("md5") for dep in files))


def _stale_state(folder: Path, pipeline: dict[str, Any]) -> bool:
    """Whether the state in `folder` (`<stage>-<key>`) is one that no run will resume: its stage
    is gone from dvc.yaml, the stage's present inputs have another key, or the stage is up to
    date. The last is a kill followed by DVC restoring the stage from its run-cache (an earlier
    run with the same inputs had finished): DVC will not run the stage for these inputs again,
    so its state would stay for good. While an output is missing (DVC deletes a stage's outputs
    before running it, and a killed run leaves them deleted), the state is kept."""
    stage, _, key = folder.name.rpartition("-")
    if stage not in pipeline:
        return True
    try:
        return inputs_key(stage, pipeline) != key or _up_to_date(stage, pipeline[stage])
    except (OSError, ScratchGPTError, TypeError, ValueError, KeyError, AttributeError):
        return False  # unreadable: keep it, to be safe


def tidy(outputs: Iterable[Path] = ()) -> None:
    """Remove what killed runs left behind, saying so in one line each: temporaries beside any
    of `outputs` or of the outputs dvc.yaml declares, and stale states in `.ckpt/`."""
    try:
        pipeline = read_yaml(PIPELINE_FILE)["stages"]
    except (ScratchGPTError, KeyError, TypeError):  # not run from a pipeline's root
        pipeline = {}
    folders = {path.parent for path in outputs} | {STATE_ROOT}
    for declared in pipeline.values():
        for kind in ("outs", "metrics", "plots"):
            folders |= {path.parent for path in _declared_paths(declared.get(kind))}
    for folder in sorted(folders):
        for path in remove_leftovers(folder):
            print(f"removed {path}: left by a killed run", flush=True)
    for folder in sorted(STATE_ROOT.iterdir()) if pipeline and STATE_ROOT.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and _stale_state(folder, pipeline):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"removed {folder}: a training state that no run would resume (its inputs "
                  f"changed, or DVC has the stage's outputs for them)", flush=True)
    with contextlib.suppress(OSError):
        STATE_ROOT.rmdir()  # when empty


def run(main: Callable[..., None]) -> None:
    """Call `main` with the command-line arguments as Paths, as dvc.yaml's `cmd` passes them.

    dvc.yaml is the one place that names each stage's inputs and outputs. Outputs must be
    writable before `main` starts, and what killed runs left is removed first (`tidy`; once,
    not again in each process a training stage starts under torchrun). Errors end the stage
    with one line and a non-zero exit status (see `errors.exit_on_error`).
    """
    names = list(inspect.signature(main).parameters)
    args = sys.argv[1:]
    if len(args) != len(names):
        module = Path(sys.argv[0]).stem
        expected = " ".join(name.upper() for name in names)
        print(f"usage: python -m stages.{module} {expected}\n"
              f"error: stages.{module} takes {len(names)} path(s) ({expected}), got {len(args)}; "
              f"`dvc repro {module}` runs it with the paths in dvc.yaml", file=sys.stderr)
        sys.exit(2)
    paths = [Path(arg) for arg in args]
    with exit_on_error():
        outputs = [path for name, path in zip(names, paths) if is_output(name)]
        for path in outputs:
            require_writable(path)
        if "RANK" not in os.environ:
            tidy(outputs)
        main(*paths)
