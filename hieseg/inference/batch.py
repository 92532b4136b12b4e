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

import csv
import functools
import io
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
from hieseg.io.images import MHA_SUFFIX, mask_volume_ml, require_writable, write_atomic
from hieseg.io.layout import (
    ADC_DIR,
    CaseFiles,
    CaseImages,
    container_interface,
    discover_cases,
    load_case,
    read_input_case,
)
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
    def source(self) -> Path:
        return self.release_files.adc if self.release_files is not None else self.container_dir  # type: ignore[return-value]

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
    bug: bool = False
    """The failure was not an input error (a :class:`~hieseg.errors.HiesegError`) but an unexpected exception."""


@dataclass(frozen=True)
class WorkerSetup:
    """What each worker process needs to build its predictor; hashable, as it keys the process's predictor."""

    model_dir: Path
    overrides: tuple[tuple[str, object], ...]
    """The inference settings given on the command line, as (name, value) pairs."""


def find_jobs(input_root: Path, output_root: Path) -> list[CaseJob]:
    """The cases of a release root or of a folder of container-layout cases, sorted by case id."""
    input_root = Path(input_root)
    if not input_root.is_dir():
        raise DatasetError(f"{input_root}: input folder not found")
    if (input_root / ADC_DIR).is_dir():
        return [CaseJob(files.case_id, _mask_path(output_root, files.case_id), release_files=files)
                for files in discover_cases(input_root, require_labels=False)]
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
    return [CaseJob(folder.name, _mask_path(output_root, folder.name), container_dir=folder) for folder in cases]


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
    """The per-case table (case id, status, seconds, lesion ml, device, mask, error), sorted by case, atomically."""
    names = [field.name for field in fields(CaseResult) if field.name != "bug"]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    for result in sorted(results, key=lambda r: r.case_id):
        row = asdict(result)
        row["seconds"] = "" if result.seconds is None else f"{result.seconds:.3f}"
        row["lesion_ml"] = "" if result.lesion_ml is None else f"{result.lesion_ml:.4f}"
        writer.writerow(row)
    write_atomic(path, lambda temporary: temporary.write_text(table.getvalue(), newline=""))


@dataclass
class BatchOutcome:
    """What a batch run did: every case's result (kept, written or failed), in the order they ended."""

    jobs: list[CaseJob]
    results: list[CaseResult]
    seconds: float
    table: Path
    died: pool.WorkerDied | None = None
    """Set when a worker process died and stopped the run."""


def predict_folder(
    input_root: Path,
    output_root: Path,
    setup: WorkerSetup,
    devices: Sequence[str],
    *,
    shard: Shard | None = None,
    overwrite: bool = False,
    verbose: bool = False,
) -> BatchOutcome:
    """Predict every case of ``input_root`` whose mask is not written yet, then write the per-case table.

    The output folder is checked before any case is read; one worker process per entry of
    ``devices`` (this process for one entry).
    """
    output_root = Path(output_root)
    require_writable(output_root, folder=True)
    jobs = find_jobs(input_root, output_root)
    if shard is not None:
        jobs = shard.take(jobs)
    existing = [] if overwrite else [job for job in jobs if job.mask.exists()]
    kept = {job.case_id for job in existing}
    todo = [job for job in jobs if job.case_id not in kept]
    LOG.info("%d case(s)%s: %d to predict, %d already written", len(jobs),
             f" in shard {shard}" if shard else "", len(todo), len(existing))
    results = [CaseResult(job.case_id, EXISTING, mask=str(job.mask)) for job in existing]
    output_root.mkdir(parents=True, exist_ok=True)
    workers = list(devices[: max(1, len(todo))])
    started = time.perf_counter()
    died: pool.WorkerDied | None = None
    if todo:
        with tqdm(total=len(todo), desc="predicting", unit="case") as bar:
            try:
                for result in run_jobs(todo, setup, workers, verbose):
                    _record(result, results, bar)
            except pool.WorkerDied as exc:  # the run stops; the cases done still go to the table
                died = exc
                if isinstance(exc.task, CaseJob):
                    _record(CaseResult(exc.task.case_id, FAILED, error=str(exc), bug=True), results, bar)
    elapsed = time.perf_counter() - started
    table = output_root / table_name(shard)
    write_table(results, table)
    return BatchOutcome(jobs, results, elapsed, table, died)


def _record(result: CaseResult, results: list[CaseResult], bar: tqdm) -> None:
    """Keep a case's result, and say at once when it failed."""
    results.append(result)
    if result.status == FAILED:
        bar.write(f"failed: {result.case_id}: {result.error}", file=sys.stderr)
    bar.update()
