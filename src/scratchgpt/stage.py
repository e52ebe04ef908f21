"""What every stage script shares: paths from its dvc.yaml command, and one-line failures."""

from __future__ import annotations

import inspect
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from scratchgpt.errors import ScratchGPTError, exit_on_error


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


def run(main: Callable[..., None]) -> None:
    """Call `main` with the command-line arguments as Paths, as dvc.yaml's `cmd` passes them.

    dvc.yaml is the one place that names each stage's inputs and outputs. Outputs must be
    writable before `main` starts. Errors end the stage with one line and a non-zero exit
    status (see `errors.exit_on_error`).
    """
    names = list(inspect.signature(main).parameters)
    args = sys.argv[1:]
    if len(args) != len(names):
        module = Path(sys.argv[0]).stem
        print(f"usage: python -m stages.{module} {' '.join(n.upper() for n in names)}", file=sys.stderr)
        sys.exit(2)
    paths = [Path(arg) for arg in args]
    with exit_on_error():
        for name, path in zip(names, paths):
            if is_output(name):
                require_writable(path)
        main(*paths)
