"""A run's configuration from its three sources: a config.json or the defaults, named flags, and ``--set``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hieseg.config.settings import ExperimentConfig
from hieseg.errors import ConfigError


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``section.key=value`` strings to a dict; values are JSON when they parse, else strings."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator:
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
        except RecursionError as exc:
            raise ConfigError(f"--set {key.strip()}: the value is nested too deeply to be a setting") from exc
    return overrides


def build_config(
    config_path: Path | None, flags: dict[str, object | None], overrides: dict[str, object]
) -> ExperimentConfig:
    """Defaults (or ``config_path``), then the dotted keys of the flags that were given, then ``--set``.

    Every value is validated on the way (:mod:`hieseg.config.settings`), so a bad one fails here, before any work.
    A loaded config.json's provenance is dropped: it describes those weights, not the new run.
    """
    config = ExperimentConfig.load(config_path) if config_path else ExperimentConfig()
    config = dataclasses.replace(config, provenance=None)
    given = {key: value for key, value in flags.items() if value is not None}
    return config.with_overrides({**given, **overrides})
