"""Where weights came from: the versions that trained them, recorded in config.json and checked on loading.

Training writes :func:`current_provenance` into the ``provenance`` section of ``config.json``.
Loading weights made with another major or minor version of torch or MONAI still works (the
state dict format is stable), but their numerics may differ, so :func:`warn_on_version_drift`
logs a warning naming both versions. Older config.json files have no provenance and load silently.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import monai
import torch

from hieseg.config.settings import ProvenanceConfig
from hieseg.runtime.versions import code_state, library_versions

LOG = logging.getLogger(__name__)
CHECKED_LIBRARIES = {"torch": "torch", "monai": "MONAI"}
"""Provenance fields whose major.minor must match the running library's, with the name to show."""
_MAJOR_MINOR = re.compile(r"(\d+)\.(\d+)")


def current_provenance() -> ProvenanceConfig:
    """The versions running now, and the state of the checkout this package runs from (if any)."""
    versions = library_versions()
    commit, dirty = code_state()
    return ProvenanceConfig(
        torch=versions["torch"],
        monai=versions["monai"],
        simpleitk=versions["simpleitk"],
        hieseg=versions["hieseg"],
        git_commit=commit,
        git_dirty=dirty,
    )


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
