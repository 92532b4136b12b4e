"""Where weights came from: the versions that trained them, recorded in config.json and checked on loading.

Training writes :func:`current_provenance` into the ``provenance`` section of ``config.json``.
Loading weights made with another major or minor version of torch or MONAI still works (the
state dict format is stable), but their numerics may differ, so :func:`warn_on_version_drift`
logs a warning naming both versions. Older config.json files have no provenance and load silently.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import monai
import SimpleITK as sitk
import torch

import hieseg
from hieseg.config import ProvenanceConfig

LOG = logging.getLogger(__name__)
CHECKED_LIBRARIES = {"torch": "torch", "monai": "MONAI"}
"""Provenance fields whose major.minor must match the running library's, with the name to show."""
GIT_TIMEOUT_S = 5.0
_MAJOR_MINOR = re.compile(r"(\d+)\.(\d+)")


def current_provenance() -> ProvenanceConfig:
    """The versions running now, and the state of the checkout this package runs from (if any)."""
    commit, dirty = git_state(Path(hieseg.__file__).resolve().parent)
    return ProvenanceConfig(
        torch=torch.__version__,
        monai=monai.__version__,
        simpleitk=sitk.Version.VersionString(),
        hieseg=hieseg.__version__,
        git_commit=commit,
        git_dirty=dirty,
    )


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


def warn_on_version_drift(provenance: ProvenanceConfig | None, config_path: Path) -> None:
    """Log a warning for each of torch and MONAI whose major.minor differs from the one that made the weights."""
    if provenance is None:
        return
    running = {"torch": torch.__version__, "monai": monai.__version__}
    for field, shown in CHECKED_LIBRARIES.items():
        recorded = getattr(provenance, field)
        if recorded is not None and _major_minor(recorded) != _major_minor(running[field]):
            LOG.warning("%s: weights made with %s %s, running %s %s (another major or minor version); "
                        "they load, but predictions may differ slightly", config_path, shown, recorded,
                        shown, running[field])


def _major_minor(version: str) -> tuple[int, int] | None:
    match = _MAJOR_MINOR.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None
