"""train.budget_min: the epochs are refitted to a wall-clock budget and the schedule ends with them."""

import math
from pathlib import Path

import pytest
import torch
from conftest import run_interrupted, tiny_config

from hieseg.errors import ConfigError
from hieseg.training import trainer as trainer_module
from hieseg.training.optimization import planned_epochs
from hieseg.training.trainer import train

CPU = torch.device("cpu")


def test_without_a_budget_the_plan_is_the_configured_epochs() -> None:
    assert planned_epochs(tiny_config(**{"train.epochs": 7}), 2, [10.0, 10.0]) == 7


@pytest.mark.parametrize(("done", "seconds", "expected"), [
    (1, [10.0], 6),                      # 50 s left at 10 s an epoch
    (2, [20.0, 10.0], 4),                # 30 s left at 15 s
    (4, [20.0, 20.0, 20.0, 10.0], 4),    # overspent: stop now
    (1, [1.0], 8),                       # would fit 59 more: capped by train.epochs
])
def test_the_plan_is_done_plus_the_remaining_budget_over_the_mean_epoch(done: int, seconds: list, expected: int) -> None:
    config = tiny_config(**{"train.epochs": 8, "train.budget_min": 1.0})
    assert planned_epochs(config, done, seconds) == expected


def test_a_folds_networks_share_its_budget_equally() -> None:
    config = tiny_config(**{"train.epochs": 8, "train.budget_min": 1.0, "train.networks_per_fold": 2})
    assert planned_epochs(config, 1, [10.0]) == 3  # 20 s left of a network's 30 s, at 10 s an epoch


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.budget_min"):
        tiny_config(**{"train.budget_min": -1.0})


class TenSecondTicks:
    """A clock that advances 10 s at every reading: an epoch reads it three times (start, plan, log row)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 10.0
        return self.now


def test_a_budgeted_run_stops_at_the_budget_with_its_schedule_ended_and_a_last_validation(
        small_cases: list, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trainer_module, "time", TenSecondTicks())
    config = tiny_config(**{"train.epochs": 10, "train.steps_per_epoch": 1, "train.budget_min": 1.0,
                            "train.validate_every": 3, "train.warmup_epochs": 1})
    result = train(config, small_cases, tmp_path, device=CPU, progress=False)

    assert result.epochs_run == 4
    rows = result.history
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert math.isnan(rows[1]["val_dice"]) and not math.isnan(rows[2]["val_dice"])
    assert not math.isnan(rows[3]["val_dice"]), "the budget's last epoch validates"
    assert rows[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-12)
    assert rows[-2]["learning_rate"] > 0
    checkpoint = torch.load(tmp_path / "runs" / "fold0" / "last.ckpt", weights_only=True)
    assert checkpoint["state"]["planned_epochs"] == 4


def test_an_unbudgeted_run_trains_its_epochs(small_cases: list, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trainer_module, "time", TenSecondTicks())
    config = tiny_config(**{"train.epochs": 3, "train.steps_per_epoch": 1, "train.validate_every": 5})
    result = train(config, small_cases, tmp_path, device=CPU, progress=False)
    assert result.epochs_run == 3
    assert [math.isnan(row["val_dice"]) for row in result.history] == [True, True, False]
    assert result.history[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-12)


def test_an_interrupted_budgeted_run_resumes_its_plan_and_ends_as_an_uninterrupted_one(
        small_cases: list, tmp_path: Path, monkeypatch) -> None:
    config = tiny_config(**{"train.epochs": 10, "train.steps_per_epoch": 1, "train.budget_min": 1.0,
                            "train.validate_every": 3, "train.warmup_epochs": 1})
    monkeypatch.setattr(trainer_module, "time", TenSecondTicks())
    whole = train(config, small_cases, tmp_path / "whole", device=CPU, progress=False)

    monkeypatch.setattr(trainer_module, "time", TenSecondTicks())
    run_interrupted(config, small_cases, tmp_path / "split", monkeypatch, completed=2)
    saved = torch.load(tmp_path / "split" / "runs" / "fold0" / "last.ckpt", weights_only=True)["state"]
    assert (saved["epoch"], saved["planned_epochs"]) == (2, 4)

    monkeypatch.setattr(trainer_module, "time", TenSecondTicks())
    resumed = train(config, small_cases, tmp_path / "split", resume=True, device=CPU, progress=False)
    assert resumed.epochs_run == whole.epochs_run == 4
    assert [row["learning_rate"] for row in resumed.history] == [row["learning_rate"] for row in whole.history]
    assert (tmp_path / "whole" / "fold0.pt").read_bytes() == (tmp_path / "split" / "fold0.pt").read_bytes()
