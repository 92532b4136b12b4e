"""Score a folder of predicted lesion masks against the truth with the challenge metrics.

Usage::

    python -m hieseg.evaluate --pred <dir> --truth <dir> [--brain <dir>] [--out <dir>]
                              [--nsd-tolerance 2.0] [--allow-missing]
                              [--ceiling-spacing X Y Z | --model <weights dir>]

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
``preprocess.target_spacing``, adds each case's resampling ceiling (:mod:`hieseg.ceiling`):
the Dice its truth keeps after a round trip through that grid, the best a model predicting
there can reach. It becomes the ``ceiling_dice`` column and is summarized beside the scores.

Writes ``per_case.csv``, ``summary.json`` and ``summary.md`` to ``--out`` (default
``<pred>/evaluation``), each atomically, after checking before any scoring that the folder
can be written. Any problem with the inputs is reported as one line on stderr, with exit
status 2 (see :mod:`hieseg.cli_common`); no report is written then.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from hieseg.brain import brain_of
from hieseg.ceiling import resampling_ceiling
from hieseg.cli_common import configure_logging, run_reporting_errors
from hieseg.config import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import InputError
from hieseg.image_io import (
    check_same_geometry,
    read_image,
    require_binary,
    require_writable,
    to_xyz_array,
    write_atomic,
)
from hieseg.layout import ADC_DIR, ADC_SUFFIX, LABEL_DIR, LABEL_SUFFIX, adc_path, label_path
from hieseg.metrics import (
    CEILING_METRIC,
    DEFAULT_NSD_TOLERANCE_MM,
    CaseMetrics,
    checked_spacing,
    score_case,
    summarize,
)

LOG = logging.getLogger(__name__)
IMAGE_SUFFIX = ".mha"
DEFAULT_OUT_SUBDIR = "evaluation"
PER_CASE_CSV = "per_case.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
METRIC_TITLES = {"dice": "Dice", "masd_mm": "MASD (mm)", "nsd": "NSD", CEILING_METRIC: "ceiling Dice"}


class EvaluationError(InputError):
    """Inputs that cannot be scored: a missing folder, prediction or brain image."""


@dataclass(frozen=True)
class CaseSources:
    """The files scored for one case; ``pred`` is ``None`` for a missing prediction scored as empty."""

    case_id: str
    truth: Path
    pred: Path | None
    brain: Path | None


def evaluate_folders(
    pred_dir: Path,
    truth_dir: Path,
    brain_dir: Path | None = None,
    *,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    allow_missing: bool = False,
    ceiling_spacing: tuple[float, float, float] | None = None,
    progress: bool = True,
) -> list[CaseMetrics]:
    """Score every truth case against its prediction, in case-id order.

    With ``ceiling_spacing`` (mm), each row also carries the truth's resampling ceiling on that grid.
    """
    brain_dir = None if brain_dir is None else Path(brain_dir)
    sources = find_cases(Path(pred_dir), Path(truth_dir), brain_dir, allow_missing)
    return [
        score_sources(case, nsd_tolerance_mm, ceiling_spacing)
        for case in tqdm(sources, desc="scoring", unit="case", disable=None if progress else True)
    ]


def find_cases(
    pred_dir: Path, truth_dir: Path, brain_dir: Path | None = None, allow_missing: bool = False
) -> list[CaseSources]:
    """Pair each truth mask with its prediction and brain image; every missing prediction is named at once."""
    for name, folder in (("prediction", pred_dir), ("truth", truth_dir), ("brain", brain_dir)):
        if folder is not None and not folder.is_dir():
            raise EvaluationError(f"{folder}: {name} folder not found")
    release = (truth_dir / LABEL_DIR).is_dir()
    truths = _release_truths(truth_dir) if release else _plain_truths(truth_dir)
    if not truths:
        raise EvaluationError(f"{truth_dir}: no truth masks (*{IMAGE_SUFFIX}) found")
    cases = []
    for case_id, truth in sorted(truths.items()):
        if brain_dir is not None:
            brain = _brain_path(brain_dir, case_id)
        else:
            brain = adc_path(truth_dir, case_id) if release else None
        pred = _prediction_path(pred_dir, case_id)
        cases.append(CaseSources(case_id=case_id, truth=truth, pred=pred, brain=brain))
    unmatched = _unmatched_predictions(pred_dir, set(truths))
    if unmatched:
        LOG.warning("%d prediction(s) in %s have no truth and are not scored: %s",
                    len(unmatched), pred_dir, ", ".join(unmatched))
    missing = [case.case_id for case in cases if case.pred is None]
    if missing and not allow_missing:
        raise EvaluationError(
            f"no prediction in {pred_dir} for case(s) {', '.join(missing)} (expected <case>{IMAGE_SUFFIX} "
            f"or <case>{LABEL_SUFFIX}; --allow-missing scores them as empty)"
        )
    return cases


def score_sources(
    case: CaseSources,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    ceiling_spacing: tuple[float, float, float] | None = None,
) -> CaseMetrics:
    """Read one case's files, check they share the truth's grid, and score it (with its ceiling if asked)."""
    truth_image = read_image(case.truth)
    truth = _binary_mask(truth_image, case.truth)
    if case.pred is None:
        pred = np.zeros_like(truth)
    else:
        pred_image = read_image(case.pred)
        check_same_geometry(truth_image, case.truth, pred_image, case.pred)
        pred = _binary_mask(pred_image, case.pred)
    brain = None
    if case.brain is not None:
        brain_image = read_image(case.brain)
        check_same_geometry(truth_image, case.truth, brain_image, case.brain)
        brain = brain_of(brain_image)
    metrics = score_case(
        pred,
        truth,
        tuple(truth_image.GetSpacing()),
        brain=brain,
        nsd_tolerance_mm=nsd_tolerance_mm,
        case_id=case.case_id,
    )
    if ceiling_spacing is not None:
        metrics.ceiling_dice = resampling_ceiling(truth_image, ceiling_spacing)
    return metrics


def model_target_spacing(model_dir: Path) -> tuple[float, float, float]:
    """The network grid (mm) of a weights folder, from its config.json."""
    return ExperimentConfig.load(Path(model_dir) / CONFIG_FILENAME).preprocess.target_spacing


def write_reports(
    rows: list[CaseMetrics], out_dir: Path, *, settings: Mapping[str, object] | None = None
) -> None:
    """Write per_case.csv, summary.json and summary.md.

    ``settings`` (e.g. the NSD tolerance) is recorded in both summaries, so a report says
    how it was made. The ``ceiling_dice`` column is written only when some row has a ceiling.
    """
    out_dir = Path(out_dir)
    settings = dict(settings or {})
    summary = {"settings": settings, **summarize(rows)}
    fields = [field.name for field in dataclasses.fields(CaseMetrics)]
    if all(row.ceiling_dice is None for row in rows):
        fields.remove(CEILING_METRIC)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(dataclasses.asdict(row) for row in rows)
    texts = {
        PER_CASE_CSV: table.getvalue(),
        SUMMARY_JSON: json.dumps(summary, indent=2, allow_nan=False) + "\n",
        SUMMARY_MD: render_markdown(summary),
    }
    for name, text in texts.items():
        write_atomic(out_dir / name, lambda temporary, text=text: temporary.write_text(text, newline=""))


def render_markdown(summary: Mapping) -> str:
    """Markdown report: mean ± std and median of each metric (and the ceiling, if any), overall and per group."""
    metrics = [name for name in METRIC_TITLES if name in summary["overall"]]
    header = ["group", "n"]
    for name in metrics:
        header += [f"{METRIC_TITLES[name]} mean ± std", f"{METRIC_TITLES[name]} median"]
    lines = [
        "# Evaluation summary",
        "",
        f"{summary['n_cases']} case(s); settings: "
        + (", ".join(f"{key} = {value}" for key, value in summary["settings"].items()) or "none recorded")
        + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        _markdown_row("all", summary["overall"], metrics),
    ]
    lines += [_markdown_row(group, stats, metrics) for group, stats in summary["by_burden"].items()]
    lines += [
        "",
        "std is the population standard deviation. Burden group: truth lesion volume / brain volume (ADC > 0); "
        "'unknown' when no brain image was given.",
        f"{summary['n_one_empty']} case(s) had exactly one empty mask and were scored Dice 0, NSD 0, "
        "MASD = the image diagonal in mm; cases with both masks empty score Dice 1, NSD 1, MASD 0.",
    ]
    if CEILING_METRIC in metrics:
        lines.append(
            "ceiling Dice: the truth's own Dice after a round trip through the network grid "
            "(resampled there and back as the predictor does), the best any model on that grid can reach."
        )
    return "\n".join(lines + [""])


def _markdown_row(group: str, stats: Mapping, metrics: Sequence[str]) -> str:
    cells = [group, str(stats["n"])]
    for name in metrics:
        values = stats[name]
        if values is None:
            cells += ["–", "–"]
        else:
            cells += [f"{values['mean']:.3f} ± {values['std']:.3f}", f"{values['median']:.3f}"]
    return "| " + " | ".join(cells) + " |"


def _release_truths(root: Path) -> dict[str, Path]:
    case_ids = [path.name[: -len(LABEL_SUFFIX)] for path in (root / LABEL_DIR).glob(f"*{LABEL_SUFFIX}")]
    return {case_id: label_path(root, case_id) for case_id in case_ids if not case_id.startswith(".")}


def _plain_truths(folder: Path) -> dict[str, Path]:
    truths: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*{IMAGE_SUFFIX}")):
        if path.name.startswith("."):
            continue
        case_id = _strip_suffix(path.name)
        if case_id in truths:
            raise EvaluationError(f"case {case_id}: two truth files, {truths[case_id]} and {path}")
        truths[case_id] = path
    return truths


def _strip_suffix(name: str) -> str:
    for suffix in (LABEL_SUFFIX, IMAGE_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unmatched_predictions(pred_dir: Path, case_ids: set[str]) -> list[str]:
    """File names of the predictions whose case id has no truth."""
    return sorted(
        path.name for path in pred_dir.glob(f"*{IMAGE_SUFFIX}")
        if not path.name.startswith(".") and _strip_suffix(path.name) not in case_ids
    )


def _prediction_path(pred_dir: Path, case_id: str) -> Path | None:
    candidates = (pred_dir / f"{case_id}{IMAGE_SUFFIX}", pred_dir / f"{case_id}{LABEL_SUFFIX}")
    found = [path for path in candidates if path.is_file()]
    if len(found) > 1:
        raise EvaluationError(f"case {case_id}: two predictions, {found[0]} and {found[1]}; keep one")
    return found[0] if found else None


def _brain_path(brain_dir: Path, case_id: str) -> Path:
    if (brain_dir / ADC_DIR).is_dir():
        return adc_path(brain_dir, case_id)
    candidates = [brain_dir / f"{case_id}{ADC_SUFFIX}", brain_dir / f"{case_id}{IMAGE_SUFFIX}"]
    for path in candidates:
        if path.is_file():
            return path
    raise EvaluationError(f"case {case_id}: no brain image, expected one of " + ", ".join(map(str, candidates)))


def _binary_mask(image: sitk.Image, path: Path) -> np.ndarray:
    require_binary(image, path)
    return to_xyz_array(image, np.uint8).astype(bool)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hieseg.evaluate", description=__doc__.split("\n\n")[0])
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    configure_logging()
    return run_reporting_errors(lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> int:
    out_dir = args.out if args.out is not None else args.pred / DEFAULT_OUT_SUBDIR
    require_writable(out_dir, folder=True)
    ceiling_spacing = model_target_spacing(args.model) if args.model is not None else args.ceiling_spacing
    if ceiling_spacing is not None:
        ceiling_spacing = checked_spacing(ceiling_spacing)
    rows = evaluate_folders(
        args.pred,
        args.truth,
        args.brain,
        nsd_tolerance_mm=args.nsd_tolerance,
        allow_missing=args.allow_missing,
        ceiling_spacing=ceiling_spacing,
    )
    settings: dict[str, object] = {"nsd_tolerance_mm": args.nsd_tolerance}
    if ceiling_spacing is not None:
        settings["ceiling_spacing_mm"] = list(ceiling_spacing)
    write_reports(rows, out_dir, settings=settings)
    overall = summarize(rows)["overall"]
    ceiling = f", ceiling Dice {overall[CEILING_METRIC]['mean']:.3f}" if CEILING_METRIC in overall else ""
    print(
        f"{len(rows)} case(s): Dice {overall['dice']['mean']:.3f}, MASD {overall['masd_mm']['mean']:.2f} mm, "
        f"NSD {overall['nsd']['mean']:.3f}{ceiling}; reports in {out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
