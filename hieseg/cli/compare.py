"""Score trained models beside the Z_ADC baselines on the same cases, in one run.

Usage::

    python -m hieseg.compare --data <release root> --model <weights dir> [--model <dir2> ...]
                             [--name NAME ...] [--pred [NAME=]<masks dir> ...] --out <dir> [--device auto] [--tta | --no-tta]
                             [--nsd-tolerance 2.0] [--html <dir>] [--no-progress] [--verbose]

A model's score means little alone: ``Z_ADC < -2`` (:mod:`hieseg.evaluation.baselines`) is what the
map gives for free, and the resampling ceiling (:mod:`hieseg.evaluation.ceiling`) is the best any
model predicting on that model's grid could reach. This command puts the three side by side,
computed from the same cases in the same run:

* every weights folder is loaded once and predicts every case on the native grid, as the
  container does (``--tta`` forces flip test-time augmentation on, ``--no-tta`` off;
  default as saved); ``--name`` names the models in order (default: the folders' names);
* ``--pred`` (repeatable) adds a folder of masks another tool predicted, ``<case>.mha`` on the
  native grid, e.g. nnU-Net's ``nnUNetv2_predict`` output for a dataset written by
  ``hieseg-export nnunet`` (which keeps the case ids, so its masks need no renaming); it is
  named after its folder, or ``NAME=DIR``, described as nnU-Net's when nnU-Net wrote it
  (:func:`hieseg.interop.nnunet.describe_predictions`), and scored where it is; a folder missing
  a case's mask is refused before any prediction;
* both baselines are computed from each case's Z_ADC;
* every method's masks are scored by :class:`hieseg.evaluation.scoring.Reference`, exactly as
  ``python -m hieseg.evaluate`` would (brain = ADC > 0, burden groups <1 %, 1-5 %, >5 %,
  an empty prediction of a lesioned case scored MASD = the image diagonal), models with the
  ceiling of their own target spacing;
* MASD is also averaged the official script's way, over the cases where both masks are
  non-empty (:func:`hieseg.evaluation.metrics.official_mean_masd`), since that is what the leaderboard
  reports.

Layout of ``--out``::

    predictions/<method>/<case>.mha    masks on the native grid (models and baselines; --pred folders stay where they are)
    comparison.csv                     one row per (method, case): the challenge metrics (+ ceiling)
    comparison.json                    settings and, per method, statistics overall and per burden group
    comparison.md                      one table per burden group: methods as rows

``--html DIR`` also writes the comparison as an HTML report that opens offline
(:mod:`hieseg.reports.html`): the methods side by side in the tables and box plots, and one
row per case, worst first, with every method's QC picture of it.

The overall table is printed too. Bad input (a missing folder, no cases, a bad weights
folder, a --pred folder missing a case, clashing names) is one line on stderr and exit status 2,
before any prediction.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.evaluation.compare import (
    COMPARISON_CSV,
    COMPARISON_JSON,
    COMPARISON_MD,
    NAME_PATTERN,
    PredictionFolder,
    compare,
    comparison_table,
    lesion_table,
)
from hieseg.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM
from hieseg.interop.nnunet import describe_predictions
from hieseg.io.images import require_writable
from hieseg.reports.html import REPORT_HTML
from hieseg.reports.pages import write_comparison_report
from hieseg.runtime.devices import select_device
from hieseg.runtime.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="Score trained models beside the Z_ADC baselines on the same cases, in one run.")
    parser.add_argument("--data", type=Path, required=True, help="release root with 1ADC_ss/, 2Z_ADC/ and 3LABEL/")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="weights folder (config.json + *.pt); repeat to compare several")
    parser.add_argument("--name", action="append", help="name of each --model, in order (default: folder names)")
    parser.add_argument("--pred", type=_prediction_folder, action="append", default=[], metavar="[NAME=]DIR",
                        help="folder of masks <case>.mha predicted elsewhere (e.g. nnU-Net's), scored beside the "
                             "models; named after the folder unless NAME= is given (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder for predictions/ and the comparison reports")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda or cpu")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation for every model (default: as saved)")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, help="NSD tolerance in mm")
    parser.add_argument("--html", type=Path, help="also write an HTML report (report.html and its pictures) here")
    add_output_flags(parser)
    return parser


def _prediction_folder(text: str) -> tuple[str, Path]:
    """``--pred [NAME=]DIR``: the method's name (default: the folder's name) and its folder."""
    name, separator, folder = text.partition("=")
    if not separator or not NAME_PATTERN.match(name):
        return Path(text).resolve().name, Path(text)
    return name, Path(folder)


def _described(name: str, folder: Path) -> PredictionFolder:
    """A ``--pred`` folder, described as nnU-Net's predictions when nnU-Net wrote it."""
    description, _ = describe_predictions(folder)
    return PredictionFolder(name, folder, description)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        if args.html is not None:
            require_writable(args.html, folder=True)
        comparison = compare(
            args.data,
            args.model,
            args.out,
            names=args.name,
            predictions=[_described(name, folder) for name, folder in args.pred],
            device=select_device(args.device),
            tta=args.tta,
            nsd_tolerance_mm=args.nsd_tolerance,
            progress=not args.no_progress,
        )
        if args.html is not None:
            write_comparison_report(args.html, comparison, args.out, progress=not args.no_progress)
        print("\n".join(comparison_table(comparison.summary)))
        print("\n".join(["", *lesion_table(comparison.summary)]))
        print(f"reports in {args.out}: {COMPARISON_MD}, {COMPARISON_JSON}, {COMPARISON_CSV}")
        if args.html is not None:
            print(f"HTML report: {args.html / REPORT_HTML}")
        return 0

    return run_reporting_errors(run)

