"""``python -m hieseg.baselines`` (``hieseg-baselines``): the Z_ADC < -2 baselines' masks of every case.

Usage::

    python -m hieseg.baselines --data <release root or container input root> --out <dir> [--no-progress]

``--data`` is a release root (cases found with :func:`hieseg.io.layout.discover_cases`; labels
not needed) or a grand-challenge container input root (one case, named after its ADC file,
as the container names its output). Writes ``<out>/<baseline>/<case>.mha``: uint8 0/1
masks with exactly Z_ADC's geometry, which ``python -m hieseg.evaluate --pred
<out>/<baseline> --truth <release root>`` reads directly. Bad input is one line on stderr
and exit status 2 (see :mod:`hieseg.cli.common`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.evaluation.baselines import BASELINES, write_baselines
from hieseg.runtime.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="Write the Z_ADC < -2 baselines' masks of every case.")
    parser.add_argument("--data", type=Path, required=True,
                        help="release root (1ADC_ss/, 2Z_ADC/) or container input root (images/...)")
    parser.add_argument("--out", type=Path, required=True, help="writes <out>/<baseline>/<case>.mha")
    add_output_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        count = write_baselines(args.data, args.out, progress=not args.no_progress)
        print(f"{count} case(s) x {len(BASELINES)} baseline(s) ({', '.join(BASELINES)}) written to {args.out}")
        return 0

    return run_reporting_errors(run)

