"""nnU-Net v2 (2.8.1) trained and run on a CPU-only install, and trained for a wall-clock budget.

Why not ``nnUNetv2_train`` / ``nnUNetv2_predict``: both find the trainer class by name
(``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``), which imports every
trainer module of nnU-Net; one imports timm, which imports torchvision, and a CUDA build of
torchvision cannot register its operators without CUDA (``RuntimeError: operator torchvision::nms
does not exist``). Here the trainer class is imported directly and built from the plans and
dataset.json as ``nnunetv2.run.run_training.get_trainer_from_args`` builds it; the predictor is
initialised with :meth:`nnUNetPredictor.manual_initialization`, the network built by the trainer
class of the checkpoint (nnU-Net's own or :class:`nnUNetTrainerBudget`) without the lookup.

:class:`nnUNetTrainerBudget` is nnU-Net's default trainer with one change: how long it trains.
nnU-Net's schedule is 1000 epochs of 250 training and 50 validation iterations, with the poly
learning rate decaying to zero at the last epoch. Within a budget of minutes on a CPU that would
be one unfinished epoch, so the budget trainer

* keeps nnU-Net's 5:1 ratio of training to validation iterations but shortens the epoch
  (:data:`ITERATIONS_PER_EPOCH`, nnU-Net's 250 divided by 10, unless told otherwise), so the
  schedule has epochs to decay over;
* after every epoch sets the number of epochs to those done plus the remaining budget divided by
  the mean epoch time so far (rounded: it ends within half an epoch of the budget), and gives the
  poly schedule that number as its length, so the learning rate reaches its last step when the
  budget runs out (the first epoch runs at the initial
  rate either way, so the schedule is nnU-Net's, stretched over the epochs that fit);
* stops when the remaining budget holds less than half an epoch, saving ``checkpoint_final.pth`` as nnU-Net does,
  then writes :data:`BUDGET_RECORD` in the fold folder: budget, epochs, iterations, the time the epochs took,
  and the per-epoch curve nnU-Net logs (pseudo Dice, its EMA, losses, learning rate).

Everything else (plans, loss, sampling, augmentation, deep supervision, final validation, mirroring
at prediction) is nnU-Net's own code, unchanged.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from pathlib import Path
from typing import Any

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from hieseg.errors import ConfigError, DatasetError

PLANS_IDENTIFIER = "nnUNetPlans"
NNUNET_DEFAULT_DEVICE = torch.device("cuda")
"""The default of nnU-Net's trainer signature, kept by the budget trainer's (nnU-Net rebuilds trainers from it)."""
ITERATIONS_PER_EPOCH = 25
"""Training iterations per epoch of the budget trainer: nnU-Net's 250 divided by 10."""
TRAIN_TO_VALIDATION = 5
"""nnU-Net's ratio of training to validation iterations per epoch (250 to 50), kept by the budget trainer."""
BUDGET_RECORD = "hieseg_budget.json"
CHECKPOINT = "checkpoint_final.pth"
CURVE_KEYS = ("mean_fg_dice", "ema_fg_dice", "train_losses", "val_losses", "lrs")
"""The per-epoch values of nnU-Net's logger copied into :data:`BUDGET_RECORD`."""


class nnUNetTrainerBudget(nnUNetTrainer):
    """nnU-Net's default trainer, stopped by a wall-clock budget with the poly schedule fitted to it.

    ``budget_s`` is set after construction (nnU-Net records its ``__init__`` arguments in every
    checkpoint and rebuilds trainers from them, so the signature stays its own).
    """

    budget_s: float = float("inf")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = NNUNET_DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.set_iterations(ITERATIONS_PER_EPOCH)
        self.loop_started = 0.0

    def set_iterations(self, per_epoch: int) -> None:
        """``per_epoch`` training iterations per epoch, and a fifth of them (at least one) for validation."""
        self.num_iterations_per_epoch = per_epoch
        self.num_val_iterations_per_epoch = max(1, math.ceil(per_epoch / TRAIN_TO_VALIDATION))

    def on_train_start(self) -> None:
        super().on_train_start()
        self.loop_started = time.perf_counter()

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # counts the epoch: current_epoch is now the number done
        self.fit_schedule()

    def fit_schedule(self) -> None:
        """Epochs = done + the remaining budget over the mean epoch time, rounded (the run ends within half an
        epoch of the budget, either side); the poly schedule follows. No budget: nnU-Net's own epochs."""
        if math.isinf(self.budget_s):
            return
        elapsed = time.perf_counter() - self.loop_started
        per_epoch = elapsed / self.current_epoch
        fitting = round(max(0.0, self.budget_s - elapsed) / per_epoch)
        self.num_epochs = self.current_epoch + fitting
        self.lr_scheduler.max_steps = max(self.num_epochs, self.current_epoch + 1)

    def run_training(self) -> None:
        """nnU-Net's loop, with the number of epochs read at every epoch (it changes as the budget is spent)."""
        self.on_train_start()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train))
                             for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        loop_s = time.perf_counter() - self.loop_started
        self.on_train_end()
        write_budget_record(self, loop_s)


def write_budget_record(trainer: nnUNetTrainerBudget, loop_s: float) -> None:
    """:data:`BUDGET_RECORD` in the fold folder: what the budget bought, and nnU-Net's per-epoch curve."""
    logged = trainer.logger.get_checkpoint()  # the per-epoch lists of nnU-Net's local logger
    record = {
        "trainer": type(trainer).__name__,
        "configuration": trainer.configuration_name,
        "fold": trainer.fold,
        "budget_s": trainer.budget_s,
        "training_s": round(loop_s, 2),
        "epochs": trainer.current_epoch,
        "iterations_per_epoch": trainer.num_iterations_per_epoch,
        "val_iterations_per_epoch": trainer.num_val_iterations_per_epoch,
        "iterations": trainer.current_epoch * trainer.num_iterations_per_epoch,
        "batch_size": trainer.batch_size,
        "patch_size": list(trainer.configuration_manager.patch_size),
        "device": str(trainer.device),
        "curve": {key: [float(v) for v in logged[key][:trainer.current_epoch]] for key in CURVE_KEYS},
    }
    (Path(trainer.output_folder) / BUDGET_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def select_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda``, with nnU-Net's thread settings for each."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here (use --device cpu or auto)")
    if name == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    else:
        torch.set_num_threads(1)
    return torch.device(name)


def preprocessed_folder(dataset: str) -> Path:
    """``$nnUNet_preprocessed/DatasetNNN_*`` of an id or a name, as nnU-Net resolves it."""
    if not nnUNet_preprocessed:
        raise ConfigError("nnUNet_preprocessed is not set (export nnUNet_raw, nnUNet_preprocessed and nnUNet_results)")
    try:
        name = maybe_convert_to_dataset_name(dataset if dataset.startswith("Dataset") else int(dataset))
    except (RuntimeError, ValueError) as exc:
        raise DatasetError(f"nnU-Net dataset {dataset}: {exc}") from exc
    return Path(nnUNet_preprocessed) / name


def build_trainer(dataset: str, configuration: str, fold: int, device: torch.device,
                  budget_s: float | None = None, iterations: int = ITERATIONS_PER_EPOCH) -> nnUNetTrainer:
    """nnU-Net's trainer, built as ``get_trainer_from_args`` does; with ``budget_s`` the budget trainer, with
    ``iterations`` training iterations per epoch."""
    folder = preprocessed_folder(dataset)
    plans_file = folder / f"{PLANS_IDENTIFIER}.json"
    if not plans_file.is_file():
        raise DatasetError(f"{plans_file}: missing; run nnUNetv2_plan_and_preprocess -d {dataset} first")
    plans = load_json(str(plans_file))
    if configuration not in plans["configurations"]:
        raise ConfigError(f"configuration {configuration!r} is not in {plans_file} "
                          f"(planned: {', '.join(plans['configurations'])})")
    plans["continue_training"] = False
    trainer_class = nnUNetTrainer if budget_s is None else nnUNetTrainerBudget
    trainer = trainer_class(plans=plans, configuration=configuration, fold=fold,
                            dataset_json=load_json(str(folder / "dataset.json")), device=device)
    if budget_s is not None:
        trainer.budget_s = budget_s
        trainer.set_iterations(iterations)
    return trainer


def train(dataset: str, configuration: str, fold: int, device: torch.device,
          budget_s: float | None = None, iterations: int = ITERATIONS_PER_EPOCH) -> Path:
    """Train one fold and run nnU-Net's final validation, as ``nnUNetv2_train DATASET CONFIGURATION FOLD`` does.

    Returns the fold folder (``$nnUNet_results/DatasetNNN_*/<trainer>__nnUNetPlans__<configuration>/fold_<k>``).
    """
    trainer = build_trainer(dataset, configuration, fold, device, budget_s, iterations)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    trainer.run_training()
    trainer.perform_actual_validation(False)
    return Path(trainer.output_folder)


def model_folder(dataset: str, configuration: str, budget: bool) -> Path:
    """``$nnUNet_results/DatasetNNN_*/<trainer>__nnUNetPlans__<configuration>``, where training wrote its folds."""
    if not nnUNet_results:
        raise ConfigError("nnUNet_results is not set (export nnUNet_raw, nnUNet_preprocessed and nnUNet_results)")
    trainer = (nnUNetTrainerBudget if budget else nnUNetTrainer).__name__
    return Path(nnUNet_results) / preprocessed_folder(dataset).name / f"{trainer}__{PLANS_IDENTIFIER}__{configuration}"


def load_predictor(folder: Path, folds: list[int], device: torch.device) -> nnUNetPredictor:
    """nnU-Net's predictor with its defaults (Gaussian sliding window, step 0.5, mirroring), for ``folder``'s folds.

    What ``nnUNetPredictor.initialize_from_trained_model_folder`` does, with the network built by the
    trainer class of the checkpoint taken from this module instead of looked up by name.
    """
    classes = {cls.__name__: cls for cls in (nnUNetTrainer, nnUNetTrainerBudget)}
    checkpoints = [folder / f"fold_{fold}" / CHECKPOINT for fold in folds]
    missing = [str(path) for path in checkpoints if not path.is_file()]
    if missing:
        raise DatasetError(f"no trained nnU-Net fold: {', '.join(missing)} missing")
    loaded = [torch.load(path, map_location="cpu", weights_only=False) for path in checkpoints]
    first = loaded[0]
    if first["trainer_name"] not in classes:
        raise ConfigError(f"{checkpoints[0]}: trained by {first['trainer_name']}; this entry builds the networks of "
                          f"{', '.join(classes)} only (use nnUNetv2_predict for others)")
    dataset_json = load_json(str(folder / "dataset.json"))
    plans_manager = PlansManager(load_json(str(folder / "plans.json")))
    configuration = plans_manager.get_configuration(first["init_args"]["configuration"])
    network = classes[first["trainer_name"]].build_network_architecture(
        plans_manager, configuration,
        determine_num_input_channels(plans_manager, configuration, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        enable_deep_supervision=False)
    parameters = [checkpoint["network_weights"] for checkpoint in loaded]
    network.load_state_dict(parameters[0])
    predictor = nnUNetPredictor(device=device, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration, parameters, dataset_json,
                                    first["trainer_name"], first.get("inference_allowed_mirroring_axes"))
    return predictor


def input_lists(images: Path, ending: str) -> list[list[str]]:
    """Each case's channel files (``<case>_0000<ending>``, ``<case>_0001<ending>``, ...), in case order.

    nnU-Net lists a folder with a fork pool of 12 workers, whose terminate() sends them SIGTERM; workers
    forked from a hie-seg command inherit its SIGTERM handler, raise inside the pool's lock, and the
    pool can hang. Listing the folder here needs no pool.
    """
    cases = sorted(path.name[:-len(ending) - len("_0000")] for path in Path(images).glob(f"*_0000{ending}"))
    if not cases:
        raise DatasetError(f"{images}: no nnU-Net input images (<case>_0000{ending})")
    return [[str(path) for path in sorted(Path(images).glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))]
            for case in cases]


def predict(images: Path, out: Path, folder: Path, folds: list[int], device: torch.device) -> list[Path]:
    """Predict every case of ``images`` (``<case>_0000.mha``, ...) into ``out/<case>.mha`` on the input's grid.

    Sequential (no worker processes): nnU-Net's own multiprocess path gains nothing on a few CPU cores.
    """
    predictor = load_predictor(folder, folds, device)
    ending = predictor.dataset_json["file_ending"]
    cases = input_lists(images, ending)
    Path(out).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(cases, str(out), save_probabilities=False, overwrite=True)
    return sorted(Path(out).glob(f"*{ending}"))


def read_budget_record(fold_folder: Path) -> dict[str, Any]:
    """The :data:`BUDGET_RECORD` of a fold folder trained by :class:`nnUNetTrainerBudget`."""
    path = Path(fold_folder) / BUDGET_RECORD
    if not path.is_file():
        raise DatasetError(f"{path}: missing (was this fold trained with a budget?)")
    return json.loads(path.read_text())
