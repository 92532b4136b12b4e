"""The training input pipeline benchmark (``python -m hieseg.bench --training``): do the loader workers keep the
device busy, and how many does it take?

Measured on the same cached training cases (a release folder, or ``TRAINING_CASES`` synthetic ones), in one run:

* **loader**: patches per second that one loader worker process produces: the training loader's dataset
  (cached preprocessing, the recipe's patch sampling and augmentation) read by a DataLoader with one
  worker, timed over the batches after the first ``LOADER_WARMUP_BATCHES`` (worker start-up);
* **network**: optimisation steps per second on the device
  (:func:`hieseg.training.optimization.optimisation_step`, mixed precision on CUDA when ``train.amp``), on
  batches the loader drew beforehand, so no step waits for data;
* **workers needed**: :func:`workers_needed`, the workers whose patches match what the device consumes;
* **loop** (``--loop-steps``, 0 skips it): the training loop as the trainer runs it: the training loader
  with its workers (``train.num_workers``, or ``--workers``; auto: chosen from the cores, see
  :func:`hieseg.training.optimization.auto_loader_workers`) feeding the steps, passes over the data
  restarting the workers as in training: steps/s, the seconds each step waited for its batch, peak memory.

Every figure is a rate measured in the same run, to be read against the others. On a CPU the loader
and the network measured apart each had the cores to themselves; in training they share them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from torch.utils.data import RandomSampler

from hieseg.benchmark.report import MIB, machine_info, size_name
from hieseg.benchmark.timing import cuda_peak_bytes, peak_rss_bytes
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.data.spacing import with_data_spacing
from hieseg.data.transforms import IMAGE
from hieseg.io.images import write_atomic
from hieseg.model.losses import build_training_loss
from hieseg.model.network import build_network, parameter_count, supervised_outputs
from hieseg.runtime.devices import select_device
from hieseg.synthesis.generator import write_release
from hieseg.training.data import (
    cached_bytes,
    cycle,
    epoch_seed,
    load_cases,
    seed_epoch,
    training_loader,
)
from hieseg.training.optimization import (
    batches_per_pass,
    build_optimization,
    describe_workers,
    intra_op_threads,
    loader_workers,
    optimisation_step,
    torch_threads,
)

TRAINING_CASES = 16
"""Synthetic cases of the benchmark's release when no ``--data`` is given (8 steps per pass at batch 2)."""
CASE_SEED = 20241
LOADER_WARMUP_BATCHES = 2
NETWORK_WARMUP_STEPS = 2
LOOP_WARMUP_STEPS = 3
DEFAULT_STEPS = 10
DEFAULT_LOOP_STEPS = 20
JSON_NAME, MARKDOWN_NAME = "training.json", "training.md"
WHOLE_RATIO_DECIMALS = 6
"""Decimals the demand/supply ratio is rounded to before :func:`workers_needed` rounds it up, so that a ratio
whole but for float error (2.0000000000000004) is not taken for more."""


@dataclass
class LoaderRate:
    """What one loader worker process produces."""

    batches: int
    """Timed batches, after ``LOADER_WARMUP_BATCHES``."""
    patches_per_batch: int
    seconds: float
    patches_per_second: float


@dataclass
class NetworkRate:
    """Optimisation steps on the device, on batches drawn beforehand."""

    step_seconds: list[float]
    steps_per_second: float
    """Over the median step."""
    patches_per_step: int
    amp: bool
    """Whether the steps ran in mixed precision (``train.amp`` on CUDA)."""


@dataclass
class LoopTiming:
    """The training loop, the loader's workers feeding the steps."""

    workers: int
    workers_chosen: str
    """How the number was chosen (``train.num_workers``, auto from the cores, or ``--workers``)."""
    torch_threads: int
    steps: int
    """Timed steps, after ``LOOP_WARMUP_STEPS``."""
    steps_per_pass: int
    """Batches in one pass over the cases: each pass starts fresh workers, as training does."""
    seconds: float
    steps_per_second: float
    wait_seconds_per_step: float
    """Mean seconds a step waited for its batch."""
    wait_fraction: float
    """Share of the loop's time spent waiting for batches: 0 when the loader keeps up."""
    peak_rss_bytes: int
    cuda_peak_bytes: int | None


def workers_needed(steps_per_second: float, patches_per_step: int, patches_per_second_per_worker: float) -> int:
    """Loader workers that produce the patches the device consumes:
    ``ceil(steps_per_second * patches_per_step / patches_per_second_per_worker)``, at least 1.

    With no worker the main process draws each batch between its steps, so the device always waits.
    The ratio is rounded to ``WHOLE_RATIO_DECIMALS`` decimals before being rounded up.
    """
    if patches_per_second_per_worker <= 0:
        raise ValueError(f"a worker must produce patches, got {patches_per_second_per_worker} per second")
    ratio = steps_per_second * patches_per_step / patches_per_second_per_worker
    return max(1, math.ceil(round(ratio, WHOLE_RATIO_DECIMALS)))


def training_recipe(model: Path | None, overrides: dict[str, Any]) -> tuple[ExperimentConfig, str]:
    """The recipe to time: the defaults (or a weights folder's config.json) with dotted ``overrides``."""
    if model is None:
        config, source = ExperimentConfig(), "the default recipe"
    else:
        config, source = ExperimentConfig.load(Path(model) / CONFIG_FILENAME), f"the recipe of {model}"
    config = dataclasses.replace(config, provenance=None).with_overrides(overrides)
    if overrides:
        source += " with " + ", ".join(f"{key}={json.dumps(value)}" for key, value in overrides.items())
    return config, source


def training_release(data: Path | None, scratch: Path, size: Sequence[int]) -> tuple[Path, str]:
    """The release folder to draw from: ``data``, or ``TRAINING_CASES`` synthetic cases of ``size`` in ``scratch``."""
    if data is not None:
        return Path(data), f"release {data}"
    root = Path(scratch) / "training-release"
    write_release(root, TRAINING_CASES, seed=CASE_SEED, sizes=tuple(size))
    return root, f"{TRAINING_CASES} synthetic cases of {size_name(size)} voxels (seed {CASE_SEED})"


def measure_loader(dataset: Any, reference: DataLoader, batches: int, seed: int) -> tuple[LoaderRate, list[dict]]:
    """``batches`` timed batches (after the warm-up ones) from one worker reading ``dataset`` as the training
    loader ``reference`` does; the rate, and every batch drawn."""
    total = LOADER_WARMUP_BATCHES + batches
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=reference.batch_size,
        sampler=RandomSampler(dataset, replacement=True, num_samples=total * reference.batch_size,
                              generator=generator),
        num_workers=1,
        collate_fn=reference.collate_fn,
        pin_memory=reference.pin_memory,
        worker_init_fn=reference.worker_init_fn,
        generator=generator,
    )
    drawn, arrivals = [], []
    for batch in loader:
        drawn.append(batch)
        arrivals.append(time.perf_counter())
    patches = int(drawn[0][IMAGE].shape[0])
    seconds = arrivals[-1] - arrivals[LOADER_WARMUP_BATCHES - 1]
    return LoaderRate(batches=batches, patches_per_batch=patches, seconds=seconds,
                      patches_per_second=batches * patches / seconds), drawn


def measure_network(config: ExperimentConfig, network: torch.nn.Module, batches: list[dict],
                    device: torch.device) -> NetworkRate:
    """Steps on ``batches`` (the first ``NETWORK_WARMUP_STEPS`` untimed), synchronising CUDA after each."""
    loss_function = build_training_loss(config.loss, supervised_outputs(config))
    optimization = build_optimization(config, network, device)
    seconds = []
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        optimisation_step(config, network, loss_function, optimization, batch, device)
        _synchronize(device)
        if index >= NETWORK_WARMUP_STEPS:
            seconds.append(time.perf_counter() - started)
    return NetworkRate(step_seconds=seconds, steps_per_second=1.0 / statistics.median(seconds),
                       patches_per_step=int(batches[0][IMAGE].shape[0]), amp=optimization.scaler.is_enabled())


def measure_loop(config: ExperimentConfig, network: torch.nn.Module, loader: DataLoader, device: torch.device,
                 steps: int, workers_chosen: str) -> LoopTiming:
    """``steps`` timed steps of the training loop (after ``LOOP_WARMUP_STEPS``), each waiting for the loader."""
    loss_function = build_training_loss(config.loss, supervised_outputs(config))
    optimization = build_optimization(config, network, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_epoch(loader, epoch_seed(config.train.seed, 0))
    batches = cycle(loader)
    waited = total = 0.0
    for index in range(LOOP_WARMUP_STEPS + steps):
        started = time.perf_counter()
        batch = next(batches)
        arrived = time.perf_counter()
        optimisation_step(config, network, loss_function, optimization, batch, device)
        _synchronize(device)
        if index >= LOOP_WARMUP_STEPS:
            waited += arrived - started
            total += time.perf_counter() - started
    batches.close()
    return LoopTiming(
        workers=loader.num_workers,
        workers_chosen=workers_chosen,
        torch_threads=torch.get_num_threads(),
        steps=steps,
        steps_per_pass=len(loader),
        seconds=total,
        steps_per_second=steps / total,
        wait_seconds_per_step=waited / steps,
        wait_fraction=waited / total,
        peak_rss_bytes=peak_rss_bytes(),
        cuda_peak_bytes=cuda_peak_bytes(device),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pipeline_benchmark(
    model: Path | None,
    overrides: dict[str, Any],
    data: Path | None,
    case_size: Sequence[int],
    device: str,
    scratch: Path,
    threads: int | None = None,
    steps: int = DEFAULT_STEPS,
    loop_steps: int = DEFAULT_LOOP_STEPS,
    workers: int | None = None,
) -> dict[str, Any]:
    """The whole training-pipeline benchmark; the report dict (see the module's docstring)."""
    resolved = select_device(device)
    config, recipe = training_recipe(model, overrides)
    root, data_note = training_release(data, scratch, case_size)
    cases = load_cases([root], progress=False)
    config = with_data_spacing(config, [case.adc.GetSpacing() for case in cases])
    loop_workers = loader_workers(config, resolved, 1, batches_per_pass(config, len(cases))) if workers is None \
        else workers
    chosen = (f"{loop_workers} loader worker{'' if loop_workers == 1 else 's'} (--workers)" if workers is not None
              else describe_workers(config, loop_workers, resolved))
    intra_op = threads or intra_op_threads(config, 1, loop_workers)
    torch.manual_seed(config.train.seed)
    with torch_threads(intra_op):
        machine = machine_info(str(resolved), intra_op)
        loader = training_loader(config, cases, resolved, workers=loop_workers)
        loader_rate, drawn = measure_loader(loader.dataset, loader, max(steps + NETWORK_WARMUP_STEPS, 2 * steps),
                                            config.train.seed)
        network = build_network(config).to(resolved).train()
        network_rate = measure_network(config, network, drawn[:NETWORK_WARMUP_STEPS + steps], resolved)
        del drawn
        loop = measure_loop(config, network, loader, resolved, loop_steps, chosen) if loop_steps else None
    return {
        "machine": machine,
        "recipe": {
            "source": recipe,
            "network": config.network.name,
            "parameters": parameter_count(network),
            "loss": config.loss.name,
            "patch_size": list(config.train.patch_size),
            "batch_size": config.train.batch_size,
            "samples_per_case": config.train.samples_per_case,
            "target_spacing": list(config.preprocess.target_spacing),
        },
        "data": {"folder": str(root), "note": data_note, "cases": len(cases),
                 "cache_megabytes": cached_bytes(loader.dataset) / 1e6},
        "loader": dataclasses.asdict(loader_rate),
        "network": dataclasses.asdict(network_rate),
        "workers_needed": workers_needed(network_rate.steps_per_second, network_rate.patches_per_step,
                                         loader_rate.patches_per_second),
        "loop": dataclasses.asdict(loop) if loop else None,
    }


def markdown(report: dict[str, Any]) -> str:
    """The training-pipeline report as Markdown."""
    machine, recipe, loader, network = report["machine"], report["recipe"], report["loader"], report["network"]
    demand = network["steps_per_second"] * network["patches_per_step"]
    lines = [
        "# hieseg training input pipeline",
        "",
        f"- Machine: {machine['cpu']}, {machine['usable_cores']} usable of {machine['cpu_count']} cores, "
        f"torch {machine['torch']} (intra-op threads: {machine['torch_threads']}), MONAI {machine['monai']}, "
        f"device {machine['device']} ({machine['device_name']})",
        f"- Recipe: {recipe['source']}: network {recipe['network']} ({recipe['parameters']:,} parameters), loss "
        f"{recipe['loss']}, patch {size_name(recipe['patch_size'])}, batch {recipe['batch_size']} cases x "
        f"{recipe['samples_per_case']} patches = {network['patches_per_step']} patches per step, grid "
        f"{' x '.join(f'{s:g}' for s in recipe['target_spacing'])} mm",
        f"- Data: {report['data']['note']}; preprocessed cases cached in memory: "
        f"{report['data']['cache_megabytes']:.1f} MB",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| loader: patches/s per worker process | {loader['patches_per_second']:.2f} "
        f"({loader['batches']} batches of {loader['patches_per_batch']} in {loader['seconds']:.2f} s) |",
        f"| network: steps/s on {machine['device']}{' (AMP)' if network['amp'] else ''} "
        f"| {network['steps_per_second']:.3f} (median of {len(network['step_seconds'])} steps) |",
        f"| patches/s the network consumes | {demand:.2f} |",
        f"| **loader workers needed** | **{report['workers_needed']}** "
        f"(ceil({demand:.2f} / {loader['patches_per_second']:.2f})) |",
    ]
    loop = report.get("loop")
    if loop:
        lines += [
            "",
            f"## Training loop: {loop['workers_chosen']}, {loop['torch_threads']} intra-op thread(s)",
            "",
            f"- {loop['steps_per_second']:.3f} steps/s over {loop['steps']} steps after {LOOP_WARMUP_STEPS} warm-up "
            f"({loop['steps_per_pass']} steps per pass of the loader; each pass starts fresh workers)",
            f"- Waiting for the loader: {loop['wait_seconds_per_step']:.3f} s per step, "
            f"{100 * loop['wait_fraction']:.1f} % of the loop",
            f"- Peak RSS {loop['peak_rss_bytes'] / MIB:.0f} MiB" + (
                f", CUDA peak {loop['cuda_peak_bytes'] / MIB:.0f} MiB" if loop["cuda_peak_bytes"] else ""),
        ]
    return "\n".join(lines) + "\n"


def write_pipeline_report(report: dict[str, Any], out: Path) -> str:
    """Write ``training.json`` and ``training.md`` to ``out``, each atomically; return the Markdown."""
    text = markdown(report)
    for name, content in ((JSON_NAME, json.dumps(report, indent=2) + "\n"), (MARKDOWN_NAME, text)):
        write_atomic(Path(out) / name, lambda temporary, content=content: temporary.write_text(content))
    return text
