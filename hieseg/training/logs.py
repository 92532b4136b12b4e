"""A training run's logs: ``metrics.csv`` (one row per epoch) and TensorBoard events, in its run folder.

A resumed run continues the rows of its checkpoint's epochs and drops any past it (a run killed
between writing its logs and its checkpoint); a fresh run starts fresh logs.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from hieseg.io.tables import read_csv, write_csv_atomic

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
METRIC_FIELDS = ("epoch", "train_loss", "val_dice", "learning_rate", "seconds")
LOGGED_SCALARS = ("train_loss", "val_dice", "learning_rate")
"""The columns of metrics.csv that also go to TensorBoard (when not NaN)."""


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    """Write the whole metrics.csv (a few hundred rows at most) atomically."""
    write_csv_atomic(path, METRIC_FIELDS, ({**row, "epoch": int(row["epoch"])} for row in history))


def read_history(path: Path) -> list[dict[str, float]]:
    """Per-epoch rows of a run's metrics.csv as floats (NaN where no validation ran); empty if none."""
    if not path.exists():
        return []
    return [{key: float(value) for key, value in row.items()} for row in read_csv(path)]


def continued_history(run_dir: Path, epochs_done: int, recorded: list[dict[str, float]] | None = None
                      ) -> list[dict[str, float]]:
    """The log rows a run continues from: none for a fresh run (old logs are removed), else those of its checkpoint.

    The checkpoint holds its rows (``recorded``) and is written before the logs, so metrics.csv is
    rewritten from it: a run killed between the two continues with the row the logs lacked. A
    checkpoint of an earlier version holds none; its logs' rows past its epoch are dropped.
    """
    if epochs_done == 0:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
        return []
    if recorded is None:
        recorded = [row for row in read_history(run_dir / METRICS_FILE) if row["epoch"] <= epochs_done]
    write_metrics(run_dir / METRICS_FILE, recorded)
    return recorded


def tensorboard_writer(run_dir: Path, history: list[dict[str, float]]):
    """A TensorBoard writer of the run folder (imported on first use) that continues ``history``: the events
    from its last epoch on are purged and that epoch's are written again, so they match whether or not the
    run stopped before logging it."""
    from torch.utils.tensorboard import SummaryWriter

    if not history:
        return SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
    writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=int(history[-1]["epoch"]))
    log_scalars(writer, history[-1])
    return writer


def log_scalars(writer, row: dict[str, float]) -> None:
    """An epoch's row to TensorBoard: the columns of ``LOGGED_SCALARS`` that are not NaN."""
    for key in LOGGED_SCALARS:
        if not math.isnan(row[key]):
            writer.add_scalar(key, row[key], int(row["epoch"]))
    writer.flush()
