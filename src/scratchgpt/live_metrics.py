"""The run's curves and summary in DVCLive's layout (interim: written whole at the end)."""

from __future__ import annotations

from pathlib import Path

from dvclive import Live

from scratchgpt.outputs import atomic_dir


class RunLog:
    def __init__(self, folder: Path | None, history: list[dict]):
        self.folder = folder
        self.rows = list(history)

    def log(self, rows: list[dict]) -> None:
        self.rows += rows

    def finish(self, summary: dict) -> None:
        if self.folder is None:
            return
        with atomic_dir(self.folder) as tmp:
            with Live(str(tmp), dvcyaml=None, save_dvc_exp=False, report=None) as live:
                for row in self.rows:
                    live.step = row["step"]
                    for name in ("train_loss", "val_loss", "learning_rate", "tokens_seen"):
                        if name in row:
                            live.log_metric(name, row[name])
                live.summary = summary
