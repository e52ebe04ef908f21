"""The run's DVCLive folder: its curves grow while training runs, and end byte-identical.

`RunLog` wraps the training loop. Every step adds a row to each curve
(`<folder>/plots/metrics/<name>.tsv`: `step` and the value, no timestamps) and rewrites
`<folder>/metrics.json` with the latest values at every evaluation, through DVCLive's
`log_metric` and `next_step`; so `dvc plots show`, `dvc exp show` and DVC's VS Code extension
see the run as it goes. `finish` replaces the latest values with the run's summary.

A resumed run first replays the history saved with its resumable state into a fresh folder
(DVC deletes a stage's outputs before it runs, and a killed run may have logged steps after its
last saved state), then continues the curve with `Live(resume=True)`: no step twice, none
missing, the same bytes as an uninterrupted run. A run that stops for good (an error, Ctrl-C)
removes its half-written folder; the resumable state still holds every row.

The folder `None` (every process but rank 0 under torchrun) makes all of this a no-op.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from dvclive import Live

# The curves, in the order they are logged; a row may lack `val_loss` (not an evaluation step).
CURVES = ("train_loss", "val_loss", "val_bpb", "learning_rate", "tokens_seen")

Row = Mapping[str, float | int]


def _open(folder: Path, resume: bool) -> Live:
    # dvcyaml=None: dvc.yaml declares the metrics and plots statically; DVCLive must not rewrite it.
    return Live(str(folder), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None)


class RunLog:
    """The DVCLive folder of one training run, opened as a context manager around the loop."""

    def __init__(self, folder: Path | None, resumed_history: Sequence[Row] = ()) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._history = list(resumed_history)
        self._live: Live | None = None
        self._last_step = 0
        self._finished = False

    def __enter__(self) -> RunLog:
        if self.folder is None:
            return self
        shutil.rmtree(self.folder, ignore_errors=True)  # whatever a killed run left behind
        if self._history:
            self._live = _open(self.folder, resume=False)
            for row in self._history:  # the curve so far, exactly as it was logged
                self.log(row)
            self._live.step = self._last_step
            self._live.make_summary()  # metrics.json's `step`, where `resume=True` carries on
            self._live = _open(self.folder, resume=True)
        else:
            self._live = _open(self.folder, resume=False)
        return self

    def log(self, row: Row) -> None:
        """Append one training step (`step` counts optimizer steps from 1) to the curves.

        Each curve gains its row at once. An evaluation step (one with `val_loss`) also ends
        DVCLive's step: `next_step` rewrites metrics.json, signals DVC's VS Code extension and
        re-reads every curve for DVC Studio, a cost that grows with the run, so it is paid per
        evaluation rather than per step.
        """
        if self._live is None:
            return
        self._live.step = int(row["step"])
        for name in CURVES:
            if name in row:
                self._live.log_metric(name, row[name])
        if "val_loss" in row:
            self._live.next_step()
        self._last_step = int(row["step"])

    def finish(self, summary: Mapping[str, object]) -> None:
        """Replace the latest values in metrics.json with the run's `summary`; the run is complete."""
        if self._live is None:
            return
        self._live.summary = dict(summary)
        self._live.step = self._last_step  # metrics.json's `step`: the last step logged
        self._live.end()
        self._finished = True

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.folder is not None and not self._finished:
            shutil.rmtree(self.folder, ignore_errors=True)  # no half-written metrics left behind
