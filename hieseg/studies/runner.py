"""Running a study: each (network, loss, fold) run claimed, trained, and scored on its held-out fold.

Runs are independent, so several processes (workers of one command, shards of a job array,
machines sharing the folder) may work on one study at once: a run is claimed before it is
trained (:mod:`hieseg.runtime.claims`) and never trained twice, and the process that finds every
run finished writes the tables (:mod:`hieseg.studies.results`). See :mod:`hieseg.cli.study`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from hieseg.errors import OutputError
from hieseg.evaluation.scoring import Reference
from hieseg.inference.predictor import Predictor
from hieseg.io.images import write_image_atomic
from hieseg.io.layout import CaseFiles, CaseImages
from hieseg.model.weights import load_bundle
from hieseg.runtime import claims, pool
from hieseg.runtime.devices import select_device
from hieseg.runtime.shards import Shard
from hieseg.studies.plan import Plan, RunKey, RunTask, Study, prepare
from hieseg.studies.results import StudyRow, read_rows, write_report, write_rows
from hieseg.training import trainer
from hieseg.training.data import load_cases

LOG = logging.getLogger(__name__)
REPORT_CLAIM = "report"
TRAINED, FINISHED, HELD = "trained", "finished", "held"
"""What became of a run in one process: trained by it, found finished, or left to the process that claims it."""


@dataclass(frozen=True)
class RunOutcome:
    """What one process did with one run: :data:`TRAINED`, :data:`FINISHED` before, or :data:`HELD` by another."""

    run: RunKey
    status: str
    rows: tuple[StudyRow, ...] = ()
    holder: claims.Holder | None = None
    """Who claims a :data:`HELD` run."""


@dataclass(frozen=True)
class StudyOutcome:
    """What one process did: its runs, the study's runs still unfinished after them, and the tables if it wrote them."""

    outcomes: tuple[RunOutcome, ...]
    unfinished: tuple[RunKey, ...]
    rows: tuple[StudyRow, ...] | None
    """Every held-out score, when this process wrote the tables and plots."""
    report_holder: claims.Holder | None = None
    """Who writes the tables and plots, when every run was finished but another process had claimed them."""


def run_study(
    study: Study, shard: Shard | None = None, devices: Sequence[str] = (), reclaim: bool = False
) -> StudyOutcome:
    """Train, predict and score the runs of ``shard`` (all by default) not done yet; then, if every run of the
    study is finished, write the tables and plots.

    ``devices``: one worker process per entry (:mod:`hieseg.runtime.pool`); none or one runs in this
    process, on ``study.device`` or the one entry. ``reclaim``: take over the claims that stand
    when this process starts, whoever holds them (see :mod:`hieseg.runtime.claims`).
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
    for _, outcome in pool.run_on_devices(work, tasks, devices, verbose):
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


def run_job(study: Study, run: RunKey, held_out: list[CaseFiles]) -> list[StudyRow]:
    """Train one run (resuming its checkpoint), predict and score its held-out cases, write scores.csv."""
    device = select_device(study.device)
    cases = load_cases([study.data], study.progress)
    held_out_ids = [f.case_id for f in held_out]
    trainer.train(
        study.run_config(run),
        cases,
        study.run_dir(run),
        validation_ids=held_out_ids,
        resume=True,
        device=device,
        progress=study.progress,
    )
    by_id = {case.files.case_id: case for case in cases}
    rows = predict_and_score(study, run, [by_id[case_id] for case_id in held_out_ids], device)
    write_rows(study.scores_path(run), rows)
    return rows


def predict_and_score(study: Study, run: RunKey, held_out: list[CaseImages], device: torch.device) -> list[StudyRow]:
    """Masks of the held-out cases from the run's best weights, written and scored on the native grid.

    Each row carries the case's resampling ceiling on the weights' grid, and the wall time of its
    prediction (:meth:`Predictor.mask_image`: reading excluded, writing excluded).
    """
    bundle = load_bundle(study.run_dir(run), device)
    predictor = Predictor.from_bundle(bundle, device)
    rows = []
    for case in held_out:
        started = time.perf_counter()
        mask = predictor.mask_image(case)
        seconds = time.perf_counter() - started
        write_image_atomic(mask, study.prediction_path(run.method, case.files.case_id))
        metrics = Reference.of_case(case).score(mask, nsd_tolerance_mm=study.nsd_tolerance_mm,
                                                ceiling_spacing=bundle.config.preprocess.target_spacing)
        rows.append(StudyRow(run.network, run.loss, run.fold, metrics, inference_seconds=seconds))
    return rows
