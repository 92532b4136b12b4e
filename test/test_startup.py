"""Signals during start-up: a command stopped while it still imports torch ends as one stopped while it runs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import os, signal, sys, time

class SignalWhileImportingTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), signal.{signal_name})
            time.sleep(30)  # the handler interrupts the sleep
        return None

sys.meta_path.insert(0, SignalWhileImportingTorch())
from hieseg.cli.startup import run_command
sys.exit(run_command("{command}", ["--help"]))
"""


@pytest.mark.parametrize("command", ["infer", "predict", "train"])
@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_importing_torch_ends_with_one_line_and_the_signal_status(
    command: str, signal_name: str, status: int
) -> None:
    probe = PROBE.format(signal_name=signal_name, command=command)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == status, result.stderr
    assert result.stderr == f"error: stopped by {signal_name} while starting; nothing was written\n"


def test_without_a_signal_the_command_runs() -> None:
    probe = PROBE.replace("os.kill(os.getpid(), signal.{signal_name})\n            time.sleep(30)", "pass")
    result = subprocess.run([sys.executable, "-c", probe.format(command="predict")], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--input" in result.stdout
