"""Check a container run's output folder against the expected output (a test tool: do_test_run.sh mounts it
into the image and runs it there, the tests import it).

Masks must have the same files, the same geometry, and agree on all but a tiny fraction of
voxels: a GPU run in mixed precision may flip a few voxels whose probability sits at the
threshold, which is why exact equality is not required.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hieseg.errors import ImageError
from hieseg.io.images import check_same_geometry, read_image
from hieseg.io.layout import container_interface

MAX_DIFFERING_FRACTION = 1e-4
"""Largest share of voxels allowed to differ between a run and the expected mask."""


def compare(output_root: Path, expected_root: Path) -> list[str]:
    """Problems found, one line each; empty when the outputs match."""
    masks = container_interface().output_dir
    produced = sorted(p.name for p in (output_root / masks).glob("*.mha"))
    expected = sorted(p.name for p in (expected_root / masks).glob("*.mha"))
    if produced != expected:
        return [f"output files {produced} differ from expected {expected}"]
    problems = []
    for name in expected:
        got_path, want_path = output_root / masks / name, expected_root / masks / name
        got, want = read_image(got_path), read_image(want_path)
        check_same_geometry(want, want_path, got, got_path)
        got_array, want_array = sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(want)
        fraction = float(np.mean(got_array != want_array))
        print(f"{name}: {fraction:.2e} of voxels differ from the expected mask")
        if fraction > MAX_DIFFERING_FRACTION:
            problems.append(f"{name}: {fraction:.2e} of voxels differ (allowed {MAX_DIFFERING_FRACTION:.0e})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="output root written by the container")
    parser.add_argument("expected", type=Path, help="expected output root, e.g. test/expected_output")
    args = parser.parse_args(argv)
    try:
        problems = compare(args.output, args.expected)
    except ImageError as exc:  # unreadable mask or other geometry: a finding, not a crash
        problems = [str(exc)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
