"""``python -m hieseg.bench`` (``hieseg-bench``): speed and memory figures, as ratios against baselines timed
in the same run (:mod:`hieseg.benchmark.suite`); with ``--training``, the training input pipeline
(:mod:`hieseg.benchmark.pipeline`)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hieseg.benchmark.pipeline import (
    DEFAULT_LOOP_STEPS,
    DEFAULT_STEPS,
    run_pipeline_benchmark,
    write_pipeline_report,
)
from hieseg.benchmark.report import write_report
from hieseg.benchmark.suite import (
    DEFAULT_BATCH_CASES,
    DEFAULT_OUT,
    DEFAULT_REPEATS,
    DEFAULT_SIZES,
    run_benchmark,
)
from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.config.overrides import parse_overrides
from hieseg.errors import ConfigError
from hieseg.runtime.logs import configure_logging


def parse_size(text: str) -> tuple[int, int, int]:
    """``"256x256x64"`` to ``(256, 256, 64)``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected a size like 256x256x64, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="Time whole-case inference against a plain sliding-window "
                                                 "baseline, batch prediction against a loop of inference.py, "
                                                 "and training steps.")
    parser.add_argument("--model", type=Path, help="weights folder (default: the default model folder if it has "
                                                   "config.json, else random default-configuration weights)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=list(DEFAULT_SIZES), metavar="XxYxZ",
                        help="synthetic case grids (default: 128x128x16 192x192x32 256x256x64)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed runs per case (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default benchmarks/results)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda or cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core; "
                                                    "with --training, as training chooses them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an inference setting of the project's predictor, "
                             "e.g. --set sw_batch_size=2; with --training, any setting of the recipe, e.g. "
                             "--set network.name=dynunet (repeatable)")
    parser.add_argument("--batch-cases", type=int, default=DEFAULT_BATCH_CASES, metavar="N",
                        help=f"cases of the first size for predict against a loop of inference.py "
                             f"(default {DEFAULT_BATCH_CASES}; 0 skips it)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training benchmark")
    training = parser.add_argument_group(
        "training input pipeline (--training)",
        "patches/s one loader worker produces, the network's steps/s on the device, how many workers keep it "
        "busy, and a training loop fed by the loader; writes training.json and training.md to --out")
    training.add_argument("--training", action="store_true",
                          help="time the training input pipeline instead of inference (recipe: the defaults, or "
                               "--model's config.json, with --set)")
    training.add_argument("--data", type=Path, help="release folder to draw patches from (default: 16 synthetic "
                                                    "cases of the last --sizes size)")
    training.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                          help=f"timed network steps (default {DEFAULT_STEPS}; the loader is timed over twice as "
                               "many batches)")
    training.add_argument("--loop-steps", type=int, default=DEFAULT_LOOP_STEPS,
                          help=f"timed steps of the training loop (default {DEFAULT_LOOP_STEPS}; 0 skips it)")
    training.add_argument("--workers", type=int,
                          help="loader workers of the loop (default: train.num_workers; auto: from the cores)")
    add_output_flags(parser, progress=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        if args.repeats < 1:
            raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
        if args.batch_cases < 0:
            raise ConfigError(f"--batch-cases must be 0 or more, got {args.batch_cases}")
        if args.training:
            return run_training_benchmark(args)
        with tempfile.TemporaryDirectory(prefix="hieseg-bench-") as scratch:
            report = run_benchmark(args.model, args.sizes, args.repeats, args.device, parse_overrides(args.set),
                                   Path(scratch), threads=args.threads, train=args.train,
                                   batch_cases=args.batch_cases)
        print(write_report(report, args.out), end="")
        return 0

    return run_reporting_errors(run)


def run_training_benchmark(args: argparse.Namespace) -> int:
    """``--training``: the training input pipeline, reported as training.json and training.md."""
    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    if args.loop_steps < 0:
        raise ConfigError(f"--loop-steps must be 0 or more, got {args.loop_steps}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {args.workers}")
    with tempfile.TemporaryDirectory(prefix="hieseg-bench-") as scratch:
        report = run_pipeline_benchmark(args.model, parse_overrides(args.set), args.data, args.sizes[-1],
                                        args.device, Path(scratch), threads=args.threads, steps=args.steps,
                                        loop_steps=args.loop_steps, workers=args.workers)
    print(write_pipeline_report(report, args.out), end="")
    return 0
