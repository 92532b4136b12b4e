"""Shared pieces of the command lines: logging, config assembly, and how a run ends.

A :class:`~hieseg.errors.HiesegError` (a user error) ends a command with one line on stderr and
exit status 2; any other exception is a bug and keeps its traceback. SIGTERM is turned into
:class:`~hieseg.errors.Terminated`, a kind of ``KeyboardInterrupt``, so a ``kill`` runs the
same clean-ups as Ctrl-C (temporary files are removed) and ends with status 128 + the signal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hieseg.config import ExperimentConfig
from hieseg.errors import ConfigError, HiesegError, Terminated

EXIT_USER_ERROR = 2
EXIT_SIGNAL_BASE = 128
"""A run stopped by signal N exits with 128 + N, as a shell reports it."""
Item = TypeVar("Item")


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_reporting_errors(action: Callable[[], int]) -> int:
    """Run a command's body: a user error becomes one line on stderr and exit 2, a stop by signal 128 + N."""
    try:
        with _sigterm_raises():
            return action()
    except HiesegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"error: stopped by {signal.Signals(signum).name}; unfinished files were removed", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signum


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (only the main thread can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``section.key=value`` strings to a dict; values are JSON when they parse, else strings."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator:
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def build_config(
    config_path: Path | None, flags: dict[str, object | None], overrides: dict[str, object]
) -> ExperimentConfig:
    """Defaults (or ``config_path``), then the dotted keys of the flags that were given, then ``--set``.

    Every value is validated on the way (:mod:`hieseg.config`), so a bad one fails here, before any work.
    A loaded config.json's provenance is dropped: it describes those weights, not the new run.
    """
    config = ExperimentConfig.load(config_path) if config_path else ExperimentConfig()
    config = dataclasses.replace(config, provenance=None)
    given = {key: value for key, value in flags.items() if value is not None}
    return config.with_overrides({**given, **overrides})


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` of ``count`` of a sorted work list, for one task of a scheduler's job array."""

    index: int
    count: int

    def take(self, items: Sequence[Item]) -> list[Item]:
        """Every ``count``-th item starting at ``index``: the shards of one list are disjoint and cover it."""
        return list(items[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``--shard K/N`` with 0 <= K < N (K is 0-based, as ``$SLURM_ARRAY_TASK_ID`` of ``--array=0-<N-1>``)."""
    index, separator, count = text.partition("/")
    if not (separator and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, e.g. 0/4, got {text!r}")
    return Shard(int(index), int(count))
