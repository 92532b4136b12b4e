"""Training one fold: data loading, optimisation, validation in the native grid, checkpoints.

Outputs in ``out_dir``:

* ``config.json``: the full :class:`ExperimentConfig` that inference rebuilds everything from;
* ``<name>.pt``: the best weights (state dict) by validation Dice, ``fold<k>.pt`` by default;
* ``runs/<name>/metrics.csv``, ``runs/<name>/tensorboard/`` and ``runs/<name>/last.ckpt``
  (everything needed to resume).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from monai.utils import set_determinism
from tqdm.auto import tqdm

from hieseg.config import CONFIG_FILENAME, ExperimentConfig
from hieseg.image_io import write_atomic
from hieseg.layout import CaseImages, discover_cases, load_case
from hieseg.losses import build_loss
from hieseg.metrics import dice_score
from hieseg.network import build_network
from hieseg.predictor import Predictor, select_device
from hieseg.spacing import with_data_spacing
from hieseg.splits import train_validation_split
from hieseg.transforms import IMAGE, LABEL, case_to_dict, training_transforms

LOG = logging.getLogger(__name__)
METRICS_FILE = "metrics.csv"
METRIC_FIELDS = ("epoch", "train_loss", "val_dice", "learning_rate", "seconds")
TUNED_INFERENCE_KEYS = ("threshold", "min_component_mm3", "tta_flips")
"""Inference settings that post-processing tuning rewrites in config.json after training."""


@dataclass
class TrainingResult:
    """What a finished (or early-stopped) training run achieved and where it wrote it."""

    weights: Path
    best_dice: float
    best_epoch: int
    epochs_run: int
    training_ids: list[str]
    validation_ids: list[str]
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _State:
    """Progress that a checkpoint must restore for a resumed run to continue identically."""

    epoch: int = 0
    best_dice: float = -1.0
    best_epoch: int = -1
    stale_validations: int = 0


def lesion_burden(case: CaseImages) -> float:
    """Lesion voxels as a fraction of brain voxels (ADC > 0)."""
    brain = int((sitk.GetArrayViewFromImage(case.adc) > 0).sum())
    lesion = int(sitk.GetArrayViewFromImage(case.label).sum()) if case.label is not None else 0
    return lesion / brain if brain else 0.0


def load_cases(data_root: Path, progress: bool) -> list[CaseImages]:
    """Read and validate every case of a release folder, failing on the first bad one."""
    files = discover_cases(data_root)
    return [load_case(f) for f in tqdm(files, desc="reading cases", disable=not progress, unit="case")]


def run_name(config: ExperimentConfig, validation_ids: list[str] | None) -> str:
    return "model" if validation_ids else f"fold{config.train.fold}"


def train(
    config: ExperimentConfig,
    data_root: Path,
    out_dir: Path,
    *,
    validation_ids: list[str] | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> TrainingResult:
    """Train one model and keep its best weights by validation Dice in the native grid."""
    out_dir = Path(out_dir)
    name = run_name(config, validation_ids)
    run_dir = out_dir / "runs" / name
    checkpoint_path = run_dir / "last.ckpt"
    if checkpoint_path.exists() and not resume:
        raise FileExistsError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --out")
    with _torch_threads(intra_op_threads(config)):
        return _train(config, data_root, out_dir, name, validation_ids, resume, device, progress)


def _train(
    config: ExperimentConfig,
    data_root: Path,
    out_dir: Path,
    name: str,
    validation_ids: list[str] | None,
    resume: bool,
    device: str,
    progress: bool,
) -> TrainingResult:
    run_dir = out_dir / "runs" / name
    checkpoint_path = run_dir / "last.ckpt"
    set_determinism(seed=config.train.seed)
    torch_device = select_device(device)

    cases = load_cases(data_root, progress)
    config = with_data_spacing(config, [case.adc.GetSpacing() for case in cases])
    LOG.info("network grid %s mm", " x ".join(f"{s:g}" for s in config.preprocess.target_spacing))
    by_id = {case.files.case_id: case for case in cases}
    training_ids, validation = train_validation_split(
        list(by_id),
        [lesion_burden(case) for case in cases],
        folds=config.train.folds,
        fold=config.train.fold,
        seed=config.train.seed,
        validation_ids=validation_ids,
    )
    LOG.info("%d training and %d validation cases", len(training_ids), len(validation))
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(config, out_dir)

    loader = _training_loader(config, [by_id[i] for i in training_ids], torch_device)
    network = build_network(config.network).to(torch_device)
    loss_function = build_loss(config.loss)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config))
    use_amp = config.train.amp and torch_device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = _State()
    if resume and checkpoint_path.exists():
        state = _load_checkpoint(checkpoint_path, config, network, optimizer, scheduler, scaler)
        LOG.info("resumed %s at epoch %d", checkpoint_path, state.epoch)

    weights_path = out_dir / f"{name}.pt"
    validation_cases = [by_id[i] for i in validation]
    history = read_history(run_dir / METRICS_FILE)
    writer = _tensorboard_writer(run_dir)
    epochs = tqdm(range(state.epoch, config.train.epochs), desc=f"training {name}", disable=not progress, unit="epoch")
    for epoch in epochs:
        started = time.perf_counter()
        train_loss = _train_epoch(config, network, loader, loss_function, optimizer, scaler, torch_device, progress)
        scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_dice": math.nan,
               "learning_rate": scheduler.get_last_lr()[0]}
        is_last = epoch + 1 == config.train.epochs
        if (epoch + 1) % config.train.validate_every == 0 or is_last:
            row["val_dice"] = validate(config, network, validation_cases, torch_device)
            network.train()
            if row["val_dice"] > state.best_dice:
                state.best_dice, state.best_epoch, state.stale_validations = row["val_dice"], epoch + 1, 0
                _save_atomic(network.state_dict(), weights_path)
            else:
                state.stale_validations += 1
        row["seconds"] = time.perf_counter() - started
        state.epoch = epoch + 1
        history.append(row)
        _append_metrics(run_dir / METRICS_FILE, row)
        for key in ("train_loss", "val_dice", "learning_rate"):
            if not math.isnan(row[key]):
                writer.add_scalar(key, row[key], epoch + 1)
        _save_checkpoint(checkpoint_path, config, network, optimizer, scheduler, scaler, state)
        epochs.set_postfix(loss=f"{train_loss:.4f}", best_dice=f"{max(state.best_dice, 0):.3f}")
        if config.train.patience and state.stale_validations >= config.train.patience:
            LOG.info("early stopping at epoch %d: no Dice gain in %d validations", epoch + 1, state.stale_validations)
            break
    writer.close()
    return TrainingResult(
        weights=weights_path,
        best_dice=state.best_dice,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        training_ids=training_ids,
        validation_ids=validation,
        history=history,
    )


def intra_op_threads(config: ExperimentConfig) -> int:
    """torch's intra-op threads for training: the setting, or the usable cores left by the loader workers."""
    if config.train.torch_threads > 0:
        return config.train.torch_threads
    return max(1, len(os.sched_getaffinity(0)) - config.train.num_workers)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads, restoring the caller's count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    LOG.info("torch intra-op threads: %d", count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def validate(
    config: ExperimentConfig, network: torch.nn.Module, cases: list[CaseImages], device: torch.device
) -> float:
    """Mean Dice of the thresholded prediction against the label, in each case's native grid."""
    network.eval()
    predictor = Predictor(config, [network], device)
    scores = [dice_score(predictor.mask(case), sitk.GetArrayViewFromImage(case.label).transpose(2, 1, 0))
              for case in cases]
    return float(np.mean(scores))


def _training_loader(config: ExperimentConfig, cases: list[CaseImages], device: torch.device) -> DataLoader:
    """Patches of the training cases; the deterministic preprocessing is cached in memory."""
    data = [case_to_dict(case) for case in cases]
    transform = training_transforms(config)
    cache_rate = 1.0 if config.train.cache_cases else 0.0
    dataset = CacheDataset(data, transform=transform, cache_rate=cache_rate, progress=False, num_workers=0)
    generator = torch.Generator().manual_seed(config.train.seed)
    return DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        shuffle=True,
        num_workers=config.train.num_workers,
        collate_fn=list_data_collate,
        pin_memory=device.type == "cuda",
        generator=generator,
        persistent_workers=config.train.num_workers > 0,
    )


def _train_epoch(
    config: ExperimentConfig,
    network: torch.nn.Module,
    loader: DataLoader,
    loss_function: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    progress: bool,
) -> float:
    """One epoch of optimisation; returns the mean training loss."""
    network.train()
    steps = config.train.steps_per_epoch or len(loader)
    batches = _cycle(loader)
    losses = [
        training_step(config, network, loss_function, optimizer, scaler, next(batches), device)
        for _ in tqdm(range(steps), desc="steps", leave=False, disable=not progress, unit="step")
    ]
    return float(np.mean(losses))


def training_step(
    config: ExperimentConfig,
    network: torch.nn.Module,
    loss_function: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: dict,
    device: torch.device,
) -> float:
    """One optimisation step (mixed precision when the scaler is enabled, clipped gradients); returns the loss."""
    images = batch[IMAGE].as_tensor().to(device, non_blocking=True)
    labels = batch[LABEL].as_tensor().to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        logits = network(images)
    loss = loss_function(logits.float(), labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(network.parameters(), config.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def _cycle(loader: DataLoader):
    """Batches forever, reshuffling at each pass, so an epoch may be longer than the dataset."""
    while True:
        yield from loader


def _warmup_cosine(config: ExperimentConfig):
    """Linear warm-up for ``warmup_epochs`` then cosine decay to zero at the last epoch."""
    warmup, total = config.train.warmup_epochs, config.train.epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _write_config(config: ExperimentConfig, out_dir: Path) -> None:
    """Write config.json, refusing to mix folds trained with different settings in one folder."""
    path = out_dir / CONFIG_FILENAME
    if path.exists():
        existing = ExperimentConfig.load(path).to_dict()
        mine = config.to_dict()
        for data in (existing, mine):
            data["train"].pop("fold")
            if config.tuning.enabled:
                for key in TUNED_INFERENCE_KEYS:
                    data["inference"].pop(key)
        if existing != mine:
            raise ValueError(
                f"{path} holds a different configuration: weights in one folder are ensembled, "
                "so they must share it; choose another --out"
            )
    config.save(path)


def _tensorboard_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _append_metrics(path: Path, row: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_history(path: Path) -> list[dict[str, float]]:
    """Per-epoch rows of a run's metrics.csv as floats (NaN where no validation ran); empty if none."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _save_atomic(payload: object, path: Path) -> None:
    write_atomic(path, lambda temporary: torch.save(payload, temporary))


def _save_checkpoint(path, config, network, optimizer, scheduler, scaler, state: _State) -> None:
    _save_atomic(
        {
            "config": config.to_dict(),
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "state": vars(state),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        },
        path,
    )


def _load_checkpoint(path, config, network, optimizer, scheduler, scaler) -> _State:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint["config"] != config.to_dict():
        raise ValueError(f"{path} was written with a different configuration; cannot resume it with this one")
    network.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    random.setstate(checkpoint["rng"]["python"])
    return _State(**checkpoint["state"])
