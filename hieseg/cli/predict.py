"""Batch prediction: every case of a folder to one mask per case, the weights loaded once per process.

Usage::

    python -m hieseg.predict --input <cases> --output <masks> [--model DIR] [--device auto]
                             [--devices cuda:0,cuda:1] [--workers N] [--shard K/N] [--overwrite]
                             [--tta | --no-tta] [--refine | --no-refine] [--threshold T] [--min-component-mm3 V]

``--input`` is either

* a release root: ``<input>/1ADC_ss/<case>-ADC_ss.mha`` and ``<input>/2Z_ADC/Zmap_<case>-...mha``
  (:func:`hieseg.io.layout.discover_cases`; ``3LABEL/`` is not needed), or
* a folder of container-layout cases, one sub-folder per case, each as ``inference.py`` reads
  its ``/input``: ``<input>/<case>/images/skull-stripped-adc-brain-mri/<uuid>.mha`` and
  ``<input>/<case>/images/z-score-adc/<uuid>.mha``. The case id is the sub-folder's name.

Each case's mask is written to ``<output>/<case>.mha``, the name ``python -m hieseg.evaluate
--pred <output>`` matches against ``<case>_lesion.mha`` of a release's ``3LABEL/``. Cases are
read, checked, predicted and written by the same functions as ``inference.py`` (its
:func:`~hieseg.io.layout.read_input_case`, :func:`~hieseg.inference.predictor.segment_case` and
:class:`~hieseg.inference.predictor.Predictor`), so a mask is bit-identical to the one ``inference.py``
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
(:func:`hieseg.runtime.pool.run_on_devices`). The workers split the usable cores between them,
each its own block (``os.sched_setaffinity``) with as many torch threads. A weights folder that
cannot be loaded refuses a one-process run; with several workers, each case fails with the
reason. ``--shard K/N`` (0 <= K < N) predicts cases K, K+N, K+2N, ... of the sorted list, for a
scheduler's job array.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hieseg.cli.common import (
    CommandParser,
    add_model_arguments,
    add_output_flags,
    inference_overrides,
    parse_shard,
    path_argument,
    run_reporting_errors,
)
from hieseg.inference.batch import (
    FAILED,
    WRITTEN,
    BatchOutcome,
    CaseJob,
    WorkerSetup,
    plan_batch,
    run_batch,
)
from hieseg.io.layout import default_model_dir
from hieseg.runtime.devices import announce_device, worker_devices
from hieseg.runtime.logs import configure_logging

EXIT_SOME_FAILED = 2
"""Exit status when cases failed on their input (a bad case is a user error, see :mod:`hieseg.cli.common`)."""
EXIT_BUG = 1
"""Exit status when a case failed on something that is not an input error."""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=path_argument(), required=True,
                        help="a release root (1ADC_ss/, 2Z_ADC/) or a folder of container-layout case folders")
    parser.add_argument("--output", type=path_argument(), required=True, help="folder of the masks <case>.mha")
    add_model_arguments(parser)
    parser.add_argument("--devices", help="comma-separated devices, one worker process each, e.g. cuda:0,cuda:1")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes per device (default 1; on a CPU, N processes share its cores)")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help="predict only cases K, K+N, K+2N, ... (0 <= K < N), for a job array")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose mask already exists")
    parser.add_argument("--strict", action="store_true",
                        help="refuse the whole run when a release case lacks a partner file (default: predict the "
                             "complete cases, list the incomplete ones as failed)")
    add_output_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_reporting_errors(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    overrides = inference_overrides(args)
    devices = worker_devices(args.device, args.devices, args.workers)
    model_dir = args.model or default_model_dir()
    plan = plan_batch(args.input, args.output, shard=args.shard, overwrite=args.overwrite, strict=args.strict)
    announce_device(args.device, devices[0])
    outcome = run_batch(plan, WorkerSetup(Path(model_dir), tuple(overrides.items())), devices, verbose=args.verbose,
                        progress=not args.no_progress)
    return _report(outcome)


def _report(outcome: BatchOutcome) -> int:
    """Print the run's outcome; the exit status (0, or the failures' status) with every failure listed."""
    results, jobs, seconds, table, died = outcome.results, outcome.jobs, outcome.seconds, outcome.table, outcome.died
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
            source = sources[result.case_id]
            print(f"  {result.case_id}{'' if source is None else f' ({source})'}: {result.error}", file=sys.stderr)
    if died is not None:
        unlisted = "" if isinstance(died.task, CaseJob) else f" ({died})"  # else its case, above, says how
        print(f"error: the run stopped when a worker process died{unlisted}; run it again to predict the cases "
              f"without a mask (the masks written are kept)", file=sys.stderr)
        return EXIT_BUG
    if not failed:
        return 0
    return EXIT_BUG if any(result.bug for result in failed) else EXIT_SOME_FAILED

