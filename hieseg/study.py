"""The loss comparison of arXiv 2502.09148 as one reproducible command, on honest cross-validation.

Usage::

    python -m hieseg.study --data <root> --losses all --folds 5 --out <dir>
                           [--config base.json] [--set section.key=value ...] [--epochs N] [--seed S]
                           [--device auto] [--nsd-tolerance 2.0] [--no-progress]

Every loss is trained once per fold with a configuration that differs only in
``loss.name`` and ``train.fold``: the same seed, the same budget and the same folds. The
folds are computed once by :func:`hieseg.splits.stratified_folds` over the lesion burdens
and each run is given its fold's case ids explicitly, so the case it is scored on is
exactly the case it never trained on. The best weights by validation Dice then predict
the held-out fold on the native grid, and the masks are scored with the challenge metrics
in mm (:func:`hieseg.metrics.score_case`, brain = ADC > 0). Each case also gets its
resampling ceiling on the study's grid (:mod:`hieseg.ceiling`), the best Dice any loss
could reach there, reported beside the losses' scores.

Layout of ``--out``::

    study.json                        shared configuration and NSD tolerance; a rerun must match it
    splits.json                       seed, folds (case ids) and the burdens they were stratified on
    models/<loss>/fold<k>/            one weights folder per run: config.json, model.pt, runs/model/
    models/<loss>/fold<k>/scores.csv  that run's held-out scores; it marks the run as done
    predictions/<loss>/<case>.mha     held-out masks on the native grid
    results.csv                       per case: loss, fold and the challenge metrics
    summary.csv, results.md           per loss: mean ± std overall and per burden group
    boxplots.png, validation_curves.png

Rerunning the same command resumes: a run with a ``scores.csv`` is not repeated, an
interrupted training continues from its checkpoint, and the data must still hold the
cases the folds were made from. Every other setting must match ``study.json``, except the
list of losses, which may grow: a rerun with one more loss trains only that loss.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm.auto import tqdm

from hieseg import training
from hieseg.brain import brain_of
from hieseg.ceiling import resampling_ceiling
from hieseg.cli_common import build_config, configure_logging, parse_overrides, run_reporting_errors
from hieseg.config import ExperimentConfig
from hieseg.errors import ConfigError, DatasetError
from hieseg.evaluate import METRIC_TITLES
from hieseg.image_io import to_xyz_array, write_atomic, write_image_atomic
from hieseg.layout import CaseFiles, discover_cases, load_case
from hieseg.losses import LOSS_NAMES
from hieseg.metrics import (
    BURDEN_GROUPS,
    CEILING_METRIC,
    DEFAULT_NSD_TOLERANCE_MM,
    SUMMARY_METRICS,
    CaseMetrics,
    score_case,
    summarize,
)
from hieseg.predictor import Predictor, load_bundle, select_device
from hieseg.splits import stratified_folds

LOG = logging.getLogger(__name__)

ALL_LOSSES = "all"
STUDY_JSON = "study.json"
SPLITS_JSON = "splits.json"
MODELS_DIR = "models"
PREDICTIONS_DIR = "predictions"
FOLD_SCORES_CSV = "scores.csv"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
RESULTS_MD = "results.md"
BOXPLOTS_PNG = "boxplots.png"
CURVES_PNG = "validation_curves.png"
MASK_SUFFIX = ".mha"
PER_RUN_KEYS = ("loss.name", "train.fold")
"""The only configuration keys allowed to differ between the runs of a study."""
HIGHER_IS_BETTER = {"dice": True, "masd_mm": False, "nsd": True}
GROUP_SLUGS = {"<1%": "lt1pct", "1-5%": "1to5pct", ">5%": "gt5pct"}
"""Burden groups as they appear in summary.csv column names."""
ROW_FIELDS = ("loss", "fold", *(f.name for f in dataclasses.fields(CaseMetrics)))
TEXT_FIELDS = {"loss", "case_id", "burden_group"}
OPTIONAL_FIELDS = {f.name for f in dataclasses.fields(CaseMetrics) if f.default is None}
"""Per-case fields that may be blank (not computed) or absent (a scores.csv written before they existed)."""
PANEL_INCHES = 4.0
DPI = 110


class _Absent:
    """Stands for a key that one of two compared settings lacks (e.g. a field added to the config since)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


@dataclass(frozen=True)
class StudyRow:
    """The held-out scores of one case under one loss."""

    loss: str
    fold: int
    metrics: CaseMetrics

    def as_record(self) -> dict[str, object]:
        return {"loss": self.loss, "fold": self.fold, **dataclasses.asdict(self.metrics)}

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> StudyRow:
        values: dict[str, object] = {
            key: record[key] if key in TEXT_FIELDS else float(record[key])
            for key in ROW_FIELDS
            if key not in OPTIONAL_FIELDS or record.get(key)
        }
        loss, fold = values.pop("loss"), int(values.pop("fold"))
        return cls(loss=str(loss), fold=fold, metrics=CaseMetrics(**values))


@dataclass(frozen=True)
class Study:
    """What a study compares and where: shared by every (loss, fold) run."""

    data: Path
    out: Path
    config: ExperimentConfig
    losses: tuple[str, ...]
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    device: str = "auto"
    progress: bool = True

    def run_config(self, loss: str, fold: int) -> ExperimentConfig:
        return self.config.with_overrides({"loss.name": loss, "train.fold": fold})

    def run_dir(self, loss: str, fold: int) -> Path:
        return self.out / MODELS_DIR / loss / f"fold{fold}"

    def metrics_path(self, loss: str, fold: int, held_out_ids: Sequence[str]) -> Path:
        """The metrics.csv that training writes for this run (named after its explicit validation ids)."""
        name = training.run_name(self.run_config(loss, fold), list(held_out_ids))
        return self.run_dir(loss, fold) / "runs" / name / training.METRICS_FILE

    def prediction_path(self, loss: str, case_id: str) -> Path:
        return self.out / PREDICTIONS_DIR / loss / f"{case_id}{MASK_SUFFIX}"


def parse_losses(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of loss names, in the order given, each validated against LOSS_NAMES."""
    if text.strip() == ALL_LOSSES:
        return LOSS_NAMES
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in LOSS_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"--losses: unknown loss name(s) {', '.join(unknown) or '(none given)'}; "
            f"use {ALL_LOSSES!r} or a comma list of: {', '.join(LOSS_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--losses: a loss is listed twice in {text!r}")
    return tuple(names)


def run_study(study: Study) -> list[StudyRow]:
    """Train, predict and score every (loss, fold) not done yet, then write the tables and plots."""
    files = discover_cases(study.data)
    study.out.mkdir(parents=True, exist_ok=True)
    check_settings(study.out / STUDY_JSON, study_settings(study))
    folds = folds_for(study.out / SPLITS_JSON, case_burdens(files, study.progress), study.config)
    files_by_id = {f.case_id: f for f in files}
    jobs = [(loss, fold) for loss in study.losses for fold in range(len(folds))]
    rows: list[StudyRow] = []
    for loss, fold in tqdm(jobs, desc="study", unit="run", disable=not study.progress):
        fold_rows = run_job(study, loss, fold, [files_by_id[i] for i in folds[fold]])
        LOG.info("%s fold %d: held-out Dice %.3f over %d case(s)", loss, fold,
                 np.mean([row.metrics.dice for row in fold_rows]), len(fold_rows))
        rows += fold_rows
    curves = {
        loss: mean_curve([validation_curve(study.metrics_path(loss, k, ids)) for k, ids in enumerate(folds)])
        for loss in study.losses
    }
    write_results(rows, curves, study.out, describe(study, len(files)))
    return rows


def study_settings(study: Study) -> dict[str, object]:
    """What every run of the study shares: the configuration without its per-run keys, and the NSD tolerance."""
    config = study.config.to_dict()
    for dotted in PER_RUN_KEYS:
        section, _, key = dotted.partition(".")
        del config[section][key]
    return {"config": config, "nsd_tolerance_mm": study.nsd_tolerance_mm}


def check_settings(path: Path, settings: dict[str, object]) -> None:
    """Record the shared settings on the first run; refuse a rerun whose settings differ.

    Without this, a rerun with another budget would skip the finished runs and mix their
    scores with runs trained differently.
    """
    current = json.loads(json.dumps(settings))
    if not path.exists():
        _write_text_atomic(path, json.dumps(current, indent=2) + "\n")
        return
    recorded = json.loads(path.read_text())
    differences = [
        f"{key}: {old!r} then, {new!r} now"
        for key, (old, new) in _flat_differences(recorded, current).items()
    ]
    if differences:
        raise ConfigError(
            f"{path}: this study was started with other settings ({'; '.join(differences)}); "
            "rerun with the same ones or choose another --out"
        )


def case_burdens(files: Sequence[CaseFiles], progress: bool) -> dict[str, float]:
    """Lesion fraction of brain volume of every case, reading one case at a time to bound memory."""
    return {
        f.case_id: training.lesion_burden(load_case(f))
        for f in tqdm(files, desc="reading cases", unit="case", disable=not progress)
    }


def folds_for(path: Path, burdens: Mapping[str, float], config: ExperimentConfig) -> list[list[str]]:
    """The study's folds: computed once and written to ``path``; a rerun must find the same cases and folds."""
    ids = sorted(burdens)
    folds = stratified_folds(ids, [burdens[i] for i in ids], config.train.folds, config.train.seed)
    if not path.exists():
        record = {"seed": config.train.seed, "folds": folds, "burdens": {i: burdens[i] for i in ids}}
        _write_text_atomic(path, json.dumps(record, indent=2) + "\n")
        return folds
    recorded = json.loads(path.read_text())
    recorded_ids = sorted(case_id for fold in recorded["folds"] for case_id in fold)
    if recorded_ids != ids:
        added, removed = sorted(set(ids) - set(recorded_ids)), sorted(set(recorded_ids) - set(ids))
        raise DatasetError(
            f"{path}: the data's cases no longer match the study's folds (new: {', '.join(added) or 'none'}; "
            f"gone: {', '.join(removed) or 'none'}); choose another --out"
        )
    if recorded["folds"] != folds:
        raise DatasetError(
            f"{path}: the cases' lesion burdens changed since the folds were made, so the folds would differ; "
            "choose another --out"
        )
    return folds


def run_job(study: Study, loss: str, fold: int, held_out: list[CaseFiles]) -> list[StudyRow]:
    """Train one loss on one fold, predict and score its held-out cases; reuse the scores of a finished run."""
    run_dir = study.run_dir(loss, fold)
    scores_path = run_dir / FOLD_SCORES_CSV
    if scores_path.exists():
        return read_rows(scores_path)
    training.train(
        study.run_config(loss, fold),
        study.data,
        run_dir,
        validation_ids=[f.case_id for f in held_out],
        resume=True,
        device=study.device,
        progress=study.progress,
    )
    rows = [StudyRow(loss, fold, metrics) for metrics in predict_and_score(study, loss, run_dir, held_out)]
    write_rows(scores_path, rows)
    return rows


def predict_and_score(study: Study, loss: str, run_dir: Path, held_out: list[CaseFiles]) -> list[CaseMetrics]:
    """Masks of the held-out cases from the run's best weights, written and scored on the native grid.

    Each score carries the case's resampling ceiling on the weights' grid.
    """
    device = select_device(study.device)
    bundle = load_bundle(run_dir, device)
    predictor = Predictor.from_bundle(bundle, device)
    scores = []
    for files in held_out:
        case = load_case(files)
        mask = predictor.mask_image(case)
        write_image_atomic(mask, study.prediction_path(loss, files.case_id))
        metrics = score_case(
            to_xyz_array(mask, np.uint8),
            to_xyz_array(case.label, np.uint8),
            case.adc.GetSpacing(),
            brain=brain_of(case.adc),
            nsd_tolerance_mm=study.nsd_tolerance_mm,
            case_id=files.case_id,
        )
        metrics.ceiling_dice = resampling_ceiling(case.label, bundle.config.preprocess.target_spacing)
        scores.append(metrics)
    return scores


def validation_curve(path: Path) -> dict[int, float]:
    """Validation Dice by epoch from a run's metrics.csv (epochs without validation left out)."""
    rows = training.read_history(path)
    return {int(row["epoch"]): row["val_dice"] for row in rows if not math.isnan(row["val_dice"])}


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Mean over folds at each epoch, over the folds that validated at that epoch (early stops differ)."""
    epochs = sorted({epoch for curve in curves for epoch in curve})
    return {epoch: float(np.mean([c[epoch] for c in curves if epoch in c])) for epoch in epochs}


def describe(study: Study, n_cases: int) -> dict[str, object]:
    """The settings a reader needs to interpret the tables, recorded in results.md."""
    train = study.config.train
    return {
        "cases": n_cases,
        "folds": train.folds,
        "seed": train.seed,
        "epochs": train.epochs,
        "steps_per_epoch": train.steps_per_epoch or "one pass",
        "target_spacing_mm": list(study.config.preprocess.target_spacing),
        "nsd_tolerance_mm": study.nsd_tolerance_mm,
    }


def write_results(
    rows: Sequence[StudyRow], curves: Mapping[str, Mapping[int, float]], out: Path, settings: Mapping[str, object]
) -> None:
    """results.csv, summary.csv, results.md, boxplots.png and validation_curves.png."""
    summaries = summarize_by_loss(rows)
    write_rows(out / RESULTS_CSV, rows)
    with (out / SUMMARY_CSV).open("w", newline="") as handle:
        records = summary_records(summaries)
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (out / RESULTS_MD).write_text(render_markdown(summaries, settings))
    plot_boxplots(rows, out / BOXPLOTS_PNG)
    plot_validation_curves(curves, out / CURVES_PNG)


def summarize_by_loss(rows: Sequence[StudyRow]) -> dict[str, dict]:
    """:func:`hieseg.metrics.summarize` of each loss's rows, losses in first-seen order."""
    losses = list(dict.fromkeys(row.loss for row in rows))
    return {loss: summarize([row.metrics for row in rows if row.loss == loss]) for loss in losses}


def summary_records(summaries: Mapping[str, Mapping]) -> list[dict[str, object]]:
    """One flat summary.csv row per loss: n, mean and std of each metric, overall then per burden group.

    The ceiling's columns are there when some loss has ceilings, blank for a loss without them.
    """
    metrics = reported_metrics(summary["overall"] for summary in summaries.values())
    records = []
    for loss, summary in summaries.items():
        record: dict[str, object] = {
            "loss": loss, **_flat_statistics("", summary["overall"], metrics), "n_one_empty": summary["n_one_empty"]
        }
        for group in BURDEN_GROUPS:
            record.update(_flat_statistics(f"{GROUP_SLUGS[group]}_", summary["by_burden"][group], metrics))
        records.append(record)
    return records


def reported_metrics(statistics: Iterable[Mapping]) -> tuple[str, ...]:
    """SUMMARY_METRICS, plus the resampling ceiling when any of these statistics has it."""
    has_ceiling = any(CEILING_METRIC in entry for entry in statistics)
    return SUMMARY_METRICS + ((CEILING_METRIC,) if has_ceiling else ())


def _flat_statistics(prefix: str, statistics: Mapping, metrics: Sequence[str]) -> dict[str, object]:
    record: dict[str, object] = {f"{prefix}n": statistics["n"]}
    for metric in metrics:
        values = statistics.get(metric)
        record[f"{prefix}{metric}_mean"] = "" if values is None else values["mean"]
        record[f"{prefix}{metric}_std"] = "" if values is None else values["std"]
    return record


def best_losses(statistics_by_loss: Mapping[str, Mapping]) -> dict[str, set[str]]:
    """Per metric, the loss(es) with the best mean: highest Dice and NSD, lowest MASD; ties all win."""
    best: dict[str, set[str]] = {}
    for metric, higher in HIGHER_IS_BETTER.items():
        means = {loss: stats[metric]["mean"] for loss, stats in statistics_by_loss.items() if stats[metric]}
        if means:
            target = max(means.values()) if higher else min(means.values())
            best[metric] = {loss for loss, mean in means.items() if mean == target}
    return best


def render_markdown(summaries: Mapping[str, Mapping], settings: Mapping[str, object]) -> str:
    """results.md: one table overall and one per burden group, the best loss per metric in bold."""
    lines = [
        "# Loss comparison",
        "",
        "Every loss trained with the same folds, seed and budget, and scored on its held-out fold "
        "in the native grid; settings: " + ", ".join(f"{key} = {value}" for key, value in settings.items()) + ".",
        "",
        "Mean ± std (population) over the held-out cases; **bold**: the best loss per column "
        "(highest Dice and NSD, lowest MASD).",
        "",
        "## All cases",
        "",
        *_markdown_table({loss: summary["overall"] for loss, summary in summaries.items()}),
        "",
        "Cases with exactly one empty mask, scored Dice 0, NSD 0 and MASD = the image diagonal: "
        + ", ".join(f"{loss} {summary['n_one_empty']}" for loss, summary in summaries.items()) + ".",
    ]
    if CEILING_METRIC in reported_metrics(summary["overall"] for summary in summaries.values()):
        lines += [
            "",
            "ceiling Dice: each case's truth after a round trip through the study's grid (resampled there and "
            "back as the predictor does), the best Dice any loss could reach; it does not depend on the loss.",
        ]
    for group in BURDEN_GROUPS:
        lines += [
            "",
            f"## Lesion burden {group} of brain volume",
            "",
            *_markdown_table({loss: summary["by_burden"][group] for loss, summary in summaries.items()}),
        ]
    return "\n".join(lines) + "\n"


def _markdown_table(statistics_by_loss: Mapping[str, Mapping]) -> list[str]:
    best = best_losses(statistics_by_loss)
    metrics = reported_metrics(statistics_by_loss.values())
    header = ["loss", "n", *(METRIC_TITLES[metric] for metric in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for loss, statistics in statistics_by_loss.items():
        cells = [loss, str(statistics["n"])]
        for metric in metrics:
            values = statistics.get(metric)
            cell = "–" if values is None else f"{values['mean']:.3f} ± {values['std']:.3f}"
            cells.append(f"**{cell}**" if loss in best.get(metric, set()) else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_boxplots(rows: Sequence[StudyRow], path: Path) -> None:
    """One panel per metric, one box of per-case values per loss."""
    losses = list(dict.fromkeys(row.loss for row in rows))
    figure = Figure(figsize=(PANEL_INCHES * len(SUMMARY_METRICS), PANEL_INCHES))
    FigureCanvasAgg(figure)
    for index, metric in enumerate(SUMMARY_METRICS):
        axes = figure.add_subplot(1, len(SUMMARY_METRICS), index + 1)
        values = [[getattr(row.metrics, metric) for row in rows if row.loss == loss] for loss in losses]
        axes.boxplot(values, tick_labels=losses)
        axes.set_title(METRIC_TITLES[metric])
        axes.tick_params(axis="x", labelrotation=30)
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")
        axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)


def plot_validation_curves(curves: Mapping[str, Mapping[int, float]], path: Path) -> None:
    """Validation Dice against epoch, one line per loss (mean over folds)."""
    figure = Figure(figsize=(1.5 * PANEL_INCHES, PANEL_INCHES))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for loss, curve in curves.items():
        axes.plot(list(curve), list(curve.values()), marker="o", label=loss)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("validation Dice (mean over folds)")
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)


def write_rows(path: Path, rows: Sequence[StudyRow]) -> None:
    """Per-case rows as CSV, written atomically so a crash never leaves a half-written 'done' marker."""
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
            writer.writeheader()
            writer.writerows(row.as_record() for row in rows)

    write_atomic(path, write)


def read_rows(path: Path) -> list[StudyRow]:
    with path.open(newline="") as handle:
        return [StudyRow.from_record(record) for record in csv.DictReader(handle)]


def _write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(text))


def _flat_differences(old: object, new: object, prefix: str = "") -> dict[str, tuple[object, object]]:
    """Dotted keys whose values differ between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: dict[str, tuple[object, object]] = {}
        for key in sorted(set(old) | set(new)):
            found.update(_flat_differences(old.get(key, ABSENT), new.get(key, ABSENT), f"{prefix}{key}."))
        return found
    return {} if old == new else {prefix.rstrip("."): (old, new)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hieseg.study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="release root holding 1ADC_ss/, 2Z_ADC/, 3LABEL/")
    parser.add_argument("--out", type=Path, required=True, help="study folder (rerun the same command to resume)")
    parser.add_argument("--losses", default=ALL_LOSSES,
                        help=f"{ALL_LOSSES!r} (default) or a comma list of: {', '.join(LOSS_NAMES)}")
    parser.add_argument("--folds", type=int, help="number of stratified folds (default: train.folds, 5)")
    parser.add_argument("--config", type=Path, help="start from this config.json instead of the defaults")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs of every run")
    parser.add_argument("--seed", type=int, help="seed of the folds, sampling and initialisation")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config value but loss.name and train.fold, e.g. --set train.patch_size=[64,64,32]",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda or cpu")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, help="NSD tolerance in mm")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--verbose", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Defaults (or --config), then --folds/--epochs/--seed, then --set, as in train.py."""
    settings = parse_overrides(args.set)
    fixed = sorted(set(settings) & set(PER_RUN_KEYS))
    if fixed:
        raise ConfigError(f"--set {', '.join(fixed)}: the study sets these per run; choose losses with --losses")
    flags = {"train.folds": args.folds, "train.epochs": args.epochs, "train.seed": args.seed}
    return build_config(args.config, flags, settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        study = Study(
            data=args.data,
            out=args.out,
            config=config_from_args(args),
            losses=parse_losses(args.losses),
            nsd_tolerance_mm=args.nsd_tolerance,
            device=args.device,
            progress=not args.no_progress,
        )
        rows = run_study(study)
        print(f"{len(rows)} held-out case score(s) over {len(study.losses)} loss(es); "
              f"tables and plots in {study.out}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
