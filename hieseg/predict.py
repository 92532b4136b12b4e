"""Batch prediction: every case of a folder to one mask per case, the weights loaded once per process.

Usage::

    python -m hieseg.predict --input <cases> --output <masks> [--model DIR] [--device auto]
                             [--devices cuda:0,cuda:1] [--workers N] [--shard K/N] [--overwrite]
                             [--tta | --no-tta] [--threshold T] [--min-component-mm3 V]

``--input`` is either

* a release root: ``<input>/1ADC_ss/<case>-ADC_ss.mha`` and ``<input>/2Z_ADC/Zmap_<case>-...mha``
  (:func:`hieseg.layout.discover_cases`; ``3LABEL/`` is not needed), or
* a folder of container-layout cases, one sub-folder per case, each as ``inference.py`` reads
  its ``/input``: ``<input>/<case>/images/skull-stripped-adc-brain-mri/<uuid>.mha`` and
  ``<input>/<case>/images/z-score-adc/<uuid>.mha``. The case id is the sub-folder's name.

Each case's mask is written to ``<output>/<case>.mha``, the name ``python -m hieseg.evaluate
--pred <output>`` matches against ``<case>_lesion.mha`` of a release's ``3LABEL/``. Cases are
read, checked, predicted and written by the same functions as ``inference.py`` (its
:func:`~hieseg.inference_cli.read_input_case`, :func:`~hieseg.inference_cli.segment_case` and
:class:`~hieseg.predictor.Predictor`), so a mask is bit-identical to the one ``inference.py``
writes for that case with the same weights and flags.

A mask that already exists is kept (``--overwrite`` predicts it again). A case that fails
(unreadable image, no brain, a write error) is reported and the others go on; the run then ends
with the list of failures and exit status 2 (1 when a failure was not an input error but a bug).
Per-case seconds and lesion volume go to ``<output>/predictions.csv`` (``predictions.shard-K-of-N.csv``
under ``--shard``, so the tasks of a job array sharing one output folder do not overwrite each
other's table).
A worker process that dies (killed, out of memory) stops the run with exit status 1: the table
holds the cases done, the dead worker's case is listed as failed, and a rerun predicts the cases
left (the masks written are kept).

Scale-out: ``--devices cuda:0,cuda:1`` starts one worker process per listed device, and
``--workers N`` N processes per device (on the CPU, N processes on ``--device``); each worker
loads the weights once and takes the next case when it is done with one
(:func:`hieseg.device_pool.run_on_devices`). The workers split the usable cores between them,
each its own block (``os.sched_setaffinity``) with as many torch threads. A weights folder that
cannot be loaded refuses a one-process run; with several workers, each case fails with the
reason. ``--shard K/N`` (0 <= K < N) predicts cases K, K+N, K+2N, ... of the sorted list, for a
scheduler's job array.
"""

from __future__ import annotations

import argparse
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

from hieseg import device_pool
from hieseg.cli_common import Shard, configure_logging, parse_shard, run_reporting_errors
from hieseg.errors import ConfigError, DatasetError, HiesegError
from hieseg.image_io import require_writable, write_atomic
from hieseg.inference_cli import (
    add_model_arguments,
    default_model_dir,
    inference_overrides,
    lesion_volume_ml,
    read_input_case,
    segment_case,
)
from hieseg.layout import ADC_DIR, CaseFiles, CaseImages, container_interface, discover_cases, load_case
from hieseg.predictor import Predictor, load_bundle, select_device

LOG = logging.getLogger("hieseg.predict")
MASK_SUFFIX = ".mha"
TABLE_NAME = "predictions.csv"
WRITTEN, EXISTING, FAILED = "written", "existing", "failed"
EXIT_SOME_FAILED = 2
"""Exit status when cases failed on their input (a bad case is a user error, see :mod:`hieseg.cli_common`)."""
EXIT_BUG = 1
"""Exit status when a case failed on something that is not an input error."""


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
                           f"<case>/{adc_dir}/<uuid>{MASK_SUFFIX}")
    strays = [folder.name for folder in folders if folder not in cases]
    if strays:
        LOG.warning("%d folder(s) of %s hold no %s/ and are not cases: %s", len(strays), input_root, adc_dir,
                    ", ".join(strays))
    return [CaseJob(folder.name, _mask_path(output_root, folder.name), container_dir=folder) for folder in cases]


def _mask_path(output_root: Path, case_id: str) -> Path:
    return Path(output_root) / f"{case_id}{MASK_SUFFIX}"


def worker_devices(device: str, devices: str | None, workers: int) -> list[str]:
    """One entry per worker process: ``workers`` per device of ``--devices`` (or of ``--device``), checked."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    names = [name.strip() for name in devices.split(",")] if devices else [device]
    resolved = [str(select_device(name)) for name in names]
    return [name for name in resolved for _ in range(workers)]


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
                      lesion_ml=lesion_volume_ml(mask), device=device, mask=str(job.mask))


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

    A worker that dies raises :class:`~hieseg.device_pool.WorkerDied` (naming its case) after the
    other workers were stopped.
    """
    if len(devices) == 1:
        predictor = build_predictor(setup, devices[0])
        for job in jobs:
            yield predict_case(predictor, job)
        return
    work = functools.partial(predict_on_device, setup)
    for _, result in device_pool.run_on_devices(work, jobs, devices, verbose):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hieseg.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True,
                        help="a release root (1ADC_ss/, 2Z_ADC/) or a folder of container-layout case folders")
    parser.add_argument("--output", type=Path, required=True, help="folder of the masks <case>.mha")
    add_model_arguments(parser)
    parser.add_argument("--devices", help="comma-separated devices, one worker process each, e.g. cuda:0,cuda:1")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes per device (default 1; on a CPU, N processes share its cores)")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help="predict only cases K, K+N, K+2N, ... (0 <= K < N), for a job array")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose mask already exists")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_reporting_errors(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    overrides = inference_overrides(args)
    devices = worker_devices(args.device, args.devices, args.workers)
    require_writable(args.output, folder=True)
    model_dir = args.model or default_model_dir()
    jobs = find_jobs(args.input, args.output)
    if args.shard is not None:
        jobs = args.shard.take(jobs)
    existing = [] if args.overwrite else [job for job in jobs if job.mask.exists()]
    kept = {job.case_id for job in existing}
    todo = [job for job in jobs if job.case_id not in kept]
    LOG.info("%d case(s)%s: %d to predict, %d already written", len(jobs),
             f" in shard {args.shard}" if args.shard else "", len(todo), len(existing))
    results = [CaseResult(job.case_id, EXISTING, mask=str(job.mask)) for job in existing]
    args.output.mkdir(parents=True, exist_ok=True)
    setup = WorkerSetup(Path(model_dir), tuple(overrides.items()))
    workers = devices[: max(1, len(todo))]
    started = time.perf_counter()
    died: device_pool.WorkerDied | None = None
    if todo:
        with tqdm(total=len(todo), desc="predicting", unit="case") as bar:
            try:
                for result in run_jobs(todo, setup, workers, args.verbose):
                    _record(result, results, bar)
            except device_pool.WorkerDied as exc:  # the run stops; the cases done still go to the table
                died = exc
                if isinstance(exc.task, CaseJob):
                    _record(CaseResult(exc.task.case_id, FAILED, error=str(exc), bug=True), results, bar)
    elapsed = time.perf_counter() - started
    write_table(results, args.output / table_name(args.shard))
    return _report(results, jobs, elapsed, args.output / table_name(args.shard), died)


def _record(result: CaseResult, results: list[CaseResult], bar: tqdm) -> None:
    """Keep a case's result, and say at once when it failed."""
    results.append(result)
    if result.status == FAILED:
        bar.write(f"failed: {result.case_id}: {result.error}", file=sys.stderr)
    bar.update()


def _report(
    results: Sequence[CaseResult], jobs: Sequence[CaseJob], seconds: float, table: Path,
    died: device_pool.WorkerDied | None = None,
) -> int:
    """Print the run's outcome; the exit status (0, or the failures' status) with every failure listed."""
    written = [r for r in results if r.status == WRITTEN]
    failed = sorted((r for r in results if r.status == FAILED), key=lambda r: r.case_id)
    left = len(jobs) - len(results)
    rate = f", {len(written) / seconds:.2f} cases/s" if written and seconds > 0 else ""
    print(f"{len(written)} mask(s) written, {len(results) - len(written) - len(failed)} kept, {len(failed)} failed"
          f"{f', {left} not predicted' if left else ''} in {seconds:.1f} s{rate}; table {table}")
    if failed:
        sources = {job.case_id: job.source for job in jobs}
        print(f"error: {len(failed)} case(s) failed:", file=sys.stderr)
        for result in failed:
            print(f"  {result.case_id} ({sources[result.case_id]}): {result.error}", file=sys.stderr)
    if died is not None:
        unlisted = "" if isinstance(died.task, CaseJob) else f" ({died})"  # else its case, above, says how
        print(f"error: the run stopped when a worker process died{unlisted}; run it again to predict the cases "
              f"without a mask (the masks written are kept)", file=sys.stderr)
        return EXIT_BUG
    if not failed:
        return 0
    return EXIT_BUG if any(result.bug for result in failed) else EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
