"""The project's own failures, which the command lines report in one line with exit status 2.

Only a :class:`HiesegError` is a user error: something the user can fix (a file, a setting, an
output folder). Any other exception is a bug and keeps its traceback. The input errors are also
``ValueError`` and the output errors ``OSError``, so library callers that catch those keep working.
"""

from __future__ import annotations

import signal


class HiesegError(Exception):
    """A failure caused by the user's input, settings or output location, not by a bug."""


class InputError(HiesegError, ValueError):
    """An input that cannot be used."""


class ConfigError(InputError):
    """A setting (config.json, a flag or ``--set``) or option that is unknown, mistyped or out of range."""


class ImageError(InputError):
    """An image that cannot be used: unreadable, wrong dimension, non-finite, misaligned or without brain."""


class DatasetError(InputError):
    """A data folder that does not follow the release layout, or cases that cannot be trained on."""


class ModelError(InputError):
    """A weights folder that cannot be used: missing, empty or incompatible with its config."""


class EvaluationError(InputError):
    """Inputs that cannot be scored: a missing folder, prediction or brain image."""


class TrainingError(HiesegError):
    """A training run that cannot go on: its loss or its weights are no longer finite numbers (it diverged)."""


class OutputError(HiesegError, OSError):
    """An output that cannot be written, or that would overwrite work that must be kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up that runs for Ctrl-C runs for it too."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
