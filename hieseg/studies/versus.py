"""hie-seg's recipe against nnU-Net v2 on one budget: the recipe's epochs, and the report ``versus.md`` / ``versus.json``.

``scripts/versus_nnunet.sh OUT`` trains the project's recipe (``scripts/train_demo_model.sh``'s
train.py settings, fold 0 of 5) and nnU-Net v2 (2d and 3d_fullres, fold 0 of the same
``splits_final.json``) for one wall-clock budget each, predicts the evaluation cases with each and
scores them with ``python -m hieseg.compare`` beside both Z_ADC baselines. This module holds the
report it ends with, and the minutes of a train.py run's epochs (the budget, when the recipe's own schedule
sets it; with ``BUDGET_MIN`` the recipe keeps the budget itself, ``train.budget_min``):

* :func:`write_report`: the folder's records gathered (:data:`Layout`) into ``versus.json``
  (every score, per case and overall, each system's training time, steps and validation curve,
  nnU-Net's planned configurations, and whether the two splits are the same cases) and
  ``versus.md`` (the tables a reader needs).
* :func:`reuse_mismatches`: whether an earlier run's nnU-Net arm may stand beside a new recipe
  (``NNUNET_FROM``): the same training and evaluation cases, budget, split and device.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hieseg.errors import DatasetError
from hieseg.evaluation.compare import COMPARISON_CSV, COMPARISON_JSON
from hieseg.interop.nnunet import SPLITS_FILE
from hieseg.io.tables import markdown_table, read_csv
from hieseg.training.folder import fold_runs
from hieseg.training.logs import METRICS_FILE, read_history

RECIPE = "recipe"
NNUNET_CONFIGURATIONS = ("2d", "3d_fullres")
CASE_COLUMNS = ("dice", "masd_mm", "nsd", "truth_lesions", "found_lesions", "pred_lesions", "true_pred_lesions")
"""Per-case columns of versus.json and versus.md: the challenge metrics and the lesion-wise counts."""
VERSUS_JSON = "versus.json"
VERSUS_MD = "versus.md"
BUDGET_RECORD = "hieseg_budget.json"
"""Written by ``hieseg.interop.nnunet_training.nnUNetTrainerBudget`` in its fold folder (named here, not imported:
that module needs nnunetv2, the report does not)."""


def nnunet_name(configuration: str) -> str:
    """The method name of an nnU-Net configuration in the comparison: ``nnunet_3d_fullres``."""
    return f"nnunet_{configuration}"


@dataclass(frozen=True)
class Layout:
    """Where ``scripts/versus_nnunet.sh OUT`` puts everything under OUT."""

    out: Path

    @property
    def recipe(self) -> Path:
        return self.out / "recipe"

    @property
    def nnunet_results(self) -> Path:
        return self.out / "nnunet" / "results"

    @property
    def nnunet_preprocessed(self) -> Path:
        return self.out / "nnunet" / "preprocessed"

    @property
    def comparison(self) -> Path:
        return self.out / "compare"

    @property
    def walls(self) -> Path:
        """One file per system, ``<name>.s``: the seconds its whole training process took (start-up included)."""
        return self.out / "wall"

    def recipe_runs(self, fold: int) -> list[Path]:
        return runs_of_fold(self.recipe, fold)

    def nnunet_fold(self, configuration: str, fold: int) -> Path:
        found = sorted(self.nnunet_results.glob(f"Dataset*/nnUNetTrainerBudget__nnUNetPlans__{configuration}/fold_{fold}"))
        if not found:
            raise DatasetError(f"{self.nnunet_results}: no nnUNetTrainerBudget fold {fold} of {configuration}")
        return found[0]

    def splits(self) -> Path:
        found = sorted(self.nnunet_preprocessed.glob(f"Dataset*/{SPLITS_FILE}"))
        if not found:
            raise DatasetError(f"{self.nnunet_preprocessed}: no {SPLITS_FILE}")
        return found[0]


# ---------------------------------------------------------------------------------------------- the recipe's budget


def runs_of_fold(weights: Path, fold: int) -> list[Path]:
    """The run folder of each network that train.py trained on ``fold`` into ``weights``
    (``train.networks_per_fold``)."""
    runs = fold_runs(weights, fold)
    if not runs:
        raise DatasetError(f"{weights}: no run of fold {fold} under runs/")
    return runs


def epoch_seconds(run: Path) -> list[float]:
    """The seconds of each epoch of a train.py run, from its metrics.csv (``seconds``: training and validation)."""
    history = read_history(Path(run) / METRICS_FILE)
    if not history:
        raise DatasetError(f"{run}: no {METRICS_FILE} rows to time an epoch from")
    return [row["seconds"] for row in history]


def training_seconds(runs: Sequence[Path]) -> float:
    """What the budget measures of train.py runs (a fold's networks): the time their epochs took."""
    return sum(sum(epoch_seconds(run)) for run in runs)


# ------------------------------------------------------------------------------------- an earlier run's nnU-Net arm

REUSE_KEYS = ("train", "eval", "budget_s", "folds", "seed", "device")
"""The settings an earlier run must share for its nnU-Net trainings and predictions to be compared with a new
recipe: the same cases, the same budget, the same split and the same device."""
PATH_KEYS = ("train", "eval")


def reuse_mismatches(earlier: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """Each of :data:`REUSE_KEYS` on which the earlier run's versus.json settings and this run's differ, as
    ``key: earlier != now``; the data folders are compared as resolved paths (the script runs from the repo)."""
    def same(key: str) -> bool:
        if key in PATH_KEYS:
            return Path(str(earlier.get(key))).resolve() == Path(str(settings[key])).resolve()
        return earlier.get(key) == settings[key]

    return [f"{key}: {earlier.get(key)!r} != {settings[key]!r}" for key in REUSE_KEYS if not same(key)]


def check_reusable(earlier_out: Path, settings: Mapping[str, Any]) -> None:
    """Raise unless ``earlier_out`` holds a finished run (its versus.json) whose settings match ``settings``."""
    report = Path(earlier_out) / VERSUS_JSON
    if not report.is_file():
        raise DatasetError(f"{earlier_out}: no {VERSUS_JSON}, so no finished scripts/versus_nnunet.sh run to reuse")
    mismatches = reuse_mismatches(json.loads(report.read_text())["settings"], settings)
    if mismatches:
        raise DatasetError(f"{report}: its nnU-Net arm ran under other settings, so it cannot stand beside this "
                           f"recipe: {'; '.join(mismatches)}")


# ----------------------------------------------------------------------------------------------------- the records


def _finite_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def recipe_record(layout: Layout, fold: int, wall_s: float | None) -> dict[str, Any]:
    """The recipe's training: time (the sum of its networks' epochs), its budget and most epochs per network
    (train.budget_min, train.epochs), its networks, the epochs and steps they ran, and each one's validation curve
    from its metrics.csv."""
    runs = layout.recipe_runs(fold)
    histories = [read_history(run / METRICS_FILE) for run in runs]
    config = json.loads((layout.recipe / "config.json").read_text())
    steps_per_epoch = int(config["train"]["steps_per_epoch"])
    epochs = sum(len(history) for history in histories)
    return {
        "training_s": round(training_seconds(runs), 2),
        "wall_s": wall_s,
        "budget_min": float(config["train"].get("budget_min", 0.0)),
        "most_epochs": int(config["train"]["epochs"]),
        "networks": len(runs),
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "steps": epochs * steps_per_epoch,
        "batch_size": config["train"]["batch_size"],
        "patch_size": config["train"]["patch_size"],
        "curve": [{"network": network, "epoch": int(row["epoch"]), "val_dice": _finite_or_none(row["val_dice"]),
                   "train_loss": _finite_or_none(row["train_loss"]), "learning_rate": row["learning_rate"]}
                  for network, history in enumerate(histories) for row in history],
    }


def nnunet_plan(plans: Mapping[str, Any], configuration: str) -> dict[str, Any]:
    """What nnU-Net planned for a configuration: patch, batch, spacing, stages, network class."""
    planned = plans["configurations"][configuration]
    architecture = planned.get("architecture", {})
    return {
        "patch_size": planned["patch_size"],
        "batch_size": planned["batch_size"],
        "spacing": planned["spacing"],
        "stages": architecture.get("arch_kwargs", {}).get("n_stages"),
        "network": architecture.get("network_class_name"),
    }


def nnunet_record(layout: Layout, configuration: str, fold: int, wall_s: float | None) -> dict[str, Any]:
    """One nnU-Net configuration's training, from its budget record, and its planned configuration."""
    folder = layout.nnunet_fold(configuration, fold)
    record = json.loads((folder / BUDGET_RECORD).read_text())
    plans = json.loads((folder.parent / "plans.json").read_text())
    curve = record["curve"]
    return {
        "training_s": record["training_s"],
        "wall_s": wall_s,
        "budget_s": record["budget_s"],
        "epochs": record["epochs"],
        "iterations_per_epoch": record["iterations_per_epoch"],
        "steps": record["iterations"],
        "plan": nnunet_plan(plans, configuration),
        "curve": [{"epoch": epoch, "pseudo_dice": curve["mean_fg_dice"][epoch], "ema_dice": curve["ema_fg_dice"][epoch],
                   "train_loss": curve["train_losses"][epoch], "val_loss": curve["val_losses"][epoch],
                   "learning_rate": curve["lrs"][epoch]} for epoch in range(record["epochs"])],
    }


def split_check(splits_file: Path, tuning_file: Path, fold: int) -> dict[str, Any]:
    """Whether train.py validated fold ``fold`` on the cases of splits_final.json's fold (tuning.json names them)."""
    nnunet_val = sorted(json.loads(Path(splits_file).read_text())[fold]["val"])
    recipe_val = sorted(json.loads(Path(tuning_file).read_text())["case_ids"])
    return {"fold": fold, "nnunet_val": nnunet_val, "recipe_val": recipe_val, "equal": nnunet_val == recipe_val}


def wall_seconds(layout: Layout, name: str) -> float | None:
    path = layout.walls / f"{name}.s"
    return float(path.read_text()) if path.is_file() else None


def case_scores(comparison: Path) -> dict[str, list[dict[str, Any]]]:
    """Per method, the per-case rows of comparison.csv restricted to :data:`CASE_COLUMNS`."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in read_csv(Path(comparison) / COMPARISON_CSV):
        values = {key: _number(row[key]) for key in CASE_COLUMNS}
        rows.setdefault(row["method"], []).append({"case": row["case_id"], **values})
    return rows


def _number(text: str) -> float | int | None:
    if text in ("", "None", "nan"):
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def overall_scores(comparison: Path) -> dict[str, dict[str, Any]]:
    """Per method, comparison.json's overall statistics (Dice, MASD, NSD, lesion-wise)."""
    methods = json.loads((Path(comparison) / COMPARISON_JSON).read_text())["methods"]
    return {name: method["overall"] for name, method in methods.items()}


# ------------------------------------------------------------------------------------------------------ the report


def gather(layout: Layout, settings: Mapping[str, Any], fold: int) -> dict[str, Any]:
    """versus.json's content."""
    systems = {RECIPE: recipe_record(layout, fold, wall_seconds(layout, RECIPE))}
    for configuration in NNUNET_CONFIGURATIONS:
        name = nnunet_name(configuration)
        systems[name] = nnunet_record(layout, configuration, fold, wall_seconds(layout, name))
    return {
        "settings": dict(settings),
        "split": split_check(layout.splits(), layout.recipe / "tuning.json", fold),
        "systems": systems,
        "overall": overall_scores(layout.comparison),
        "cases": case_scores(layout.comparison),
    }


def write_report(layout: Layout, settings: Mapping[str, Any], fold: int = 0) -> dict[str, Any]:
    """Write ``versus.json`` and ``versus.md`` into the layout's folder; returns versus.json's content."""
    report = gather(layout, settings, fold)
    (layout.out / VERSUS_JSON).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (layout.out / VERSUS_MD).write_text(render_markdown(report))
    return report


def _shown(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _statistic(overall: Mapping[str, Any], metric: str, digits: int) -> str:
    stats = overall.get(metric) or {}
    return f"{_shown(stats.get('mean'), digits)} ± {_shown(stats.get('std'), digits)}"


def training_table(systems: Mapping[str, Mapping[str, Any]], budget_s: float) -> str:
    rows = [[name, _shown(s["training_s"] / 60, 1), f"{100 * s['training_s'] / budget_s:.0f} %",
             _shown(s["wall_s"] / 60 if s["wall_s"] else None, 1), str(s["epochs"]), str(s["steps"]),
             str(s.get("batch_size", s.get("plan", {}).get("batch_size"))),
             " × ".join(map(str, s.get("patch_size") or s["plan"]["patch_size"]))]
            for name, s in systems.items()]
    return "\n".join(markdown_table(
        ["system", "training min", "of the budget", "process min", "epochs", "steps", "batch", "patch"], rows))


def overall_table(overall: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, stats in overall.items():
        lesions = stats.get("lesion_wise") or {}
        rows.append([name, _statistic(stats, "dice", 3), _statistic(stats, "masd_mm", 1), _statistic(stats, "nsd", 3),
                     _lesion_rate(lesions, "found_lesions", "truth_lesions"),
                     _lesion_rate(lesions, "true_pred_lesions", "pred_lesions")])
    return "\n".join(markdown_table(["method", "Dice", "MASD mm (capped)", "NSD", "lesions found", "predicted lesions true"],
                          rows))


def _lesion_rate(lesions: Mapping[str, Any], part: str, whole: str) -> str:
    if part not in lesions or whole not in lesions:
        return "–"
    return f"{lesions[part]}/{lesions[whole]}"


def cases_table(cases: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    rows = [[method, row["case"], _shown(row["dice"]), _shown(row["masd_mm"], 1), _shown(row["nsd"]),
             f"{_shown(row['found_lesions'])}/{_shown(row['truth_lesions'])}",
             f"{_shown(row['true_pred_lesions'])}/{_shown(row['pred_lesions'])}"]
            for method, method_rows in cases.items() for row in method_rows]
    return "\n".join(markdown_table(["method", "case", "Dice", "MASD mm", "NSD", "lesions found", "predicted true"], rows))


def curve_table(systems: Mapping[str, Mapping[str, Any]]) -> str:
    """Each system's validation curve: the recipe's validation Dice, nnU-Net's pseudo Dice and its EMA, per epoch."""
    rows = []
    for name, system in systems.items():
        for point in system["curve"]:
            dice = point.get("val_dice", point.get("pseudo_dice"))
            if dice is not None:
                shown_name = f"{name} network {point['network']}" if point.get("network") else name
                rows.append([shown_name, str(point["epoch"]), _shown(dice), _shown(point.get("ema_dice")),
                             _shown(point["learning_rate"], 5)])
    return "\n".join(markdown_table(["system", "epoch", "validation Dice", "EMA", "learning rate"], rows))


def render_markdown(report: Mapping[str, Any]) -> str:
    settings, split = report["settings"], report["split"]
    same = "the same cases" if split["equal"] else "DIFFERENT cases"
    return "\n\n".join([
        "# hie-seg's recipe against nnU-Net v2, one budget",
        (f"Training {settings['train']} (fold {split['fold']} of {settings['folds']}, seed {settings['seed']}); "
         f"evaluation {settings['eval']}; budget {settings['budget_s'] / 60:.1f} min per system "
         f"({settings['budget_source']}); device {settings['device']}. Validation split: {same} "
         f"({len(split['recipe_val'])} train.py, {len(split['nnunet_val'])} splits_final.json)."
         + (f" nnU-Net's trainings and predictions are those of {settings['nnunet_from']} (NNUNET_FROM)."
            if settings.get("nnunet_from") else "")),
        "## Overall (evaluation cases)", overall_table(report["overall"]),
        "## Training", training_table(report["systems"], settings["budget_s"]),
        ("Training min: the epochs' time (the budget applies to it); process min: the whole training "
         "command, start-up, data loading, nnU-Net's final validation and the recipe's tuning included."),
        "## Validation curves", curve_table(report["systems"]),
        "## Per case", cases_table(report["cases"]),
    ]) + "\n"
