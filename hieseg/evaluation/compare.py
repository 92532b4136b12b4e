"""Trained models beside the Z_ADC baselines on the same cases, scored in one run.

A model's score means little alone: ``Z_ADC < -2`` (:mod:`hieseg.evaluation.baselines`) is what
the map gives for free, and the resampling ceiling (:mod:`hieseg.evaluation.ceiling`) is the best
any model predicting on that model's grid could reach. :func:`compare` predicts every case with
every weights folder (loaded once, as the container predicts), computes both baselines, reads the
masks of folders predicted elsewhere (:class:`PredictionFolder`, e.g. nnU-Net's), scores every mask
on the native grid as ``python -m hieseg.evaluate`` would, and writes the masks and the reports;
:func:`summarize_methods` adds the MASD averaged the official script's way. The command line is
:mod:`hieseg.cli.compare`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from hieseg.errors import ConfigError
from hieseg.evaluation.baselines import BASELINES, baseline_mask_image
from hieseg.evaluation.folders import find_cases
from hieseg.evaluation.lesions import LESION_HEADER, LESION_NOTE, lesion_cells
from hieseg.evaluation.metrics import (
    CEILING_METRIC,
    DEFAULT_NSD_TOLERANCE_MM,
    LESION_WISE,
    METRIC_TITLES,
    SUMMARY_METRICS,
    CaseMetrics,
    official_mean_masd,
    summarize,
)
from hieseg.evaluation.scoring import Reference
from hieseg.inference.predictor import Predictor
from hieseg.io.images import (
    MHA_SUFFIX,
    check_same_geometry,
    read_image,
    require_binary,
    to_xyz_array,
    write_atomic,
    write_image_atomic,
)
from hieseg.io.layout import CaseFiles, discover_cases, load_case
from hieseg.io.tables import markdown_table, write_csv_atomic
from hieseg.model.weights import load_bundle

PREDICTIONS_DIR = "predictions"
COMPARISON_CSV = "comparison.csv"
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
OFFICIAL_MASD = "masd_official_mm"
"""Key, in each group's statistics, of the MASD averaged the official way."""
ALL_CASES = "all"
MODEL, BASELINE, PREDICTIONS = "model", "baseline", "predictions"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Method names become folder names: letters, digits, '.', '_' and '-', not starting with a dot."""
CSV_FIELDS = ("method", *(field.name for field in dataclasses.fields(CaseMetrics)))


@dataclass(frozen=True)
class Comparison:
    """A finished comparison: its methods, every method's per-case scores, and the summary written."""

    methods: list[Method]
    rows: dict[str, list[CaseMetrics]]
    summary: dict
    files: list[CaseFiles]


@dataclass(frozen=True)
class Method:
    """One compared method: a model (with the grid it predicts on), a folder of masks predicted elsewhere, or a
    baseline."""

    name: str
    kind: str
    description: str
    target_spacing: tuple[float, float, float] | None = None
    masks: Mapping[str, Path] | None = None
    """A predictions method's masks by case id, scored where they are (None: written by :func:`compare` to
    :func:`prediction_path`)."""


@dataclass(frozen=True)
class PredictionFolder:
    """Masks another tool predicted (``--pred``), ``<case>.mha`` (or ``<case>_lesion.mha``) on each case's native
    grid, e.g. nnU-Net's ``nnUNetv2_predict`` output: scored beside the models, where they are."""

    name: str
    folder: Path
    description: str | None = None
    """What the masks are (default: the folder, "predicted masks")."""


def method_names(
    model_dirs: Sequence[Path], names: Sequence[str] | None, predictions: Sequence[str] = ()
) -> list[str]:
    """The models' names (``names`` in order, or the folders' names), then the prediction folders' names;
    unique, folder-safe, no baseline's name."""
    if names and len(names) != len(model_dirs):
        raise ConfigError(
            f"--name given {len(names)} time(s) for {len(model_dirs)} --model folder(s); give one per model"
        )
    chosen = list(names) if names else [Path(d).resolve().name for d in model_dirs]
    kinds = [("model", "--name")] * len(chosen) + [("prediction folder", "--pred NAME=DIR")] * len(predictions)
    chosen += list(predictions)
    for name, (kind, flag) in zip(chosen, kinds):
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"{kind} name {name!r} cannot name a folder; use letters, digits, '.', '_' or '-' ({flag})"
            )
        if name in BASELINES:
            raise ConfigError(f"{kind} name {name!r} is a baseline's name; choose another with {flag}")
    duplicates = sorted({name for name in chosen if chosen.count(name) > 1})
    if duplicates:
        flags = "--name" + (" or --pred NAME=DIR" if predictions else "")
        raise ConfigError(f"two methods are named {', '.join(duplicates)}; name them apart with {flags}")
    return chosen


def compare(
    data: Path,
    model_dirs: Sequence[Path],
    out: Path,
    *,
    names: Sequence[str] | None = None,
    predictions: Sequence[PredictionFolder] = (),
    device: torch.device,
    tta: bool | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    progress: bool = True,
) -> Comparison:
    """Predict, compute the baselines, score everything and write the masks and the three reports.

    Each mask is scored as it is made (:class:`~hieseg.evaluation.scoring.Reference`), with the
    numbers ``python -m hieseg.evaluate`` gives for its file. The masks of ``predictions`` are read
    from their folders, checked as ``python -m hieseg.evaluate`` checks them (the truth's grid, 0/1)
    and scored through the same :class:`~hieseg.evaluation.scoring.Reference`; a folder missing a
    case's mask is refused before any prediction.
    """
    data, out = Path(data), Path(out)
    if not model_dirs and not predictions:
        raise ConfigError("give at least one --model weights folder or --pred masks folder")
    model_names = method_names(model_dirs, names, [p.name for p in predictions])[: len(model_dirs)]
    files = discover_cases(data)
    predicted = {p.name: predicted_masks(p.folder, data) for p in predictions}
    overrides = {} if tta is None else {"tta_flips": tta}
    predictors = {}
    methods = []
    for name, model_dir in zip(model_names, model_dirs):
        bundle = load_bundle(model_dir, device)
        predictors[name] = Predictor.from_bundle(bundle, device, **overrides)
        spacing = tuple(bundle.config.preprocess.target_spacing)
        methods.append(Method(name, MODEL, _describe_model(model_dir, predictors[name]), spacing))
    methods += [Method(p.name, PREDICTIONS, p.description or f"{p.folder}: predicted masks", masks=predicted[p.name])
                for p in predictions]
    methods += [Method(name, BASELINE, baseline.description) for name, baseline in BASELINES.items()]

    rows: dict[str, list[CaseMetrics]] = {method.name: [] for method in methods}
    for files_of_case in tqdm(files, desc="predicting", unit="case", disable=None if progress else True):
        case = load_case(files_of_case)
        reference = Reference.of_case(case)
        masks = {name: predictor.mask_image(case) for name, predictor in predictors.items()}
        masks.update({name: baseline_mask_image(name, case.zadc) for name in BASELINES})
        for method in methods:
            if method.masks is not None:
                mask: np.ndarray | sitk.Image = read_predicted_mask(
                    method.masks[files_of_case.case_id], case.label, files_of_case.label)
            else:
                mask = masks[method.name]
                write_image_atomic(mask, prediction_path(out, method.name, files_of_case.case_id))
            rows[method.name].append(reference.score(mask, nsd_tolerance_mm=nsd_tolerance_mm,
                                                     ceiling_spacing=method.target_spacing))
    settings = {
        "data": str(data),
        "cases": len(files),
        "device": str(device),
        "tta": "as saved" if tta is None else tta,
        "nsd_tolerance_mm": nsd_tolerance_mm,
    }
    summary = summarize_methods(methods, rows, settings)
    write_reports(rows, summary, out)
    return Comparison(methods, rows, summary, files)


def prediction_path(out: Path, method: str, case_id: str) -> Path:
    """Where a method's mask of a case is written under the comparison's folder."""
    return Path(out) / PREDICTIONS_DIR / method / f"{case_id}{MHA_SUFFIX}"


def mask_path(out: Path, method: Method, case_id: str) -> Path:
    """Where a compared method's mask of a case is: its own file for a predictions method, else under ``out``."""
    return method.masks[case_id] if method.masks is not None else prediction_path(out, method.name, case_id)


def predicted_masks(folder: Path, data: Path) -> dict[str, Path]:
    """The mask of every case of the release ``data`` in ``folder``, by case id, found as ``python -m
    hieseg.evaluate`` finds them; a missing folder or case is an :class:`~hieseg.errors.EvaluationError`
    naming them all."""
    return {case.case_id: case.pred for case in find_cases(Path(folder), Path(data)) if case.pred is not None}


def read_predicted_mask(path: Path, truth: sitk.Image, truth_path: Path) -> np.ndarray:
    """A mask predicted elsewhere, read and checked as ``python -m hieseg.evaluate`` reads it: on the truth's grid
    (size, spacing, origin, direction) and 0/1; boolean, axes (x, y, z)."""
    image = read_image(path)
    check_same_geometry(truth, truth_path, image, path)
    require_binary(image, path)
    return to_xyz_array(image, np.uint8).astype(bool)


def summarize_methods(
    methods: Sequence[Method], rows: Mapping[str, list[CaseMetrics]], settings: Mapping[str, object]
) -> dict:
    """comparison.json's content: the settings, then per method what it is and its statistics.

    Each method's statistics are :func:`hieseg.evaluation.metrics.summarize`'s (the ceiling included for
    models), each group's with the official MASD (mean over both-non-empty cases, and their count).
    """
    summaries = {}
    for method in methods:
        method_rows = rows[method.name]
        summary = summarize(method_rows)
        summary["overall"][OFFICIAL_MASD] = official_mean_masd(method_rows)
        for group, statistics in summary["by_burden"].items():
            statistics[OFFICIAL_MASD] = official_mean_masd([r for r in method_rows if r.burden_group == group])
        summaries[method.name] = {
            "kind": method.kind,
            "description": method.description,
            "target_spacing_mm": None if method.target_spacing is None else list(method.target_spacing),
            **summary,
        }
    return {"settings": dict(settings), "methods": summaries}


def write_reports(rows: Mapping[str, list[CaseMetrics]], summary: Mapping, out: Path) -> None:
    """comparison.csv (one row per method and case), comparison.json and comparison.md, each written atomically."""
    records = ({"method": method, **dataclasses.asdict(row)} for method, method_rows in rows.items()
               for row in method_rows)
    write_csv_atomic(out / COMPARISON_CSV, CSV_FIELDS, records)
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    write_atomic(out / COMPARISON_JSON, lambda temporary: temporary.write_text(text))
    markdown = render_markdown(summary)
    write_atomic(out / COMPARISON_MD, lambda temporary: temporary.write_text(markdown))


def render_markdown(summary: Mapping) -> str:
    """comparison.md: the methods, then one table per burden group that has cases (all cases first)."""
    settings = summary["settings"]
    methods = summary["methods"]
    lines = [
        "# Models beside the baselines",
        "",
        "Settings: " + ", ".join(f"{key} = {value}" for key, value in settings.items()) + ".",
        "",
    ]
    for name, method in methods.items():
        lines.append(f"- `{name}` ({method['kind']}): {method['description']}")
    for group in present_groups(summary):
        title = "All cases" if group == ALL_CASES else f"Lesion burden {group} of brain volume"
        lines += ["", f"## {title}", "", *comparison_table(summary, group), "", *lesion_table(summary, group)]
    lines += [
        "",
        "Mean ± std (population) over the cases, scored on the native grid.",
        "Cases with exactly one empty mask score Dice 0, NSD 0 and MASD = the image diagonal, so an empty "
        "prediction is never rewarded; there were "
        + ", ".join(f"{name} {method['n_one_empty']}" for name, method in methods.items()) + ".",
        "MASD official: the mean over the (k) cases whose masks are both non-empty, as the official script "
        "averages (its MASD is NaN otherwise, and skipped).",
        "ceiling Dice: each case's truth after a round trip through the model's grid, the best Dice any model "
        "predicting on that grid can reach.",
        LESION_NOTE,
    ]
    return "\n".join(lines) + "\n"


def lesion_table(summary: Mapping, group: str = ALL_CASES) -> list[str]:
    """Markdown table lines of one group's lesion-wise scores: one row per method."""
    rows = []
    for name, method in summary["methods"].items():
        statistics = method["overall"] if group == ALL_CASES else method["by_burden"][group]
        rows.append([name, *lesion_cells(statistics.get(LESION_WISE))])
    return markdown_table(["method", *LESION_HEADER], rows)


def present_groups(summary: Mapping) -> list[str]:
    """"all", then the burden groups that hold cases (every method scores the same cases)."""
    first = next(iter(summary["methods"].values()))
    return [ALL_CASES] + [group for group, statistics in first["by_burden"].items() if statistics["n"]]


def comparison_table(summary: Mapping, group: str = ALL_CASES) -> list[str]:
    """Markdown table lines of one group ("all" or a burden group): one row per method."""
    header = ["method", "n", *(METRIC_TITLES[m] for m in SUMMARY_METRICS), "MASD official (mm) (k)",
              METRIC_TITLES[CEILING_METRIC]]
    rows = []
    for name, method in summary["methods"].items():
        statistics = method["overall"] if group == ALL_CASES else method["by_burden"][group]
        cells = [name, str(statistics["n"])]
        cells += [_mean_std(statistics.get(metric)) for metric in SUMMARY_METRICS]
        official = statistics[OFFICIAL_MASD]
        cells.append("–" if official["mean"] is None else f"{official['mean']:.3f} ({official['n']})")
        cells.append(_mean_std(statistics.get(CEILING_METRIC)))
        rows.append(cells)
    return markdown_table(header, rows)


def _mean_std(values: Mapping | None) -> str:
    return "–" if values is None else f"{values['mean']:.3f} ± {values['std']:.3f}"


def _describe_model(model_dir: Path, predictor: Predictor) -> str:
    config = predictor.config
    spacing = " × ".join(f"{s:g}" for s in config.preprocess.target_spacing)
    return (
        f"{model_dir}: {len(predictor.networks)} network(s), loss {config.loss.name}, grid {spacing} mm, "
        f"threshold {predictor.settings.threshold:g}, flip TTA {'on' if predictor.settings.tta_flips else 'off'}"
    )
