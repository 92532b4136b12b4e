"""Training's CPU resources chosen from the machine: the loader workers (``train.num_workers: null``, auto), the
intra-op threads, the cache's size in the log; explicit settings kept, and a resumed run drawing as before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_interrupted, tiny_config
from monai.data import CacheDataset
from monai.transforms import Compose

from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import ConfigError
from hieseg.training import optimization
from hieseg.training.data import cached_bytes, training_loader
from hieseg.training.optimization import (
    auto_loader_workers,
    batches_per_pass,
    describe_workers,
    intra_op_threads,
    loader_workers,
    shuffles_per_pass,
)
from hieseg.training.trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
AUTO = {"train.num_workers": None}


def with_cores(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(optimization.os, "sched_getaffinity", lambda pid: set(range(count)))


@pytest.mark.parametrize(("cores", "cuda", "cpu"), [
    (1, 0, 0), (2, 1, 1), (3, 1, 1), (4, 2, 1), (8, 6, 1), (14, 12, 1), (15, 12, 1), (16, 12, 2), (32, 12, 4),
    (64, 12, 8),
])
def test_auto_workers_follow_the_cores_and_the_device(cores: int, cuda: int, cpu: int) -> None:
    assert auto_loader_workers(cores, "cuda") == cuda
    assert auto_loader_workers(cores, "cpu") == cpu


def test_auto_workers_never_exceed_the_batches_of_a_pass() -> None:
    assert auto_loader_workers(16, "cuda", batches_per_pass=5) == 5
    assert auto_loader_workers(16, "cuda", batches_per_pass=40) == 12
    assert auto_loader_workers(32, "cpu", batches_per_pass=3) == 3
    assert auto_loader_workers(1, "cuda", batches_per_pass=5) == 0


@pytest.mark.parametrize(("cases", "batch", "processes", "expected"), [
    (85, 2, 1, 43), (84, 2, 1, 42), (85, 2, 4, 11), (8, 2, 2, 2), (1, 2, 1, 1), (3, 4, 8, 1),
])
def test_batches_per_pass(cases: int, batch: int, processes: int, expected: int) -> None:
    assert batches_per_pass(tiny_config(**{"train.batch_size": batch}), cases, processes) == expected


def test_an_explicit_number_of_workers_is_kept_whatever_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores in (1, 2, 16):
        with_cores(monkeypatch, cores)
        for workers in (0, 1, 5):
            config = tiny_config(**{"train.num_workers": workers})
            assert loader_workers(config, CUDA, batches=1) == loader_workers(config, CPU) == workers


def test_auto_workers_take_this_process_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    with_cores(monkeypatch, 16)
    config = tiny_config(**AUTO)
    assert loader_workers(config, CUDA) == 12
    assert loader_workers(config, CUDA, processes=2) == 6
    assert loader_workers(config, CUDA, processes=4, batches=3) == 2
    assert loader_workers(config, CPU) == 2
    assert loader_workers(config, CPU, batches=1) == 1
    with_cores(monkeypatch, 2)
    assert loader_workers(config, CUDA) == loader_workers(config, CPU) == 1


def test_the_threads_are_the_cores_the_workers_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    with_cores(monkeypatch, 16)
    auto = tiny_config(**AUTO)
    assert intra_op_threads(auto, workers=12) == 4
    assert intra_op_threads(auto) == 14  # auto workers resolved for the CPU: 2
    assert intra_op_threads(auto, processes=2, workers=6) == 2
    assert intra_op_threads(tiny_config(**{"train.num_workers": 3})) == 13
    assert intra_op_threads(tiny_config(**{**AUTO, "train.torch_threads": 5}), workers=12) == 5
    with_cores(monkeypatch, 2)
    assert intra_op_threads(auto) == 1


def test_the_log_says_how_the_workers_were_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with_cores(monkeypatch, 16)
    assert describe_workers(tiny_config(**{"train.num_workers": 1}), 1, CUDA) == "1 loader worker (train.num_workers)"
    auto = tiny_config(**AUTO)
    assert describe_workers(auto, 12, CUDA) == "12 loader workers (train.num_workers auto: 16 usable cores, cuda)"
    assert describe_workers(auto, 5, CUDA) == (
        "5 loader workers (train.num_workers auto: 16 usable cores, cuda, no more than the 5 batches of a pass)")
    assert describe_workers(auto, 3, CPU, resumed=True) == (
        "3 loader workers (train.num_workers auto: as the run being resumed drew its patches)")


def test_num_workers_is_auto_by_default_and_null_in_config_json(tmp_path: Path) -> None:
    assert ExperimentConfig().train.num_workers is None
    assert ExperimentConfig().to_dict()["train"]["num_workers"] is None
    path = tmp_path / CONFIG_FILENAME
    ExperimentConfig().save(path)
    assert json.loads(path.read_text())["train"]["num_workers"] is None
    assert ExperimentConfig.load(path).train.num_workers is None
    data = ExperimentConfig().to_dict()
    data["train"]["num_workers"] = 2
    assert ExperimentConfig.from_dict(data).train.num_workers == 2
    assert ExperimentConfig().with_overrides({"train.num_workers": 3}).with_overrides(
        {"train.num_workers": None}).train.num_workers is None
    with pytest.raises(ConfigError, match="train.num_workers: must be >= 0, got -1"):
        ExperimentConfig().with_overrides({"train.num_workers": -1})
    with pytest.raises(ConfigError, match="train.num_workers: expected a whole number"):
        ExperimentConfig().with_overrides({"train.num_workers": "auto"})


def test_the_cached_bytes_are_those_of_the_cached_arrays() -> None:
    data = [{"image": torch.zeros(2, 4, 4, 4), "label": np.zeros((1, 4, 4, 4), np.uint8), "name": "a",
             "indices": [np.zeros(10, np.int32), np.zeros(5, np.int32)]}] * 3
    cached = CacheDataset(data, transform=Compose([]), cache_rate=1.0, progress=False, num_workers=0)
    assert cached_bytes(cached) == 3 * (2 * 64 * 4 + 64 + 15 * 4)
    assert cached_bytes(CacheDataset(data, transform=Compose([]), cache_rate=0.0, progress=False)) == 0


@pytest.mark.parametrize(("steps", "batch", "cases", "launched", "expected"), [
    (60, 4, 32, False, 8), (61, 4, 30, False, 9), (60, 4, 240, False, 1), (0, 4, 32, False, 1), (60, 4, 32, True, 1),
])
def test_a_pass_of_a_single_process_takes_the_shuffles_an_epoch_needs(
    steps: int, batch: int, cases: int, launched: bool, expected: int
) -> None:
    config = tiny_config(**{"train.steps_per_epoch": steps, "train.batch_size": batch})
    assert shuffles_per_pass(config, cases, launched) == expected
    assert batches_per_pass(config, cases, 1, launched) == -(-expected * cases // batch)


def test_a_pass_of_the_loader_is_whole_shuffles_replayed_by_its_seed(small_cases: list) -> None:
    config = tiny_config(**{"train.steps_per_epoch": 5, "train.batch_size": 2})
    loader = training_loader(config, small_cases[:4], CPU, workers=0)
    assert len(loader) == 6  # 3 shuffles of 4 cases hold the epoch's 10 patches drawn 2 at a time
    loader.generator.manual_seed(7)
    order = list(loader.sampler)
    assert [sorted(order[start:start + 4]) for start in (0, 4, 8)] == [[0, 1, 2, 3]] * 3
    loader.generator.manual_seed(7)
    assert list(loader.sampler) == order


def test_the_loader_logs_its_cache_and_takes_the_workers_it_is_given(
    small_cases: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with_cores(monkeypatch, 16)
    config = tiny_config(**AUTO)
    with caplog.at_level(logging.INFO, logger="hieseg.training.data"):
        loader = training_loader(config, small_cases[:4], CPU)
    assert loader.num_workers == 2  # 16 CPU cores: 2, within the 2 batches of a pass over 4 cases
    assert loader.dataset.cache_num == 4
    megabytes = cached_bytes(loader.dataset) / 1e6
    assert f"preprocessed cases cached in memory: 4 case(s), {megabytes:.1f} MB" in caplog.text
    assert training_loader(config, small_cases[:4], CPU, workers=0).num_workers == 0
    with caplog.at_level(logging.INFO, logger="hieseg.training.data"):
        caplog.clear()
        uncached = training_loader(tiny_config(**{"train.cache_cases": False}), small_cases[:4], CPU)
    assert "cached in memory" not in caplog.text and uncached.num_workers == 0


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "runs" / "fold0" / "last.ckpt", weights_only=True)["model"]


def two_epochs(**overrides: object) -> ExperimentConfig:
    return tiny_config(**{"train.epochs": 2, "train.steps_per_epoch": 2, "train.torch_threads": 1,
                          "augment.noise_prob": 0.5, **overrides})


def test_an_auto_run_resumed_on_other_cores_draws_with_the_workers_it_started_with(
    small_cases: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = two_epochs(**AUTO)
    with_cores(monkeypatch, 2)
    whole = Trainer(config, small_cases, tmp_path / "whole", device=CPU, progress=False)
    whole.fit()
    assert whole.workers == 1
    assert torch.load(tmp_path / "whole" / "runs" / "fold0" / "last.ckpt",
                      weights_only=True)["state"]["loader_workers"] == 1

    run_interrupted(config, small_cases, tmp_path / "split", monkeypatch)
    with_cores(monkeypatch, 16)  # resumed on a bigger machine, where auto would mean 2 workers
    resumed = Trainer(config, small_cases, tmp_path / "split", device=CPU, progress=False, resume=True)
    assert resumed.workers == 2
    resumed.fit()
    assert resumed.workers == 1 and resumed.loader.num_workers == 1
    whole_weights, split_weights = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert all(torch.equal(whole_weights[key], split_weights[key]) for key in whole_weights)
    assert ExperimentConfig.load(tmp_path / "split" / CONFIG_FILENAME).train.num_workers is None


def test_an_auto_config_resumes_a_checkpoint_of_an_explicit_number_with_that_number(
    small_cases: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of earlier versions recorded their number (the old default 2): resumed with auto, they keep it."""
    with_cores(monkeypatch, 16)
    explicit = two_epochs(**{"train.num_workers": 0})
    Trainer(explicit, small_cases, tmp_path / "whole", device=CPU, progress=False).fit()
    run_interrupted(explicit, small_cases, tmp_path / "split", monkeypatch)
    resumed = Trainer(two_epochs(**AUTO), small_cases, tmp_path / "split", device=CPU, progress=False, resume=True)
    resumed.fit()
    assert resumed.workers == 0 and resumed.loader.num_workers == 0
    assert ExperimentConfig.load(tmp_path / "split" / CONFIG_FILENAME).train.num_workers == 0
    whole_weights, split_weights = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert all(torch.equal(whole_weights[key], split_weights[key]) for key in whole_weights)
