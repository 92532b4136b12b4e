"""Training one fold: data loading, optimisation, validation in the native grid, checkpoints.

Outputs in ``out_dir``:

* ``config.json``: the full :class:`ExperimentConfig` that inference rebuilds everything from;
* ``<name>.pt``: the best weights (state dict) by validation Dice, ``fold<k>.pt`` by default;
* ``runs/<name>/metrics.csv``, ``runs/<name>/tensorboard/`` and ``runs/<name>/last.ckpt``
  (everything needed to resume).

Resuming continues bit for bit as if the run had never stopped: every random state of an
epoch (torch, numpy, python, the loader's shuffling, the augmentation transforms in the main
process and in each loader worker) is derived from (seed, epoch) when the epoch starts, so the
epoch number saved in the checkpoint restores them all. Every file is replaced atomically
after each epoch, so a run killed at any moment (SIGTERM, Ctrl-C) leaves a consistent
``last.ckpt``; a resumed run drops the log rows past it. A fresh run starts fresh logs.

Under ``torchrun`` (:mod:`hieseg.distributed`) every rank runs :func:`train` with the same
arguments and trains the same network under :class:`~torch.nn.parallel.DistributedDataParallel`,
which averages the gradients, so the ranks' weights stay identical. Rank 0 alone checks and
writes the outputs (the same files as a single process), validates and decides on the best
weights and on early stopping; the other ranks receive its decisions (and, on resume, its
checkpoint) at the end of each epoch, so all stop together. See :func:`_training_loader` for how
the ranks draw different patches.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from monai.utils import set_determinism
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from hieseg import distributed
from hieseg.brain import brain_of
from hieseg.config import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import ConfigError, DatasetError, ModelError, OutputError
from hieseg.image_io import require_writable, write_atomic
from hieseg.layout import CaseImages, discover_cases, load_case
from hieseg.losses import build_training_loss
from hieseg.metrics import dice_score
from hieseg.network import build_network, supervised_outputs
from hieseg.predictor import Predictor
from hieseg.provenance import current_provenance
from hieseg.spacing import with_data_spacing
from hieseg.splits import train_validation_split
from hieseg.transforms import IMAGE, LABEL, case_to_dict, training_transforms

LOG = logging.getLogger(__name__)
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_FILE = "last.ckpt"
CHECKPOINT_KEYS = frozenset({"config", "model", "optimizer", "scheduler", "scaler", "state"})
METRIC_FIELDS = ("epoch", "train_loss", "val_dice", "learning_rate", "seconds")
TUNED_INFERENCE_KEYS = ("threshold", "min_component_mm3", "empty_fallback_probability", "tta_flips")
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
    brain = int(brain_of(case.adc).sum())
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
    """Train one model and keep its best weights by validation Dice in the native grid.

    ``out_dir`` must be writable and, unless ``resume``, hold no checkpoint of this run; both
    are checked before any work. Under torchrun every rank calls this alike and gets the same
    result; only rank 0 shows progress.
    """
    out_dir = Path(out_dir)
    name = run_name(config, validation_ids)
    ranks = distributed.current()
    distributed.on_main(lambda: _check_output(out_dir, out_dir / "runs" / name / CHECKPOINT_FILE, resume), ranks)
    with _torch_threads(intra_op_threads(config, ranks.local_world_size)):
        return _train(config, data_root, out_dir, name, validation_ids, resume, device, progress and ranks.is_main,
                      ranks)


def _check_output(out_dir: Path, checkpoint_path: Path, resume: bool) -> None:
    require_writable(out_dir, folder=True)
    if checkpoint_path.exists() and not resume:
        raise OutputError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --out")


def _train(
    config: ExperimentConfig,
    data_root: Path,
    out_dir: Path,
    name: str,
    validation_ids: list[str] | None,
    resume: bool,
    device: str,
    progress: bool,
    ranks: distributed.Ranks,
) -> TrainingResult:
    run_dir = out_dir / "runs" / name
    checkpoint_path = run_dir / CHECKPOINT_FILE
    set_determinism(seed=config.train.seed)
    torch_device = distributed.rank_device(device, ranks)

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
    check_labels(data_root, [by_id[i] for i in training_ids], [by_id[i] for i in validation])

    network = build_network(config).to(torch_device)
    loss_function = build_training_loss(config.loss, supervised_outputs(config))
    optimizer, scheduler, scaler = build_optimization(config, network, torch_device)
    state = _State()
    checkpoint = distributed.on_main(
        lambda: _read_checkpoint(checkpoint_path) if resume and checkpoint_path.exists() else None, ranks
    )
    if checkpoint is not None:
        state = _restore_checkpoint(checkpoint, checkpoint_path, config, network, optimizer, scheduler, scaler)
        LOG.info("resumed %s at epoch %d", checkpoint_path, state.epoch)
    history = distributed.on_main(lambda: _prepare_outputs(config, out_dir, run_dir, state.epoch), ranks)
    writer = _tensorboard_writer(run_dir, state.epoch) if ranks.is_main else None
    model = distributed.data_parallel(network, torch_device, ranks)
    loader = _training_loader(config, [by_id[i] for i in training_ids], torch_device, ranks)

    weights_path = out_dir / f"{name}.pt"
    validation_cases = [by_id[i] for i in validation]

    def end_epoch(row: dict[str, float], done: _State, started: float) -> tuple[dict[str, float], _State]:
        """Rank 0's part of an epoch: validation when due, the best weights, the logs and the checkpoint."""
        if row["epoch"] % config.train.validate_every == 0 or row["epoch"] == config.train.epochs:
            row["val_dice"] = validate(config, network, validation_cases, torch_device)
            network.train()
            if row["val_dice"] > done.best_dice:
                done = replace(done, best_dice=row["val_dice"], best_epoch=row["epoch"], stale_validations=0)
                _save_atomic(network.state_dict(), weights_path)
            else:
                done = replace(done, stale_validations=done.stale_validations + 1)
        row["seconds"] = time.perf_counter() - started
        _write_metrics(run_dir / METRICS_FILE, [*history, row])
        for key in ("train_loss", "val_dice", "learning_rate"):
            if not math.isnan(row[key]):
                writer.add_scalar(key, row[key], row["epoch"])
        writer.flush()
        _save_checkpoint(checkpoint_path, config, network, optimizer, scheduler, scaler, done)
        return row, done

    epochs = tqdm(range(state.epoch, config.train.epochs), desc=f"training {name}", disable=not progress, unit="epoch")
    for epoch in epochs:
        started = time.perf_counter()
        seed_epoch(loader, epoch_seed(config.train.seed, epoch, ranks.rank))
        train_loss = _train_epoch(config, model, loader, loss_function, optimizer, scaler, torch_device, progress,
                                  epoch)
        scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": distributed.mean_over_ranks(train_loss, ranks, torch_device),
               "val_dice": math.nan, "learning_rate": scheduler.get_last_lr()[0]}
        row, state = distributed.on_main(lambda: end_epoch(row, replace(state, epoch=epoch + 1), started), ranks)
        history.append(row)
        epochs.set_postfix(loss=f"{row['train_loss']:.4f}", best_dice=f"{max(state.best_dice, 0):.3f}")
        if config.train.patience and state.stale_validations >= config.train.patience:
            LOG.info("early stopping at epoch %d: no Dice gain in %d validations", epoch + 1, state.stale_validations)
            break
    if writer is not None:
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


def check_labels(data_root: Path, training: list[CaseImages], validation: list[CaseImages]) -> None:
    """Refuse training cases whose labels are all empty; warn when every validation label is."""
    if not any(_has_lesion(case) for case in training):
        raise DatasetError(
            f"{data_root}: the labels of all {len(training)} training case(s) are empty (no lesion voxel), "
            "so there is nothing to learn; check the 3LABEL/ files"
        )
    if not any(_has_lesion(case) for case in validation):
        LOG.warning("the labels of all %d validation case(s) are empty: validation Dice only rewards empty masks",
                    len(validation))


def _has_lesion(case: CaseImages) -> bool:
    return case.label is not None and bool(sitk.GetArrayViewFromImage(case.label).any())


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The 32-bit seed of one epoch's randomness, from the run's seed, the epoch (0-based) and the rank.

    Rank 0 and a single process use the seed of (seed, epoch) alone, as before distributed
    training existed; every other rank adds its number, so each rank draws its own patches.
    """
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seed_epoch(loader: DataLoader, seed: int) -> None:
    """Set every random state an epoch uses from ``seed``, so any epoch can be replayed exactly.

    torch (dropout), numpy and python; the loader's generator, which shuffles the cases and
    gives each of the epoch's fresh workers its seed (:func:`_seed_worker`); and the
    augmentation transforms, which draw in the main process when there are no workers.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader.generator.manual_seed(seed)
    loader.dataset.transform.set_random_state(seed=seed)


def _seed_worker(worker_id: int) -> None:
    """Loader worker start: seed its transforms and numpy from the seed torch gave it (drawn from the loader's generator)."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    info.dataset.transform.set_random_state(seed=seed)


def intra_op_threads(config: ExperimentConfig, processes: int = 1) -> int:
    """torch's intra-op threads for training: the setting, or this process's share of the usable cores
    (``processes`` training processes on this machine) left by its loader workers."""
    if config.train.torch_threads > 0:
        return config.train.torch_threads
    return max(1, len(os.sched_getaffinity(0)) // processes - config.train.num_workers)


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


def _training_loader(
    config: ExperimentConfig,
    cases: list[CaseImages],
    device: torch.device,
    ranks: distributed.Ranks = distributed.Ranks(),
) -> DataLoader:
    """Patches of the training cases; the deterministic preprocessing is cached in memory.

    Under torchrun the ranks must draw different patches, or the averaged gradient would only
    be one rank's computed N times. Two things see to it. A :class:`DistributedSampler` deals
    each rank its own slice of one shuffled case order, the same order on every rank (seeded by
    ``train.seed`` and the pass over the data, see :func:`_cycle`), so one pass of all ranks
    visits every case once, as one pass of a single process does. And the random patch centres
    and augmentations come from a per-rank seed (:func:`epoch_seed`), so ranks differ even when
    a pass is padded with repeated cases. Both follow from (seed, epoch, rank), so a resumed run
    replays them. Every rank caches all the training cases, since its slice changes with each
    pass.

    Lesion-free cases are expected (the release has some), so MONAI's warning that such a
    case cannot give lesion-centred patches would only repeat itself at every step.
    """
    warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
    data = [case_to_dict(case) for case in cases]
    transform = training_transforms(config)
    cache_rate = 1.0 if config.train.cache_cases else 0.0
    dataset = CacheDataset(data, transform=transform, cache_rate=cache_rate, progress=False, num_workers=0)
    sampler = (
        DistributedSampler(dataset, ranks.world_size, ranks.rank, shuffle=True, seed=config.train.seed)
        if ranks.launched
        else None
    )
    return DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.train.num_workers,
        collate_fn=list_data_collate,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
        worker_init_fn=_seed_worker,
        persistent_workers=False,
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
    epoch: int,
) -> float:
    """One epoch (0-based) of optimisation; returns this process's mean training loss."""
    network.train()
    steps = config.train.steps_per_epoch or len(loader)
    batches = _cycle(loader, first_pass=epoch * math.ceil(steps / len(loader)))
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
    """One optimisation step (mixed precision when the scaler is enabled, clipped gradients); returns the loss.

    ``loss_function`` is :func:`~hieseg.losses.build_training_loss`'s, which scores the network's
    logits (a list of them under deep supervision) in float32.
    """
    images = batch[IMAGE].as_tensor().to(device, non_blocking=True)
    labels = batch[LABEL].as_tensor().to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        logits = network(images)
    loss = loss_function(logits, labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(network.parameters(), config.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def _cycle(loader: DataLoader, first_pass: int = 0) -> Iterator[dict]:
    """Batches forever, reshuffling at each pass, so an epoch may be longer than the dataset.

    Each pass starts fresh workers, seeded from the loader's generator (see :func:`seed_epoch`).
    A :class:`DistributedSampler` shuffles by its pass number instead, counted over the whole
    run from ``first_pass`` (an epoch's first pass), identically on every rank.
    """
    for pass_number in count(first_pass):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(pass_number)
        yield from loader


def build_optimization(
    config: ExperimentConfig, network: torch.nn.Module, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler]:
    """AdamW, the warm-up + cosine schedule and the mixed-precision gradient scaler (active on CUDA with ``train.amp``)."""
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config))
    scaler = torch.amp.GradScaler("cuda", enabled=config.train.amp and device.type == "cuda")
    return optimizer, scheduler, scaler


def _warmup_cosine(config: ExperimentConfig):
    """Linear warm-up for ``warmup_epochs`` then cosine decay to zero at the last epoch."""
    warmup, total = config.train.warmup_epochs, config.train.epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _prepare_outputs(
    config: ExperimentConfig, out_dir: Path, run_dir: Path, epochs_done: int
) -> list[dict[str, float]]:
    """config.json and the run folder, ready for the run; returns the log rows it continues from."""
    _write_config(config, out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return _continued_history(run_dir, epochs_done)


def _write_config(config: ExperimentConfig, out_dir: Path) -> None:
    """Write config.json with this run's provenance, refusing to mix folds trained with different settings.

    The provenance (versions, commit) is not a setting: a resumed run or another fold made by
    other versions or another commit is accepted, and config.json records the latest run's.
    """
    path = out_dir / CONFIG_FILENAME
    if path.exists():
        existing = ExperimentConfig.load(path).settings_dict()
        mine = config.settings_dict()
        for data in (existing, mine):
            data["train"].pop("fold")
            if config.tuning.enabled:
                for key in TUNED_INFERENCE_KEYS:
                    data["inference"].pop(key)
        if existing["network"]["name"] != mine["network"]["name"]:
            raise ConfigError(
                f"{path} is for network {existing['network']['name']}, this run trains {mine['network']['name']}: "
                "weights in one folder are ensembled, so they must be of one network; choose another --out"
            )
        if existing != mine:
            raise ConfigError(
                f"{path} holds a different configuration: weights in one folder are ensembled, "
                "so they must share it; choose another --out"
            )
    write_atomic(path, replace(config, provenance=current_provenance()).save)


def _continued_history(run_dir: Path, epochs_done: int) -> list[dict[str, float]]:
    """The log rows a run continues from: none for a fresh run (old logs are removed), else those of its checkpoint.

    A run killed between writing its logs and its checkpoint has rows past the checkpoint's
    epoch; they are dropped (and TensorBoard purges them, see :func:`_tensorboard_writer`).
    """
    if epochs_done == 0:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
        return []
    history = [row for row in read_history(run_dir / METRICS_FILE) if row["epoch"] <= epochs_done]
    _write_metrics(run_dir / METRICS_FILE, history)
    return history


def _tensorboard_writer(run_dir: Path, epochs_done: int):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=epochs_done + 1 if epochs_done else None)


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    """Write the whole metrics.csv (a few hundred rows at most) atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows({**row, "epoch": int(row["epoch"])} for row in history)
    write_atomic(path, lambda temporary: temporary.write_text(text.getvalue()))


def read_history(path: Path) -> list[dict[str, float]]:
    """Per-epoch rows of a run's metrics.csv as floats (NaN where no validation ran); empty if none."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _save_atomic(payload: object, path: Path) -> None:
    write_atomic(path, lambda temporary: torch.save(payload, temporary))


def _save_checkpoint(path, config, network, optimizer, scheduler, scaler, state: _State) -> None:
    """Everything a resumed run needs; the random states follow from the seed and ``state.epoch``."""
    checkpoint = {
        "config": config.to_dict(),
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "state": vars(state),
    }
    _save_atomic(checkpoint, path)


def _read_checkpoint(path: Path) -> dict:
    """A run's last.ckpt, checked to hold every part a resumed run needs."""
    try:  # the run's own file; checkpoints of earlier versions also hold numpy random states
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # torch raises many types (pickle, zip, EOF) for a damaged file
        checkpoint = None
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        raise ModelError(f"{path}: unreadable checkpoint ({path.stat().st_size} bytes, truncated, corrupt or not "
                         "written by train.py); delete it to train from the start")
    return checkpoint


def _restore_checkpoint(checkpoint: dict, path: Path, config, network, optimizer, scheduler, scaler) -> _State:
    """Put a checkpoint read by :func:`_read_checkpoint` back into the run's objects; returns its progress."""
    if ExperimentConfig.from_dict(checkpoint["config"]).to_dict() != config.to_dict():
        raise ConfigError(f"{path} was written with a different configuration; cannot resume it with this one")
    network.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    return _State(**checkpoint["state"])
