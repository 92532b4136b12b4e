"""How every command logs: one format on stderr, INFO by default, DEBUG with ``--verbose``.

Worker processes (:mod:`hieseg.runtime.pool`) call it too, so their lines look like the parent's.
"""

from __future__ import annotations

import logging
import sys


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
