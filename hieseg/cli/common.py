"""Shared pieces of the command lines: how a run ends, and the flags several commands take.

A :class:`~hieseg.errors.HiesegError` (a user error) ends a command with one line on stderr and
exit status 2; any other exception is a bug and keeps its traceback. SIGTERM is turned into
:class:`~hieseg.errors.Terminated`, a kind of ``KeyboardInterrupt``, so a ``kill`` runs the
same clean-ups as Ctrl-C (temporary files are removed) and ends with status 128 + the signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from hieseg.config.settings import InferenceConfig
from hieseg.errors import HiesegError, Terminated
from hieseg.io.tables import escaped_text
from hieseg.runtime.shards import Shard
from hieseg.runtime.versions import command_name

EXIT_USER_ERROR = 2
EXIT_SIGNAL_BASE = 128
"""A run stopped by signal N exits with 128 + N, as a shell reports it."""
MODEL_ENVIRONMENT = "HIESEG_MODEL"


def run_reporting_errors(action: Callable[[], int]) -> int:
    """Run a command's body: a user error becomes one line on stderr and exit 2, a stop by signal 128 + N."""
    try:
        with _sigterm_raises():
            return action()
    except HiesegError as exc:
        print(f"error: {escaped_text(str(exc))}", file=sys.stderr)
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


def parse_shard(text: str) -> Shard:
    """``--shard K/N`` with 0 <= K < N (K is 0-based, as ``$SLURM_ARRAY_TASK_ID`` of ``--array=0-<N-1>``)."""
    index, separator, count = text.partition("/")
    if not (separator and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, e.g. 0/4, got {text!r}")
    return Shard(int(index), int(count))


class CommandParser(argparse.ArgumentParser):
    """The argument parser of every command: its usage names the command as it was started (``hieseg-predict``,
    ``python -m hieseg.predict``, ``inference.py``), and a bad argument is one ``error:`` line, exit 2."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("prog", command_name(Path(sys.argv[0])))
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def add_output_flags(parser: argparse.ArgumentParser, progress: bool = True) -> None:
    """The flags every command shares for what it prints: ``--verbose``, and ``--no-progress`` where it shows bars."""
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--verbose", action="store_true", help="log debugging detail")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the weights, the device and the inference settings (``inference.py`` and ``predict``)."""
    parser.add_argument("--model", type=path_argument(MODEL_ENVIRONMENT), default=os.environ.get(MODEL_ENVIRONMENT),
                        help="weights folder (env HIESEG_MODEL; default /opt/ml/model if it holds a model, else "
                             "the model/ folder of the checkout, the demo weights; an installed copy has none)")
    parser.add_argument("--device", default=os.environ.get("HIESEG_DEVICE", "auto"),
                        help="auto (CUDA if available), cpu, cuda or cuda:N (env HIESEG_DEVICE)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation (default: as saved in config.json)")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                        help="refine the probability with the folder's refinement.json (default: as saved)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: as saved)")
    parser.add_argument("--min-component-mm3", type=float, help="drop smaller lesion components (default: as saved)")


def inference_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The inference settings given on the command line, checked (a bad value fails here, before any work)."""
    overrides = {key: value for key, value in (
        ("tta_flips", args.tta), ("refine", args.refine), ("threshold", args.threshold),
        ("min_component_mm3", args.min_component_mm3),
    ) if value is not None}
    InferenceConfig(**overrides)
    return overrides


def path_argument(environment: str | None = None) -> Callable[[str], Path]:
    """The ``type`` of a path flag: refuses the empty string, which :class:`Path` takes for the working folder
    (``--output ""`` would write there); ``environment`` names the variable that gives the flag's default.

    A flag's default given as a string goes through its ``type`` too, so a variable set but empty
    (``-e HIESEG_OUTPUT=`` with the value forgotten) is refused the same way, in one line.
    """
    def to_path(text: str) -> Path:
        if not text:
            unset = f" ({environment} is set but empty)" if environment and os.environ.get(environment) == "" else ""
            raise argparse.ArgumentTypeError(f"an empty path, which would mean the current folder{unset}; give a path")
        return Path(text)

    return to_path
