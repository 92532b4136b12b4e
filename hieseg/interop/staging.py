"""Outputs written whole or not at all: filled in a temporary folder beside the target, renamed at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hieseg.errors import OutputError
from hieseg.io.images import current_umask, require_writable

STAGING_PREFIX = ".tmp-"


def require_new_folder(target: Path, what: str = "--out") -> None:
    """Refuse a ``target`` that is a file or a folder with anything in it, or that cannot be created."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{what} {target}: is a file, not a folder")
    if target.is_dir() and any(target.iterdir()):
        raise OutputError(f"{what} {target}: exists and is not empty; choose a new folder or empty this one")
    require_writable(target, folder=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends, rename it to ``target``.

    ``target`` must not exist or be an empty folder (:func:`require_new_folder`). If the block
    fails, is interrupted (Ctrl-C, SIGTERM via ``hieseg.cli.common``) or the rename fails, the
    temporary folder and any parent folder made for it are removed, so nothing half-written is
    left. The folder gets the mode an ordinary new folder would (0777 less the umask).
    """
    target = Path(target)
    made = _missing_parents(target)
    temporary: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
        yield temporary
        os.chmod(temporary, 0o777 & ~current_umask())
        if target.is_dir():
            target.rmdir()
        os.rename(temporary, target)
        temporary = None
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"{target}: cannot be written ({exc.strerror or exc})") from exc
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break


def _missing_parents(target: Path) -> list[Path]:
    """The parent folders of ``target`` that do not exist yet, deepest first."""
    missing = []
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing
