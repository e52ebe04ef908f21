"""What every stage script shares: paths from its dvc.yaml command, and one-line failures."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from scratchgpt.errors import ScratchGPTError


def run(main: Callable[..., None]) -> None:
    """Call `main` with the command-line arguments as Paths, as dvc.yaml's `cmd` passes them.

    dvc.yaml is the one place that names each stage's inputs and outputs. A ScratchGPTError
    becomes `error: ...` on stderr and exit status 1; Ctrl-C exits with status 130.
    """
    names = list(inspect.signature(main).parameters)
    args = sys.argv[1:]
    if len(args) != len(names):
        script = Path(sys.argv[0]).name
        print(f"usage: python -m stages.{Path(script).stem} {' '.join(n.upper() for n in names)}", file=sys.stderr)
        sys.exit(2)
    try:
        main(*map(Path, args))
    except ScratchGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
