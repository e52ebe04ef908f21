"""The one exception type a user sees: a mistake in params or inputs, told in one line."""


class ScratchGPTError(Exception):
    """Bad params, a bad input file or an unusable source.

    Stages turn it into a single line on stderr and a non-zero exit (see `stage.run`), so its
    message must name the key or file and say what is wrong.
    """


def reason(error: BaseException) -> str:
    """The first line of a library's error message (or its type), to quote inside ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
