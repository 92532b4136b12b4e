"""The tables every report writes: CSV files (atomically), Markdown tables, and the best entry per metric.

Evaluation, comparison, the study, batch prediction, training logs and the benchmark all write
their tables through here, so every CSV has the same dialect (a header row, ``\\r\\n`` line ends
as the :mod:`csv` module writes them) and every Markdown table the same shape.
"""

from __future__ import annotations

import csv
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from hieseg.io.images import write_atomic

Key = TypeVar("Key", bound=Hashable)


def write_csv_atomic(
    path: Path, fields: Sequence[str], records: Iterable[Mapping[str, object]], *, ignore_extra: bool = False
) -> None:
    """A header row of ``fields``, then one row per record, written with :func:`~hieseg.io.images.write_atomic`.

    ``ignore_extra`` leaves out keys of a record that are not among ``fields`` (else they are an error).
    """
    rows = list(records)

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore" if ignore_extra else "raise")
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by :func:`write_csv_atomic`, as text."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: the header, its rule, then one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def best_per_metric(
    statistics: Mapping[Key, Mapping[str, Mapping[str, float] | None]], higher_is_better: Mapping[str, bool]
) -> dict[str, set[Key]]:
    """Per metric of ``higher_is_better``, the keys whose mean is best (highest or lowest); ties all win.

    ``statistics`` maps each entry (a method, a model) to its per-metric statistics with a
    ``mean``; a metric an entry lacks (absent or ``None``) is left out for that entry.
    """
    best: dict[str, set[Key]] = {}
    for metric, higher in higher_is_better.items():
        means = {key: stats[metric]["mean"] for key, stats in statistics.items() if stats.get(metric)}
        if means:
            target = max(means.values()) if higher else min(means.values())
            best[metric] = {key for key, mean in means.items() if mean == target}
    return best
