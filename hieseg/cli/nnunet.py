"""Command line ``python -m hieseg.nnunet``: nnU-Net v2 trained and run where ``nnUNetv2_train`` cannot start.

Usage::

    python -m hieseg.nnunet train DATASET CONFIGURATION FOLD [--budget-min M [--iterations-per-epoch N]]
                                  [--device auto|cpu|cuda]
    python -m hieseg.nnunet predict --input IMAGES --output MASKS --dataset DATASET --configuration C
                                    [--folds 0 1 ...] [--budget] [--device auto|cpu|cuda]

On a CPU-only install ``nnUNetv2_train`` and ``nnUNetv2_predict`` stop at start with
``RuntimeError: operator torchvision::nms does not exist`` (their trainer lookup imports a module
that needs CUDA); these import the trainer directly (:mod:`hieseg.interop.nnunet_training`) and
otherwise run nnU-Net's own code with its defaults. ``--budget-min`` trains
``nnUNetTrainerBudget`` (nnU-Net's trainer stopped by the wall clock, its poly schedule fitted to
the epochs that fit); without it, nnU-Net's ``nnUNetTrainer`` as ``nnUNetv2_train`` runs it.
Needs nnunetv2 (``pip install -e '.[nnunet]'``) and the nnUNet_raw, nnUNet_preprocessed and
nnUNet_results variables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.errors import ConfigError
from hieseg.runtime.logs import configure_logging

DEVICES = ("auto", "cpu", "cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="Train and run nnU-Net v2 without its trainer lookup (works on a CPU-only "
                                       "install, where nnUNetv2_train fails at start), optionally for a wall-clock "
                                       "budget.")
    add_output_flags(parser, progress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,predict}")
    train = commands.add_parser("train", help="train one fold, then nnU-Net's final validation",
                                description="Train one fold of a planned and preprocessed nnU-Net dataset, as "
                                            "nnUNetv2_train DATASET CONFIGURATION FOLD does.")
    train.add_argument("dataset", help="dataset id (502) or name (Dataset502_BONBIDHIE)")
    train.add_argument("configuration", help="a planned configuration: 2d, 3d_fullres, ...")
    train.add_argument("fold", type=int, help="fold of splits_final.json to validate on")
    train.add_argument("--budget-min", type=float,
                       help="train nnUNetTrainerBudget for this many minutes of epochs (default: nnU-Net's "
                            "nnUNetTrainer, 1000 epochs)")
    train.add_argument("--iterations-per-epoch", type=int,
                       help="with --budget-min: training iterations per epoch, validation a fifth of them as in "
                            "nnU-Net (default 25, nnU-Net's 250 / 10)")
    train.add_argument("--device", choices=DEVICES, default="auto", help="auto (CUDA if available), cpu or cuda")
    predict = commands.add_parser("predict", help="predict a folder of nnU-Net input images",
                                  description="Predict <case>_0000.mha, <case>_0001.mha ... into <case>.mha on "
                                              "the input's grid, with nnU-Net's defaults (mirroring included).")
    predict.add_argument("--input", type=Path, required=True, help="folder of nnU-Net input images (imagesTs/)")
    predict.add_argument("--output", type=Path, required=True, help="folder for the masks")
    predict.add_argument("--dataset", required=True, help="dataset id or name")
    predict.add_argument("--configuration", required=True, help="the trained configuration")
    predict.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                         help="folds to ensemble (default 0 1 2 3 4)")
    predict.add_argument("--budget", action="store_true", help="the folds trained with --budget-min")
    predict.add_argument("--device", choices=DEVICES, default="auto", help="auto (CUDA if available), cpu or cuda")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    command = _train if args.command == "train" else _predict
    return run_reporting_errors(lambda: command(args))


def _nnunet_training():
    """:mod:`hieseg.interop.nnunet_training`, or one line saying how to install nnunetv2."""
    try:
        from hieseg.interop import nnunet_training
    except ImportError as exc:
        raise ConfigError(f"nnunetv2 is not importable ({exc}): pip install -e '.[nnunet]'") from exc
    return nnunet_training


def _train(args: argparse.Namespace) -> int:
    nnunet = _nnunet_training()
    if args.budget_min is not None and args.budget_min <= 0:
        raise ConfigError(f"--budget-min must be positive, got {args.budget_min}")
    if args.iterations_per_epoch is not None and (args.budget_min is None or args.iterations_per_epoch < 1):
        raise ConfigError("--iterations-per-epoch: a positive number, with --budget-min only")
    budget_s = None if args.budget_min is None else args.budget_min * 60
    iterations = args.iterations_per_epoch or nnunet.ITERATIONS_PER_EPOCH
    folder = nnunet.train(args.dataset, args.configuration, args.fold, nnunet.select_device(args.device), budget_s,
                          iterations)
    print(f"trained {folder}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    nnunet = _nnunet_training()
    folder = nnunet.model_folder(args.dataset, args.configuration, args.budget)
    masks = nnunet.predict(args.input, args.output, folder, args.folds, nnunet.select_device(args.device))
    print(f"wrote {len(masks)} mask(s) to {args.output} with {folder.name}, fold(s) {' '.join(map(str, args.folds))}")
    return 0
