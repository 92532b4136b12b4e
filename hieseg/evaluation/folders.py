"""Score a folder of predicted lesion masks against the truth with the challenge metrics.

Predictions are matched to truth cases by id (:func:`find_cases`), read, checked against the
truth's grid (only its size under ``compat="bonbid2023"``, as the official script did) and scored
on the native grid (:func:`score_sources`); :func:`write_reports` writes ``per_case.csv``,
``summary.json`` and ``summary.md``. The command line is :mod:`hieseg.cli.evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.data.transforms import check_network_grid
from hieseg.errors import EvaluationError, ImageError
from hieseg.evaluation.lesions import LESION_HEADER, LESION_NOTE, lesion_cells
from hieseg.evaluation.metrics import (
    BONBID2023,
    CEILING_METRIC,
    DEFAULT_NSD_TOLERANCE_MM,
    LESION_WISE,
    METRIC_TITLES,
    CaseMetrics,
    check_compat,
    summarize,
)
from hieseg.evaluation.scoring import Reference
from hieseg.io.brain import brain_of
from hieseg.io.images import (
    MHA_SUFFIX,
    check_same_geometry,
    read_image,
    require_binary,
    to_xyz_array,
    write_atomic,
)
from hieseg.io.layout import (
    ADC_DIR,
    ADC_SUFFIX,
    LABEL_DIR,
    LABEL_SUFFIX,
    adc_path,
    label_path,
    zadc_path,
)
from hieseg.io.tables import markdown_table, write_csv_atomic

LOG = logging.getLogger(__name__)
DEFAULT_OUT_SUBDIR = "evaluation"
PER_CASE_CSV = "per_case.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


@dataclass(frozen=True)
class CaseSources:
    """The files scored for one case; ``pred`` is ``None`` for a missing prediction scored as empty."""

    case_id: str
    truth: Path
    pred: Path | None
    brain: Path | None
    zadc: Path | None = None
    """The case's Z_ADC, for the conspicuous lesions: found in a release root given as truth or brain."""


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
    with ``compat`` (see :data:`hieseg.evaluation.metrics.COMPAT_MODES`), cases are scored the official script's way.
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
    root = next((folder for folder in (truth_dir, brain_dir) if folder is not None and (folder / ADC_DIR).is_dir()),
                None)
    if not truths:
        raise EvaluationError(f"{truth_dir}: no truth masks (*{MHA_SUFFIX}) found")
    cases = []
    for case_id, truth in sorted(truths.items()):
        if brain_dir is not None:
            brain = _brain_path(brain_dir, case_id)
        else:
            brain = adc_path(truth_dir, case_id) if release else None
        pred = _prediction_path(pred_dir, case_id)
        zadc = zadc_path(root, case_id) if root is not None else None
        cases.append(CaseSources(case_id=case_id, truth=truth, pred=pred, brain=brain,
                                 zadc=zadc if zadc is not None and zadc.is_file() else None))
    unmatched = _unmatched_predictions(pred_dir, set(truths))
    if unmatched:
        LOG.warning("%d prediction(s) in %s have no truth and are not scored: %s",
                    len(unmatched), pred_dir, ", ".join(unmatched))
    missing = [case.case_id for case in cases if case.pred is None]
    if missing and not allow_missing:
        raise EvaluationError(
            f"no prediction in {pred_dir} for case(s) {', '.join(missing)} (expected <case>{MHA_SUFFIX} "
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
    require_binary(truth_image, case.truth)
    pred = None
    if case.pred is not None:
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
    zadc = None
    if case.zadc is not None:
        zadc_image = read_image(case.zadc)
        check_same_geometry(truth_image, case.truth, zadc_image, case.zadc)
        zadc = to_xyz_array(zadc_image)
    if ceiling_spacing is not None:
        check_network_grid(case.truth, truth_image, ceiling_spacing)
    reference = Reference.of(truth_image, brain, case.case_id, zadc)
    return reference.score(np.zeros_like(reference.truth) if pred is None else pred, nsd_tolerance_mm=nsd_tolerance_mm,
                           ceiling_spacing=ceiling_spacing, compat=compat)


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
    write_csv_atomic(out_dir / PER_CASE_CSV, fields, (dataclasses.asdict(row) for row in rows), ignore_extra=True)
    texts = {
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
        *markdown_table(header, [_markdown_cells("all", summary["overall"], metrics)]
                        + [_markdown_cells(group, stats, metrics) for group, stats in summary["by_burden"].items()]),
    ]
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
    if LESION_WISE in summary["overall"]:
        groups = [("all", summary["overall"]), *summary["by_burden"].items()]
        lines += ["", "## Lesion-wise", "",
                  *markdown_table(["group", *LESION_HEADER],
                                  [[group, *lesion_cells(stats.get(LESION_WISE))] for group, stats in groups]),
                  "", LESION_NOTE]
    return "\n".join(lines + [""])


def _one_empty_note(count: int, compat: object) -> str:
    if compat == BONBID2023:
        return (f"Scored as the 2023 challenge evaluation ({BONBID2023}): spacing paired with the axes in reverse, "
                f"NSD at 2 mm, prediction on the truth's geometry. {count} case(s) had exactly one empty mask and "
                "were scored Dice 0, NSD 0, MASD NaN, left out of the MASD statistics; cases with both masks "
                "empty score Dice 1, NSD 1, MASD 0.")
    return (f"{count} case(s) had exactly one empty mask and were scored Dice 0, NSD 0, "
            "MASD = the image diagonal in mm; cases with both masks empty score Dice 1, NSD 1, MASD 0.")


def _markdown_cells(group: str, stats: Mapping, metrics: Sequence[str]) -> list[str]:
    cells = [group, str(stats["n"])]
    for name in metrics:
        values = stats[name]
        if values is None:
            cells += ["–", "–"]
        else:
            cells += [f"{values['mean']:.3f} ± {values['std']:.3f}", f"{values['median']:.3f}"]
    return cells


def _release_truths(root: Path) -> dict[str, Path]:
    case_ids = [path.name[: -len(LABEL_SUFFIX)] for path in (root / LABEL_DIR).glob(f"*{LABEL_SUFFIX}")]
    return {case_id: label_path(root, case_id) for case_id in case_ids if not case_id.startswith(".")}


def _plain_truths(folder: Path) -> dict[str, Path]:
    truths: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*{MHA_SUFFIX}")):
        if path.name.startswith("."):
            continue
        case_id = _strip_suffix(path.name)
        if case_id in truths:
            raise EvaluationError(f"case {case_id}: two truth files, {truths[case_id]} and {path}")
        truths[case_id] = path
    return truths


def _strip_suffix(name: str) -> str:
    for suffix in (LABEL_SUFFIX, MHA_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unmatched_predictions(pred_dir: Path, case_ids: set[str]) -> list[str]:
    """File names of the predictions whose case id has no truth."""
    return sorted(
        path.name for path in pred_dir.glob(f"*{MHA_SUFFIX}")
        if not path.name.startswith(".") and _strip_suffix(path.name) not in case_ids
    )


def _prediction_path(pred_dir: Path, case_id: str) -> Path | None:
    candidates = (pred_dir / f"{case_id}{MHA_SUFFIX}", pred_dir / f"{case_id}{LABEL_SUFFIX}")
    found = [path for path in candidates if path.is_file()]
    if len(found) > 1:
        raise EvaluationError(f"case {case_id}: two predictions, {found[0]} and {found[1]}; keep one")
    return found[0] if found else None


def _brain_path(brain_dir: Path, case_id: str) -> Path:
    if (brain_dir / ADC_DIR).is_dir():
        return adc_path(brain_dir, case_id)
    candidates = [brain_dir / f"{case_id}{ADC_SUFFIX}", brain_dir / f"{case_id}{MHA_SUFFIX}"]
    for path in candidates:
        if path.is_file():
            return path
    raise EvaluationError(f"case {case_id}: no brain image, expected one of " + ", ".join(map(str, candidates)))


def _binary_mask(image: sitk.Image, path: Path) -> np.ndarray:
    require_binary(image, path)
    return to_xyz_array(image, np.uint8).astype(bool)
