"""Every command's entry: signals handled from the first moment, before the heavy imports (torch, MONAI).

Importing torch and MONAI takes seconds, many on a busy machine. A Ctrl-C or SIGTERM then must end
the command as one during its run does (:func:`hieseg.cli.common.run_reporting_errors`): one
``error: stopped by SIG...`` line and exit status 128 + the signal, not a traceback from inside an
import or death by signal. So the entry points (``train.py``, ``inference.py``, ``hieseg/<command>.py``
and the console scripts) start here, and this module imports nothing heavy itself.
"""

from __future__ import annotations

import functools
import importlib
import signal
import sys
from collections.abc import Sequence

from hieseg.errors import Terminated

EXIT_SIGNAL_BASE = 128


def run_command(command: str, argv: Sequence[str] | None = None) -> int:
    """Import ``hieseg.cli.<command>`` with SIGINT and SIGTERM already handled, then run its ``main``."""
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
