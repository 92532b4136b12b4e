"""The tables every report writes: CSV files (atomically), Markdown tables, and the best entry per metric.

Evaluation, comparison, the study, batch prediction, training logs and the benchmark all write
their tables through here, so every CSV has the same dialect (a header row, ``\\r\\n`` line ends
as the :mod:`csv` module writes them, UTF-8) and every Markdown table the same shape. A CSV file
is read back before it takes its name, and text that UTF-8 cannot hold (a file name's
non-UTF-8 bytes, which Python keeps as lone surrogates) is written backslash-escaped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TypeVar

from hieseg.io.images import write_bytes_atomic

ENCODING = "utf-8"

Key = TypeVar("Key", bound=Hashable)


def write_csv_atomic(
    path: Path, fields: Sequence[str], records: Iterable[Mapping[str, object]], *, ignore_extra: bool = False
) -> None:
    """A header row of ``fields``, then one row per record, written with :func:`~hieseg.io.images.write_atomic`.

    ``ignore_extra`` leaves out keys of a record that are not among ``fields`` (else they are an error).
    """
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(fields), extrasaction="ignore" if ignore_extra else "raise")
    writer.writeheader()
    writer.writerows({key: encodable(value) for key, value in record.items()} for record in records)
    write_bytes_atomic(path, text.getvalue().encode(ENCODING))


def encodable(value: object) -> object:
    """``value`` as a cell: a path as text, text as :func:`escaped_text`, anything else as it is."""
    if isinstance(value, PurePath):
        value = str(value)
    return escaped_text(value) if isinstance(value, str) else value


def escaped_text(text: str) -> str:
    """``text``, with the characters UTF-8 cannot hold backslash-escaped: a file name's non-UTF-8 byte 0xff (kept
    by Python as the surrogate U+DCFF) as ``\\xff``, any other lone surrogate as ``\\udXXX``."""
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        try:
            return text.encode(ENCODING, "surrogateescape").decode(ENCODING, "backslashreplace")
        except UnicodeEncodeError:
            return text.encode(ENCODING, "backslashreplace").decode(ENCODING)
    return text


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by :func:`write_csv_atomic`, as text."""
    with Path(path).open(newline="", encoding=ENCODING) as handle:
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
