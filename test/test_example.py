"""The README's end-to-end example runs as written: synthetic cases, a tiny training run, batch prediction, evaluation.

The block after the marker line ``<!-- test/test_example.py runs this block as written. -->`` is run command by
command in a temporary folder (so its relative paths, ``data/example`` and the like, land there): ``python`` is this
interpreter, ``train.py`` and ``inference.py`` are the checkout's, and ``python -m hieseg.<command>`` finds the
checkout's package through ``PYTHONPATH``. Nothing else about the commands is changed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = "<!-- test/test_example.py runs this block as written. -->"
SCRIPTS = ("train.py", "inference.py")
COMMAND_TIMEOUT_S = 900
EVALUATED = re.compile(r"^(\d+) case\(s\): Dice (\d\.\d{3}), MASD ([\d.]+) mm, NSD (\d\.\d{3}); reports in (\S+)$",
                       re.MULTILINE)


def example_commands() -> list[str]:
    """The command lines of the fenced block right after the marker."""
    lines = README.read_text().splitlines()
    start = lines.index(MARKER) + 1
    assert lines[start].startswith("```"), "the marker must stand right above the example's fenced block"
    end = next(index for index in range(start + 1, len(lines)) if lines[index].startswith("```"))
    return [line for line in lines[start + 1:end] if line.strip() and not line.lstrip().startswith("#")]


def as_run_here(command: str) -> list[str]:
    """The command's words, with this interpreter for ``python`` and the checkout's scripts for theirs."""
    words = shlex.split(command)
    assert words[0] == "python", f"the example runs python commands only: {command}"
    return [sys.executable, *(str(REPO / word) if word in SCRIPTS else word for word in words[1:])]


def test_the_example_block_is_the_chain_it_describes() -> None:
    commands = example_commands()
    assert [shlex.split(command)[:3] for command in commands] == [
        ["python", "-m", "hieseg.synthetic"], ["python", "train.py", "--data"],
        ["python", "-m", "hieseg.predict"], ["python", "-m", "hieseg.evaluate"]]
    assert all("model/" not in shlex.split(command) for command in commands)


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    for command in example_commands():
        result = subprocess.run(as_run_here(command), check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print(f"the README's example took {time.monotonic() - started:.1f} s")

    scored = EVALUATED.search(result.stdout + result.stderr)
    assert scored, result.stdout + result.stderr
    cases, dice, masd, nsd, reports = scored.groups()
    assert int(cases) == 6 and 0.0 <= float(dice) <= 1.0 and 0.0 <= float(nsd) <= 1.0 and float(masd) >= 0.0
    summary = (tmp_path / reports / "summary.md").read_text()
    assert "## Lesion-wise" in summary
    assert sorted(path.name for path in (tmp_path / "runs" / "example").glob("*.pt")) == ["fold0.pt"]
    predictions = (tmp_path / "out" / "example" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + 6 and all(",written," in row for row in predictions[1:])
    shown = re.search(r"`(\d+ case\(s\): Dice [^`]+)`", README.read_text())
    assert shown and EVALUATED.fullmatch(shown.group(1)), "the README shows the evaluate line the example ends with"
