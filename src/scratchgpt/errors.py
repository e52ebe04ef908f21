"""The one exception type a user sees: a mistake in params or inputs, told in one line."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn


class ScratchGPTError(Exception):
    """Bad params, a bad input file or an unusable source.

    Its message names the key or file and says what is wrong, in one line. It is raised
    `from` the library error behind it, so a debugger or a test still sees the cause.
    """


def reason(error: BaseException) -> str:
    """The first line of a library's error message (or its type), to quote inside ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, stopping a run; its message says what was kept.

    SIGTERM is what `timeout`, systemd, schedulers, containers and cancelled CI jobs send. It is
    a KeyboardInterrupt, so that every `finally` and `with` block runs as it does on Ctrl-C:
    temporaries are removed and no output is half-written.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = signum
        super().__init__(message or f"stopped by {signal.Signals(signum).name}; no output written")


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _exit_stopped(signum: int, _frame: FrameType | None) -> NoReturn:
    print(Interrupted(signum), file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def stop_in_one_line() -> None:
    """From now until `exit_on_error` takes over, SIGTERM ends the process with the line and exit
    status that `exit_on_error` gives, where Python's default ends it silently. For a process that
    has written nothing yet: a stage importing torch, which takes seconds."""
    signal.signal(signal.SIGTERM, _exit_stopped)


def warn(message: str) -> None:
    """One line on stderr for something the run survives but the user should know."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """A ScratchGPTError or an operating-system error (a file that cannot be read or written)
    becomes `error: ...` on stderr and exit status 1. Ctrl-C and SIGTERM stop the block as an
    `Interrupted` (SIGTERM would otherwise end the process at once, skipping every clean-up):
    one line on stderr, and exit status 128 + the signal's number (130, 143), as shells report."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    except ScratchGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or reason(e)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))
    finally:
        signal.signal(signal.SIGTERM, previous)
