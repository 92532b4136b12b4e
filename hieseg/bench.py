"""Benchmark whole-case inference against a plain sliding-window baseline, and training throughput.

Usage::

    python -m hieseg.bench [--model DIR] [--sizes 128x128x16 192x192x32 256x256x64] [--repeats 3]
                           [--out benchmarks/results] [--device auto] [--threads N]
                           [--set KEY=VALUE ...] [--no-train]

On a CPU shared with other work, ``--threads 1`` gives steady figures: with one thread per core,
every parallel region waits for a core that another process holds, and times swing tenfold.

What is timed, per synthetic case (``synthetic.make_case`` written as the container's .mha
inputs) is the whole case as the container runs it: read both .mha files, preprocess, predict,
bring the probability back to the native grid, threshold and drop small components, write the
mask .mha.

Two predictors share the weights, the reading, the resampling to the target spacing, the
intensity normalisation, the inversion to the native grid, the threshold, the small-component
removal and the writing:

* **project**: :class:`hieseg.predictor.Predictor` with the weights folder's inference settings
  (plus ``--set`` overrides); it crops the normalised volume to the brain and predicts that;
* **baseline**: the *same preprocessed input without the brain crop* (the whole resampled,
  normalised volume) given to ``monai.inferers.sliding_window_inference`` at its defaults:
  roi = the training patch size, ``sw_batch_size=1``, ``overlap=0.25``, ``mode="constant"``,
  under ``torch.no_grad()``; the networks' sigmoids are averaged, without test-time flips.

So the two differ only in inference strategy (brain crop, window size and count, batching,
blending, inference mode). A third predictor, the **cropped baseline**, runs the same default
sliding window on exactly the project's brain-cropped input and inverts it with MONAI's own
inverse: against it, only batching, blending, inference mode and the support-only inversion
differ, which shows how much of the gain is exact (the U-Net's instance normalisation makes
the crop itself change what each window sees). Each (predictor, case) runs in a freshly spawned process, so its peak
resident memory is its own; each process makes one untimed warm-up run (reported as ``cold``)
before the timed ones. The masks are compared as written. Random weights give near-empty masks,
so the report also compares the two probability maps directly, and thresholded at the
baseline's 95th percentile inside the brain, where neither mask is empty.

Training throughput: optimisation steps as ``hieseg.training`` makes them (network, loss, AdamW,
gradient clipping, AMP on CUDA) for the weights folder's configuration, on patches drawn by the
real training transforms from one synthetic case; drawing patches is timed apart.

The report is written as ``bench.json`` and ``bench.md`` to ``--out`` and printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import monai
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate
from monai.inferers import sliding_window_inference
from monai.transforms import Compose

from hieseg.cli_common import configure_logging, parse_overrides, run_reporting_errors
from hieseg.config import CONFIG_FILENAME, ExperimentConfig, InferenceConfig
from hieseg.errors import ConfigError
from hieseg.image_io import from_xyz_array, read_image, to_xyz_array, write_image_atomic
from hieseg.inference_cli import read_input_case
from hieseg.layout import CaseImages, container_interface, discover_cases, load_case
from hieseg.losses import build_loss
from hieseg.metrics import dice_score
from hieseg.network import build_network
from hieseg.postprocess import binarize, remove_small_components
from hieseg.predictor import WEIGHTS_PATTERN, ModelBundle, Predictor, load_bundle, select_device
from hieseg.synthetic import make_case, write_container_case, write_release
from hieseg.training import training_step
from hieseg.transforms import (
    IMAGE,
    case_to_dict,
    inference_transforms,
    invert_to_native,
    preprocess_transforms,
    training_transforms,
)

DEFAULT_SIZES: tuple[tuple[int, int, int], ...] = ((128, 128, 16), (192, 192, 32), (256, 256, 64))
DEFAULT_REPEATS = 3
DEFAULT_OUT = Path("benchmarks/results")
REPO_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
CASE_SEED = 20240
"""Seed of the benchmark's synthetic cases (the same cases in every run)."""
CASE_UUID = "bench"
RANDOM_WEIGHTS_SEED = 0
RANDOM_MODEL_SPACING = (1.12, 1.12, 2.2)
"""Grid of the random-weights model: what training derives (median spacing) from synthetic release cases."""
BASELINE_SW_BATCH_SIZE = 1
BASELINE_OVERLAP = 0.25
BASELINE_BLEND_MODE = "constant"
AGREEMENT_QUANTILE = 0.95
"""Quantile of the baseline's in-brain probability used as the second, informative threshold."""
TRAIN_WARMUP_STEPS = 2
TRAIN_TIMED_STEPS = 5
STAGES = ("read", "preprocess", "network", "invert", "postprocess", "write")
PROJECT, BASELINE, CROPPED_BASELINE = "project", "baseline", "cropped_baseline"
JSON_NAME, MARKDOWN_NAME = "bench.json", "bench.md"
LABEL_FILE = "label.mha"
MIB = 1024 * 1024


class CasePredictor(Protocol):
    """The stages a whole-case prediction is timed in (see :class:`hieseg.predictor.Predictor`)."""

    def preprocess(self, case: CaseImages) -> MetaTensor: ...

    def predict(self, network_input: MetaTensor) -> torch.Tensor: ...

    def to_native(self, probability: torch.Tensor, network_input: MetaTensor) -> np.ndarray: ...


class BaselinePredictor:
    """MONAI's plain sliding window at its defaults, on the whole resampled, normalised volume,
    or (``brain_crop``) on exactly the project's brain-cropped input."""

    def __init__(
        self, config: ExperimentConfig, networks: list[torch.nn.Module], device: torch.device, brain_crop: bool
    ) -> None:
        self.config = config
        self.networks = networks
        self.device = device
        self.brain_crop = brain_crop
        self.transforms = (
            inference_transforms(config) if brain_crop
            else Compose(preprocess_transforms(config.preprocess, with_label=False))
        )

    def preprocess(self, case: CaseImages) -> MetaTensor:
        """Resampled and normalised exactly like the project's input, cropped to the brain or not."""
        return self.transforms(case_to_dict(case))[IMAGE]

    def predict(self, network_input: MetaTensor) -> torch.Tensor:
        """Mean sigmoid over the networks, each by a default ``sliding_window_inference``."""
        batch = network_input.as_tensor()[None].to(self.device)
        total = torch.zeros_like(batch[:, :1])
        with torch.no_grad():
            for network in self.networks:
                logits = sliding_window_inference(
                    batch,
                    roi_size=self.config.train.patch_size,
                    sw_batch_size=BASELINE_SW_BATCH_SIZE,
                    predictor=network,
                    overlap=BASELINE_OVERLAP,
                    mode=BASELINE_BLEND_MODE,
                )
                total += torch.sigmoid(logits.float())
        return (total / len(self.networks))[0]

    def to_native(self, probability: torch.Tensor, network_input: MetaTensor) -> np.ndarray:
        """Undo the crop and the resampling with MONAI's own inverse."""
        return invert_to_native(probability, network_input, self.transforms)[0].numpy()

    def settings(self, inference: InferenceConfig) -> dict[str, Any]:
        """The baseline's sliding-window parameters and the post-processing it shares."""
        return {
            "roi_size": list(self.config.train.patch_size),
            "sw_batch_size": BASELINE_SW_BATCH_SIZE,
            "overlap": BASELINE_OVERLAP,
            "blend_mode": BASELINE_BLEND_MODE,
            "brain_crop": self.brain_crop,
            "threshold": inference.threshold,
            "min_component_mm3": inference.min_component_mm3,
        }


@dataclass
class InferenceJob:
    """One predictor on one case: everything a fresh process needs."""

    kind: str
    model_dir: str
    case_dir: str
    mask_path: str
    probability_path: str
    repeats: int
    device: str
    threads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceTiming:
    """Timed runs, per-stage medians and memory of one predictor on one case."""

    kind: str
    seconds: list[float]
    cold_seconds: float
    stage_seconds: dict[str, float]
    network_grid: list[int]
    peak_rss_bytes: int
    loaded_rss_bytes: int
    """Peak RSS once Python, torch and the weights are loaded, before the first case."""
    cuda_peak_bytes: int | None
    settings: dict[str, Any]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class TrainingJob:
    """Training-step timing of a weights folder's configuration on one synthetic case."""

    model_dir: str
    data_root: str
    device: str
    threads: int | None = None


@dataclass
class TrainingTiming:
    """Optimisation-step throughput, and the cost of drawing the patches."""

    step_seconds: list[float]
    steps_per_second: float
    samples_per_second: float
    samples_per_step: int
    patch_size: list[int]
    batch_size: int
    samples_per_case: int
    loss: str
    network_channels: list[int]
    data_seconds_per_step: float
    """Patch drawing and augmentation in the main process; training overlaps it in workers."""
    peak_rss_bytes: int
    cuda_peak_bytes: int | None


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


class StageClock:
    """Wall-clock seconds of named stages (synchronising CUDA so its work lands in its stage)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = time.perf_counter() - started


def run_in_fresh_process(function: Callable[[Any], Any], job: Any) -> Any:
    """``function(job)`` in a newly spawned process, so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, job).result()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (None keeps torch's default: one per core)."""
    if threads is not None:
        torch.set_num_threads(threads)


def cuda_peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def inference_job(job: InferenceJob) -> InferenceTiming:
    """Load the weights and one predictor; a warm-up run, then ``repeats`` timed whole-case runs.

    The warm-up run pays the one-off costs (allocations, oneDNN kernel selection) that a
    one-case container pays too: it is reported as ``cold_seconds``, apart from the timed runs.
    """
    set_threads(job.threads)
    device = select_device(job.device)
    bundle = load_bundle(Path(job.model_dir), device)
    inference = project_settings(Path(job.model_dir), job.overrides)
    predictor, settings = build_predictor(job.kind, bundle, inference, device)
    loaded_rss = peak_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cold_stages, _, _ = whole_case(predictor, inference, job, device)
    runs = [whole_case(predictor, inference, job, device) for _ in range(job.repeats)]
    _, probability, grid = runs[-1]
    np.save(job.probability_path, probability)
    return InferenceTiming(
        kind=job.kind,
        seconds=[sum(stages.values()) for stages, _, _ in runs],
        cold_seconds=sum(cold_stages.values()),
        stage_seconds={name: statistics.median(stages[name] for stages, _, _ in runs) for name in STAGES},
        network_grid=grid,
        peak_rss_bytes=peak_rss_bytes(),
        loaded_rss_bytes=loaded_rss,
        cuda_peak_bytes=cuda_peak_bytes(device),
        settings=settings,
    )


def project_settings(model_dir: Path, overrides: dict[str, Any]) -> InferenceConfig:
    """The weights folder's inference settings with ``--set`` overrides; an unknown key is an error."""
    config = ExperimentConfig.load(Path(model_dir) / CONFIG_FILENAME)
    return config.with_overrides({f"inference.{key}": value for key, value in overrides.items()}).inference


def build_predictor(
    kind: str, bundle: ModelBundle, inference: InferenceConfig, device: torch.device
) -> tuple[CasePredictor, dict[str, Any]]:
    """The project's predictor or the baseline, and the settings to report for it."""
    if kind == PROJECT:
        settings = dataclasses.asdict(inference) | {"brain_crop": True}
        return Predictor(bundle.config, bundle.networks, device, inference), settings
    baseline = BaselinePredictor(bundle.config, bundle.networks, device, brain_crop=kind == CROPPED_BASELINE)
    return baseline, baseline.settings(inference)


def whole_case(
    predictor: CasePredictor, inference: InferenceConfig, job: InferenceJob, device: torch.device
) -> tuple[dict[str, float], np.ndarray, list[int]]:
    """Read, predict and write one case as the container does; stage seconds, probability, grid."""
    clock = StageClock(device)
    with clock.stage("read"):
        case = read_input_case(Path(job.case_dir))
    with clock.stage("preprocess"):
        network_input = predictor.preprocess(case)
    with clock.stage("network"):
        probability = predictor.predict(network_input)
    with clock.stage("invert"):
        native = predictor.to_native(probability, network_input)
    with clock.stage("postprocess"):
        mask = binarize(native, inference.threshold)
        mask = remove_small_components(mask, case.adc.GetSpacing(), inference.min_component_mm3)
        image = from_xyz_array(mask, case.adc)
    with clock.stage("write"):
        write_image_atomic(image, Path(job.mask_path))
    return clock.seconds, native, list(network_input.shape[1:])


def training_job(job: TrainingJob) -> TrainingTiming:
    """Warm-up then timed optimisation steps on patches drawn by the training transforms."""
    set_threads(job.threads)
    device = select_device(job.device)
    config = ExperimentConfig.load(Path(job.model_dir) / CONFIG_FILENAME)
    torch.manual_seed(config.train.seed)
    batches, data_seconds = draw_batches(config, Path(job.data_root), TRAIN_WARMUP_STEPS + TRAIN_TIMED_STEPS)
    network = build_network(config.network).to(device).train()
    loss_function = build_loss(config.loss)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    use_amp = config.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        training_step(config, network, loss_function, optimizer, scaler, batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= TRAIN_WARMUP_STEPS:
            seconds.append(time.perf_counter() - started)
    samples = int(batches[0][IMAGE].shape[0])
    step = statistics.median(seconds)
    return TrainingTiming(
        step_seconds=seconds,
        steps_per_second=1.0 / step,
        samples_per_second=samples / step,
        samples_per_step=samples,
        patch_size=list(config.train.patch_size),
        batch_size=config.train.batch_size,
        samples_per_case=config.train.samples_per_case,
        loss=config.loss.name,
        network_channels=list(config.network.channels),
        data_seconds_per_step=data_seconds / len(batches),
        peak_rss_bytes=peak_rss_bytes(),
        cuda_peak_bytes=cuda_peak_bytes(device),
    )


def draw_batches(config: ExperimentConfig, data_root: Path, count: int) -> tuple[list[dict], float]:
    """``count`` training batches, as the training DataLoader builds them; and the seconds spent."""
    cases = [load_case(files) for files in discover_cases(data_root)]
    data = [case_to_dict(cases[0])] * config.train.batch_size
    loader = DataLoader(
        Dataset(data, transform=training_transforms(config)),
        batch_size=config.train.batch_size,
        num_workers=0,
        collate_fn=list_data_collate,
    )
    started = time.perf_counter()
    batches = [next(iter(loader)) for _ in range(count)]
    return batches, time.perf_counter() - started


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

    ``--model`` when given; else the repository's ``model/`` when it holds a config.json; else a
    default-configuration network with random weights (seed ``RANDOM_WEIGHTS_SEED``) in ``scratch``.
    """
    if requested is not None:
        return requested, f"weights from {requested}"
    if (REPO_MODEL_DIR / CONFIG_FILENAME).is_file():
        return REPO_MODEL_DIR, f"trained weights from {REPO_MODEL_DIR}"
    folder = scratch / "random-model"
    folder.mkdir(parents=True)
    config = ExperimentConfig().with_overrides({"preprocess.target_spacing": RANDOM_MODEL_SPACING})
    config.save(folder / CONFIG_FILENAME)
    torch.manual_seed(RANDOM_WEIGHTS_SEED)
    torch.save(build_network(config.network).state_dict(), folder / "fold0.pt")
    return folder, (
        f"RANDOM weights (default configuration, seed {RANDOM_WEIGHTS_SEED}): {REPO_MODEL_DIR} has no "
        f"{CONFIG_FILENAME}; masks are near empty, judge agreement by the probability columns"
    )


def weight_digests(model_dir: Path) -> dict[str, str]:
    """Short SHA-256 of each weight file, so a report names exactly which weights it timed."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            for path in sorted(Path(model_dir).glob(WEIGHTS_PATTERN))}


def size_name(size: Sequence[int]) -> str:
    return "x".join(str(n) for n in size)


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


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """CPU, cores, threads, library versions and the device, to read the timings against."""
    resolved = select_device(device)
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "simpleitk": sitk.Version.VersionString(),
        "python": platform.python_version(),
        "device": str(resolved),
        "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else _cpu_model(),
        "load_average_at_start": list(os.getloadavg()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_benchmark(
    model: Path | None,
    sizes: Sequence[tuple[int, int, int]],
    repeats: int,
    device: str,
    overrides: dict[str, Any],
    scratch: Path,
    threads: int | None = None,
    train: bool = True,
) -> dict[str, Any]:
    """The whole benchmark: inference on every size, then training throughput; the report dict."""
    machine = machine_info(device, threads)
    device = machine["device"]
    model_dir, model_note = resolve_model(model, scratch)
    project_settings(model_dir, overrides)
    cases = write_cases(sizes, scratch / "cases")
    report: dict[str, Any] = {
        "machine": machine,
        "model": {"folder": str(model_dir), "note": model_note, "weights": weight_digests(model_dir)},
        "repeats": repeats,
        "overrides": overrides,
        "cases": [benchmark_case(model_dir, root, repeats, device, threads, overrides) for root in cases.values()],
    }
    if train:
        data_root = scratch / "train-data"
        write_release(data_root, 1, seed=CASE_SEED, sizes=sizes[-1])
        job = TrainingJob(model_dir=str(model_dir), data_root=str(data_root), device=device, threads=threads)
        report["training"] = dataclasses.asdict(run_in_fresh_process(training_job, job))
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, model, whole-case table, stage table, training."""
    machine = report["machine"]
    lines = [
        "# hieseg benchmark",
        "",
        f"- Machine: {machine['cpu']}, {machine['usable_cores']} usable of {machine['cpu_count']} cores, "
        f"torch {machine['torch']} (intra-op threads: {machine['torch_threads']}), MONAI {machine['monai']}, "
        f"device {machine['device']} ({machine['device_name']})",
        f"- Load average (1, 5, 15 min) at start {_load(machine['load_average_at_start'])}, "
        f"at end {_load(machine['load_average_at_end'])}",
        f"- Model: {report['model']['note']}; weights (SHA-256 prefix): {_settings(report['model']['weights'])}",
        f"- Each figure: median [min-max] of {report['repeats']} whole-case runs after one warm-up run "
        "(cold s), each predictor in a fresh process; whole case = read .mha, preprocess, predict, "
        "invert to the native grid, threshold, write .mha",
        "- Baseline: the same read, resampling, normalisation, inversion, threshold and write, but the whole "
        "resampled volume (no brain crop) through a default MONAI sliding window",
    ]
    if report["cases"]:
        lines += [f"- Project settings: {_settings(report['cases'][0]['project']['settings'])}",
                  f"- Baseline settings: {_settings(report['cases'][0]['baseline']['settings'])}"]
    lines += ["", "## Whole-case inference", "", *_case_table(report["cases"]), "", *AGREEMENT_NOTES,
              "", "## Against a baseline on the same brain-cropped input", "", *CROPPED_NOTES, "",
              *_cropped_table(report["cases"]),
              "", "## Where the time goes (median seconds per stage)", "", *_stage_table(report["cases"])]
    if "training" in report:
        lines += ["", "## Training", "", *_training_lines(report["training"])]
    return "\n".join(lines) + "\n"


AGREEMENT_NOTES = (
    "Differing voxels: where the two written masks differ, and as a % of the brain's voxels (ADC > 0). "
    "Mask Dice: between the two masks. Max abs dP: largest difference of the two probability maps on the "
    "native grid. Dice at baseline q95: both probability maps thresholded at the baseline's 95th percentile "
    "in the brain (informative even for random weights, whose masks are near empty). Dice vs truth: each "
    "mask against the synthetic case's lesion label.",
)


def _case_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| case (x y z) | project s | baseline s | ratio | project Mvox/s | baseline Mvox/s "
        "| project RSS MiB | baseline RSS MiB | differing voxels (of brain) | mask Dice "
        "| max abs dP | Dice at baseline q95 | Dice vs truth project / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        project, baseline, agree = case["project"], case["baseline"], case["agreement"]
        rows.append(
            f"| {size_name(case['size'])} | {_spread(project['seconds'])} | {_spread(baseline['seconds'])} "
            f"| {case['ratio']:.2f} | {case['project_voxels_per_second'] / 1e6:.2f} "
            f"| {case['baseline_voxels_per_second'] / 1e6:.2f} | {_mib(project)} | {_mib(baseline)} "
            f"| {agree['differing_voxels']} ({100 * agree['differing_fraction_of_brain']:.3f} %) "
            f"| {agree['dice']:.4f} | {agree['max_abs_probability_difference']:.4f} | {agree['quantile_dice']:.4f} "
            f"| {agree['project_truth_dice']:.4f} / {agree['baseline_truth_dice']:.4f} |"
        )
    return rows


CROPPED_NOTES = (
    "The same default MONAI sliding window, given exactly the project's brain-cropped input and inverted "
    "with MONAI's own inverse: what remains is batching, inference mode, blending and the support-only "
    "inversion. With the same (constant) blending the masks are identical up to float rounding.",
)


def _cropped_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = ["| case (x y z) | project s | cropped baseline s | ratio | differing voxels (of brain) | max abs dP |",
            "|---|---|---|---|---|---|"]
    for case in cases:
        agree = case["cropped_agreement"]
        rows.append(
            f"| {size_name(case['size'])} | {_spread(case[PROJECT]['seconds'])} "
            f"| {_spread(case[CROPPED_BASELINE]['seconds'])} | {case['cropped_ratio']:.2f} "
            f"| {agree['differing_voxels']} ({100 * agree['differing_fraction_of_brain']:.3f} %) "
            f"| {agree['max_abs_probability_difference']:.2e} |"
        )
    return rows


def _stage_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = ["| case | predictor | network grid | cold s | " + " | ".join(STAGES) + " |",
            "|---|---|---|---|" + "---|" * len(STAGES)]
    for case in cases:
        for kind in (PROJECT, BASELINE, CROPPED_BASELINE):
            timing = case[kind]
            stages = " | ".join(f"{timing['stage_seconds'][name]:.3f}" for name in STAGES)
            rows.append(f"| {size_name(case['size'])} | {kind} | {size_name(timing['network_grid'])} "
                        f"| {timing['cold_seconds']:.2f} | {stages} |")
    return rows


def _training_lines(training: dict[str, Any]) -> list[str]:
    return [
        f"- Configuration: loss {training['loss']}, channels {training['network_channels']}, patch "
        f"{size_name(training['patch_size'])}, batch {training['batch_size']} cases x "
        f"{training['samples_per_case']} patches = {training['samples_per_step']} patches per step",
        f"- {training['steps_per_second']:.3f} steps/s, {training['samples_per_second']:.2f} patches/s "
        f"(median of {len(training['step_seconds'])} steps after {TRAIN_WARMUP_STEPS} warm-up; step "
        f"{_spread(training['step_seconds'])} s)",
        f"- Drawing and augmenting patches: {training['data_seconds_per_step']:.3f} s per step in one process "
        "(training overlaps it in DataLoader workers)",
        f"- Peak RSS {training['peak_rss_bytes'] / MIB:.0f} MiB" + (
            f", CUDA peak {training['cuda_peak_bytes'] / MIB:.0f} MiB" if training["cuda_peak_bytes"] else ""),
    ]


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _mib(timing: dict[str, Any]) -> str:
    text = f"{timing['peak_rss_bytes'] / MIB:.0f}"
    if timing["cuda_peak_bytes"]:
        text += f" (CUDA {timing['cuda_peak_bytes'] / MIB:.0f})"
    return text


def _load(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def write_report(report: dict[str, Any], out: Path) -> str:
    """Write ``bench.json`` and ``bench.md`` to ``out``; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_NAME).write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / MARKDOWN_NAME).write_text(text)
    return text


def parse_size(text: str) -> tuple[int, int, int]:
    """``"256x256x64"`` to ``(256, 256, 64)``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected a size like 256x256x64, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time whole-case inference against a plain sliding-window "
                                                 "baseline, and training steps.")
    parser.add_argument("--model", type=Path, help="weights folder (default: model/ if it has config.json, "
                                                   "else random default-configuration weights)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=list(DEFAULT_SIZES), metavar="XxYxZ",
                        help="synthetic case grids (default: 128x128x16 192x192x32 256x256x64)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed runs per case (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default benchmarks/results)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda or cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an inference setting of the project's predictor, "
                             "e.g. --set sw_batch_size=2 (repeatable)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training benchmark")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()

    def run() -> int:
        if args.repeats < 1:
            raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
        with tempfile.TemporaryDirectory(prefix="hieseg-bench-") as scratch:
            report = run_benchmark(args.model, args.sizes, args.repeats, args.device, parse_overrides(args.set),
                                   Path(scratch), threads=args.threads, train=args.train)
        print(write_report(report, args.out), end="")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
