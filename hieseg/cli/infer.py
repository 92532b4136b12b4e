"""Command line of ``inference.py`` (``hieseg-infer``): the grand-challenge container's one-case entry point.

Reads ``<input>/images/skull-stripped-adc-brain-mri/<uuid>.mha`` and
``<input>/images/z-score-adc/<uuid>.mha`` and writes the binary lesion mask to
``<output>/images/hie-lesion-segmentation/<adc uuid>.mha`` on the ADC's grid. Every path has a
flag and an environment variable; the defaults are the container's paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import SimpleITK as sitk

from hieseg.cli.common import (
    CommandParser,
    add_model_arguments,
    add_output_flags,
    inference_overrides,
    path_argument,
    run_reporting_errors,
)
from hieseg.evaluation.scoring import Reference
from hieseg.inference.predictor import Predictor, segment_case
from hieseg.io.images import (
    check_same_geometry,
    mask_volume_ml,
    read_image,
    require_binary,
    require_image_path,
    require_writable,
)
from hieseg.io.layout import CaseImages, default_model_dir, output_path, read_input_case
from hieseg.model.weights import load_bundle
from hieseg.runtime.devices import announce_device, select_device
from hieseg.runtime.logs import configure_logging

LOG = logging.getLogger("hieseg.inference")
INPUT_ENVIRONMENT, DEFAULT_INPUT = "HIESEG_INPUT", "/input"
OUTPUT_ENVIRONMENT, DEFAULT_OUTPUT = "HIESEG_OUTPUT", "/output"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description="Segment HIE lesions in one BONBID-HIE case (ADC + Z_ADC).")
    parser.add_argument("--input", type=path_argument(INPUT_ENVIRONMENT),
                        default=os.environ.get(INPUT_ENVIRONMENT, DEFAULT_INPUT),
                        help=f"input root (env {INPUT_ENVIRONMENT}, default {DEFAULT_INPUT})")
    parser.add_argument("--output", type=path_argument(OUTPUT_ENVIRONMENT),
                        default=os.environ.get(OUTPUT_ENVIRONMENT, DEFAULT_OUTPUT),
                        help=f"output root (env {OUTPUT_ENVIRONMENT}, default {DEFAULT_OUTPUT})")
    add_model_arguments(parser)
    parser.add_argument("--truth", type=path_argument(),
                        help="optional reference mask: report Dice, MASD and NSD against it")
    add_output_flags(parser, progress=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        started = time.perf_counter()
        overrides = inference_overrides(args)
        device = select_device(args.device)
        out_path = output_path(args.input, args.output)
        require_writable(out_path)
        require_image_path(out_path)
        case = read_input_case(args.input)
        truth = _read_truth(args.truth, case) if args.truth else None
        model_dir = args.model or default_model_dir()
        announce_device(args.device, device)
        bundle = load_bundle(model_dir, device)
        LOG.info("model %s: %d weight file(s) on %s", model_dir, len(bundle.networks), device)
        mask = segment_case(Predictor.from_bundle(bundle, device, **overrides), case, out_path)
        print(f"wrote {out_path} (lesion volume {mask_volume_ml(mask):.2f} ml) "
              f"in {time.perf_counter() - started:.1f} s")
        if truth is not None:
            scores = Reference.of_case(case, truth).score(mask)
            print(f"against {args.truth}: Dice {scores.dice:.4f}, MASD {scores.masd_mm:.2f} mm, NSD {scores.nsd:.4f}")
        return 0

    return run_reporting_errors(run)


def _read_truth(path: Path, case: CaseImages) -> sitk.Image:
    truth = read_image(path)
    check_same_geometry(case.adc, case.files.adc, truth, path)
    require_binary(truth, path, "reference mask")
    return truth
