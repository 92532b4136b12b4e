"""Command line ``hieseg-export`` (``python -m hieseg.export``): hand hie-seg's weights and data to other tools.

Usage::

    hieseg-export bundle --model DIR --out BUNDLE [--version 0.1.0] [--license FILE]
    hieseg-export nnunet --data RELEASE --out nnUNet_raw --dataset-id N [--folds 5] [--seed 42]
                         [--config config.json] [--test RELEASE] [--link auto|hard|symlink|copy]

``bundle`` writes a weights folder as a MONAI bundle in the Model Zoo layout
(:mod:`hieseg.interop.bundle`); ``python -m monai.bundle run`` on it writes the masks
``inference.py`` writes. ``nnunet`` writes a release as nnU-Net v2's raw dataset
``DatasetNNN_BONBIDHIE`` with the folds train.py uses (``--folds``, ``--seed`` and ``--config`` as
train.py's) as nnU-Net's ``splits_final.json`` (:mod:`hieseg.interop.nnunet`).

Bad input (an unusable weights folder, a release with missing partners, an output folder that
is not empty, a dataset id already in use) is one line on stderr and exit status 2, and nothing
is written: each output is filled in a temporary folder beside it and renamed at the end.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags, run_reporting_errors
from hieseg.config.overrides import build_config
from hieseg.runtime.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        description="Hand hie-seg's weights and data to other tools: the weights as a MONAI bundle (bundle), a "
                    "release as an nnU-Net v2 raw dataset on train.py's folds (nnunet).",
    )
    add_output_flags(parser, progress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{bundle,nnunet}")

    bundle = commands.add_parser("bundle", help="a weights folder as a MONAI bundle (Model Zoo layout)",
                                 description="Write a weights folder (config.json + *.pt) as a MONAI bundle.")
    bundle.add_argument("--model", type=Path, required=True, help="weights folder written by train.py")
    bundle.add_argument("--out", type=Path, required=True, help="bundle folder to create (new or empty)")
    bundle.add_argument("--version", default="0.1.0", help="the bundle's version in metadata.json (default 0.1.0)")
    bundle.add_argument("--license", type=Path, help="text file to ship as the bundle's LICENSE "
                                                     "(default: a LICENSE saying no license was chosen)")

    nnunet = commands.add_parser("nnunet", help="a release as an nnU-Net v2 raw dataset with hie-seg's folds",
                                 description="Write a BONBID-HIE release as nnU-Net v2's DatasetNNN_BONBIDHIE, "
                                             "with train.py's folds as splits_final.json.")
    nnunet.add_argument("--data", type=Path, required=True, help="release root holding 1ADC_ss/, 2Z_ADC/, 3LABEL/")
    nnunet.add_argument("--out", type=Path, required=True, help="the nnUNet_raw folder to add the dataset to")
    nnunet.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id, 1-999, not yet used")
    nnunet.add_argument("--folds", type=int, help="number of stratified folds, as train.py's (default 5)")
    nnunet.add_argument("--seed", type=int, help="seed of the folds, as train.py's (default 42)")
    nnunet.add_argument("--config", type=Path, help="take folds and seed from this config.json (e.g. the weights')")
    nnunet.add_argument("--test", type=Path, help="a release (labels not needed) to write into imagesTs/")
    nnunet.add_argument("--link", choices=("auto", "hard", "symlink", "copy"), default="auto",
                        help="how the images get into the dataset: auto (hard link, else symbolic link, else copy)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    command = _bundle if args.command == "bundle" else _nnunet
    return run_reporting_errors(lambda: command(args))


def _bundle(args: argparse.Namespace) -> int:
    from hieseg.interop.bundle import export_bundle

    exported = export_bundle(args.model, args.out, version=args.version, license_file=args.license)
    print(f"wrote the MONAI bundle {exported.folder} ({exported.network}, {exported.folds} fold(s)): "
          f"{', '.join(exported.files)}")
    print(f"run it: cd {exported.folder} && python -m monai.bundle run --config_file configs/inference.json "
          "--input_dir INPUT --output_dir MASKS")
    return 0


def _nnunet(args: argparse.Namespace) -> int:
    from hieseg.interop.nnunet import describe_placement, export_nnunet

    train = build_config(args.config, {"train.folds": args.folds, "train.seed": args.seed}, {}).train
    exported = export_nnunet(args.data, args.out, args.dataset_id, folds=train.folds, seed=train.seed,
                             test=args.test, link=args.link)
    test = f", {len(exported.test_cases)} test case(s) in imagesTs/" if args.test is not None else ""
    print(f"wrote {exported.folder}: {len(exported.training_cases)} training case(s){test}; files "
          f"{describe_placement(exported.placed)}; {len(exported.splits)} folds (seed {train.seed}) in splits_final.json")
    return 0
