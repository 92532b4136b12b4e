"""Batch prediction: every case of a folder to one mask per case, the weights loaded once per process.

The input is a release root or a folder of container-layout case folders (:func:`find_jobs`);
each case's mask goes to ``<output>/<case>.mha``. Cases are read, checked, predicted and written
by the same functions as ``inference.py`` (:func:`~hieseg.io.layout.read_input_case`,
:func:`~hieseg.inference.predictor.segment_case` and :class:`~hieseg.inference.predictor.Predictor`),
so a mask is bit-identical to the one ``inference.py`` writes for that case with the same weights
and settings. A case that fails is recorded with its reason and the others go on; a worker
process that dies stops the run (:class:`~hieseg.runtime.pool.WorkerDied`), the cases done kept.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from hieseg.errors import DatasetError, HiesegError
from hieseg.inference.predictor import Predictor, segment_case
from hieseg.io.images import (
    MHA_SUFFIX,
    Geometry,
    mask_volume_ml,
    read_geometry,
    read_image,
    require_binary,
    require_image_path,
    require_writable,
)
from hieseg.io.layout import (
    ADC_DIR,
    CaseFiles,
    CaseImages,
    check_input_root,
    container_interface,
    find_cases,
    load_case,
    read_input_case,
    single_image,
)
from hieseg.io.tables import write_csv_atomic
from hieseg.model.weights import load_bundle
from hieseg.runtime import pool
from hieseg.runtime.shards import Shard

LOG = logging.getLogger("hieseg.predict")
TABLE_NAME = "predictions.csv"
WRITTEN, EXISTING, FAILED = "written", "existing", "failed"


@dataclass(frozen=True)
class CaseJob:
    """One case to predict: where its images are and where its mask goes."""

    case_id: str
    mask: Path
    release_files: CaseFiles | None = None
    """The release layout's files; ``None`` for a container-layout case."""
    container_dir: Path | None = None
    """The container-layout case's input folder; ``None`` for a release case."""

    def read(self) -> CaseImages:
        """The case's checked images, read as ``train.py`` (release) or ``inference.py`` (container) reads them."""
        if self.release_files is not None:
            return load_case(self.release_files)
        assert self.container_dir is not None
        return read_input_case(self.container_dir)

    @property
    def source(self) -> Path | None:
        """Where the case's images are (``None`` for an incomplete case, whose error names its files)."""
        return self.release_files.adc if self.release_files is not None else self.container_dir

    def adc_path(self) -> Path:
        """The case's ADC file, whose grid its mask must have."""
        if self.release_files is not None:
            return self.release_files.adc
        assert self.container_dir is not None
        return single_image(self.container_dir / container_interface().adc_dir)

    def __str__(self) -> str:
        return f"case {self.case_id}"


@dataclass
class CaseResult:
    """What became of one case: one row of the per-case table."""

    case_id: str
    status: str
    seconds: float | None = None
    lesion_ml: float | None = None
    device: str = ""
    mask: str = ""
    error: str = ""
    note: str = ""
    """Why a case was predicted again although a file stood at its mask's path."""
    bug: bool = False
    """The failure was not an input error (a :class:`~hieseg.errors.HiesegError`) but an unexpected exception."""


@dataclass(frozen=True)
class WorkerSetup:
    """What each worker process needs to build its predictor; hashable, as it keys the process's predictor."""

    model_dir: Path
    overrides: tuple[tuple[str, object], ...]
    """The inference settings given on the command line, as (name, value) pairs."""


def find_jobs(input_root: Path, output_root: Path) -> tuple[list[CaseJob], dict[str, str]]:
    """The cases of a release root or of a folder of container-layout cases, sorted by case id, and the release's
    incomplete cases with what they lack (a container-layout case's problems surface when it is read)."""
    input_root = Path(input_root)
    check_input_root(input_root, DatasetError)
    if (input_root / ADC_DIR).is_dir():
        cases, incomplete = find_cases(input_root, require_labels=False)
        return [CaseJob(files.case_id, _mask_path(output_root, files.case_id), release_files=files)
                for files in cases], incomplete
    adc_dir = container_interface().adc_dir
    folders = sorted(p for p in input_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    cases = [folder for folder in folders if (folder / adc_dir).is_dir()]
    if not cases:
        raise DatasetError(f"{input_root}: no cases found; expected a release root ({ADC_DIR}/) or case folders "
                           f"<case>/{adc_dir}/<uuid>{MHA_SUFFIX}")
    strays = [folder.name for folder in folders if folder not in cases]
    if strays:
        LOG.warning("%d folder(s) of %s hold no %s/ and are not cases: %s", len(strays), input_root, adc_dir,
                    ", ".join(strays))
    case_ids = [printable_id(folder.name) for folder in cases]
    return [CaseJob(case_id, _mask_path(output_root, case_id), container_dir=folder)
            for case_id, folder in zip(case_ids, cases)], {}


def printable_id(name: str) -> str:
    """A case folder's name as its case id, with bytes that are not UTF-8 backslash-escaped (``case_\\xff``): the
    id goes to logs, the table and the mask's name, which must all be writable; the case itself is refused when
    read (:func:`hieseg.io.mha_check.check_path_encodable`)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _mask_path(output_root: Path, case_id: str) -> Path:
    return Path(output_root) / f"{case_id}{MHA_SUFFIX}"


def build_predictor(setup: WorkerSetup, device: str) -> Predictor:
    """Load the weights onto ``device`` and build a predictor with the command line's inference settings."""
    bundle = load_bundle(setup.model_dir, torch.device(device))
    LOG.info("model %s: %d weight file(s) on %s (pid %d)", setup.model_dir, len(bundle.networks), device, os.getpid())
    return Predictor.from_bundle(bundle, torch.device(device), **dict(setup.overrides))


@functools.lru_cache(maxsize=1)
def _process_predictor(setup: WorkerSetup, device: str) -> Predictor | Exception:
    """This worker process's predictor, built on its first case; or why it cannot be built, kept so
    that the weights are not loaded again for each case that then fails with it."""
    try:
        return build_predictor(setup, device)
    except Exception as exc:  # returned, not raised: see predict_on_device
        return exc


def predict_on_device(setup: WorkerSetup, device: str, job: CaseJob) -> CaseResult:
    """A worker's share of :func:`run_jobs`: one case with this process's predictor for ``setup`` on ``device``.

    A weights folder that cannot be loaded fails each case with its reason, like any case's
    failure, so that the run's end lists them instead of a worker stopping the others.
    """
    predictor = _process_predictor(setup, device)
    if isinstance(predictor, Exception):
        return _failed(job, device, predictor)
    return predict_case(predictor, job)


def predict_case(predictor: Predictor, job: CaseJob) -> CaseResult:
    """Read, predict and write one case; a failure is returned, not raised."""
    device = str(predictor.device)
    started = time.perf_counter()
    try:
        mask = segment_case(predictor, job.read(), job.mask)
    except Exception as exc:  # a bug on one case must not lose the others
        return _failed(job, device, exc)
    return CaseResult(job.case_id, WRITTEN, seconds=time.perf_counter() - started,
                      lesion_ml=mask_volume_ml(mask), device=device, mask=str(job.mask))


def _failed(job: CaseJob, device: str, exc: Exception) -> CaseResult:
    """A failed case's row: an input error (:class:`~hieseg.errors.HiesegError`) by its message, anything
    else as a bug, its traceback logged."""
    if isinstance(exc, HiesegError):
        return CaseResult(job.case_id, FAILED, device=device, error=str(exc))
    LOG.error("case %s failed unexpectedly:\n%s", job.case_id, "".join(traceback.format_exception(exc)))
    return CaseResult(job.case_id, FAILED, device=device, error=f"{type(exc).__name__}: {exc}", bug=True)


def run_jobs(
    jobs: Sequence[CaseJob], setup: WorkerSetup, devices: Sequence[str], verbose: bool = False
) -> Iterator[CaseResult]:
    """Predict ``jobs`` in this process (one device) or on one spawned worker per entry of ``devices``.

    A worker that dies raises :class:`~hieseg.pool.WorkerDied` (naming its case) after the
    other workers were stopped.
    """
    if len(devices) == 1:
        predictor = build_predictor(setup, devices[0])
        for job in jobs:
            yield predict_case(predictor, job)
        return
    work = functools.partial(predict_on_device, setup)
    for _, result in pool.run_on_devices(work, jobs, devices, verbose):
        yield result


def table_name(shard: Shard | None) -> str:
    """The per-case table's file name: one per shard, so array tasks sharing an output folder keep theirs."""
    if shard is None:
        return TABLE_NAME
    stem, suffix = TABLE_NAME.rsplit(".", 1)
    return f"{stem}.shard-{shard.index}-of-{shard.count}.{suffix}"


def write_table(results: Sequence[CaseResult], path: Path) -> None:
    """The per-case table (case id, status, seconds, lesion ml, device, mask, error, note), sorted by case,
    atomically."""
    names = [field.name for field in fields(CaseResult) if field.name != "bug"]
    rows = []
    for result in sorted(results, key=lambda r: r.case_id):
        row = asdict(result)
        row["seconds"] = "" if result.seconds is None else f"{result.seconds:.3f}"
        row["lesion_ml"] = "" if result.lesion_ml is None else f"{result.lesion_ml:.4f}"
        rows.append(row)
    write_csv_atomic(path, names, rows, ignore_extra=True)


def existing_mask_problem(job: CaseJob) -> str:
    """Why the file at a job's mask path is not its mask ('' when it is): unreadable, not 0/1, another grid."""
    try:
        mask = read_image(job.mask)
        require_binary(mask, job.mask)
        expected = read_geometry(job.adc_path())
    except HiesegError as exc:
        return str(exc)
    differences = expected.differences(Geometry.of(mask))
    return f"{job.mask}: not on the case's grid: {'; '.join(differences)}" if differences else ""


@dataclass
class BatchPlan:
    """What a batch run will do, decided before any case is predicted."""

    jobs: list[CaseJob]
    """Every case of the run (of its shard), complete or not."""
    todo: list[CaseJob]
    done: list[CaseResult]
    """The cases already settled: masks kept, and incomplete cases failed with what they lack."""
    notes: dict[str, str]
    """Per case to predict again, why the file at its mask path was not kept."""
    table: Path


def plan_batch(input_root: Path, output_root: Path, *, shard: Shard | None = None, overwrite: bool = False,
               strict: bool = False) -> BatchPlan:
    """Check the outputs (folder and table), find the cases, and sort them into kept, incomplete and to predict.

    A mask already at its path is kept only if it reads as a 0/1 mask on its case's grid; anything else
    there is predicted again, with the reason in the table's ``note``. An incomplete case of a release
    (a missing partner file) is failed with what it lacks while the others are predicted, or, ``strict``,
    refuses the whole run.
    """
    output_root = Path(output_root)
    table = output_root / table_name(shard)
    require_writable(output_root, folder=True)
    require_image_path(output_root)
    require_writable(table)
    jobs, incomplete = find_jobs(input_root, output_root)
    if strict and incomplete:
        case_id, problem = next(iter(incomplete.items()))
        raise DatasetError(f"case {case_id}: {problem}")
    jobs += [CaseJob(case_id, _mask_path(output_root, case_id)) for case_id in incomplete]
    jobs.sort(key=lambda job: job.case_id)
    if shard is not None:
        jobs = shard.take(jobs)
    done = [CaseResult(job.case_id, FAILED, error=f"case {job.case_id}: {incomplete[job.case_id]}")
            for job in jobs if job.case_id in incomplete]
    failed = len(done)
    todo, notes = [], {}
    for job in (job for job in jobs if job.case_id not in incomplete):
        if overwrite or not job.mask.exists():
            todo.append(job)
        elif problem := existing_mask_problem(job):
            notes[job.case_id] = f"the file at the mask's path was not kept ({problem})"
            todo.append(job)
        else:
            done.append(CaseResult(job.case_id, EXISTING, mask=str(job.mask)))
    LOG.info("%d case(s)%s: %d to predict, %d kept, %d incomplete", len(jobs), f" in shard {shard}" if shard else "",
             len(todo), len(done) - failed, failed)
    return BatchPlan(jobs, todo, done, notes, table)


@dataclass
class BatchOutcome:
    """What a batch run did: every case's result (kept, written or failed), in the order they ended."""

    jobs: list[CaseJob]
    results: list[CaseResult]
    seconds: float
    table: Path
    died: pool.WorkerDied | None = None
    """Set when a worker process died and stopped the run."""


def run_batch(plan: BatchPlan, setup: WorkerSetup, devices: Sequence[str], *, verbose: bool = False,
              progress: bool = True) -> BatchOutcome:
    """Predict the plan's cases (this process for one device, one worker process per entry of ``devices``
    otherwise), then write the per-case table. A run stopped by Ctrl-C or SIGTERM writes the table of the
    cases finished so far before it ends."""
    results = list(plan.done)
    plan.table.parent.mkdir(parents=True, exist_ok=True)
    workers = list(devices[: max(1, len(plan.todo))])
    started = time.perf_counter()
    died: pool.WorkerDied | None = None
    try:
        if plan.todo:
            with tqdm(total=len(plan.todo), desc="predicting", unit="case", disable=not progress) as bar:
                try:
                    for result in run_jobs(plan.todo, setup, workers, verbose):
                        result.note = plan.notes.get(result.case_id, "")
                        _record(result, results, bar)
                except pool.WorkerDied as exc:  # the run stops; the cases done still go to the table
                    died = exc
                    if isinstance(exc.task, CaseJob):
                        _record(CaseResult(exc.task.case_id, FAILED, error=str(exc), bug=True), results, bar)
    finally:
        write_table(results, plan.table)
    return BatchOutcome(plan.jobs, results, time.perf_counter() - started, plan.table, died)


def _record(result: CaseResult, results: list[CaseResult], bar: tqdm) -> None:
    """Keep a case's result, and say at once when it failed."""
    results.append(result)
    if result.status == FAILED:
        bar.write(f"failed: {result.case_id}: {result.error}", file=sys.stderr)
    bar.update()
