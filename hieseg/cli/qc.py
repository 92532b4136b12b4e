"""``python -m hieseg.qc`` (``hieseg-qc``): the quality-control picture of one case (:mod:`hieseg.reports.qc`).

Usage::

    python -m hieseg.qc --adc <file> --zadc <file> [--truth <file>] --pred <file> --out <png>
                        [--thumbnail <png>] [--case-id ID] [--max-slices 12]
                        [--views axial [coronal sagittal]] [--margin-mm 8] [--nsd-tolerance 2.0]

``--thumbnail`` also writes the small picture of the error row that reports use. Problems with
the inputs are reported as one line on stderr, with exit status 2 (see :mod:`hieseg.cli.common`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, run_reporting_errors
from hieseg.io.images import check_same_geometry, read_image, require_writable
from hieseg.reports.qc import VIEWS, QcSettings, write_qc


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="Draw the quality-control picture of one case.")
    defaults = QcSettings()
    parser.add_argument("--adc", type=Path, required=True, help="skull-stripped ADC image")
    parser.add_argument("--zadc", type=Path, required=True, help="Z_ADC image")
    parser.add_argument("--truth", type=Path, help="truth lesion mask (optional)")
    parser.add_argument("--pred", type=Path, required=True, help="predicted lesion mask")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--thumbnail", type=Path, help="also write a small PNG of the error row")
    parser.add_argument("--case-id", default="", help="name in the title (default: the prediction's file name)")
    parser.add_argument("--max-slices", type=int, default=defaults.max_slices, help="most slices per view")
    parser.add_argument("--views", nargs="+", default=list(defaults.views), metavar="VIEW",
                        help=f"any of {', '.join(VIEWS)} (default: axial)")
    parser.add_argument("--margin-mm", type=float, default=defaults.margin_mm, help="margin around the brain (mm)")
    parser.add_argument("--nsd-tolerance", type=float, default=defaults.nsd_tolerance_mm, help="NSD tolerance in mm")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: _picture(args))


def _picture(args: argparse.Namespace) -> int:
    settings = QcSettings(max_slices=args.max_slices, views=tuple(args.views), margin_mm=args.margin_mm,
                          nsd_tolerance_mm=args.nsd_tolerance)
    for path in (args.out, args.thumbnail):
        if path is not None:
            require_writable(path)
    adc = read_image(args.adc)
    others = {path: read_image(path) for path in (args.zadc, args.pred, args.truth) if path is not None}
    for path, image in others.items():
        check_same_geometry(adc, args.adc, image, path)
    truth = others[args.truth] if args.truth is not None else None
    case_id = args.case_id or args.pred.name.split(".")[0]
    result = write_qc(adc, others[args.zadc], others[args.pred], truth, args.out, case_id=case_id,
                      settings=settings, thumbnail=args.thumbnail)
    shown = "; ".join(f"{view} slices {indices}" for view, indices in result.slices.items())
    print(f"wrote {args.out} ({shown})")
    return 0

