"""The network and loss comparison (arXiv 2502.09148's losses, MONAI's networks) as one reproducible command.

Usage::

    python -m hieseg.study --data <root> --losses all --folds 5 --out <dir>
                           [--networks unet,dynunet,segresnet,swinunetr]
                           [--config base.json] [--set section.key=value ...] [--epochs N] [--seed S]
                           [--device auto] [--devices cuda:0,cuda:1] [--workers N] [--shard K/N]
                           [--reclaim] [--report] [--nsd-tolerance 2.0] [--no-progress]

Every network and loss is trained once per fold with a configuration that differs only in
``network.name``, ``loss.name`` and ``train.fold``: the same seed, the same budget and the same
folds. The folds are computed once by :func:`hieseg.splits.stratified_folds` over the lesion
burdens and each run is given its fold's case ids explicitly, so the case it is scored on is
exactly the case it never trained on, whatever its network. The best weights by validation
Dice then predict the held-out fold on the native grid, and the masks are scored with the
challenge metrics in mm (:func:`hieseg.metrics.score_case`, brain = ADC > 0). Each case also gets
its resampling ceiling on the study's grid (:mod:`hieseg.ceiling`), the best Dice any model could
reach there, reported beside the scores. Nothing is tuned on the held-out folds: the shared
configuration's post-processing is used as it is.

The budget is counted in optimiser steps, not seconds: every run gets at most ``train.epochs``
x ``train.steps_per_epoch`` steps of ``train.batch_size`` patches (one pass over the fold's
training cases per epoch when ``steps_per_epoch`` is 0), the same for every network. A step
count reproduces on any machine and gives each network the same updates on the same patches;
seconds depend on the device, its load and the other jobs on it, so a time budget would make the
comparison depend on when and where each run happened. Early stopping (``train.patience``) may
end a run sooner, the same rule for all; the epochs each run took are reported. What each
network costs is reported beside its scores instead: its parameters, the training seconds per
fold and the prediction seconds per case (wall time on the run's device: comparable between
runs on alike devices under alike load).

Before anything is trained, every network is checked against the study's ``train.patch_size``
and ``inference.roi_size`` (SwinUNETR needs multiples of 32 on every axis, the U-Nets multiples
of their strides' product), so a study whose last network could not run fails at once.

Layout of ``--out``::

    study.json                        shared configuration, networks, budget and NSD tolerance; a rerun must match
    splits.json                       seed, folds (case ids) and the burdens they were stratified on
    models/<network>/<loss>/fold<k>/  one weights folder per run: config.json, model.pt, runs/model/
    models/<network>/<loss>/fold<k>/scores.csv  that run's held-out scores; it marks the run as done
    predictions/<network>/<loss>/<case>.mha     held-out masks on the native grid
    results.csv                       per case: network, loss, fold, the challenge metrics, inference seconds
    runs.csv                          per run: parameters, epochs run, training seconds
    summary.csv, results.md           per (network, loss): mean ± std overall and per burden group, and its cost
    boxplots.png, validation_curves.png   MASD on a log axis, so a failed model does not flatten the rest
    report/report.html                the same as an HTML report that opens offline, with every (network, loss)'s
                                      QC picture of every case (:mod:`hieseg.html_report`)
    claims/<network>.<loss>.fold<k>.<n>.json   who trains (or trained) a run: host, pid, time (:mod:`hieseg.claims`)
    claims/report.<n>.json            who writes (or wrote) the tables and plots

Rerunning the same command resumes: a run with a ``scores.csv`` is not repeated, an
interrupted training continues from its checkpoint, and the data must still hold the
cases the folds were made from. Every other setting must match ``study.json`` (compared after
bringing both configurations to the current config format, so a study recorded by an older
version is refused only for a real difference, naming the keys), except the lists of losses
and networks, which may grow: a rerun with one more loss or network trains only its runs, on
the same folds and budget, and ``study.json`` lists every network the study has run. A folder
laid out by the version before networks (``models/<loss>/fold<k>``) is refused, saying how to
move its runs, rather than retrained or mixed.

Scale-out. The (network, loss, fold) runs are independent, so several processes may work on one
study folder at once, on one machine or on several that share it:

* ``--devices cuda:0,cuda:1`` trains one run per listed device at a time, in one spawned worker
  process per device (:mod:`hieseg.device_pool`; ``--workers N`` starts N per device, or N on
  ``--device``, e.g. CPU workers), each taking the next run when it is done with one;
* ``--shard K/N`` (0 <= K < N) takes runs K, K+N, K+2N, ... of the study's list (networks in the
  order given, losses in the order given within each, folds within each), for the tasks of a
  scheduler's job array that all run the same command on the same ``--out``.

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
import time
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
from hieseg.config import CONFIG_FILENAME, CONFIG_FORMAT_VERSION, NETWORK_NAMES, ExperimentConfig
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
from hieseg.network import build_network, parameter_count
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
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
RESULTS_MD = "results.md"
BOXPLOTS_PNG = "boxplots.png"
CURVES_PNG = "validation_curves.png"
REPORT_DIR = "report"
CLAIMS_DIR = "claims"
REPORT_CLAIM = "report"
SETTINGS_CLAIM = "settings"
"""The claim a process holds while it adds networks to ``study.json``, so that concurrent additions are all kept."""
SETTINGS_WAIT_S = 120.0
SETTINGS_POLL_S = 0.05
TRAINED, FINISHED, HELD = "trained", "finished", "held"
"""What became of a run in one process: trained by it, found finished, or left to the process that claims it."""
MASK_SUFFIX = ".mha"
PER_RUN_KEYS = ("network.name", "loss.name", "train.fold")
"""The only configuration keys allowed to differ between the runs of a study."""
COMPARED_SETTINGS = ("config", "nsd_tolerance_mm")
"""The parts of ``study.json`` a rerun must match; its networks may grow, its budget follows from the config."""
BUDGET_UNIT = "steps"
BUDGET_REASON = (
    "optimiser steps, not seconds: a step count gives every network the same updates on the same patches and "
    "reproduces on any machine, where seconds depend on the device, its load and the other jobs on it"
)
HIGHER_IS_BETTER = {"dice": True, "masd_mm": False, "nsd": True}
GROUP_SLUGS = {"<1%": "lt1pct", "1-5%": "1to5pct", ">5%": "gt5pct"}
"""Burden groups as they appear in summary.csv column names."""
ROW_FIELDS = ("network", "loss", "fold", *(f.name for f in dataclasses.fields(CaseMetrics)), "inference_seconds")
TEXT_FIELDS = {"network", "loss", "case_id", "burden_group"}
OPTIONAL_FIELDS = {f.name for f in dataclasses.fields(CaseMetrics) if f.default is None} | {"inference_seconds"}
"""Per-case fields that may be blank (not computed) or absent (a scores.csv written before they existed)."""
RUN_FIELDS = ("network", "loss", "fold", "parameters", "epochs_run", "training_seconds")
COST_FIELDS = ("parameters", "epochs_run_mean", "training_seconds_mean", "training_seconds_std",
               "inference_seconds_mean", "inference_seconds_std")
"""What a (network, loss) costs, in summary.csv: per fold for training, per case for inference."""

COST_TITLES = ("parameters", "epochs run (mean)", "training s per fold", "inference s per case")
COST_NOTE = ("Parameters: trainable, of the network as configured. Epochs run: of the budget's epochs, fewer where "
             "early stopping ended a run. Training seconds: wall time of a fold's epochs, validation included, "
             "mean ± std over the folds. Inference seconds: wall time of one case's prediction (preprocessing, "
             "sliding window, post-processing, back to the native grid), mean ± std over the cases. Seconds "
             "compare only between runs on alike devices under alike load.")

Method = tuple[str, str]
"""What the study compares: a (network, loss) pair."""


def method_label(method: Method) -> str:
    """A (network, loss) as plots and the HTML report name it."""
    return f"{method[0]} / {method[1]}"


class _Absent:
    """Stands for a key that one of two compared settings lacks (e.g. a field added to the config since)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


@dataclass(frozen=True)
class StudyRow:
    """The held-out scores of one case under one (network, loss), and how long its prediction took."""

    network: str
    loss: str
    fold: int
    metrics: CaseMetrics
    inference_seconds: float | None = None
    """Wall time of the case's prediction: preprocessing, sliding window, post-processing, back to the native grid."""

    @property
    def method(self) -> Method:
        return (self.network, self.loss)

    def as_record(self) -> dict[str, object]:
        return {"network": self.network, "loss": self.loss, "fold": self.fold, **dataclasses.asdict(self.metrics),
                "inference_seconds": self.inference_seconds}

    @classmethod
    def from_record(cls, record: Mapping[str, str], network: str | None = None) -> StudyRow:
        """A row from its CSV record; ``network`` for a record written before rows named it."""
        values: dict[str, object] = {
            key: record[key] if key in TEXT_FIELDS else float(record[key])
            for key in ROW_FIELDS
            if key != "network" and (key not in OPTIONAL_FIELDS or record.get(key))
        }
        loss, fold = values.pop("loss"), int(values.pop("fold"))
        seconds = values.pop("inference_seconds", None)
        return cls(network=record.get("network") or str(network), loss=str(loss), fold=fold,
                   metrics=CaseMetrics(**values), inference_seconds=seconds)


@dataclass(frozen=True)
class RunKey:
    """One (network, loss, fold) run of a study."""

    network: str
    loss: str
    fold: int

    @property
    def method(self) -> Method:
        return (self.network, self.loss)

    @property
    def claim_key(self) -> str:
        """The run's name among the study's claims (:mod:`hieseg.claims`)."""
        return f"{self.network}.{self.loss}.fold{self.fold}"

    def __str__(self) -> str:
        return f"{method_label(self.method)} fold {self.fold}"


@dataclass(frozen=True)
class RunCost:
    """What one run cost: its network's trainable parameters, the epochs it ran and their seconds.

    The seconds are the sum of the ``seconds`` column of the run's metrics.csv: each epoch's
    wall time, its validation and checkpoint included, over the epochs it kept (those of an
    interrupted epoch are lost with it).
    """

    run: RunKey
    parameters: int
    epochs_run: int
    training_seconds: float

    def as_record(self) -> dict[str, object]:
        return {"network": self.run.network, "loss": self.run.loss, "fold": self.run.fold,
                "parameters": self.parameters, "epochs_run": self.epochs_run,
                "training_seconds": self.training_seconds}


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
    """The study's cases, its folds and its runs in order (networks as given, losses within each, then folds)."""

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
    """What a study compares and where: shared by every (network, loss, fold) run.

    ``networks`` left empty means the configuration's ``network.name`` alone.
    """

    data: Path
    out: Path
    config: ExperimentConfig
    losses: tuple[str, ...]
    networks: tuple[str, ...] = ()
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.networks:
            object.__setattr__(self, "networks", (self.config.network.name,))

    @property
    def methods(self) -> tuple[Method, ...]:
        """The (network, loss) pairs compared, networks as given and losses within each."""
        return tuple((network, loss) for network in self.networks for loss in self.losses)

    def run_config(self, run: RunKey) -> ExperimentConfig:
        return self.config.with_overrides({"network.name": run.network, "loss.name": run.loss, "train.fold": run.fold})

    def run_dir(self, run: RunKey) -> Path:
        return self.out / MODELS_DIR / run.network / run.loss / f"fold{run.fold}"

    def scores_path(self, run: RunKey) -> Path:
        """The run's held-out scores; their presence marks the run as finished."""
        return self.run_dir(run) / FOLD_SCORES_CSV

    @property
    def claims_dir(self) -> Path:
        return self.out / CLAIMS_DIR

    def metrics_path(self, run: RunKey, held_out_ids: Sequence[str]) -> Path:
        """The metrics.csv that training writes for this run (named after its explicit validation ids)."""
        name = training.run_name(self.run_config(run), list(held_out_ids))
        return self.run_dir(run) / "runs" / name / training.METRICS_FILE

    def prediction_path(self, method: Method, case_id: str) -> Path:
        network, loss = method
        return self.out / PREDICTIONS_DIR / network / loss / f"{case_id}{MASK_SUFFIX}"


def parse_losses(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of loss names, in the order given, each validated against LOSS_NAMES."""
    if text.strip() == ALL_LOSSES:
        return LOSS_NAMES
    return _parse_names(text, "--losses", "loss", LOSS_NAMES, f"use {ALL_LOSSES!r} or a comma list of")


def parse_networks(text: str) -> tuple[str, ...]:
    """A comma list of network names (``network.name`` values), in the order given."""
    return _parse_names(text, "--networks", "network", NETWORK_NAMES, "use a comma list of")


def _parse_names(text: str, flag: str, kind: str, known: Sequence[str], usage: str) -> tuple[str, ...]:
    """The names of a comma list, in the order given; unknown, missing or repeated names are refused."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(
            f"{flag}: unknown {kind} name(s) {', '.join(unknown) or '(none given)'}; {usage}: {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{flag}: a {kind} is listed twice in {text!r}")
    return tuple(names)


def check_networks(config: ExperimentConfig, networks: Sequence[str]) -> None:
    """Refuse, before any work, a network that cannot train on the study's patches or predict with its window.

    Every network of a study trains on the same ``train.patch_size`` and predicts with the same
    ``inference.roi_size``, so each must accept both (:class:`hieseg.config.ExperimentConfig`
    checks them, e.g. SwinUNETR's multiples of 32).
    """
    for network in networks:
        try:
            config.with_overrides({"network.name": network})
        except ConfigError as exc:
            raise ConfigError(
                f"--networks {network}: {exc}; every network of a study uses the same train.patch_size and "
                "inference.roi_size, so choose sizes that all of --networks accept, or leave this network out"
            ) from exc


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
    """The study's cases, folds and runs, after checking its networks, and the folder's settings and folds,
    against this command.

    ``create``: record the settings and folds when the folder has none yet (a new study), and
    add this command's networks to those ``study.json`` lists; otherwise a folder without them
    is refused, and ``study.json`` is left as it is.
    """
    check_networks(study.config, study.networks)
    files = discover_cases(study.data)
    if create:
        study.out.mkdir(parents=True, exist_ok=True)
    elif not (study.out / STUDY_JSON).is_file():
        raise OutputError(f"{study.out}: no study here ({STUDY_JSON} missing); run the study first")
    check_settings(study.out / STUDY_JSON, study_settings(study), record=create)
    folds = folds_for(study.out / SPLITS_JSON, case_burdens(files, study.progress), study.config)
    runs = tuple(RunKey(network, loss, fold) for network, loss in study.methods for fold in range(len(folds)))
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
        return RunOutcome(run, FINISHED, tuple(read_rows(scores_path, run.network)))
    claim = claims.acquire(study.claims_dir, run.claim_key, takeover)
    if isinstance(claim, claims.Holder):
        return RunOutcome(run, HELD, holder=claim)
    with claim:
        if scores_path.exists():  # finished by the previous holder, between the look above and the claim
            return RunOutcome(run, FINISHED, tuple(read_rows(scores_path, run.network)))
        return RunOutcome(run, TRAINED, tuple(run_job(study, run, held_out)))


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
    """results.csv, runs.csv, summary.csv, results.md, the plots and report/, from every run's files."""
    rows = [row for run in plan.runs for row in read_rows(study.scores_path(run), run.network)]
    costs = run_costs(study, plan)
    curves = {
        method_label(method): mean_curve([validation_curve(study.metrics_path(RunKey(*method, k), ids))
                                          for k, ids in enumerate(plan.folds)])
        for method in study.methods
    }
    settings = describe(study, plan)
    write_results(rows, costs, curves, study.out, settings)
    write_html(study, rows, costs, curves, plan.files, settings)
    return rows


def run_costs(study: Study, plan: Plan) -> list[RunCost]:
    """Each run's parameters (its network built from the run's configuration), epochs run and training seconds."""
    parameters = {network: parameter_count(build_network(study.run_config(RunKey(network, study.losses[0], 0))))
                  for network in study.networks}
    costs = []
    for run in plan.runs:
        history = training.read_history(study.metrics_path(run, plan.folds[run.fold]))
        costs.append(RunCost(run, parameters[run.network], epochs_run=len(history),
                             training_seconds=float(sum(row["seconds"] for row in history))))
    return costs


def study_settings(study: Study) -> dict[str, object]:
    """What every run of the study shares (the configuration without its per-run keys, the NSD tolerance and the
    budget that follows from the configuration), and the networks it compares."""
    return {
        "config": shared_config(study.config.settings_dict()),
        "networks": list(study.networks),
        "nsd_tolerance_mm": study.nsd_tolerance_mm,
        "budget": budget(study.config),
    }


def budget(config: ExperimentConfig) -> dict[str, object]:
    """Every run's training budget, the same for every network and loss, and why it is counted in steps."""
    train = config.train
    return {
        "unit": BUDGET_UNIT,
        "epochs": train.epochs,
        "steps_per_epoch": train.steps_per_epoch or "one pass over the fold's training cases",
        "patches_per_step": train.batch_size,
        "early_stopping_patience": train.patience,
        "why": BUDGET_REASON,
    }


def shared_config(data: dict[str, object]) -> dict[str, object]:
    """A configuration as :meth:`ExperimentConfig.to_dict` writes it, without the per-run keys."""
    data = json.loads(json.dumps(data))
    for dotted in PER_RUN_KEYS:
        section, _, key = dotted.partition(".")
        data[section].pop(key, None)
    data.pop("provenance", None)
    return data


def current_config(data: Mapping[str, object], network: str) -> dict[str, object]:
    """A shared configuration recorded by any version (config format 1, keys added since left out) in today's form.

    The per-run keys are filled in to build it (``network`` for the network, whose section then
    checks the patch sizes) and taken out again; keys absent from the record get their defaults.
    """
    filled = json.loads(json.dumps(data))
    if isinstance(filled, dict):
        if filled.get("format_version", CONFIG_FORMAT_VERSION) != 1:  # format 1 had no network.name: U-Net only
            _section(filled, "network").setdefault("name", network)
        _section(filled, "loss").setdefault("name", LOSS_NAMES[0])
        _section(filled, "train")["fold"] = 0
    return shared_config(ExperimentConfig.from_dict(filled).settings_dict())


def _section(data: dict, name: str) -> dict:
    section = data.setdefault(name, {})
    return section if isinstance(section, dict) else {}


def recorded_networks(recorded: Mapping[str, object]) -> list[str]:
    """The networks a ``study.json`` lists; for one written before studies compared networks, its one network."""
    if "networks" in recorded:
        return list(recorded["networks"])
    config = recorded.get("config")
    network = config.get("network") if isinstance(config, dict) else None
    return [network.get("name", "unet") if isinstance(network, dict) else "unet"]


def check_settings(path: Path, settings: dict[str, object], record: bool = True) -> None:
    """Record the shared settings on the first run; refuse a rerun whose settings differ.

    Without this, a rerun with another budget would skip the finished runs and mix their
    scores with runs trained differently. Of several processes that start a study at once,
    exactly one records the settings and the others compare theirs with it. Both
    configurations are brought to today's config format first (:func:`current_config`), so a
    study recorded by an older version is the same study unless a setting really differs.

    The networks may grow: with ``record``, networks new to the study are added to its list.
    A folder whose runs are laid out as before networks were compared is refused
    (:func:`refuse_old_layout`).
    """
    current = json.loads(json.dumps(settings))
    if claims.create_new(path, json.dumps(current, indent=2) + "\n"):
        return
    recorded = json.loads(path.read_text())
    networks = recorded_networks(recorded)
    try:
        then = current_config(recorded.get("config", {}), networks[0])
    except ConfigError as exc:
        raise ConfigError(f"{path}: its recorded configuration cannot be read ({exc}); choose another --out") from exc
    now = current_config(current["config"], recorded_networks(current)[0])
    differences = [
        f"{key}: {old!r} then, {new!r} now"
        for key, (old, new) in _flat_differences(
            {**{key: recorded.get(key, ABSENT) for key in COMPARED_SETTINGS}, "config": then},
            {**{key: current.get(key, ABSENT) for key in COMPARED_SETTINGS}, "config": now},
        ).items()
    ]
    if differences:
        raise ConfigError(
            f"{path}: this study was started with other settings ({'; '.join(differences)}); "
            "rerun with the same ones or choose another --out"
        )
    if "networks" not in recorded:
        refuse_old_layout(path.parent, networks[0])
    if record and ("networks" not in recorded or not set(current["networks"]) <= set(networks)):
        add_networks(path, current)


def refuse_old_layout(out: Path, network: str) -> None:
    """Refuse a folder whose runs are laid out as before studies compared networks (``models/<loss>/fold<k>``).

    This version would not see those runs: it would train them again beside them, or report
    without them. The refusal says how to move them to today's layout instead.
    """
    found = [f"{top}/{loss}" for top in (MODELS_DIR, PREDICTIONS_DIR) for loss in LOSS_NAMES
             if (out / top / loss).is_dir()]
    if found:
        raise OutputError(
            f"{out}: this study's folders are laid out by an older version of hieseg.study ({', '.join(found)}: "
            f"models/<loss>/fold<k>), which this version would not see; it keeps each network's runs apart "
            f"(models/<network>/<loss>/fold<k>). Finish it with the version that made it, or move "
            f"models/<loss> to models/{network}/<loss> and predictions/<loss> to predictions/{network}/<loss> "
            "(the network it trained) and rerun, or choose another --out"
        )


def add_networks(path: Path, settings: Mapping[str, object]) -> None:
    """Rewrite ``study.json`` in today's form with the networks of ``settings`` added to those it lists.

    One process at a time (it holds :data:`SETTINGS_CLAIM` meanwhile), so that networks added by
    processes starting together are all kept; it rereads the file under the claim.
    """
    folder = path.parent / CLAIMS_DIR
    deadline = time.monotonic() + SETTINGS_WAIT_S
    while isinstance(claim := claims.acquire(folder, SETTINGS_CLAIM), claims.Holder):
        if time.monotonic() > deadline:
            raise OutputError(
                f"{path}: {claim} has been updating it for over {SETTINGS_WAIT_S:.0f} s; if that process is gone, "
                f"remove {folder / SETTINGS_CLAIM}.*.json and rerun"
            )
        time.sleep(SETTINGS_POLL_S)
    with claim:
        networks = dict.fromkeys([*recorded_networks(json.loads(path.read_text())), *settings["networks"]])
        text = json.dumps({**settings, "networks": list(networks)}, indent=2) + "\n"
        write_atomic(path, lambda temporary: temporary.write_text(text))


def case_burdens(files: Sequence[CaseFiles], progress: bool) -> dict[str, float]:
    """Lesion fraction of brain volume of every case, reading one case at a time to bound memory."""
    return {
        f.case_id: training.lesion_burden(load_case(f))
        for f in tqdm(files, desc="reading cases", unit="case", disable=not progress)
    }


def folds_for(path: Path, burdens: Mapping[str, float], config: ExperimentConfig) -> list[list[str]]:
    """The study's folds: computed once and written to ``path``; a rerun must find the same cases and burdens.

    A rerun takes the recorded folds, not folds computed anew, so every run of the study, of
    whichever network or loss and whenever it was added, is scored on the same held-out cases
    (even if :func:`hieseg.splits.stratified_folds` has changed since).
    """
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
    if recorded.get("burdens") != record["burdens"]:
        raise DatasetError(
            f"{path}: the cases' lesion burdens changed since the folds were made, so the folds would differ; "
            "choose another --out"
        )
    return [list(fold) for fold in recorded["folds"]]


def run_job(study: Study, run: RunKey, held_out: list[CaseFiles]) -> list[StudyRow]:
    """Train one run (resuming its checkpoint), predict and score its held-out cases, write scores.csv."""
    training.train(
        study.run_config(run),
        study.data,
        study.run_dir(run),
        validation_ids=[f.case_id for f in held_out],
        resume=True,
        device=study.device,
        progress=study.progress,
    )
    rows = predict_and_score(study, run, held_out)
    write_rows(study.scores_path(run), rows)
    return rows


def predict_and_score(study: Study, run: RunKey, held_out: list[CaseFiles]) -> list[StudyRow]:
    """Masks of the held-out cases from the run's best weights, written and scored on the native grid.

    Each row carries the case's resampling ceiling on the weights' grid, and the wall time of its
    prediction (:meth:`Predictor.mask_image`: reading excluded, writing excluded).
    """
    device = select_device(study.device)
    bundle = load_bundle(study.run_dir(run), device)
    predictor = Predictor.from_bundle(bundle, device)
    rows = []
    for files in held_out:
        case = load_case(files)
        started = time.perf_counter()
        mask = predictor.mask_image(case)
        seconds = time.perf_counter() - started
        write_image_atomic(mask, study.prediction_path(run.method, files.case_id))
        metrics = score_case(
            to_xyz_array(mask, np.uint8),
            to_xyz_array(case.label, np.uint8),
            case.adc.GetSpacing(),
            brain=brain_of(case.adc),
            nsd_tolerance_mm=study.nsd_tolerance_mm,
            case_id=files.case_id,
        )
        metrics.ceiling_dice = resampling_ceiling(case.label, bundle.config.preprocess.target_spacing)
        rows.append(StudyRow(run.network, run.loss, run.fold, metrics, inference_seconds=seconds))
    return rows


def validation_curve(path: Path) -> dict[int, float]:
    """Validation Dice by epoch from a run's metrics.csv (epochs without validation left out)."""
    rows = training.read_history(path)
    return {int(row["epoch"]): row["val_dice"] for row in rows if not math.isnan(row["val_dice"])}


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Mean over folds at each epoch, over the folds that validated at that epoch (early stops differ)."""
    epochs = sorted({epoch for curve in curves for epoch in curve})
    return {epoch: float(np.mean([c[epoch] for c in curves if epoch in c])) for epoch in epochs}


def describe(study: Study, plan: Plan) -> dict[str, object]:
    """The settings a reader needs to interpret the tables, recorded in results.md and the HTML report."""
    train = study.config.train
    return {
        "cases": len(plan.files),
        "folds": train.folds,
        "networks": ", ".join(study.networks),
        "losses": ", ".join(study.losses),
        "seed": train.seed,
        "budget": f"at most {train.epochs} epochs x "
                  f"{f'{train.steps_per_epoch} steps' if train.steps_per_epoch else 'one pass over the training cases'}"
                  f" per run, {train.batch_size} patch(es) a step, counted in {BUDGET_REASON}",
        "target_spacing_mm": network_grids(study, plan),
        "nsd_tolerance_mm": study.nsd_tolerance_mm,
    }


def network_grids(study: Study, plan: Plan) -> str:
    """The network grid(s) the runs trained on: the configured one, or each run's data-derived one
    (``preprocess.target_spacing`` unset), as its saved config.json resolved it."""
    configured = study.config.preprocess.target_spacing
    if configured is not None:
        return " x ".join(f"{value:g}" for value in configured)
    grids = {
        tuple(ExperimentConfig.load(study.run_dir(run) / CONFIG_FILENAME).preprocess.target_spacing or ())
        for run in plan.runs
    }
    return "; ".join(" x ".join(f"{value:g}" for value in grid) for grid in sorted(grids)) + " (from the data)"


def write_results(
    rows: Sequence[StudyRow],
    costs: Sequence[RunCost],
    curves: Mapping[str, Mapping[int, float]],
    out: Path,
    settings: Mapping[str, object],
) -> None:
    """results.csv, runs.csv, summary.csv, results.md, boxplots.png and validation_curves.png, each atomically."""
    summaries = summarize_by_method(rows)
    method_costs = cost_statistics(costs, rows)
    write_rows(out / RESULTS_CSV, rows)
    _write_csv_atomic(out / RUNS_CSV, RUN_FIELDS, [cost.as_record() for cost in costs])
    records = summary_records(summaries, method_costs)
    _write_csv_atomic(out / SUMMARY_CSV, list(records[0]), records)
    _write_text_atomic(out / RESULTS_MD, render_markdown(summaries, method_costs, settings))
    plot_metric_boxes({method_label(method): [row.metrics for row in rows if row.method == method]
                       for method in summaries}, out / BOXPLOTS_PNG)
    plot_validation_curves(curves, out / CURVES_PNG)


def write_html(
    study: Study,
    rows: Sequence[StudyRow],
    costs: Sequence[RunCost],
    curves: Mapping[str, Mapping[int, float]],
    files: Sequence[CaseFiles],
    settings: Mapping[str, object],
) -> None:
    """report/: the study as an HTML report, with each (network, loss)'s cost and QC picture of every case, and
    the shared configuration."""
    methods = [html_report.MethodRows(method_label(method), [row.metrics for row in rows if row.method == method],
                                      folder="/".join(method))
               for method in study.methods]
    images = {f.case_id: html_report.CaseImages(f.adc, f.zadc, f.label) for f in files}
    predictions = {method_label(method): {f.case_id: study.prediction_path(method, f.case_id) for f in files}
                   for method in study.methods}
    report_dir = study.out / REPORT_DIR
    qc = html_report.render_qc(report_dir, methods, images, predictions, progress=study.progress)
    method_costs = cost_statistics(costs, rows)
    cost_section = html_report.table_section(
        "cost", "Cost", ["network / loss", *COST_TITLES],
        [[method_label(method), *_cost_cells(method_costs[method])] for method in study.methods],
        note=COST_NOTE,
    )
    html_report.write_study_report(report_dir, methods, curves,
                                   {**settings, "configuration": study_settings(study)["config"]}, qc=qc,
                                   sections=[cost_section])


def summarize_by_method(rows: Sequence[StudyRow]) -> dict[Method, dict]:
    """:func:`hieseg.metrics.summarize` of each (network, loss)'s rows, in first-seen order."""
    methods = list(dict.fromkeys(row.method for row in rows))
    return {method: summarize([row.metrics for row in rows if row.method == method]) for method in methods}


def cost_statistics(costs: Sequence[RunCost], rows: Sequence[StudyRow]) -> dict[Method, dict[str, object]]:
    """Per (network, loss) of ``rows``: parameters, mean epochs run and mean ± std training seconds over its
    folds, mean ± std inference seconds over its cases; blank where nothing was measured."""
    found: dict[Method, dict[str, object]] = {}
    for method in dict.fromkeys(row.method for row in rows):
        runs = [cost for cost in costs if cost.run.method == method]
        inference = [row.inference_seconds for row in rows
                     if row.method == method and row.inference_seconds is not None]
        training_seconds = [cost.training_seconds for cost in runs]
        found[method] = {
            "parameters": runs[0].parameters if runs else "",
            "epochs_run_mean": float(np.mean([cost.epochs_run for cost in runs])) if runs else "",
            **_mean_std("training_seconds", training_seconds),
            **_mean_std("inference_seconds", inference),
        }
    return found


def _mean_std(name: str, values: Sequence[float]) -> dict[str, object]:
    if not values:
        return {f"{name}_mean": "", f"{name}_std": ""}
    return {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}


def _cost_cells(cost: Mapping[str, object]) -> list[str]:
    """A (network, loss)'s cost as table cells, in the order of :data:`COST_TITLES`."""
    def mean_std(name: str, decimals: int) -> str:
        mean, std = cost[f"{name}_mean"], cost[f"{name}_std"]
        return "–" if mean == "" else f"{mean:.{decimals}f} ± {std:.{decimals}f}"

    parameters, epochs = cost["parameters"], cost["epochs_run_mean"]
    return [
        "–" if parameters == "" else f"{parameters:,}",
        "–" if epochs == "" else f"{epochs:g}",
        mean_std("training_seconds", 1),
        mean_std("inference_seconds", 3),
    ]


def summary_records(
    summaries: Mapping[Method, Mapping], costs: Mapping[Method, Mapping[str, object]]
) -> list[dict[str, object]]:
    """One flat summary.csv row per (network, loss): its cost, then n, mean and std of each metric, overall then
    per burden group.

    The ceiling's columns are there when some method has ceilings, blank for one without them.
    """
    metrics = reported_metrics(summary["overall"] for summary in summaries.values())
    records = []
    for (network, loss), summary in summaries.items():
        cost = costs.get((network, loss), {})
        record: dict[str, object] = {
            "network": network,
            "loss": loss,
            **{field: cost.get(field, "") for field in COST_FIELDS},
            **_flat_statistics("", summary["overall"], metrics),
            "n_one_empty": summary["n_one_empty"],
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


def best_methods(statistics_by_method: Mapping[Method, Mapping]) -> dict[str, set[Method]]:
    """Per metric, the (network, loss)(es) with the best mean: highest Dice and NSD, lowest MASD; ties all win."""
    best: dict[str, set[Method]] = {}
    for metric, higher in HIGHER_IS_BETTER.items():
        means = {method: stats[metric]["mean"] for method, stats in statistics_by_method.items() if stats[metric]}
        if means:
            target = max(means.values()) if higher else min(means.values())
            best[metric] = {method for method, mean in means.items() if mean == target}
    return best


def render_markdown(
    summaries: Mapping[Method, Mapping], costs: Mapping[Method, Mapping[str, object]], settings: Mapping[str, object]
) -> str:
    """results.md: one table overall, the cost of each (network, loss), and one table per burden group, the best
    per metric in bold."""
    lines = [
        "# Network and loss comparison",
        "",
        "Every network and loss trained with the same folds, seed and budget, and scored on its held-out fold "
        "in the native grid. Settings:",
        "",
        *(f"- {key} = {value}" for key, value in settings.items()),
        "",
        "Mean ± std (population) over the held-out cases; **bold**: the best network and loss per column "
        "(highest Dice and NSD, lowest MASD).",
        "",
        "## All cases",
        "",
        *_markdown_table({method: summary["overall"] for method, summary in summaries.items()}),
        "",
        "Cases with exactly one empty mask, scored Dice 0, NSD 0 and MASD = the image diagonal: "
        + ", ".join(f"{method_label(method)} {summary['n_one_empty']}" for method, summary in summaries.items())
        + ".",
    ]
    if CEILING_METRIC in reported_metrics(summary["overall"] for summary in summaries.values()):
        lines += [
            "",
            "ceiling Dice: each case's truth after a round trip through the study's grid (resampled there and "
            "back as the predictor does), the best Dice any model could reach; it depends on neither network nor "
            "loss.",
        ]
    lines += ["", "## Cost", "", *_markdown_cost_table(summaries, costs), "", COST_NOTE]
    for group in BURDEN_GROUPS:
        lines += [
            "",
            f"## Lesion burden {group} of brain volume",
            "",
            *_markdown_table({method: summary["by_burden"][group] for method, summary in summaries.items()}),
        ]
    return "\n".join(lines) + "\n"


def _markdown_table(statistics_by_method: Mapping[Method, Mapping]) -> list[str]:
    best = best_methods(statistics_by_method)
    metrics = reported_metrics(statistics_by_method.values())
    header = ["network", "loss", "n", *(METRIC_TITLES[metric] for metric in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, statistics in statistics_by_method.items():
        cells = [*method, str(statistics["n"])]
        for metric in metrics:
            values = statistics.get(metric)
            cell = "–" if values is None else f"{values['mean']:.3f} ± {values['std']:.3f}"
            cells.append(f"**{cell}**" if method in best.get(metric, set()) else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown_cost_table(
    summaries: Mapping[Method, Mapping], costs: Mapping[Method, Mapping[str, object]]
) -> list[str]:
    header = ["network", "loss", *COST_TITLES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    blank = {field: "" for field in COST_FIELDS}
    for method in summaries:
        lines.append("| " + " | ".join([*method, *_cost_cells(costs.get(method, blank))]) + " |")
    return lines


def write_rows(path: Path, rows: Sequence[StudyRow]) -> None:
    """Per-case rows as CSV, written atomically so a crash never leaves a half-written 'done' marker."""
    _write_csv_atomic(path, ROW_FIELDS, [row.as_record() for row in rows])


def read_rows(path: Path, network: str | None = None) -> list[StudyRow]:
    """The rows of a scores.csv or results.csv; ``network`` for a scores.csv written before rows named it."""
    with path.open(newline="") as handle:
        return [StudyRow.from_record(record, network) for record in csv.DictReader(handle)]


def _write_csv_atomic(path: Path, fields: Sequence[str], records: Sequence[Mapping[str, object]]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(records)

    write_atomic(path, write)


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
        prog="python -m hieseg.study", description=__doc__.split("\n\n")[0],
        epilog="Every run gets the same budget, counted in " + BUDGET_REASON + ". Rerun the same command to resume; "
               "more --losses or --networks extend a study whose other settings are unchanged.",
    )
    parser.add_argument("--data", type=Path, required=True, help="release root holding 1ADC_ss/, 2Z_ADC/, 3LABEL/")
    parser.add_argument("--out", type=Path, required=True, help="study folder (rerun the same command to resume)")
    parser.add_argument("--losses", default=ALL_LOSSES,
                        help=f"{ALL_LOSSES!r} (default) or a comma list of: {', '.join(LOSS_NAMES)}")
    parser.add_argument("--networks",
                        help=f"comma list of: {', '.join(NETWORK_NAMES)} (default: the config's network.name); "
                             "each is trained with every loss on the same folds and step budget, and must accept "
                             "train.patch_size and inference.roi_size (swinunetr: multiples of 32)")
    parser.add_argument("--folds", type=int, help="number of stratified folds (default: train.folds, 5)")
    parser.add_argument("--config", type=Path, help="start from this config.json instead of the defaults")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs of every run")
    parser.add_argument("--seed", type=int, help="seed of the folds, sampling and initialisation")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config value but network.name, loss.name and train.fold, "
             "e.g. --set train.patch_size=[64,64,32]",
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
        raise ConfigError(f"--set {', '.join(fixed)}: the study sets these per run; "
                          "choose networks with --networks and losses with --losses")
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
            networks=parse_networks(args.networks) if args.networks is not None else (),
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
    return (f"{len(rows)} held-out case score(s) over {len(study.networks)} network(s) x {len(study.losses)} "
            f"loss(es); tables and plots in {study.out}")


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
