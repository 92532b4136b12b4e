"""Shared pieces of the command lines: logging, config assembly, and known failures as exit code 2."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hieseg.config import ExperimentConfig
from hieseg.image_io import ImageError
from hieseg.layout import DatasetError
from hieseg.predictor import ModelError

USER_ERRORS = (ImageError, DatasetError, ModelError, ValueError, FileExistsError, FileNotFoundError)
"""Failures caused by the user's input: reported in one line, without a traceback."""
EXIT_USER_ERROR = 2


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_reporting_errors(action: Callable[[], int]) -> int:
    """Run a command's body; a user error becomes a one-line message on stderr and exit code 2."""
    try:
        return action()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``section.key=value`` strings to a dict; values are JSON when they parse, else strings."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator:
            raise ValueError(f"--set expects section.key=value, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def build_config(
    config_path: Path | None, flags: dict[str, object | None], overrides: dict[str, object]
) -> ExperimentConfig:
    """Defaults (or ``config_path``), then the dotted keys of the flags that were given, then ``--set``."""
    config = ExperimentConfig.load(config_path) if config_path else ExperimentConfig()
    given = {key: value for key, value in flags.items() if value is not None}
    return config.with_overrides({**given, **overrides})
