"""The one exception type a user sees: a mistake in params or inputs, told in one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class ScratchGPTError(Exception):
    """Bad params, a bad input file or an unusable source.

    Its message names the key or file and says what is wrong, in one line. It is raised
    `from` the library error behind it, so a debugger or a test still sees the cause.
    """


def reason(error: BaseException) -> str:
    """The first line of a library's error message (or its type), to quote inside ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def warn(message: str) -> None:
    """One line on stderr for something the run survives but the user should know."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """A ScratchGPTError or an operating-system error (a file that cannot be read or written)
    becomes `error: ...` on stderr and exit status 1; Ctrl-C exits 130."""
    try:
        yield
    except ScratchGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or reason(e)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
