"""What every stage script shares: paths from its dvc.yaml command, and one-line failures."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from scratchgpt.errors import exit_on_error


def run(main: Callable[..., None]) -> None:
    """Call `main` with the command-line arguments as Paths, as dvc.yaml's `cmd` passes them.

    dvc.yaml is the one place that names each stage's inputs and outputs. Errors end the stage
    with one line and a non-zero exit status (see `errors.exit_on_error`).
    """
    names = list(inspect.signature(main).parameters)
    args = sys.argv[1:]
    if len(args) != len(names):
        module = Path(sys.argv[0]).stem
        print(f"usage: python -m stages.{module} {' '.join(n.upper() for n in names)}", file=sys.stderr)
        sys.exit(2)
    with exit_on_error():
        main(*map(Path, args))
