"""Per-step metrics: DVC plots files (one TSV per metric) and a pluggable logger callable."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["MetricLogger", "PlotsWriter", "plot_file_name"]

#: ``logger(metrics, step)``: e.g. ``lambda m, s: mlflow.log_metrics(m, step=s)``.
MetricLogger = Callable[[Mapping[str, float], int], None]


def plot_file_name(metric: str) -> str:
    """``train/loss`` -> ``train_loss.tsv``."""
    return metric.replace("/", "_").replace(" ", "_") + ".tsv"


class PlotsWriter:
    """Appends ``step<TAB>value`` rows to ``<plots_dir>/<metric>.tsv`` (a DVC plots file each,
    with a header ``step<TAB><metric name>``).

    Args:
        plots_dir: the directory (created on first write).
        resume_step: rows after this step are dropped from existing files first, so a resumed
            run does not leave the curve of its killed attempt behind; None starts fresh files.
    """

    def __init__(self, plots_dir: str | Path, resume_step: int | None = None) -> None:
        self.dir = Path(plots_dir)
        self.resume_step = resume_step
        self._seen: set[str] = set()

    def _prepare(self, metric: str) -> Path:
        path = self.dir / plot_file_name(metric)
        if metric in self._seen:
            return path
        self._seen.add(metric)
        self.dir.mkdir(parents=True, exist_ok=True)
        kept: list[list[str]] = []
        if self.resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh, delimiter="\t"))
            kept = [r for r in rows[1:] if r and int(r[0]) <= self.resume_step]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(["step", metric])
            writer.writerows(kept)
        os.replace(tmp, path)
        return path

    def __call__(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one row per metric."""
        for name, value in metrics.items():
            path = self._prepare(name)
            with open(path, "a", newline="") as fh:
                fh.write(f"{step}\t{float(value):.6g}\n")
