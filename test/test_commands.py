"""Every command alike: its usage names it as it was started, the shared flags are there, a bad argument is one line."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from hieseg.runtime.versions import PACKAGE_DIR, command_name

REPO = Path(__file__).resolve().parents[1]
LONG_RUNNING = {
    # command module: the shared flags it must take
    "train": {"--device", "--no-progress", "--verbose"},
    "predict": {"--device", "--no-progress", "--verbose"},
    "evaluate": {"--no-progress", "--verbose"},
    "compare": {"--device", "--no-progress", "--verbose"},
    "baselines": {"--no-progress", "--verbose"},
    "study": {"--device", "--no-progress", "--verbose"},
    "bench": {"--device", "--verbose"},
    "synthetic": {"--no-progress", "--verbose"},
    "infer": {"--device", "--verbose"},
    "export": {"--verbose"},
    "gpu_check": {"--device", "--verbose"},
}
"""infer segments one case and export copies files: no progress bars; bench prints figures, not bars."""


@pytest.mark.parametrize("command", sorted(LONG_RUNNING))
def test_every_long_running_command_takes_the_shared_flags(command: str) -> None:
    parser = importlib.import_module(f"hieseg.cli.{command}").build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert LONG_RUNNING[command] <= flags


def test_the_usage_names_the_command_as_it_was_started() -> None:
    assert command_name(PACKAGE_DIR / "predict.py") == "python -m hieseg.predict"
    assert command_name(Path("/usr/local/bin/hieseg-predict")) == "hieseg-predict"
    assert command_name(REPO / "train.py") == "train.py"


@pytest.mark.parametrize(("argv", "usage"), [
    (["-m", "hieseg.predict"], "usage: python -m hieseg.predict"),
    (["-m", "hieseg.synthetic"], "usage: python -m hieseg.synthetic"),
    (["inference.py"], "usage: inference.py"),
])
def test_help_and_errors_name_the_command_and_an_error_is_one_line(argv: list[str], usage: str) -> None:
    helped = subprocess.run([sys.executable, *argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith(usage)
    wrong = subprocess.run([sys.executable, *argv, "--no-such-flag"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    name = usage.removeprefix("usage: ")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert wrong.stderr.startswith("error: ") and wrong.stderr.endswith(f" (see {name} --help)\n")
