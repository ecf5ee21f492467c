"""Callbacks that tests add to a real training run through Hydra (``+callbacks.<name>._target_=...``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSVLogger's ``metrics.csv`` (empty if it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class MetricsFileProbe(pl.Callback):
    """Reads ``<csv_dir>/metrics.csv`` at the end of optimizer step ``at_step``, while training still runs, and
    keeps the steps whose ``key`` column is filled (``seen``) and the progress-bar metrics then (``pbar``)."""

    instances: list[MetricsFileProbe] = []  # the run's trainer is not returned by train(): find the probe here

    def __init__(self, csv_dir: str, at_step: int, key: str) -> None:
        self.path, self.at_step, self.key = Path(csv_dir) / "metrics.csv", int(at_step), key
        self.seen: list[int] | None = None
        self.pbar: dict = {}
        MetricsFileProbe.instances.append(self)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step and self.seen is None:
            self.seen = [int(r["step"]) for r in csv_rows(self.path) if r.get(self.key)]
            self.pbar = dict(trainer.progress_bar_metrics)
