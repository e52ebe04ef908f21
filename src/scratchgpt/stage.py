"""What every stage script shares: paths from its dvc.yaml command, one-line failures, and
tidying what killed runs left behind.

DVC restores a stage from its run-cache without running any of our code, so no stage can
count on running again to clean up after itself. Instead, every stage starts by removing what
any killed run left: temporaries beside any output of the pipeline (see `outputs`) and training
states in `.ckpt/` that no run will resume (see `_why_stale`). DVC gives no moment of its own
after a restore, and a restore may leave every stage done: so every `scratchgpt` command, too,
removes the states of stages that DVC holds done (`remove_stale_states`).
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


def expand(stages: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """dvc.yaml's stages as DVC runs them: a `foreach: ${datasets}` stage becomes one stage per
    item, `finetune@coldplay`, its `do` with `${key}` replaced by the item's name."""
    expanded = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            expanded[name] = stage
            continue
        items = _lookup(params, stage["foreach"].removeprefix("${").removesuffix("}")) or {}
        for key in items:
            expanded[f"{name}@{key}"] = json.loads(json.dumps(stage["do"]).replace("${key}", key))
    return expanded


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted params key (`datasets.coldplay`), None where there is none."""
    value: Any = params
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def inputs_key(stage: str, pipeline: dict[str, Any] | None = None) -> str:
    """A hash of everything `stage` declares in dvc.yaml: its code, data and params."""
    params = read_yaml(PARAMS_FILE)
    declared = (pipeline or expand(read_yaml(PIPELINE_FILE)["stages"], params))[stage]
    digest = hashlib.sha256(json.dumps({s: _lookup(params, s) for s in declared.get("params", [])}, sort_keys=True).encode())
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


def _up_to_date(stage: str, pipeline: dict[str, Any]) -> bool:
    """Whether DVC holds `stage` done for the present params, code and data: its outputs are all
    in place, and dvc.lock records it with the present values of its params, the present bytes of
    its files (DVC's md5 of a file is that of its bytes) and, for a folder that another stage
    writes, the hash dvc.lock records for that stage's output (a folder's md5 is DVC's own and is
    not re-computed here)."""
    if not Path(LOCK_FILE).is_file():
        return False  # nothing has been run yet
    locked_stages = (read_yaml(LOCK_FILE) or {}).get("stages", {})
    locked = locked_stages.get(stage)
    if not locked:
        return False
    declared = pipeline[stage]
    outputs = [path for kind in ("outs", "metrics", "plots") for path in _declared_paths(declared.get(kind))]
    params = read_yaml(PARAMS_FILE)
    present = {name: _lookup(params, name) for name in declared.get("params", [])}
    written = {out["path"]: out.get("md5") for other in locked_stages.values() for out in other.get("outs", [])}
    deps = locked.get("deps", [])
    return (all(path.exists() for path in outputs)
            and locked.get("params", {}).get(PARAMS_FILE, {}) == present
            and all(_md5(Path(dep["path"])) == dep.get("md5") for dep in deps if Path(dep["path"]).is_file())
            and all(written[dep["path"]] == dep.get("md5") for dep in deps if dep["path"] in written))


def _size(folder: Path) -> str:
    megabytes = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6
    return f"{megabytes:,.1f} MB"


def _why_stale(folder: Path, pipeline: dict[str, Any], *, superseded: bool) -> str | None:
    """Why no run will resume the state in `folder` (`<stage>-<key>`), or None to keep it.

    It is finished when its stage is gone from dvc.yaml, or when DVC holds the stage up to date,
    which is what a kill followed by a restore from DVC's run-cache leaves (an earlier run with the
    same inputs had finished): DVC will not run the stage for these inputs again, so the state would
    stay for good. No run of the stage can be writing a finished state: DVC deletes a stage's
    outputs before running it (and a killed run leaves them deleted, which keeps its state).

    With `superseded`, it is also stale when the stage's present code, data or params have another
    key. A run started before they changed may still be writing such a state, so only a stage
    start, under DVC's lock on the workspace, asks this.
    """
    stage, _, key = folder.name.rpartition("-")
    if stage not in pipeline:
        return f"{stage} is no longer a stage in {PIPELINE_FILE}"
    try:
        if _up_to_date(stage, pipeline):
            return f"DVC holds {stage} done for its present inputs (as after a restore from its run-cache)"
        if superseded and inputs_key(stage, pipeline) != key:
            return f"{stage}'s code, data or params have changed since"
    except (OSError, ScratchGPTError, TypeError, ValueError, KeyError, AttributeError):
        pass  # unreadable: keep it, to be safe
    return None


def remove_stale_states(say: Callable[[str], None], *, superseded: bool) -> None:
    """Remove the training states in `.ckpt/` that no run will resume (see `_why_stale`), telling
    `say` in one line each what went, how big it was and why. Nothing, when not run from a
    pipeline's root."""
    pipeline = _pipeline()
    if not pipeline or not STATE_ROOT.is_dir():
        return
    for folder in sorted(STATE_ROOT.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue  # not a state (a temporary of one is `remove_leftovers`' to remove)
        why = _why_stale(folder, pipeline, superseded=superseded)
        if why:
            size = _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
            say(f"removed {folder}: a training state ({size}) that no run would resume: {why}")
    with contextlib.suppress(OSError):
        STATE_ROOT.rmdir()  # when empty


def _pipeline() -> dict[str, Any]:
    """dvc.yaml's stages, `foreach` ones expanded; none when not run from a pipeline's root."""
    try:
        return expand(read_yaml(PIPELINE_FILE)["stages"], read_yaml(PARAMS_FILE))
    except (ScratchGPTError, KeyError, TypeError, AttributeError):
        return {}


def tidy(outputs: Iterable[Path] = ()) -> None:
    """Remove what killed runs left behind, saying so in one line each: temporaries beside any
    of `outputs` or of the outputs dvc.yaml declares, and every stale state in `.ckpt/`."""
    folders = {path.parent for path in outputs} | {STATE_ROOT}
    for declared in _pipeline().values():
        for kind in ("outs", "metrics", "plots"):
            folders |= {path.parent for path in _declared_paths(declared.get(kind))}
    for folder in sorted(folders):
        for path in remove_leftovers(folder):
            print(f"removed {path}: left by a killed run", flush=True)
    remove_stale_states(lambda line: print(line, flush=True), superseded=True)


def run(main: Callable[..., None]) -> None:
    """Call `main` with the command-line arguments as Paths (as strings where `main` annotates
    one `str`: a foreach stage's item name), as dvc.yaml's `cmd` passes them.

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
    hints = inspect.get_annotations(main, eval_str=True)
    paths = [arg if hints.get(name) is str else Path(arg) for name, arg in zip(names, args)]
    with exit_on_error():
        outputs = [path for name, path in zip(names, paths) if is_output(name)]
        for path in outputs:
            require_writable(path)
        if "RANK" not in os.environ:
            tidy(outputs)
        main(*paths)
