"""The one exception type a user sees: a mistake in params or inputs, told in one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class ScratchGPTError(Exception):
    """Bad params, a bad input file or an unusable source.

    Its message names the key or file and says what is wrong, in one line.
    """


def reason(error: BaseException) -> str:
    """The first line of a library's error message (or its type), to quote inside ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """A ScratchGPTError becomes `error: ...` on stderr and exit status 1; Ctrl-C exits 130."""
    try:
        yield
    except ScratchGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
