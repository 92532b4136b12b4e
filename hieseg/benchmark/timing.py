"""The benchmark's timing harness: whole-case inference by stage, batch prediction, training steps.

Each measurement runs in a freshly spawned process (:func:`run_in_fresh_process`), so its peak
resident memory is its own, and the processes of a batch comparison are timed from outside,
start-up included, since that is what a user of ``inference.py`` in a loop pays for each case.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate

import hieseg
from hieseg.benchmark.plain_monai import BaselinePredictor
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig, InferenceConfig
from hieseg.data.transforms import IMAGE, case_to_dict, training_transforms
from hieseg.inference.boundary import ZadcMap
from hieseg.inference.postprocess import final_mask
from hieseg.inference.predictor import Predictor
from hieseg.io.images import MHA_SUFFIX, from_xyz_array, write_image_atomic
from hieseg.io.layout import (
    CaseImages,
    container_interface,
    discover_cases,
    load_case,
    read_input_case,
)
from hieseg.model.losses import build_training_loss
from hieseg.model.network import build_network, parameter_count, supervised_outputs
from hieseg.model.weights import ModelBundle, load_bundle
from hieseg.runtime.devices import select_device
from hieseg.training.optimization import build_optimization, optimisation_step

STAGES = ("read", "preprocess", "network", "invert", "postprocess", "write")
PROJECT, BASELINE, CROPPED_BASELINE = "project", "baseline", "cropped_baseline"
TRAIN_WARMUP_STEPS = 2
TRAIN_TIMED_STEPS = 5
INFERENCE_ENTRY = "import sys; from hieseg.cli.infer import main; sys.exit(main())"
"""What ``inference.py`` runs, so an installed package without the checkout's script is timed the same way."""


class CasePredictor(Protocol):
    """The stages a whole-case prediction is timed in (see :class:`hieseg.inference.predictor.Predictor`)."""

    settings: InferenceConfig

    def preprocess(self, case: CaseImages) -> MetaTensor: ...

    def predict(self, network_input: MetaTensor) -> torch.Tensor: ...

    def to_native(self, probability: torch.Tensor, network_input: MetaTensor) -> np.ndarray: ...


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
    network: str
    """``network.name`` of the config."""
    parameters: int
    data_seconds_per_step: float
    """Patch drawing and augmentation in the main process; training overlaps it in workers."""
    peak_rss_bytes: int
    cuda_peak_bytes: int | None


@dataclass
class BatchTiming:
    """A folder of cases predicted by one ``predict`` process and by one ``inference.py`` process per case."""

    cases: int
    size: list[int]
    loop_seconds: float
    predict_seconds: float
    loop_cases_per_second: float
    predict_cases_per_second: float
    ratio: float
    """predict's cases/s over the loop's: how many times faster the batch command is."""
    identical_masks: int
    """Cases whose two masks are voxel for voxel and in geometry the same."""


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
    predictor, settings = build_predictor(job.kind, bundle, project_settings(bundle.config, job.overrides), device)
    loaded_rss = peak_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cold_stages, _, _ = whole_case(predictor, job, device)
    runs = [whole_case(predictor, job, device) for _ in range(job.repeats)]
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


def project_settings(config: ExperimentConfig, overrides: dict[str, Any]) -> InferenceConfig:
    """A weights folder's inference settings with ``--set`` overrides; an unknown key is an error."""
    return config.with_overrides({f"inference.{key}": value for key, value in overrides.items()}).inference


def load_project_settings(model_dir: Path, overrides: dict[str, Any]) -> InferenceConfig:
    """:func:`project_settings` of a weights folder's config.json (checks the overrides before any work)."""
    return project_settings(ExperimentConfig.load(Path(model_dir) / CONFIG_FILENAME), overrides)


def build_predictor(
    kind: str, bundle: ModelBundle, inference: InferenceConfig, device: torch.device
) -> tuple[CasePredictor, dict[str, Any]]:
    """The project's predictor or the baseline, and the settings to report for it."""
    if kind == PROJECT:
        settings = dataclasses.asdict(inference) | {"brain_crop": True}
        return Predictor(bundle.config, bundle.networks, device, inference, bundle.refiner), settings
    baseline = BaselinePredictor(bundle.config, bundle.networks, device, inference,
                                 brain_crop=kind == CROPPED_BASELINE)
    return baseline, baseline.report_settings()


def whole_case(
    predictor: CasePredictor, job: InferenceJob, device: torch.device
) -> tuple[dict[str, float], np.ndarray, list[int]]:
    """Read, predict and write one case as the container does; stage seconds, probability, grid."""
    clock = StageClock(device)
    settings = predictor.settings
    with clock.stage("read"):
        case = read_input_case(Path(job.case_dir))
    with clock.stage("preprocess"):
        network_input = predictor.preprocess(case)
    with clock.stage("network"):
        probability = predictor.predict(network_input)
    with clock.stage("invert"):
        native = predictor.to_native(probability, network_input)
    with clock.stage("postprocess"):
        post = settings.postprocessing
        mask = final_mask(native, case.adc.GetSpacing(), post, ZadcMap.if_needed(case, post.zadc_boundary))
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
    network = build_network(config).to(device).train()
    loss_function = build_training_loss(config.loss, supervised_outputs(config))
    optimization = build_optimization(config, network, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        optimisation_step(config, network, loss_function, optimization, batch, device)
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
        network=config.network.name,
        parameters=parameter_count(network),
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


def time_batch(
    model_dir: Path, cases_root: Path, size: Sequence[int], scratch: Path, device: str, threads: int | None
) -> BatchTiming:
    """Time one ``python -m hieseg.predict`` over ``cases_root`` against one ``inference.py`` process per case.

    Both are timed from outside, process start, imports and weight loading included, with the
    weights folder's own settings; then each case's two masks are compared.
    """
    case_dirs = sorted(p for p in Path(cases_root).iterdir() if p.is_dir())
    environment = _environment(threads)
    started = time.perf_counter()
    for case_dir in case_dirs:
        _run([sys.executable, "-c", INFERENCE_ENTRY, "--input", str(case_dir), "--output",
              str(scratch / "loop" / case_dir.name), "--model", str(model_dir), "--device", device], environment)
    loop_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _run([sys.executable, "-m", "hieseg.predict", "--input", str(cases_root), "--output", str(scratch / "predict"),
          "--model", str(model_dir), "--device", device], environment)
    predict_seconds = time.perf_counter() - started
    identical = sum(_same_image(scratch / "predict" / f"{case_dir.name}{MHA_SUFFIX}",
                                _only_mask(scratch / "loop" / case_dir.name)) for case_dir in case_dirs)
    count = len(case_dirs)
    return BatchTiming(
        cases=count,
        size=list(size),
        loop_seconds=loop_seconds,
        predict_seconds=predict_seconds,
        loop_cases_per_second=count / loop_seconds,
        predict_cases_per_second=count / predict_seconds,
        ratio=loop_seconds / predict_seconds,
        identical_masks=identical,
    )


def _environment(threads: int | None) -> dict[str, str]:
    """This environment, with the package importable and, if asked, ``threads`` intra-op threads."""
    package_root = str(Path(hieseg.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))
    environment = {**os.environ, "PYTHONPATH": python_path}
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    return environment


def _run(command: list[str], environment: dict[str, str]) -> None:
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")


def _only_mask(output_root: Path) -> Path:
    (mask,) = (output_root / container_interface().output_dir).glob(f"*{MHA_SUFFIX}")
    return mask


def _same_image(path: Path, other: Path) -> bool:
    image, reference = sitk.ReadImage(str(path)), sitk.ReadImage(str(other))
    geometry = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return geometry == (reference.GetSize(), reference.GetSpacing(), reference.GetOrigin(),
                        reference.GetDirection()) and np.array_equal(sitk.GetArrayViewFromImage(image),
                                                                     sitk.GetArrayViewFromImage(reference))
