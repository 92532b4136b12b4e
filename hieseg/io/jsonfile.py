"""A JSON file that goes with some weights (tuning.json, refinement.json) read with every failure named.

Such a file may be damaged or hostile: unreadable, not JSON, or nested deep enough to exhaust Python's
recursion. Each is one :class:`~hieseg.errors.ModelError` naming the file, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from hieseg.errors import ModelError


def read_weights_json(path: Path, holds: str) -> object:
    """The parsed content of ``path``, which ``holds`` something small (said in the message of a file nested too
    deeply to be it); a :class:`ModelError` naming ``path`` when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ModelError(f"{path}: nested too deeply for {holds}") from exc
