"""Every command's entry: signals handled from the first moment, before the heavy imports (torch, MONAI).

Importing torch and MONAI takes seconds, many on a busy machine. A Ctrl-C or SIGTERM then must end
the command as one during its run does (:func:`hieseg.cli.common.run_reporting_errors`): one
``error: stopped by SIG...`` line and exit status 128 + the signal, not a traceback from inside an
import or death by signal. So the entry points (``train.py``, ``inference.py``, ``hieseg/<command>.py``
and the console scripts) start here, and this module imports nothing heavy itself.

How the command was started must not change its outcome either: a standard stream closed at the
start (``2>&-``) or whose reader went away (``| head -c0``) must not turn a written mask into a
failure, so the standard streams are made safe here first (:func:`make_standard_streams_safe`).
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from hieseg.errors import Terminated

EXIT_SIGNAL_BASE = 128
STANDARD_STREAMS = ("stdin", "stdout", "stderr")
"""The ``sys`` attributes of file descriptors 0, 1 and 2, in that order."""
TEXT_ERRORS = "backslashreplace"
"""How the output streams write what their encoding cannot hold (a file name's non-UTF-8 bytes)."""


def run_command(command: str, argv: Sequence[str] | None = None) -> int:
    """Import ``hieseg.cli.<command>`` with safe standard streams and with SIGINT and SIGTERM already handled,
    then run its ``main``."""
    make_standard_streams_safe()

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, terminate)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored when started in the background: keep it so
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main = importlib.import_module(f"hieseg.cli.{command}").main
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"error: stopped by {signal.Signals(signum).name} while starting; nothing was written",
              file=sys.stderr)
        return EXIT_SIGNAL_BASE + signum
    return main(None if argv is None else list(argv))


def make_standard_streams_safe() -> None:
    """Give the command standard streams it can always write to.

    A descriptor closed at the start is opened on the null device: Python leaves its ``sys``
    stream ``None`` (``sys.stderr.flush()`` then fails), and the next file the command opens (a
    mask being written) would get the descriptor, so that what a library prints would land in
    it. Standard output and error are then wrapped in :class:`ReaderGoneTolerant`, and write
    what their encoding cannot hold backslash-escaped instead of failing.
    """
    for descriptor, name in enumerate(STANDARD_STREAMS):
        if getattr(sys, name) is None:
            if _is_closed(descriptor):
                null = os.open(os.devnull, os.O_RDWR)
                if null != descriptor:
                    os.dup2(null, descriptor)
                    os.close(null)
            setattr(sys, name, open(os.devnull, "r" if descriptor == 0 else "w", encoding="utf-8"))
    for name in STANDARD_STREAMS[1:]:
        stream = getattr(sys, name)
        if not isinstance(stream, ReaderGoneTolerant):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors=TEXT_ERRORS)
            setattr(sys, name, ReaderGoneTolerant(stream))


def _is_closed(descriptor: int) -> bool:
    """Whether no file is open on ``descriptor``."""
    try:
        os.fstat(descriptor)
    except OSError:
        return True
    return False


class ReaderGoneTolerant:
    """A standard output or error stream whose reader may go away (``| head``, a closed pipe) without failing the
    command: the first write or flush that meets the broken pipe points the descriptor at the null device, and the
    command goes on as if it had been started with its output discarded (what it wrote, a mask, is its outcome)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()
            self._stream.flush()

    def _discard(self) -> None:
        """Point the stream's descriptor at the null device, where the text still buffered then goes too."""
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())
        finally:
            os.close(null)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


infer = functools.partial(run_command, "infer")
train = functools.partial(run_command, "train")
predict = functools.partial(run_command, "predict")
evaluate = functools.partial(run_command, "evaluate")
compare = functools.partial(run_command, "compare")
baselines = functools.partial(run_command, "baselines")
qc = functools.partial(run_command, "qc")
study = functools.partial(run_command, "study")
bench = functools.partial(run_command, "bench")
synthetic = functools.partial(run_command, "synthetic")
export = functools.partial(run_command, "export")
"""The console scripts' entry points (pyproject.toml): each command's ``run_command``."""
