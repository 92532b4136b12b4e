"""Training one model: the :class:`Trainer` and its seams, validation in the native grid, best weights kept.

A run goes through named steps that a subclass (or a test) may override, as nnU-Net's trainer does:

* :meth:`Trainer.on_train_start`: the split, the network grid, the network, its loss and optimisation,
  the checkpoint to resume (:mod:`hieseg.training.checkpoint`), the output folder
  (:mod:`hieseg.training.folder`) and the patch loader (:mod:`hieseg.training.data`);
* :meth:`Trainer.train_epoch` and :meth:`Trainer.train_step`: one epoch of optimisation steps;
* :meth:`Trainer.on_epoch_end`: under a wall-clock budget (``train.budget_min``) the epochs that fit it
  (:meth:`Trainer.replan`), which the learning-rate schedule follows; on rank 0, :meth:`Trainer.validate` when due, the best weights,
  the logs (:mod:`hieseg.training.logs`) and :meth:`Trainer.save_checkpoint`;
* :meth:`Trainer.on_train_end`.

Resuming continues bit for bit as if the run had never stopped: every random state of an epoch
is derived from (seed, epoch) when the epoch starts, so the epoch number saved in the checkpoint
restores them all. Every file is replaced atomically after each epoch, so a run killed at any
moment (SIGTERM, Ctrl-C) leaves a consistent ``last.ckpt``; a resumed run drops the log rows past
it. A fresh run starts fresh logs. A run whose training loss or weights stop being finite (it diverged)
stops there with a :class:`~hieseg.errors.TrainingError`, saving nothing of the diverged network: the last
checkpoint and the best weights stay those of its last good epoch.

Under ``torchrun`` (:mod:`hieseg.training.distributed`) every rank runs a Trainer with the same
arguments and trains the same network under :class:`~torch.nn.parallel.DistributedDataParallel`,
which averages the gradients, so the ranks' weights stay identical. Rank 0 alone checks and
writes the outputs (the same files as a single process), validates and decides on the best
weights and on early stopping; the other ranks receive its decisions (and, on resume, its
checkpoint) at the end of each epoch, so all stop together. See
:func:`hieseg.training.data.training_loader` for how the ranks draw different patches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.utils import set_determinism
from tqdm.auto import tqdm

from hieseg.config.settings import ExperimentConfig
from hieseg.data.burden import lesion_burden
from hieseg.data.spacing import with_data_spacing
from hieseg.data.splits import train_validation_split
from hieseg.errors import TrainingError
from hieseg.evaluation.metrics import dice_score
from hieseg.inference.predictor import Predictor
from hieseg.io.layout import CaseImages
from hieseg.model.losses import build_training_loss
from hieseg.model.network import build_network, supervised_outputs
from hieseg.model.weights import first_non_finite
from hieseg.training import distributed
from hieseg.training.checkpoint import (
    CHECKPOINT_FILE,
    TrainingState,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_weights,
)
from hieseg.training.data import (
    check_labels,
    epoch_seed,
    seed_epoch,
    steps_of_epoch,
    training_loader,
)
from hieseg.training.distributed import Ranks
from hieseg.training.folder import check_output, network_seed, prepare_outputs, run_dir, run_name
from hieseg.training.logs import (
    METRICS_FILE,
    log_scalars,
    tensorboard_writer,
    write_metrics,
)
from hieseg.training.optimization import (
    batches_per_pass,
    build_optimization,
    describe_workers,
    intra_op_threads,
    loader_workers,
    network_budget_min,
    optimisation_step,
    planned_epochs,
    torch_threads,
)

LOG = logging.getLogger(__name__)
DIVERGENCE_ADVICE = "lower train.learning_rate and train again into a new --out"
"""What a diverged run's message advises: its config.json holds the learning rate, so the same --out refuses
another one."""


@dataclass
class TrainingResult:
    """What a finished (or early-stopped) training run achieved and where it wrote it."""

    weights: Path
    best_dice: float
    best_epoch: int
    epochs_run: int
    training_ids: list[str]
    validation_ids: list[str]
    config: ExperimentConfig
    """The configuration written to config.json: the network grid resolved, this run's provenance."""
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains one model (one fold, or one explicit validation list) on already loaded cases."""

    def __init__(
        self,
        config: ExperimentConfig,
        cases: Sequence[CaseImages],
        out_dir: Path,
        *,
        device: torch.device,
        ranks: Ranks | None = None,
        validation_ids: list[str] | None = None,
        network: int = 0,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        ranks = distributed.current() if ranks is None else ranks
        self.config = config
        self.cases = {case.files.case_id: case for case in cases}
        self.out_dir = Path(out_dir)
        self.device = device
        self.ranks = ranks
        self.requested_validation = validation_ids
        self.resume = resume
        self.progress = progress and ranks.is_main
        self.name = run_name(config, validation_ids, network)
        self.seed = network_seed(config, network)
        """What this network's initialisation, patches and augmentation are drawn with (``train.networks_per_fold``);
        the split is ``train.seed``'s."""
        self.run_dir = run_dir(self.out_dir, self.name)
        self.checkpoint_path = self.run_dir / CHECKPOINT_FILE
        self.weights_path = self.out_dir / f"{self.name}.pt"
        self.workers = loader_workers(config, device, ranks.local_world_size,
                                      batches_per_pass(config, len(self.cases), ranks.world_size, ranks.launched))
        """Loader workers (``train.num_workers``; auto: from the cores, and no more than the batches of a pass over
        all the cases given)."""
        self.workers_recorded = False
        """Whether ``workers`` is the number a resumed checkpoint recorded (``train.num_workers`` auto)."""
        self.state = TrainingState(loader_workers=self.workers)
        self.history: list[dict[str, float]] = []

    def fit(self) -> TrainingResult:
        """Train from the start or the checkpoint to the last epoch (or early stopping); the run's result."""
        with torch_threads(intra_op_threads(self.config, self.ranks.local_world_size, self.workers)):
            self.on_train_start()
            epochs = tqdm(initial=self.state.epoch, total=self.planned, desc=f"training {self.name}",
                          disable=not self.progress, unit="epoch")
            while self.state.epoch < self.planned:
                epoch = self.state.epoch
                started = time.perf_counter()
                seed_epoch(self.loader, epoch_seed(self.seed, epoch, self.ranks.rank))
                train_loss = self.train_epoch(epoch)
                self.on_epoch_end(epoch, train_loss, started)
                epochs.total = self.planned
                epochs.update()
                epochs.set_postfix(loss=f"{self.history[-1]['train_loss']:.4f}",
                                   best_dice=f"{max(self.state.best_dice, 0):.3f}")
                if self.should_stop():
                    LOG.info("early stopping at epoch %d: no Dice gain in %d validations", epoch + 1,
                             self.state.stale_validations)
                    break
            epochs.close()
            self.on_train_end()
        return TrainingResult(
            weights=self.weights_path,
            best_dice=self.state.best_dice,
            best_epoch=self.state.best_epoch,
            epochs_run=self.state.epoch,
            training_ids=self.training_ids,
            validation_ids=self.validation_ids,
            config=self.written_config,
            history=self.history,
        )

    def on_train_start(self) -> None:
        """Everything an epoch needs, in an order that keeps every random draw of a run reproducible."""
        distributed.on_main(lambda: check_output(self.out_dir, self.name, self.resume), self.ranks)
        set_determinism(seed=self.seed)
        cases = list(self.cases.values())
        self.config = with_data_spacing(self.config, [case.adc.GetSpacing() for case in cases])
        LOG.info("network grid %s mm", " x ".join(f"{s:g}" for s in self.config.preprocess.target_spacing))
        self.training_ids, self.validation_ids = train_validation_split(
            list(self.cases),
            [lesion_burden(case) for case in cases],
            folds=self.config.train.folds,
            fold=self.config.train.fold,
            seed=self.config.train.seed,
            validation_ids=self.requested_validation,
        )
        LOG.info("%d training and %d validation cases", len(self.training_ids), len(self.validation_ids))
        check_labels([self.cases[i] for i in self.training_ids], [self.cases[i] for i in self.validation_ids])
        self.network = build_network(self.config).to(self.device)
        self.loss_function = build_training_loss(self.config.loss, supervised_outputs(self.config))
        self.optimization = build_optimization(self.config, self.network, self.device)
        recorded = self.restore()
        self.written_config, self.history = distributed.on_main(
            lambda: prepare_outputs(self.config, self.out_dir, self.name, self.state.epoch, recorded), self.ranks)
        self.writer = tensorboard_writer(self.run_dir, self.history) if self.ranks.is_main else None
        self.model = distributed.data_parallel(self.network, self.device, self.ranks)
        LOG.info("%s", describe_workers(self.config, self.workers, self.device, self.ranks.local_world_size,
                                        self.workers_recorded))
        drawing = replace(self.config, train=replace(self.config.train, seed=self.seed))
        self.loader = training_loader(drawing, [self.cases[i] for i in self.training_ids], self.device,
                                      self.ranks, self.workers)

    def restore(self) -> list[dict[str, float]] | None:
        """Continue from the run's checkpoint when resuming and rank 0 finds one (every rank gets its content);
        returns the log rows it holds (``None`` for a fresh run, or a checkpoint of a version that kept none)."""
        if not self.resume:
            return None
        checkpoint = distributed.on_main(
            lambda: read_checkpoint(self.checkpoint_path) if self.checkpoint_path.exists() else None, self.ranks)
        if checkpoint is None:
            return None
        self.adopt_recorded_workers(checkpoint)
        self.state = restore_checkpoint(checkpoint, self.checkpoint_path, self.config, self.network, self.optimization)
        self.follow_plan()
        if self.config.train.num_workers is None and self.state.loader_workers is not None:
            self.workers, self.workers_recorded = self.state.loader_workers, True
        self.state = replace(self.state, loader_workers=self.workers)
        LOG.info("resumed %s at epoch %d", self.checkpoint_path, self.state.epoch)
        return checkpoint.get("history")

    def adopt_recorded_workers(self, checkpoint: dict) -> None:
        """With ``train.num_workers`` auto, resume a run whose checkpoint has an explicit number (every run
        of an earlier version, whose default was 2) with that number: the same patches, the same config.json."""
        section = checkpoint["config"].get("train") if isinstance(checkpoint["config"], dict) else None
        recorded = section.get("num_workers") if isinstance(section, dict) else None
        if self.config.train.num_workers is None and isinstance(recorded, int) and not isinstance(recorded, bool):
            self.config = replace(self.config, train=replace(self.config.train, num_workers=recorded))
            self.workers = recorded

    @property
    def planned(self) -> int:
        """The epochs this run trains: ``train.epochs``, or as many as its time budget allows so far."""
        return self.state.planned_epochs or self.config.train.epochs

    def follow_plan(self) -> None:
        """Make the learning-rate schedule end with the planned epochs."""
        schedule = self.optimization.scheduler.lr_lambdas[0]
        schedule.warmup, schedule.total = self.config.train.warmup_epochs, self.planned

    def replan(self, done: TrainingState, seconds: float) -> TrainingState:
        """After an epoch that took ``seconds`` (before any validation): with ``train.budget_min``, the epochs that
        fit the budget (:func:`~hieseg.training.optimization.planned_epochs`), logged when they change."""
        if not self.config.train.budget_min:
            return done
        spent = [row["seconds"] for row in self.history] + [seconds]
        planned = planned_epochs(self.config, done.epoch, spent)
        if planned != self.planned:
            LOG.info("time budget %g min: %.1f min spent in %d epoch(s), %d epoch(s) planned",
                     network_budget_min(self.config), sum(spent) / 60, done.epoch, planned)
        return replace(done, planned_epochs=planned)

    def train_epoch(self, epoch: int) -> float:
        """One epoch (0-based) of optimisation; returns this process's mean training loss."""
        self.model.train()
        steps, batches = steps_of_epoch(self.config, self.loader, epoch)
        losses = []
        for step in tqdm(range(steps), desc="steps", leave=False, disable=not self.progress, unit="step"):
            losses.append(self.train_step(next(batches)))
            self.check_loss(losses[-1], epoch, step)
        return float(np.mean(losses))

    def check_loss(self, loss: float, epoch: int, step: int) -> None:
        """Stop the run at the first training loss that is not finite, before anything of the diverged network
        is saved. The check is on the mean over the ranks, so under torchrun every rank stops at the same step."""
        mean = distributed.mean_over_ranks(loss, self.ranks, self.device)
        if not math.isfinite(mean):
            raise TrainingError(self.divergence(f"at epoch {epoch + 1}, step {step + 1}", f"training loss {mean}"))

    def divergence(self, where: str, what: str) -> str:
        """The message stopping a diverged run: ``where`` and ``what`` was not finite, the learning rate, what is
        kept, and what to do."""
        rate = self.optimization.optimizer.param_groups[0]["lr"]
        cause = f"training diverged {where} ({what}, learning rate {rate:g})"
        if self.checkpoint_path.exists():
            return (f"{self.checkpoint_path}: {cause}; this checkpoint of epoch {self.state.epoch} and the best "
                    f"weights so far are kept; {DIVERGENCE_ADVICE}")
        return f"{self.run_dir}: {cause} before its first checkpoint; {DIVERGENCE_ADVICE}"

    def train_step(self, batch: dict) -> float:
        """One optimisation step on a batch of patches; returns its loss."""
        return optimisation_step(self.config, self.model, self.loss_function, self.optimization, batch, self.device)

    def on_epoch_end(self, epoch: int, train_loss: float, started: float) -> None:
        """The plan (rank 0's, under a time budget) and the schedule's step, then rank 0's part of the epoch, whose
        outcome every rank takes."""
        done = distributed.on_main(
            lambda: self.replan(replace(self.state, epoch=epoch + 1), time.perf_counter() - started), self.ranks)
        self.state = replace(self.state, planned_epochs=done.planned_epochs)
        self.follow_plan()
        self.optimization.scheduler.step()
        row = {"epoch": epoch + 1,
               "train_loss": distributed.mean_over_ranks(train_loss, self.ranks, self.device),
               "val_dice": math.nan, "learning_rate": self.optimization.scheduler.get_last_lr()[0]}
        row, self.state = distributed.on_main(lambda: self._end_epoch_on_main(row, done, started), self.ranks)
        self.history.append(row)

    def _end_epoch_on_main(self, row: dict[str, float], done: TrainingState, started: float
                           ) -> tuple[dict[str, float], TrainingState]:
        """Validation when due, the best weights, the logs and the checkpoint: none of them once the weights are
        no longer finite."""
        bad = first_non_finite(self.network.state_dict().items())
        if bad is not None:
            raise TrainingError(self.divergence(f"at epoch {row['epoch']}", f"tensor {bad} holds NaN or infinite "
                                                f"values, training loss {row['train_loss']:g}"))
        if row["epoch"] % self.config.train.validate_every == 0 or row["epoch"] == self.planned:
            row["val_dice"] = self.validate()
            self.network.train()
            if row["val_dice"] > done.best_dice:
                done = replace(done, best_dice=row["val_dice"], best_epoch=row["epoch"], stale_validations=0)
                save_weights(self.network.state_dict(), self.weights_path)
            else:
                done = replace(done, stale_validations=done.stale_validations + 1)
        row["seconds"] = time.perf_counter() - started
        self.save_checkpoint(done, [*self.history, row])
        write_metrics(self.run_dir / METRICS_FILE, [*self.history, row])
        log_scalars(self.writer, row)
        return row, done

    def validate(self) -> float:
        """Mean Dice of the validation cases' masks, in each case's native grid."""
        return validate(self.config, self.network, [self.cases[i] for i in self.validation_ids], self.device)

    def save_checkpoint(self, state: TrainingState, history: list[dict[str, float]]) -> None:
        """Everything a resumed run needs, the log rows included: it is written before the logs, so they are never
        ahead of it, and a resumed run rewrites them from it."""
        save_checkpoint(self.checkpoint_path, self.config, self.network, self.optimization, state, history)

    def should_stop(self) -> bool:
        """Early stopping: ``train.patience`` validations in a row without a better Dice (0: never)."""
        return bool(self.config.train.patience) and self.state.stale_validations >= self.config.train.patience

    def on_train_end(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(config: ExperimentConfig, cases: Sequence[CaseImages], out_dir: Path, **options: Any) -> TrainingResult:
    """Train one model and keep its best weights by validation Dice in the native grid: ``Trainer(...).fit()``
    with the :class:`Trainer`'s keyword options (``device`` is required).

    ``out_dir`` must be writable and, unless ``resume``, hold no checkpoint of this run; both
    are checked before any work. Under torchrun every rank calls this alike and gets the same
    result; only rank 0 shows progress. ``ranks``: this process's place among torchrun's (default:
    as the environment says, refused without a running process group).
    """
    return Trainer(config, cases, out_dir, **options).fit()


def validate(
    config: ExperimentConfig, network: torch.nn.Module, cases: list[CaseImages], device: torch.device
) -> float:
    """Mean Dice of the thresholded network prediction (never refined: the refinement is fitted after
    training) against the label, in each case's native grid."""
    network.eval()
    predictor = Predictor(config, [network], device, replace(config.inference, refine=False))
    scores = [dice_score(predictor.mask(case), sitk.GetArrayViewFromImage(case.label).transpose(2, 1, 0))
              for case in cases]
    return float(np.mean(scores))
