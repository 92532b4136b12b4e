"""The loss comparison of arXiv 2502.09148 as one reproducible command, on honest cross-validation.

Usage::

    python -m hieseg.study --data <root> --losses all --folds 5 --out <dir>
                           [--config base.json] [--set section.key=value ...] [--epochs N] [--seed S]
                           [--device auto] [--devices cuda:0,cuda:1] [--workers N] [--shard K/N]
                           [--reclaim] [--report] [--nsd-tolerance 2.0] [--no-progress]

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
    boxplots.png, validation_curves.png   MASD on a log axis, so a failed loss does not flatten the rest
    report/report.html                the same as an HTML report that opens offline, with every loss's
                                      QC picture of every case (:mod:`hieseg.html_report`)
    claims/<loss>.fold<k>.<n>.json    who trains (or trained) a run: host, pid, time (:mod:`hieseg.claims`)
    claims/report.<n>.json            who writes (or wrote) the tables and plots

Rerunning the same command resumes: a run with a ``scores.csv`` is not repeated, an
interrupted training continues from its checkpoint, and the data must still hold the
cases the folds were made from. Every other setting must match ``study.json``, except the
list of losses, which may grow: a rerun with one more loss trains only that loss.

Scale-out. The (loss, fold) runs are independent, so several processes may work on one study
folder at once, on one machine or on several that share it:

* ``--devices cuda:0,cuda:1`` trains one run per listed device at a time, in one spawned worker
  process per device (:mod:`hieseg.device_pool`; ``--workers N`` starts N per device, or N on
  ``--device``, e.g. CPU workers), each taking the next run when it is done with one;
* ``--shard K/N`` (0 <= K < N) takes runs K, K+N, K+2N, ... of the study's list (losses in the
  order given, folds within each), for the tasks of a scheduler's job array that all run the
  same command on the same ``--out``.

Before it trains a run a process claims it atomically (:func:`hieseg.claims.acquire`), so a run
is never trained twice, whatever the processes, shards and machines that start together. A run
claimed by a live process is left to it. A claim ends when its run is done or stopped (Ctrl-C,
SIGTERM as a scheduler sends at its time limit, an error); a claim whose process was killed
outright is taken over by the next process on the same host, and one from another host only
with ``--reclaim``, since no process here can see whether that one still runs.

The tables and plots cover every run, so they are made when every run is finished: by the
process that finds them all finished after its own runs (the last to finish), or by
``--report``, which writes them from a finished study folder without training anything and
refuses, naming the runs, while some are not finished.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hieseg import claims, device_pool, html_report, training
from hieseg.brain import brain_of
from hieseg.ceiling import resampling_ceiling
from hieseg.cli_common import (
    Shard,
    build_config,
    configure_logging,
    parse_overrides,
    parse_shard,
    run_reporting_errors,
)
from hieseg.config import ExperimentConfig
from hieseg.errors import ConfigError, DatasetError, OutputError
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
from hieseg.predict import worker_devices
from hieseg.predictor import Predictor, load_bundle, select_device
from hieseg.report_plots import plot_metric_boxes, plot_validation_curves
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
REPORT_DIR = "report"
CLAIMS_DIR = "claims"
REPORT_CLAIM = "report"
TRAINED, FINISHED, HELD = "trained", "finished", "held"
"""What became of a run in one process: trained by it, found finished, or left to the process that claims it."""
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
class RunKey:
    """One (loss, fold) run of a study."""

    loss: str
    fold: int

    @property
    def claim_key(self) -> str:
        """The run's name among the study's claims (:mod:`hieseg.claims`)."""
        return f"{self.loss}.fold{self.fold}"

    def __str__(self) -> str:
        return f"{self.loss} fold {self.fold}"


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to run one run: the run, its held-out cases, and the claim it may take over."""

    run: RunKey
    held_out: tuple[CaseFiles, ...]
    takeover: int | None = None

    def __str__(self) -> str:
        return str(self.run)


@dataclass(frozen=True)
class RunOutcome:
    """What one process did with one run: :data:`TRAINED`, :data:`FINISHED` before, or :data:`HELD` by another."""

    run: RunKey
    status: str
    rows: tuple[StudyRow, ...] = ()
    holder: claims.Holder | None = None
    """Who claims a :data:`HELD` run."""


@dataclass(frozen=True)
class Plan:
    """The study's cases, its folds and its runs in order (losses as given, folds within each)."""

    files: tuple[CaseFiles, ...]
    folds: tuple[tuple[str, ...], ...]
    runs: tuple[RunKey, ...]

    def held_out(self, fold: int) -> list[CaseFiles]:
        by_id = {f.case_id: f for f in self.files}
        return [by_id[case_id] for case_id in self.folds[fold]]


@dataclass(frozen=True)
class StudyOutcome:
    """What one process did: its runs, the study's runs still unfinished after them, and the tables if it wrote them."""

    outcomes: tuple[RunOutcome, ...]
    unfinished: tuple[RunKey, ...]
    rows: tuple[StudyRow, ...] | None
    """Every held-out score, when this process wrote the tables and plots."""
    report_holder: claims.Holder | None = None
    """Who writes the tables and plots, when every run was finished but another process had claimed them."""


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

    def scores_path(self, run: RunKey) -> Path:
        """The run's held-out scores; their presence marks the run as finished."""
        return self.run_dir(run.loss, run.fold) / FOLD_SCORES_CSV

    @property
    def claims_dir(self) -> Path:
        return self.out / CLAIMS_DIR

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


def run_study(
    study: Study, shard: Shard | None = None, devices: Sequence[str] = (), reclaim: bool = False
) -> StudyOutcome:
    """Train, predict and score the runs of ``shard`` (all by default) not done yet; then, if every run of the
    study is finished, write the tables and plots.

    ``devices``: one worker process per entry (:mod:`hieseg.device_pool`); none or one runs in this
    process, on ``study.device`` or the one entry. ``reclaim``: take over the claims that stand
    when this process starts, whoever holds them (see :mod:`hieseg.claims`).
    """
    plan = prepare(study, create=True)
    runs = plan.runs if shard is None else tuple(shard.take(plan.runs))
    keys = [run.claim_key for run in runs] + [REPORT_CLAIM]
    takeover = claims.latest_numbers(study.claims_dir, keys) if reclaim else {}
    LOG.info("%d of the study's %d run(s)%s", len(runs), len(plan.runs), f" in shard {shard}" if shard else "")
    outcomes = []
    for outcome in tqdm(run_all(study, plan, runs, devices, takeover), total=len(runs), desc="study", unit="run",
                        disable=not study.progress):
        if outcome.status == TRAINED:
            LOG.info("%s: held-out Dice %.3f over %d case(s)", outcome.run,
                     np.mean([row.metrics.dice for row in outcome.rows]), len(outcome.rows))
        elif outcome.status == HELD:
            LOG.info("%s: claimed by %s, left to it", outcome.run, outcome.holder)
        outcomes.append(outcome)
    unfinished = unfinished_runs(study, plan)
    if unfinished:
        return StudyOutcome(tuple(outcomes), unfinished, rows=None)
    claim = claims.acquire(study.claims_dir, REPORT_CLAIM, takeover.get(REPORT_CLAIM))
    if isinstance(claim, claims.Holder):
        return StudyOutcome(tuple(outcomes), (), rows=None, report_holder=claim)
    with claim:
        rows = write_report(study, plan)
    return StudyOutcome(tuple(outcomes), (), rows=tuple(rows))


def report_study(study: Study, reclaim: bool = False) -> list[StudyRow]:
    """``--report``: the tables and plots of a study folder whose runs are all finished, training nothing.

    Refuses (:class:`OutputError`) a folder that holds no study, or whose runs are not all
    finished (naming them and who claims them), or whose tables another process is writing.
    """
    plan = prepare(study, create=False)
    unfinished = unfinished_runs(study, plan)
    if unfinished:
        raise OutputError(
            f"{study.out}: {len(unfinished)} of the study's {len(plan.runs)} run(s) are not finished: "
            + ", ".join(f"{run} ({describe_claim(study, run.claim_key)})" for run in unfinished)
            + "; finish them first (the same command without --report)"
        )
    takeover = claims.latest_numbers(study.claims_dir, [REPORT_CLAIM]) if reclaim else {}
    claim = claims.acquire(study.claims_dir, REPORT_CLAIM, takeover.get(REPORT_CLAIM))
    if isinstance(claim, claims.Holder):
        raise OutputError(f"{study.out}: its tables and plots are being written by {claim} "
                          "(if that process is gone, add --reclaim)")
    with claim:
        return write_report(study, plan)


def prepare(study: Study, create: bool) -> Plan:
    """The study's cases, folds and runs, after checking the folder's settings and folds against this command.

    ``create``: record the settings and folds when the folder has none yet (a new study);
    otherwise a folder without them is refused.
    """
    files = discover_cases(study.data)
    if create:
        study.out.mkdir(parents=True, exist_ok=True)
    elif not (study.out / STUDY_JSON).is_file():
        raise OutputError(f"{study.out}: no study here ({STUDY_JSON} missing); run the study first")
    check_settings(study.out / STUDY_JSON, study_settings(study))
    folds = folds_for(study.out / SPLITS_JSON, case_burdens(files, study.progress), study.config)
    runs = tuple(RunKey(loss, fold) for loss in study.losses for fold in range(len(folds)))
    return Plan(tuple(files), tuple(tuple(fold) for fold in folds), runs)


def run_all(
    study: Study, plan: Plan, runs: Sequence[RunKey], devices: Sequence[str], takeover: Mapping[str, int]
) -> Iterator[RunOutcome]:
    """Each run's outcome as it ends: in this process for one device or none, else on one worker per device."""
    tasks = [RunTask(run, tuple(plan.held_out(run.fold)), takeover.get(run.claim_key)) for run in runs]
    devices = devices[: len(tasks)]  # no idle workers
    if len(devices) <= 1:
        here = dataclasses.replace(study, device=devices[0]) if devices else study
        for task in tasks:
            yield run_claimed(here, task.run, list(task.held_out), task.takeover)
        return
    work = functools.partial(_run_on_device, dataclasses.replace(study, progress=False))
    verbose = LOG.getEffectiveLevel() <= logging.DEBUG
    for _, outcome in device_pool.run_on_devices(work, tasks, devices, verbose):
        yield outcome


def _run_on_device(study: Study, device: str, task: RunTask) -> RunOutcome:
    """A worker's share of :func:`run_all`: one run on the worker's device."""
    return run_claimed(dataclasses.replace(study, device=device), task.run, list(task.held_out), task.takeover)


def run_claimed(
    study: Study, run: RunKey, held_out: list[CaseFiles], takeover: int | None = None
) -> RunOutcome:
    """Run ``run`` unless it is finished or another live process claims it; never two processes on one run.

    The claim is released when the run ends, however it ends (an error, Ctrl-C, SIGTERM), so
    the next process resumes it from its checkpoint.
    """
    scores_path = study.scores_path(run)
    if scores_path.exists():
        return RunOutcome(run, FINISHED, tuple(read_rows(scores_path)))
    claim = claims.acquire(study.claims_dir, run.claim_key, takeover)
    if isinstance(claim, claims.Holder):
        return RunOutcome(run, HELD, holder=claim)
    with claim:
        if scores_path.exists():  # finished by the previous holder, between the look above and the claim
            return RunOutcome(run, FINISHED, tuple(read_rows(scores_path)))
        return RunOutcome(run, TRAINED, tuple(run_job(study, run.loss, run.fold, held_out)))


def unfinished_runs(study: Study, plan: Plan) -> tuple[RunKey, ...]:
    """The study's runs without their scores yet, in the study's order."""
    return tuple(run for run in plan.runs if not study.scores_path(run).exists())


def describe_claim(study: Study, key: str) -> str:
    """Who works on a claimed piece of the study, for messages: its holder, or that nobody does."""
    latest = claims.latest_claim(study.claims_dir, key)
    if latest is None:
        return "not started"
    holder = latest[1]
    return "stopped; rerun to resume it" if holder.is_stale() else f"claimed by {holder}"


def write_report(study: Study, plan: Plan) -> list[StudyRow]:
    """results.csv, summary.csv, results.md, the plots and report/, from every run's scores.csv."""
    rows = [row for run in plan.runs for row in read_rows(study.scores_path(run))]
    curves = {
        loss: mean_curve([validation_curve(study.metrics_path(loss, k, ids)) for k, ids in enumerate(plan.folds)])
        for loss in study.losses
    }
    settings = describe(study, len(plan.files))
    write_results(rows, curves, study.out, settings)
    write_html(study, rows, curves, plan.files, settings)
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
    scores with runs trained differently. Of several processes that start a study at once,
    exactly one records the settings and the others compare theirs with it.
    """
    current = json.loads(json.dumps(settings))
    if claims.create_new(path, json.dumps(current, indent=2) + "\n"):
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
    record = {"seed": config.train.seed, "folds": folds, "burdens": {i: burdens[i] for i in ids}}
    if claims.create_new(path, json.dumps(record, indent=2) + "\n"):
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
    """Train one loss on one fold (resuming its checkpoint), predict and score its held-out cases, write scores.csv."""
    run_dir = study.run_dir(loss, fold)
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
    write_rows(study.scores_path(RunKey(loss, fold)), rows)
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
    """results.csv, summary.csv, results.md, boxplots.png and validation_curves.png, each written atomically."""
    summaries = summarize_by_loss(rows)
    write_rows(out / RESULTS_CSV, rows)
    records = summary_records(summaries)

    def write_summary(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)

    write_atomic(out / SUMMARY_CSV, write_summary)
    _write_text_atomic(out / RESULTS_MD, render_markdown(summaries, settings))
    losses = list(dict.fromkeys(row.loss for row in rows))
    plot_metric_boxes({loss: [row.metrics for row in rows if row.loss == loss] for loss in losses}, out / BOXPLOTS_PNG)
    plot_validation_curves(curves, out / CURVES_PNG)


def write_html(
    study: Study,
    rows: Sequence[StudyRow],
    curves: Mapping[str, Mapping[int, float]],
    files: Sequence[CaseFiles],
    settings: Mapping[str, object],
) -> None:
    """report/: the study as an HTML report, with each loss's QC picture of every case and the shared configuration."""
    methods = [html_report.MethodRows(loss, [row.metrics for row in rows if row.loss == loss]) for loss in study.losses]
    images = {f.case_id: html_report.CaseImages(f.adc, f.zadc, f.label) for f in files}
    predictions = {loss: {f.case_id: study.prediction_path(loss, f.case_id) for f in files} for loss in study.losses}
    report_dir = study.out / REPORT_DIR
    qc = html_report.render_qc(report_dir, methods, images, predictions, progress=study.progress)
    html_report.write_study_report(report_dir, methods, curves,
                                   {**settings, "configuration": study_settings(study)["config"]}, qc=qc)


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
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:N or cpu")
    parser.add_argument("--devices", help="train on these devices in parallel, one worker process each, "
                                          "e.g. cuda:0,cuda:1 (overrides --device)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes per device (default 1), e.g. --device cpu --workers 4")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help="run only runs K, K+N, K+2N, ... of the study (0 <= K < N), for a job array")
    parser.add_argument("--reclaim", action="store_true",
                        help="take over the runs claimed by processes that are gone but that this host cannot "
                             "check (killed on another machine)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write the tables and plots of a study whose runs are all finished")
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
        if args.report:
            if args.shard or args.devices or args.workers != 1:
                raise ConfigError("--report trains nothing: leave out --shard, --devices and --workers")
            print(report_summary(study, report_study(study, args.reclaim)))
            return 0
        devices = worker_devices(args.device, args.devices, args.workers) if args.devices or args.workers != 1 else []
        print(outcome_summary(study, run_study(study, args.shard, devices, args.reclaim)))
        return 0

    return run_reporting_errors(run)


def report_summary(study: Study, rows: Sequence[StudyRow]) -> str:
    return (f"{len(rows)} held-out case score(s) over {len(study.losses)} loss(es); "
            f"tables and plots in {study.out}")


def outcome_summary(study: Study, outcome: StudyOutcome) -> str:
    """What this process did, who holds the runs it left, and where the tables are or when they will be."""
    counts = {status: [o for o in outcome.outcomes if o.status == status] for status in (TRAINED, FINISHED, HELD)}
    lines = [f"{len(counts[TRAINED])} run(s) trained, {len(counts[FINISHED])} already finished, "
             f"{len(counts[HELD])} left to the processes that claim them"]
    lines += [f"  {o.run}: claimed by {o.holder}" for o in counts[HELD]]
    if any(o.holder is not None and not o.holder.is_local for o in counts[HELD]):
        lines.append("  (a claim from another host stands until its run ends; if its process is gone, "
                     "rerun with --reclaim)")
    if outcome.rows is not None:
        lines.append(report_summary(study, outcome.rows))
    elif outcome.report_holder is not None:
        lines.append(f"every run is finished; the tables and plots are being written by {outcome.report_holder}")
    else:
        waiting = ", ".join(str(run) for run in outcome.unfinished)
        lines.append(f"{len(outcome.unfinished)} run(s) of the study not finished yet ({waiting}): the process that "
                     "finishes the last one writes the tables and plots, or run this command with --report "
                     "once all are finished")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
