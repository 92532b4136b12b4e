"""Command line of ``train.py`` (``hieseg-train``): train one fold, all folds, or on an explicit validation list.

Started by ``torchrun --nproc_per_node N train.py ...`` it trains each model on N processes
(see :mod:`hieseg.training.distributed`): rank 0 logs, prints and writes, the other ranks only report
warnings and errors, and post-processing tuning runs on rank 0 once training is over.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.config.overrides import build_config, parse_overrides
from hieseg.config.settings import LOSS_NAMES, ExperimentConfig
from hieseg.errors import ConfigError
from hieseg.runtime.logs import configure_logging
from hieseg.training import distributed
from hieseg.training.data import load_cases
from hieseg.training.folder import check_outputs, held_out_runs
from hieseg.training.trainer import train
from hieseg.training.tuning import TUNING_JSON, describe, tune_trained_folder


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        description="Train the HIE lesion 3D U-Net on a BONBID-HIE release folder "
        "(1ADC_ss/, 2Z_ADC/, 3LABEL/).",
    )
    parser.add_argument("--data", type=Path, nargs="+", action="extend", required=True, metavar="ROOT",
                        help="release root holding 1ADC_ss/, 2Z_ADC/, 3LABEL/; several roots (--data A B, or --data "
                             "repeated) train on their cases together, a case id in one root only")
    parser.add_argument("--out", type=Path, required=True, help="weights folder to write (config.json, fold<k>.pt)")
    parser.add_argument("--loss", choices=LOSS_NAMES, help="loss function (default: tversky_hausdorffdt)")
    parser.add_argument("--config", type=Path, help="start from this config.json instead of the defaults")
    parser.add_argument("--fold", type=int, help="fold to hold out for validation (default 0)")
    parser.add_argument("--folds", type=int, help="number of stratified folds (default 5)")
    parser.add_argument("--all-folds", action="store_true", help="train every fold in turn (an ensemble)")
    parser.add_argument("--val-cases", help="comma-separated case ids to validate on instead of a fold")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs")
    parser.add_argument("--seed", type=int, help="random seed for splits, sampling and initialisation")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available), cpu, cuda or cuda:N; under torchrun each process "
                             "uses cuda:LOCAL_RANK (auto, cuda) or the CPU (cpu)")
    parser.add_argument("--resume", action="store_true", help="continue from runs/<fold>/last.ckpt")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set train.patch_size=[64,64,32] (repeatable)",
    )
    add_output_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Defaults (or --config), then the named flags, then --set overrides, in that order."""
    flags = {"loss.name": args.loss, "train.fold": args.fold, "train.folds": args.folds,
             "train.epochs": args.epochs, "train.seed": args.seed}
    return build_config(args.config, flags, parse_overrides(args.set))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        ranks = distributed.torchrun_ranks()
        if not ranks.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        config = config_from_args(args)
        validation_ids = [c.strip() for c in args.val_cases.split(",") if c.strip()] if args.val_cases else None
        if args.all_folds and validation_ids:
            raise ConfigError("--all-folds and --val-cases exclude each other")
        configs = [config.with_overrides({"train.fold": fold})
                   for fold in (range(config.train.folds) if args.all_folds else [config.train.fold])]
        device = distributed.rank_device(args.device, ranks)
        progress = not args.no_progress
        results = []
        with distributed.process_group(ranks, device):
            distributed.on_main(lambda: check_outputs(args.out, configs, validation_ids, args.resume), ranks)
            cases = load_cases(args.data, progress and ranks.is_main)
            for fold_config, network in itertools.product(configs, range(config.train.networks_per_fold)):
                result = train(fold_config, cases, args.out, device=device, ranks=ranks, validation_ids=validation_ids,
                               network=network, resume=args.resume, progress=progress)
                if ranks.is_main:
                    print(
                        f"{result.weights}: best validation Dice {result.best_dice:.4f} at epoch "
                        f"{result.best_epoch} ({result.epochs_run} epochs, {len(result.training_ids)} training / "
                        f"{len(result.validation_ids)} validation cases)"
                    )
                results.append(result)
        if config.tuning.enabled and ranks.is_main:
            runs = held_out_runs(args.out, results[-1].config, cases, [(r.weights, r.validation_ids) for r in results])
            tuned = tune_trained_folder(results[-1].config, args.out, runs, cases, device, progress)
            chosen = tuned.chosen
            print(
                f"post-processing tuned on {len(tuned.case_ids)} validation case(s): {describe(chosen.settings)} "
                f"(Dice {chosen.dice:.3f}, MASD {chosen.masd_mm:.2f} mm, NSD {chosen.nsd:.3f}); "
                f"every candidate in {args.out / TUNING_JSON}"
            )
        return 0

    return run_reporting_errors(run)

