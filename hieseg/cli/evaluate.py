"""Score a folder of predicted lesion masks against the truth with the challenge metrics.

Usage::

    python -m hieseg.evaluate --pred <dir> --truth <dir> [--brain <dir>] [--out <dir>]
                              [--nsd-tolerance 2.0] [--allow-missing] [--compat bonbid2023]
                              [--ceiling-spacing X Y Z | --model <weights dir>]
                              [--html <dir> [--beside <pred dir> ...]]

``--truth`` is either a plain folder of masks (``<case>.mha`` or ``<case>_lesion.mha``) or
a release root: when it holds ``3LABEL/``, the truth is ``3LABEL/<case>_lesion.mha`` and
the brain comes from ``1ADC_ss/<case>-ADC_ss.mha`` (voxels > 0). ``--brain`` overrides
where brain images are found: a release root, or a folder of ``<case>-ADC_ss.mha`` or
``<case>.mha`` files (ADC images or brain masks; voxels > 0 are brain). With a plain truth
folder and no ``--brain``, brain volume is unknown, so the burden fraction is NaN and the
burden group "unknown".

Predictions are matched by case id: ``<pred>/<case>.mha`` or ``<pred>/<case>_lesion.mha``.
Each must be a binary 0/1 mask on the truth's grid. A truth case without a prediction is
an error unless ``--allow-missing``, which scores it as an empty prediction. Predictions
without a truth case are not scored and are listed in a warning.

``--ceiling-spacing`` (mm), or ``--model``, whose ``config.json`` gives
``preprocess.target_spacing``, adds each case's resampling ceiling (:mod:`hieseg.evaluation.ceiling`):
the Dice its truth keeps after a round trip through that grid, the best a model predicting
there can reach. It becomes the ``ceiling_dice`` column and is summarized beside the scores.

``--compat bonbid2023`` scores as the challenge's 2023 evaluation did, so the numbers can
stand beside the leaderboard's (quirks in :mod:`hieseg.evaluation.metrics`): the spacing is paired with
the axes in reverse for MASD and NSD, NSD is at 2 mm, a case with exactly one empty mask gets
MASD NaN and is left out of the MASD mean, and the prediction takes the truth's geometry: only
its size must match (the official script copies the truth's origin, spacing and direction onto
it). Without it, each axis gets its own spacing and the prediction must be on the truth's grid.

``--html DIR`` also writes an HTML report that opens offline (:mod:`hieseg.reports.html`):
the tables, box plots and one row per case, worst first, each with its QC picture
(:mod:`hieseg.reports.qc`) when the ADC and Z_ADC images are found (``--truth`` or ``--brain`` a
release root). ``--beside DIR`` (repeatable) scores another prediction folder the same way,
e.g. a baseline's (:mod:`hieseg.evaluation.baselines`), and shows it beside ``--pred`` in that report,
each method named after its folder; the CSV, JSON and Markdown reports stay about ``--pred``.

Writes ``per_case.csv``, ``summary.json`` and ``summary.md`` to ``--out`` (default
``<pred>/evaluation``), each atomically, after checking before any scoring that the folder
can be written. Any problem with the inputs is reported as one line on stderr, with exit
status 2 (see :mod:`hieseg.cli.common`); no report is written then.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.errors import ConfigError
from hieseg.evaluation.folders import (
    DEFAULT_OUT_SUBDIR,
    evaluate_folders,
    model_target_spacing,
    write_reports,
)
from hieseg.evaluation.metrics import (
    CEILING_METRIC,
    COMPAT_MODES,
    DEFAULT_NSD_TOLERANCE_MM,
    checked_spacing,
    summarize,
)
from hieseg.io.images import PLAUSIBLE_SPACING_MM, require_writable
from hieseg.reports.pages import method_folders, write_evaluation_report
from hieseg.runtime.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted masks <case>.mha")
    parser.add_argument(
        "--truth", type=Path, required=True, help="folder of truth masks, or a release root with 3LABEL/"
    )
    parser.add_argument("--brain", type=Path, help="folder of brain images (ADC or masks; voxels > 0 are brain)")
    parser.add_argument("--out", type=Path, help=f"report folder (default <pred>/{DEFAULT_OUT_SUBDIR})")
    parser.add_argument(
        "--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, help="NSD tolerance in mm"
    )
    parser.add_argument(
        "--allow-missing", action="store_true", help="score a missing prediction as an empty mask"
    )
    ceiling = parser.add_mutually_exclusive_group()
    ceiling.add_argument(
        "--ceiling-spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
        help="add each case's resampling ceiling (best reachable Dice) on a grid of this spacing in mm",
    )
    ceiling.add_argument(
        "--model", type=Path, help="weights folder whose config.json gives the ceiling's spacing"
    )
    parser.add_argument(
        "--compat", choices=COMPAT_MODES,
        help="score as an official evaluation did, quirks included (bonbid2023: the 2023 leaderboard's)",
    )
    parser.add_argument("--html", type=Path, help="also write an HTML report (report.html and its pictures) here")
    parser.add_argument("--beside", type=Path, action="append", default=[], metavar="PRED_DIR",
                        help="another prediction folder shown beside --pred in the HTML report (repeatable)")
    add_output_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_reporting_errors(lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> int:
    out_dir = args.out if args.out is not None else args.pred / DEFAULT_OUT_SUBDIR
    require_writable(out_dir, folder=True)
    if args.beside and args.html is None:
        raise ConfigError("--beside adds a method to the HTML report; give --html too")
    if args.html is not None:
        require_writable(args.html, folder=True)
        html_methods = method_folders([args.pred, *args.beside])
    ceiling_spacing = model_target_spacing(args.model) if args.model is not None else args.ceiling_spacing
    if ceiling_spacing is not None:
        ceiling_spacing = checked_spacing(ceiling_spacing)
        low, high = PLAUSIBLE_SPACING_MM
        if not all(low <= step <= high for step in ceiling_spacing):
            raise ConfigError(f"--ceiling-spacing {' '.join(f'{s:g}' for s in ceiling_spacing)}: each axis must be "
                              f"within {low:g}-{high:g} mm, the voxel sizes of an MRI grid")
    rows = evaluate_folders(
        args.pred,
        args.truth,
        args.brain,
        nsd_tolerance_mm=args.nsd_tolerance,
        allow_missing=args.allow_missing,
        ceiling_spacing=ceiling_spacing,
        progress=not args.no_progress,
        compat=args.compat,
    )
    settings: dict[str, object] = {"nsd_tolerance_mm": args.nsd_tolerance}
    if args.compat is not None:
        settings["compat"] = args.compat
    if ceiling_spacing is not None:
        settings["ceiling_spacing_mm"] = list(ceiling_spacing)
    write_reports(rows, out_dir, settings=settings)
    if args.html is not None:
        scored = {name: rows if folder == args.pred else evaluate_folders(
            folder, args.truth, args.brain, nsd_tolerance_mm=args.nsd_tolerance, allow_missing=args.allow_missing,
            progress=not args.no_progress, compat=args.compat) for name, folder in html_methods.items()}
        page = write_evaluation_report(args.html, html_methods, scored, args.truth, args.brain,
                                       {**settings, "truth": str(args.truth)}, args.allow_missing)
        print(f"HTML report: {page}")
    overall = summarize(rows)["overall"]
    ceiling = f", ceiling Dice {overall[CEILING_METRIC]['mean']:.3f}" if CEILING_METRIC in overall else ""
    masd = "–" if overall["masd_mm"] is None else f"{overall['masd_mm']['mean']:.2f}"
    print(
        f"{len(rows)} case(s): Dice {overall['dice']['mean']:.3f}, MASD {masd} mm, "
        f"NSD {overall['nsd']['mean']:.3f}{ceiling}; reports in {out_dir}"
    )
    return 0

