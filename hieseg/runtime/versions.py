"""What code is running: the versions of hieseg and its libraries, and the git state of its checkout.

One collector for the three places that record it: the ``provenance`` of the weights' config.json
(:mod:`hieseg.model.provenance`), the footer of every HTML report and the benchmark's machine description.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import monai
import numpy as np
import SimpleITK as sitk
import torch

import hieseg

GIT_TIMEOUT_S = 5.0
PACKAGE_DIR = Path(hieseg.__file__).resolve().parent


def library_versions() -> dict[str, str]:
    """hieseg, torch, MONAI, SimpleITK, numpy and Python versions running now."""
    return {
        "hieseg": hieseg.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "simpleitk": sitk.Version.VersionString(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def code_state() -> tuple[str | None, bool | None]:
    """The git commit of the checkout this package runs from, and whether tracked files differ from it."""
    return git_state(PACKAGE_DIR)


def git_state(package_dir: Path) -> tuple[str | None, bool | None]:
    """HEAD of the git checkout whose top folder holds ``package_dir``, and whether tracked files differ from it.

    (None, None) when the package is not in such a checkout or git cannot tell. An installed
    package may sit inside some other repository (a virtual environment in a checkout), whose
    commit says nothing about the installed code, so only a checkout holding the package at its top counts.
    """
    lines = (_git(package_dir, "rev-parse", "--show-toplevel", "HEAD") or "").splitlines()
    if len(lines) != 2 or Path(lines[0]).resolve() != package_dir.parent:
        return None, None
    changes = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    return lines[1], None if changes is None else bool(changes.strip())


def _git(folder: Path, *args: str) -> str | None:
    """stdout of a git command run in ``folder``; None when git is missing, fails or hangs."""
    try:
        result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def command_name(program: Path) -> str:
    """How a command was started, from its ``sys.argv[0]``: ``python -m hieseg.<module>`` for a module of the
    package, else the program's file name (``train.py``, ``hieseg-predict``)."""
    path = program.resolve()
    if not path.is_relative_to(PACKAGE_DIR):
        return program.name
    return "python -m " + ".".join(["hieseg", *path.relative_to(PACKAGE_DIR).with_suffix("").parts])
