"""``python -m hieseg.synthetic`` (``hieseg-synthetic``): write synthetic BONBID-HIE-like cases.

A release of ``--cases`` cases (``1ADC_ss/``, ``2Z_ADC/``, ``3LABEL/``), or with ``--container UUID``
one case in the grand-challenge container layout, drawn by :mod:`hieseg.synthesis.generator`
with the realism effects of a profile (:mod:`hieseg.synthesis.effects`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import CommandParser, add_output_flags
from hieseg.io.images import write_image_atomic
from hieseg.runtime.logs import configure_logging
from hieseg.synthesis import effects as fx
from hieseg.synthesis.effects import PROFILES
from hieseg.synthesis.generator import (
    MIN_SIZE,
    check_uuid,
    make_case,
    size_problem,
    write_container_case,
    write_release,
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        description="Write synthetic BONBID-HIE-like cases (ADC, Z_ADC, lesion label).",
        epilog=_profiles_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--cases", type=int, help="number of cases in the release layout")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="grid size in voxels")
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="randomised",
        help="realism effects (default randomised, for training data): basic = easy cases (Z against the "
        "brain's own twin, no artefacts), randomised = training effects, shifted = out-of-distribution test "
        "cases (held-out artefacts and site/normative settings), accurate-atlas = randomised cases against a "
        "near-exact normative model (scripts/atlas_check.sh); see below",
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=list(fx.EFFECTS),
        metavar="EFFECT",
        help="switch this effect of the profile off (repeatable), e.g. --without accurate_atlas makes the "
        "training data of the v5 demo weights; effects: " + ", ".join(fx.EFFECTS),
    )
    parser.add_argument(
        "--container",
        metavar="UUID",
        help="write one case in the grand-challenge container layout (label in OUT/label/UUID.mha)",
    )
    add_output_flags(parser)
    return parser


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with the rules between them checked (one ``error:`` line, exit 2, when broken)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.container is None and args.cases is None:
        parser.error("--cases is required unless --container is given")
    if args.container is not None and args.cases not in (None, 1):
        parser.error("--container writes exactly one case; drop --cases or set it to 1")
    if args.cases is not None and args.cases < 1:
        parser.error(f"--cases must be at least 1, got {args.cases}")
    if args.size is not None and min(args.size) < MIN_SIZE:
        parser.error(f"--size values must be at least {MIN_SIZE}, got {args.size}")
    if args.size is not None and size_problem(args.size):
        parser.error(f"--size {' '.join(map(str, args.size))}: {size_problem(args.size)}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    profile = fx.resolve_profile(args.profile)
    args.realism = profile.without(*args.without) if args.without else profile
    return args


def _profiles_help() -> str:
    """The --help epilog: each profile's per-case effect probabilities and ranges."""
    lines = [
        "profiles (per case, effect: probability p, then its ranges; 'a..b or c..d' is a union; ADC in",
        "10^-6 mm^2/s; global_offset_z is a magnitude with a random sign; see hieseg/synthesis/effects.py):",
    ]
    for name, profile in PROFILES.items():
        if name == "basic":
            lines.append("  basic: no effect (the generator's easy cases, unchanged)")
            continue
        lines.append(f"  {name}:")
        lines.extend(f"    {line}" for line in fx.describe(profile))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the process exit status."""
    args = _parse_args(argv)
    configure_logging(args.verbose)
    size = tuple(args.size) if args.size else None
    started = time.perf_counter()
    try:
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"{args.out}: exists and is not a folder")
        if args.container is not None:
            check_uuid(args.container)
            case = make_case(args.container, args.seed, size=size, profile=args.realism)
            written = write_container_case(args.out, case, args.container)
            label_file = args.out / "label" / f"{args.container}.mha"
            write_image_atomic(case.label, label_file)
            for path in (*written, label_file):
                print(f"wrote {path}")
        else:
            ids = write_release(args.out, args.cases, seed=args.seed, sizes=size,
                                progress=not args.no_progress, profile=args.realism)
            elapsed = time.perf_counter() - started
            print(
                f"wrote {len(ids)} case(s) {ids[0]} .. {ids[-1]} ({args.realism.name} profile) "
                f"to {args.out} in {elapsed:.1f} s"
            )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

