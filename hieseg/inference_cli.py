"""Command line of ``inference.py``: the grand-challenge container's one-case entry point.

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

import numpy as np
import SimpleITK as sitk

from hieseg.brain import brain_of, check_brain
from hieseg.cli_common import configure_logging, run_reporting_errors
from hieseg.config import CONFIG_FILENAME, InferenceConfig
from hieseg.errors import ImageError, ModelError
from hieseg.image_io import check_same_geometry, read_image, require_writable, to_xyz_array, write_image_atomic
from hieseg.layout import CaseFiles, CaseImages, container_interface
from hieseg.metrics import MM3_PER_ML, score_case
from hieseg.predictor import Predictor, load_bundle, select_device

LOG = logging.getLogger("hieseg.inference")
CONTAINER_MODEL_DIR = Path("/opt/ml/model")
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
"""The ``model/`` folder beside the package's folder: the checkout's, or the image's ``/opt/app/model``.
An installed package has none, so it needs ``--model`` unless ``/opt/ml/model`` holds one."""
IMAGE_SUFFIX = ".mha"


def default_model_dir() -> Path:
    """The mounted /opt/ml/model when it holds a trained model, else the bundled model/ folder."""
    for folder in (CONTAINER_MODEL_DIR, BUNDLED_MODEL_DIR):
        if (folder / CONFIG_FILENAME).is_file():
            return folder
    raise ModelError(f"no weights folder given and neither {CONTAINER_MODEL_DIR} nor {BUNDLED_MODEL_DIR} holds a "
                     f"{CONFIG_FILENAME}; pass --model or set HIESEG_MODEL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Segment HIE lesions in one BONBID-HIE case (ADC + Z_ADC).")
    parser.add_argument("--input", type=Path, default=Path(os.environ.get("HIESEG_INPUT", "/input")),
                        help="input root (env HIESEG_INPUT, default /input)")
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("HIESEG_OUTPUT", "/output")),
                        help="output root (env HIESEG_OUTPUT, default /output)")
    add_model_arguments(parser)
    parser.add_argument("--truth", type=Path, help="optional reference mask: report Dice, MASD and NSD against it")
    parser.add_argument("--verbose", action="store_true")
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the weights, the device and the inference settings (shared with ``predict``)."""
    parser.add_argument("--model", type=Path, default=_env_path("HIESEG_MODEL"),
                        help="weights folder (env HIESEG_MODEL; default /opt/ml/model if it holds a model, "
                             "else the bundled model/)")
    parser.add_argument("--device", default=os.environ.get("HIESEG_DEVICE", "auto"),
                        help="auto (CUDA if available), cpu, cuda or cuda:N (env HIESEG_DEVICE)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation (default: as saved in config.json)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: as saved)")
    parser.add_argument("--min-component-mm3", type=float, help="drop smaller lesion components (default: as saved)")


def inference_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The inference settings given on the command line, checked (a bad value fails here, before any work)."""
    overrides = {key: value for key, value in (
        ("tta_flips", args.tta), ("threshold", args.threshold), ("min_component_mm3", args.min_component_mm3),
    ) if value is not None}
    InferenceConfig(**overrides)
    return overrides


def segment_case(predictor: Predictor, case: CaseImages, out_path: Path) -> sitk.Image:
    """Predict one case's mask and write it, atomically, to ``out_path``; the mask is returned."""
    mask = predictor.mask_image(case)
    write_image_atomic(mask, out_path)
    return mask


def lesion_volume_ml(mask: sitk.Image) -> float:
    """Volume of a 0/1 mask's lesion voxels in ml."""
    return float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(mask.GetSpacing())) / MM3_PER_ML


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def single_image(folder: Path) -> Path:
    """The one .mha file of an input folder; zero or several is an error that names the folder."""
    if not folder.is_dir():
        raise ImageError(f"{folder}: input folder not found")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.suffix == IMAGE_SUFFIX]
    if len(images) != 1 or len(entries) != 1:
        listing = ", ".join(p.name for p in entries) or "nothing"
        raise ImageError(f"{folder}: expected exactly one {IMAGE_SUFFIX} file, found {listing}")
    return images[0]


def read_input_case(input_root: Path) -> CaseImages:
    """Read and check the ADC and Z_ADC of the container's single case (see :func:`hieseg.brain.check_brain`)."""
    interface = container_interface()
    adc_file = single_image(input_root / interface.adc_dir)
    zadc_file = single_image(input_root / interface.zadc_dir)
    adc = read_image(adc_file)
    zadc = read_image(zadc_file)
    check_same_geometry(adc, adc_file, zadc, zadc_file)
    check_brain(adc, adc_file, zadc, zadc_file)
    files = CaseFiles(case_id=adc_file.stem, adc=adc_file, zadc=zadc_file, label=None)
    return CaseImages(files=files, adc=adc, zadc=zadc, label=None)


def output_path(input_root: Path, output_root: Path) -> Path:
    """Where the mask goes: the output folder of the interface, under the ADC file's name."""
    interface = container_interface()
    return output_root / interface.output_dir / single_image(input_root / interface.adc_dir).name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        started = time.perf_counter()
        overrides = inference_overrides(args)
        device = select_device(args.device)
        out_path = output_path(args.input, args.output)
        require_writable(out_path)
        case = read_input_case(args.input)
        truth = _read_truth(args.truth, case) if args.truth else None
        model_dir = args.model or default_model_dir()
        bundle = load_bundle(model_dir, device)
        LOG.info("model %s: %d weight file(s) on %s", model_dir, len(bundle.networks), device)
        mask = segment_case(Predictor.from_bundle(bundle, device, **overrides), case, out_path)
        print(f"wrote {out_path} (lesion volume {lesion_volume_ml(mask):.2f} ml) "
              f"in {time.perf_counter() - started:.1f} s")
        if truth is not None:
            scores = score_case(to_xyz_array(mask, np.uint8), truth, case.adc.GetSpacing(),
                                brain=brain_of(case.adc), case_id=case.files.case_id)
            print(f"against {args.truth}: Dice {scores.dice:.4f}, MASD {scores.masd_mm:.2f} mm, NSD {scores.nsd:.4f}")
        return 0

    return run_reporting_errors(run)


def _read_truth(path: Path, case: CaseImages) -> np.ndarray:
    truth = read_image(path)
    check_same_geometry(case.adc, case.files.adc, truth, path)
    return to_xyz_array(truth, np.uint8)

