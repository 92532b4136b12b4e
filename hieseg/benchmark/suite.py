"""Benchmark whole-case inference against a plain sliding-window baseline, batch prediction, and training.

Usage::

    python -m hieseg.bench [--model DIR] [--sizes 128x128x16 192x192x32 256x256x64] [--repeats 3]
                           [--out benchmarks/results] [--device auto] [--threads N]
                           [--set KEY=VALUE ...] [--batch-cases 8] [--no-train]

On a CPU shared with other work, ``--threads 1`` gives steady figures: with one thread per core,
every parallel region waits for a core that another process holds, and times swing tenfold.

What is timed, per synthetic case (``synthetic.make_case`` written as the container's .mha
inputs) is the whole case as the container runs it: read both .mha files, preprocess, predict,
bring the probability back to the native grid, post-process (:func:`hieseg.inference.postprocess.final_mask`),
write the mask .mha (:mod:`hieseg.benchmark.timing`). Three predictors share the weights, the reading,
the resampling, the normalisation, the post-processing and the writing:

* **project**: :class:`hieseg.inference.predictor.Predictor` with the weights folder's inference settings
  (plus ``--set`` overrides); it crops the normalised volume to the brain and predicts that;
* **baseline** (:mod:`hieseg.benchmark.plain_monai`): the same preprocessed input without the brain
  crop given to MONAI's default sliding window;
* **cropped baseline**: the same default sliding window on exactly the project's brain-cropped
  input, inverted by MONAI's own inverse: against it only batching, blending, inference mode and
  the support-only inversion differ (the U-Net's instance normalisation makes the crop itself
  change what each window sees).

Each (predictor, case) runs in a freshly spawned process, so its peak resident memory is its
own; each process makes one untimed warm-up run (reported as ``cold``) before the timed ones.
The masks are compared as written. Random weights give near-empty masks, so the report also
compares the two probability maps directly, and thresholded at the baseline's 95th percentile
inside the brain, where neither mask is empty.

Batch prediction: ``--batch-cases`` cases of the first size, predicted by one
``python -m hieseg.predict`` process and by one ``inference.py`` process per case, in the same
run; the report gives both cases/s, their ratio, and how many masks are identical.

Training throughput: optimisation steps as :func:`hieseg.training.optimization.optimisation_step` makes them for
the weights folder's configuration, on patches drawn by the real training transforms from one
synthetic case; drawing patches is timed apart.

Without ``--model``, the weights are the default model folder's
(:func:`hieseg.io.layout.default_model_dir`), or random default-configuration weights when
there is none. The report is written as ``bench.json`` and ``bench.md`` to ``--out``
(:mod:`hieseg.benchmark.report`) and printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hieseg.benchmark.report import machine_info, size_name
from hieseg.benchmark.timing import (
    BASELINE,
    CROPPED_BASELINE,
    PROJECT,
    InferenceJob,
    TrainingJob,
    inference_job,
    load_project_settings,
    run_in_fresh_process,
    time_batch,
    training_job,
)
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import ModelError
from hieseg.evaluation.metrics import dice_score
from hieseg.io.images import read_image, to_xyz_array, write_image_atomic
from hieseg.io.layout import container_interface, default_model_dir
from hieseg.model.network import build_network
from hieseg.model.weights import WEIGHTS_PATTERN
from hieseg.synthesis.generator import make_case, write_container_case, write_release

DEFAULT_SIZES: tuple[tuple[int, int, int], ...] = ((128, 128, 16), (192, 192, 32), (256, 256, 64))
DEFAULT_REPEATS = 3
DEFAULT_BATCH_CASES = 8
DEFAULT_OUT = Path("benchmarks/results")
CASE_SEED = 20240
"""Seed of the benchmark's synthetic cases (the same cases in every run)."""
CASE_UUID = "bench"
RANDOM_WEIGHTS_SEED = 0
RANDOM_MODEL_SPACING = (1.12, 1.12, 2.2)
"""Grid of the random-weights model: what training derives (median spacing) from synthetic release cases."""
AGREEMENT_QUANTILE = 0.95
"""Quantile of the baseline's in-brain probability used as the second, informative threshold."""
LABEL_FILE = "label.mha"


@dataclass
class Agreement:
    """How far the project's output is from the baseline's on one case."""

    differing_voxels: int
    differing_fraction_of_brain: float
    dice: float
    project_lesion_voxels: int
    baseline_lesion_voxels: int
    max_abs_probability_difference: float
    mean_abs_probability_difference_in_brain: float
    quantile_threshold: float
    """The baseline's AGREEMENT_QUANTILE in-brain probability: both maps are thresholded there too."""
    quantile_differing_voxels: int
    quantile_dice: float
    project_truth_dice: float
    """Dice of the project's mask against the synthetic case's true lesion label."""
    baseline_truth_dice: float


def agreement(project_mask: np.ndarray, baseline_mask: np.ndarray, project_probability: np.ndarray,
              baseline_probability: np.ndarray, brain: np.ndarray, truth: np.ndarray) -> Agreement:
    """Compare the written masks, the probability maps, both maps at an informative threshold,
    and each mask with the true label (so a difference can be read as better or worse)."""
    differing = int(np.count_nonzero(project_mask != baseline_mask))
    difference = np.abs(project_probability - baseline_probability)
    threshold = float(np.quantile(baseline_probability[brain], AGREEMENT_QUANTILE))
    project_high, baseline_high = project_probability >= threshold, baseline_probability >= threshold
    return Agreement(
        differing_voxels=differing,
        differing_fraction_of_brain=differing / max(int(brain.sum()), 1),
        dice=dice_score(project_mask.astype(bool), baseline_mask.astype(bool)),
        project_lesion_voxels=int(project_mask.sum()),
        baseline_lesion_voxels=int(baseline_mask.sum()),
        max_abs_probability_difference=float(difference.max()),
        mean_abs_probability_difference_in_brain=float(difference[brain].mean()),
        quantile_threshold=threshold,
        quantile_differing_voxels=int(np.count_nonzero(project_high != baseline_high)),
        quantile_dice=dice_score(project_high, baseline_high),
        project_truth_dice=dice_score(project_mask.astype(bool), truth),
        baseline_truth_dice=dice_score(baseline_mask.astype(bool), truth),
    )


def resolve_model(requested: Path | None, scratch: Path) -> tuple[Path, str]:
    """The weights folder to benchmark and how it was chosen.

    ``--model`` when given; else the library's default weights folder
    (:func:`hieseg.io.layout.default_model_dir`); else a default-configuration network with
    random weights (seed ``RANDOM_WEIGHTS_SEED``) in ``scratch``.
    """
    if requested is not None:
        return requested, f"weights from {requested}"
    try:
        folder = default_model_dir()
        return folder, f"trained weights from {folder}"
    except ModelError as missing:
        reason = str(missing)
    folder = scratch / "random-model"
    folder.mkdir(parents=True)
    config = ExperimentConfig().with_overrides({"preprocess.target_spacing": RANDOM_MODEL_SPACING})
    config.save(folder / CONFIG_FILENAME)
    torch.manual_seed(RANDOM_WEIGHTS_SEED)
    torch.save(build_network(config).state_dict(), folder / "fold0.pt")
    return folder, (
        f"RANDOM weights (default configuration, seed {RANDOM_WEIGHTS_SEED}): {reason.split(';')[0]}; "
        "masks are near empty, judge agreement by the probability columns"
    )


def weight_digests(model_dir: Path) -> dict[str, str]:
    """Short SHA-256 of each weight file, so a report names exactly which weights it timed."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            for path in sorted(Path(model_dir).glob(WEIGHTS_PATTERN))}


def write_cases(sizes: Sequence[tuple[int, int, int]], scratch: Path) -> dict[str, Path]:
    """One synthetic container case per size, written as .mha so that reading is timed.

    The true label is written beside the container's input folder, where no predictor reads it.
    """
    folders = {}
    for size in sizes:
        name = size_name(size)
        case = make_case(f"bench_{name}", CASE_SEED, size=size)
        write_container_case(scratch / name / "input", case, CASE_UUID)
        write_image_atomic(case.label, scratch / name / LABEL_FILE)
        folders[name] = scratch / name
    return folders


def write_batch_cases(size: tuple[int, int, int], count: int, scratch: Path) -> Path:
    """``count`` synthetic container-layout case folders of one size, each its own case, under ``scratch``."""
    for index in range(count):
        case_id = f"batch_{index:03d}"
        write_container_case(scratch / case_id, make_case(case_id, CASE_SEED + 1 + index, size=size), case_id)
    return scratch


def benchmark_case(
    model_dir: Path, case_root: Path, repeats: int, device: str, threads: int | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Time the predictors on one case (each in its own process) and compare their outputs."""
    timings = {}
    for kind in (BASELINE, CROPPED_BASELINE, PROJECT):
        job = InferenceJob(
            kind=kind,
            model_dir=str(model_dir),
            case_dir=str(case_root / "input"),
            mask_path=str(case_root / kind / f"{CASE_UUID}.mha"),
            probability_path=str(case_root / kind / "probability.npy"),
            repeats=repeats,
            device=device,
            threads=threads,
            overrides=overrides if kind == PROJECT else {},
        )
        timings[kind] = run_in_fresh_process(inference_job, job)
    adc = read_image(case_root / "input" / container_interface().adc_dir / f"{CASE_UUID}.mha")
    masks = {kind: to_xyz_array(read_image(case_root / kind / f"{CASE_UUID}.mha"), np.uint8) for kind in timings}
    probabilities = {kind: np.load(case_root / kind / "probability.npy") for kind in timings}
    voxels = int(np.prod(adc.GetSize()))
    brain = to_xyz_array(adc) > 0
    truth = to_xyz_array(read_image(case_root / LABEL_FILE), np.uint8).astype(bool)

    def agreement_with(kind: str) -> dict[str, Any]:
        return dataclasses.asdict(agreement(
            masks[PROJECT], masks[kind], probabilities[PROJECT], probabilities[kind], brain, truth))

    return {
        "size": list(adc.GetSize()),
        "spacing_mm": [round(s, 4) for s in adc.GetSpacing()],
        "voxels": voxels,
        "project": dataclasses.asdict(timings[PROJECT]),
        "baseline": dataclasses.asdict(timings[BASELINE]),
        "ratio": timings[PROJECT].median / timings[BASELINE].median,
        "project_voxels_per_second": voxels / timings[PROJECT].median,
        "baseline_voxels_per_second": voxels / timings[BASELINE].median,
        "agreement": agreement_with(BASELINE),
        CROPPED_BASELINE: dataclasses.asdict(timings[CROPPED_BASELINE]),
        "cropped_ratio": timings[PROJECT].median / timings[CROPPED_BASELINE].median,
        "cropped_agreement": agreement_with(CROPPED_BASELINE),
    }


def run_benchmark(
    model: Path | None,
    sizes: Sequence[tuple[int, int, int]],
    repeats: int,
    device: str,
    overrides: dict[str, Any],
    scratch: Path,
    threads: int | None = None,
    train: bool = True,
    batch_cases: int = DEFAULT_BATCH_CASES,
) -> dict[str, Any]:
    """The whole benchmark: inference on every size, batch prediction, training throughput; the report dict."""
    machine = machine_info(device, threads)
    device = machine["device"]
    model_dir, model_note = resolve_model(model, scratch)
    load_project_settings(model_dir, overrides)
    cases = write_cases(sizes, scratch / "cases")
    report: dict[str, Any] = {
        "machine": machine,
        "model": {"folder": str(model_dir), "note": model_note, "weights": weight_digests(model_dir)},
        "repeats": repeats,
        "overrides": overrides,
        "cases": [benchmark_case(model_dir, root, repeats, device, threads, overrides) for root in cases.values()],
    }
    if batch_cases:
        batch_root = write_batch_cases(sizes[0], batch_cases, scratch / "batch-cases")
        report["batch"] = dataclasses.asdict(
            time_batch(model_dir, batch_root, sizes[0], scratch / "batch-out", device, threads))
    if train:
        data_root = scratch / "train-data"
        write_release(data_root, 1, seed=CASE_SEED, sizes=sizes[-1])
        job = TrainingJob(model_dir=str(model_dir), data_root=str(data_root), device=device, threads=threads)
        report["training"] = dataclasses.asdict(run_in_fresh_process(training_job, job))
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    return report
