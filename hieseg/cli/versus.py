"""Command line ``python -m hieseg.versus``: the Python steps of ``scripts/versus_nnunet.sh`` (:mod:`hieseg.studies.versus`).

Usage::

    python -m hieseg.versus minutes WEIGHTS --fold K                  # prints a fold's minutes of epochs
    python -m hieseg.versus report OUT --train DIR --eval DIR --budget-min M --budget-source WHAT
                                   [--folds 5] [--seed 42] [--device cpu] [--nnunet-from EARLIER]
    python -m hieseg.versus reusable EARLIER --train DIR --eval DIR --budget-min M [--folds 5] [--seed 42]
                                   [--device cpu]

``minutes`` prints the minutes the epochs of a fold's networks took (the
budget, when the recipe's own schedule sets it). ``report`` writes OUT/versus.json and OUT/versus.md from what
the script left under OUT. ``reusable`` fails, naming the differences, unless the earlier run EARLIER had the
same cases, budget, split and device, so that its nnU-Net arm may stand beside a new recipe (``NNUNET_FROM``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.runtime.logs import configure_logging
from hieseg.runtime.versions import library_versions


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="The steps of scripts/versus_nnunet.sh: a run's minutes of epochs, "
                                       "and the report versus.md / versus.json.")
    add_output_flags(parser, progress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{minutes,report,reusable}")
    minutes = commands.add_parser("minutes", help="print the minutes a fold's training took",
                                  description="Print the minutes of the epochs of a fold's networks, from each "
                                              "one's metrics.csv under WEIGHTS/runs/.")
    minutes.add_argument("weights", type=Path, help="weights folder train.py wrote")
    minutes.add_argument("--fold", type=int, required=True, help="the fold")
    report = commands.add_parser("report", help="write OUT/versus.json and OUT/versus.md",
                                 description="Gather the script's records under OUT into versus.json and versus.md.")
    report.add_argument("out", type=Path, help="the script's output folder")
    report.add_argument("--budget-source", required=True, help="where the budget came from (recorded)")
    report.add_argument("--nnunet-from", type=Path, help="the earlier run whose nnU-Net arm was reused (recorded)")
    reusable = commands.add_parser("reusable", help="check that an earlier run's nnU-Net arm may be reused",
                                   description="Fail unless the earlier run's versus.json has these settings.")
    reusable.add_argument("earlier", type=Path, help="the earlier run's output folder")
    for command in (report, reusable):
        command.add_argument("--train", required=True, help="the training release")
        command.add_argument("--eval", required=True, help="the evaluation release")
        command.add_argument("--budget-min", type=float, required=True, help="the budget each system had")
        command.add_argument("--folds", type=int, default=5, help="folds of the split (default 5)")
        command.add_argument("--seed", type=int, default=42, help="seed of the split (default 42)")
        command.add_argument("--device", default="cpu", help="the device every system trained on")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    command = {"minutes": _minutes, "report": _report, "reusable": _reusable}[args.command]
    return run_reporting_errors(lambda: command(args))


def _minutes(args: argparse.Namespace) -> int:
    from hieseg.studies.versus import runs_of_fold, training_seconds

    print(f"{training_seconds(runs_of_fold(args.weights, args.fold)) / 60:.2f}")
    return 0


def _shared_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings both systems share (those an earlier run must match to be reused)."""
    return {"train": args.train, "eval": args.eval, "budget_s": args.budget_min * 60, "folds": args.folds,
            "seed": args.seed, "device": args.device}


def _report(args: argparse.Namespace) -> int:
    from hieseg.studies.versus import VERSUS_MD, Layout, write_report

    settings = {**_shared_settings(args), "budget_source": args.budget_source,
                "nnunet_from": str(args.nnunet_from) if args.nnunet_from else None,
                "versions": {**library_versions(), "nnunetv2": _installed("nnunetv2")}}
    write_report(Layout(args.out), settings)
    print(f"wrote {args.out / VERSUS_MD} and versus.json")
    return 0


def _reusable(args: argparse.Namespace) -> int:
    from hieseg.studies.versus import check_reusable

    check_reusable(args.earlier, _shared_settings(args))
    print(f"{args.earlier}: its nnU-Net arm has this run's cases, budget, split and device")
    return 0


def _installed(package: str) -> str | None:
    """The installed version of ``package``, None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
