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
``preprocess.target_spacing``, adds each case's resampling ceiling (:mod:`hieseg.ceiling`):
the Dice its truth keeps after a round trip through that grid, the best a model predicting
there can reach. It becomes the ``ceiling_dice`` column and is summarized beside the scores.

``--compat bonbid2023`` scores as the challenge's 2023 evaluation did, so the numbers can
stand beside the leaderboard's (quirks in :mod:`hieseg.metrics`): the spacing is paired with
the axes in reverse for MASD and NSD, NSD is at 2 mm, a case with exactly one empty mask gets
MASD NaN and is left out of the MASD mean, and the prediction takes the truth's geometry: only
its size must match (the official script copies the truth's origin, spacing and direction onto
it). Without it, each axis gets its own spacing and the prediction must be on the truth's grid.

``--html DIR`` also writes an HTML report that opens offline (:mod:`hieseg.html_report`):
the tables, box plots and one row per case, worst first, each with its QC picture
(:mod:`hieseg.qc`) when the ADC and Z_ADC images are found (``--truth`` or ``--brain`` a
release root). ``--beside DIR`` (repeatable) scores another prediction folder the same way,
e.g. a baseline's (:mod:`hieseg.baselines`), and shows it beside ``--pred`` in that report,
each method named after its folder; the CSV, JSON and Markdown reports stay about ``--pred``.

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
from hieseg.errors import ConfigError, ImageError, InputError
from hieseg.image_io import (
    check_same_geometry,
    read_image,
    require_binary,
    require_writable,
    to_xyz_array,
    write_atomic,
)
from hieseg.html_report import CaseImages, MethodRows, render_qc, write_report
from hieseg.layout import ADC_DIR, ADC_SUFFIX, LABEL_DIR, LABEL_SUFFIX, adc_path, label_path, zadc_path
from hieseg.metrics import (
    BONBID2023,
    CEILING_METRIC,
    COMPAT_MODES,
    DEFAULT_NSD_TOLERANCE_MM,
    CaseMetrics,
    check_compat,
    checked_spacing,
    score_case,
    summarize,
)
from hieseg.report_plots import METRIC_TITLES

LOG = logging.getLogger(__name__)
IMAGE_SUFFIX = ".mha"
DEFAULT_OUT_SUBDIR = "evaluation"
PER_CASE_CSV = "per_case.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


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
    compat: str | None = None,
) -> list[CaseMetrics]:
    """Score every truth case against its prediction, in case-id order.

    With ``ceiling_spacing`` (mm), each row also carries the truth's resampling ceiling on that grid;
    with ``compat`` (see :data:`hieseg.metrics.COMPAT_MODES`), cases are scored the official script's way.
    """
    check_compat(compat, nsd_tolerance_mm)
    brain_dir = None if brain_dir is None else Path(brain_dir)
    sources = find_cases(Path(pred_dir), Path(truth_dir), brain_dir, allow_missing)
    return [
        score_sources(case, nsd_tolerance_mm, ceiling_spacing, compat)
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
    compat: str | None = None,
) -> CaseMetrics:
    """Read one case's files, check they share the truth's grid, and score it (with its ceiling if asked).

    Under ``compat="bonbid2023"`` the prediction takes the truth's geometry: only its size is checked.
    """
    truth_image = read_image(case.truth)
    truth = _binary_mask(truth_image, case.truth)
    if case.pred is None:
        pred = np.zeros_like(truth)
    else:
        pred_image = read_image(case.pred)
        if compat == BONBID2023:
            _check_same_size(truth_image, case.truth, pred_image, case.pred)
        else:
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
        compat=compat,
    )
    if ceiling_spacing is not None:
        metrics.ceiling_dice = resampling_ceiling(truth_image, ceiling_spacing)
    return metrics


def _check_same_size(truth: sitk.Image, truth_path: Path, pred: sitk.Image, pred_path: Path) -> None:
    """The one check the official script makes, implicitly: the two voxel grids have the same size."""
    if truth.GetSize() != pred.GetSize():
        raise ImageError(f"{pred_path}: size {pred.GetSize()} differs from the truth's {truth.GetSize()} "
                         f"({truth_path})")


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
        _one_empty_note(summary["n_one_empty"], summary["settings"].get("compat")),
    ]
    if CEILING_METRIC in metrics:
        lines.append(
            "ceiling Dice: the truth's own Dice after a round trip through the network grid "
            "(resampled there and back as the predictor does), the best any model on that grid can reach."
        )
    return "\n".join(lines + [""])


def _one_empty_note(count: int, compat: object) -> str:
    if compat == BONBID2023:
        return (f"Scored as the 2023 challenge evaluation ({BONBID2023}): spacing paired with the axes in reverse, "
                f"NSD at 2 mm, prediction on the truth's geometry. {count} case(s) had exactly one empty mask and "
                "were scored Dice 0, NSD 0, MASD NaN, left out of the MASD statistics; cases with both masks "
                "empty score Dice 1, NSD 1, MASD 0.")
    return (f"{count} case(s) had exactly one empty mask and were scored Dice 0, NSD 0, "
            "MASD = the image diagonal in mm; cases with both masks empty score Dice 1, NSD 1, MASD 0.")


def _markdown_row(group: str, stats: Mapping, metrics: Sequence[str]) -> str:
    cells = [group, str(stats["n"])]
    for name in metrics:
        values = stats[name]
        if values is None:
            cells += ["–", "–"]
        else:
            cells += [f"{values['mean']:.3f} ± {values['std']:.3f}", f"{values['median']:.3f}"]
    return "| " + " | ".join(cells) + " |"


def method_folders(folders: Sequence[Path]) -> dict[str, Path]:
    """Prediction folders by the name the HTML report gives them: their folder names, which must differ."""
    named: dict[str, Path] = {}
    for folder in folders:
        name = Path(folder).resolve().name
        if name in named:
            raise ConfigError(f"two prediction folders are named {name!r} ({named[name]} and {folder}); "
                              "rename one, the report names methods by folder")
        named[name] = Path(folder)
    return named


def write_html_report(
    html_dir: Path,
    folders: Mapping[str, Path],
    rows: Mapping[str, list[CaseMetrics]],
    truth_dir: Path,
    brain_dir: Path | None,
    settings: Mapping[str, object],
    allow_missing: bool = False,
) -> Path:
    """report.html of these methods' scores, with QC pictures when the truth or brain folder is a release root."""
    methods = [MethodRows(name, rows[name], str(folder)) for name, folder in folders.items()]
    root = next((Path(d) for d in (truth_dir, brain_dir) if d is not None and (Path(d) / ADC_DIR).is_dir()), None)
    sources = {name: find_cases(Path(folder), Path(truth_dir), brain_dir, allow_missing)
               for name, folder in folders.items()}
    qc, note = None, ""
    if root is None:
        note = "No QC pictures: they need the ADC and Z_ADC images, found when --truth or --brain is a release root."
    else:
        images = {case.case_id: CaseImages(adc_path(root, case.case_id), zadc_path(root, case.case_id), case.truth)
                  for case in next(iter(sources.values()))}
        missing = [str(files.zadc) for files in images.values() if not files.zadc.is_file()]
        if missing:
            note = f"No QC pictures: {len(missing)} Z_ADC image(s) missing, e.g. {missing[0]}."
        else:
            predictions = {name: {case.case_id: case.pred for case in cases} for name, cases in sources.items()}
            qc = render_qc(Path(html_dir), methods, images, predictions)
    return write_report(Path(html_dir), title="Evaluation", methods=methods, settings=settings, qc=qc, qc_note=note)


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
    parser.add_argument(
        "--compat", choices=COMPAT_MODES,
        help="score as an official evaluation did, quirks included (bonbid2023: the 2023 leaderboard's)",
    )
    parser.add_argument("--html", type=Path, help="also write an HTML report (report.html and its pictures) here")
    parser.add_argument("--beside", type=Path, action="append", default=[], metavar="PRED_DIR",
                        help="another prediction folder shown beside --pred in the HTML report (repeatable)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    configure_logging()
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
    rows = evaluate_folders(
        args.pred,
        args.truth,
        args.brain,
        nsd_tolerance_mm=args.nsd_tolerance,
        allow_missing=args.allow_missing,
        ceiling_spacing=ceiling_spacing,
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
            compat=args.compat) for name, folder in html_methods.items()}
        page = write_html_report(args.html, html_methods, scored, args.truth, args.brain,
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


if __name__ == "__main__":
    sys.exit(main())
