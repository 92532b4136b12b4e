"""``python -m hieseg.gpu_check OUT`` (``scripts/gpu_check.sh OUT``): the prepared check of a CUDA machine
(:mod:`hieseg.benchmark.gpu_check`), or one line and exit status 0 where there is no CUDA.

Exit status 0 when every step succeeded or was skipped (no container engine, no time left), 1 when a step
failed or timed out (the report says which and why), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hieseg.benchmark.gpu_check import (
    DEFAULT_BUDGET_S,
    FAILED,
    MIN_STEP_S,
    TIMED_OUT,
    StepResult,
    no_cuda_line,
    planned_steps,
    repository_root,
    run_gpu_check,
    select_steps,
)
from hieseg.benchmark.gpu_report import JSON_NAME, MARKDOWN_NAME
from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.errors import ConfigError
from hieseg.runtime.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    repo = repository_root()
    parser = CommandParser(description="Check the project on a CUDA machine in under 8 minutes: the machine, "
                                       "inference.py on the sample (CPU, CUDA with and without AMP), the benchmark "
                                       "against plain MONAI, predict, training throughput of three networks, "
                                       "torchrun with NCCL and the container; writes gpu_check.json and "
                                       "gpu_check.md to OUT. Without CUDA: one line, exit status 0.")
    parser.add_argument("out", type=Path, help="folder to write gpu_check.json, gpu_check.md and logs/ into")
    parser.add_argument("--model", type=Path, default=repo / "model", help="weights folder (default: model/)")
    parser.add_argument("--sample", type=Path, default=repo / "test" / "input",
                        help="container-layout input of one case (default: test/input)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds all the steps may take together (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--only", help="comma-separated steps to run (a step's name, or 'bench', 'training', "
                                       "'inference' for all of theirs); machine always runs")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda (default); cpu only rehearses the steps where there is no GPU (slow; its "
                             "figures mean nothing)")
    add_output_flags(parser, progress=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        if args.budget_s < MIN_STEP_S:
            raise ConfigError(f"--budget-s must be at least {MIN_STEP_S:.0f}, got {args.budget_s:g}")
        only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
        try:
            steps = select_steps(planned_steps(), only)
        except ValueError as unknown:
            raise ConfigError(f"--only: {unknown}") from None
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            print(no_cuda_line(args.out, torch.__version__, [step.name for step in steps]))
            return 0
        with tempfile.TemporaryDirectory(prefix="hieseg-gpu-check-") as scratch:
            report = run_gpu_check(args.out, Path(scratch), args.model, args.sample, args.budget_s, only,
                                   progress=announce, device=args.device)
        print(f"{args.out / JSON_NAME}, {args.out / MARKDOWN_NAME}: " + ", ".join(
            f"{count} {status.replace('_', ' ')}" for status, count in report["summary"].items()))
        return 1 if report["summary"][FAILED] or report["summary"][TIMED_OUT] else 0

    return run_reporting_errors(run)


def announce(result: StepResult) -> None:
    """One line on stderr per finished step."""
    print(f"gpu_check: {result.name}: {result.status} ({result.seconds:.1f} s)"
          + (f": {' '.join(result.error.split())[:200]}" if result.error else ""), file=sys.stderr, flush=True)
