"""Progress bars for long work: shown in a terminal, silent in CI logs and pipes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that disables itself when stderr is not a terminal."""
    kwargs.setdefault("disable", None)
    return tqdm(iterable, dynamic_ncols=True, **kwargs)
