"""Training: it learns, it is deterministic, it resumes, and the CLI reports bad data clearly."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import ConfigError, OutputError
from hieseg.model.network import build_network
from hieseg.synthesis.generator import write_release
from hieseg.training import data as training_data
from hieseg.training import optimization
from hieseg.training.data import load_cases
from hieseg.training.folder import held_out_runs
from hieseg.training.trainer import Trainer, train, validate

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def one_epoch_config(**overrides: object) -> ExperimentConfig:
    return tiny_config(**{"train.epochs": 1, "train.steps_per_epoch": 2, **overrides})


@pytest.mark.slow
def test_learns_lesions_well_above_an_untrained_network(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_release(data, n_cases=16, seed=11)
    config = tiny_config(**{
        "train.epochs": 20, "train.steps_per_epoch": 16, "train.learning_rate": 3e-3,
        "train.validate_every": 5, "train.patience": 0,
    })
    cases = load_cases([data], progress=False)
    result = train(config, cases, tmp_path / "model", device=CPU, progress=False)

    torch.manual_seed(0)
    untrained = build_network(config)
    validation_cases = [c for c in cases if c.files.case_id in result.validation_ids]
    untrained_dice = validate(config, untrained, validation_cases, torch.device("cpu"))

    assert len(result.validation_ids) == 4 and len(result.training_ids) == 12
    assert result.best_dice >= 0.3, f"validation Dice {result.best_dice:.3f} after training"
    assert result.best_dice >= untrained_dice + 0.25, f"untrained {untrained_dice:.3f} vs {result.best_dice:.3f}"
    assert (tmp_path / "model" / "fold0.pt").is_file()
    saved = ExperimentConfig.load(tmp_path / "model" / CONFIG_FILENAME)
    assert saved.network == config.network and saved.preprocess == config.preprocess
    assert saved.inference.threshold == config.inference.threshold


def test_same_seed_gives_identical_weights(small_cases: list, tmp_path: Path) -> None:
    config = one_epoch_config()
    first = train(config, small_cases, tmp_path / "a", device=CPU, progress=False)
    second = train(config, small_cases, tmp_path / "b", device=CPU, progress=False)
    weights_a = torch.load(first.weights, weights_only=True)
    weights_b = torch.load(second.weights, weights_only=True)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_writes_metrics_csv_tensorboard_and_checkpoint(small_cases: list, tmp_path: Path) -> None:
    train(one_epoch_config(**{"train.epochs": 2}), small_cases, tmp_path, device=CPU, progress=False)
    run = tmp_path / "runs" / "fold0"
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    assert (run / "last.ckpt").is_file()
    assert any((run / "tensorboard").iterdir())


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "runs" / "fold0" / "last.ckpt", weights_only=True)["model"]


@pytest.mark.parametrize("workers", [0, 1])
def test_an_interrupted_run_resumed_equals_an_uninterrupted_one_bit_for_bit(
    small_cases: list, tmp_path: Path, monkeypatch, workers: int
) -> None:
    config = one_epoch_config(**{"train.epochs": 3, "train.num_workers": workers, "train.torch_threads": 1,
                                 "unet.dropout": 0.2, "augment.noise_prob": 0.5, "augment.flip_prob": 0.5})
    uninterrupted = train(config, small_cases, tmp_path / "whole", device=CPU, progress=False)

    real_epoch = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            real_epoch(*args, **kwargs)  # the second epoch's work is lost: the stop comes before its checkpoint
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, small_cases, tmp_path / "split", device=CPU, progress=False)
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    assert torch.load(tmp_path / "split" / "runs" / "fold0" / "last.ckpt", weights_only=True)["state"]["epoch"] == 1

    with pytest.raises(OutputError, match="--resume"):
        train(config, small_cases, tmp_path / "split", device=CPU, progress=False)
    resumed = train(config, small_cases, tmp_path / "split", resume=True, device=CPU, progress=False)

    assert resumed.epochs_run == 3
    assert [int(row["epoch"]) for row in resumed.history] == [1, 2, 3]
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in uninterrupted.history]
    whole, split = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert all(torch.equal(whole[key], split[key]) for key in whole)
    assert (tmp_path / "whole" / "fold0.pt").read_bytes() == (tmp_path / "split" / "fold0.pt").read_bytes()


def test_epochs_draw_different_patches_and_the_same_epoch_the_same_ones(small_cases: list) -> None:
    config = one_epoch_config(**{"train.num_workers": 0})
    loader = training_data.training_loader(config, small_cases[:4], torch.device("cpu"))

    def first_batch(epoch: int) -> torch.Tensor:
        training_data.seed_epoch(loader, training_data.epoch_seed(config.train.seed, epoch))
        return next(iter(loader))["image"].as_tensor()

    assert torch.equal(first_batch(3), first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))


def test_other_settings_cannot_share_a_weights_folder(small_cases: list, tmp_path: Path) -> None:
    train(one_epoch_config(), small_cases, tmp_path, device=CPU, progress=False)
    other = one_epoch_config(**{"loss.name": "dice", "train.fold": 1})
    with pytest.raises(ConfigError, match="different configuration"):
        train(other, small_cases, tmp_path, device=CPU, progress=False)


def test_a_finished_run_resumes_with_other_tuning_settings_and_keeps_its_weights(small_cases: list,
                                                                                 tmp_path: Path) -> None:
    train(one_epoch_config(), small_cases, tmp_path, device=CPU, progress=False)
    weights = (tmp_path / "fold0.pt").read_bytes()
    retuned = one_epoch_config(**{"tuning.try_refinement": True, "tuning.thresholds": (0.3,)})
    train(retuned, small_cases, tmp_path, resume=True, device=CPU, progress=False)
    assert (tmp_path / "fold0.pt").read_bytes() == weights
    with pytest.raises(ConfigError, match="different configuration"):
        train(one_epoch_config(**{"train.learning_rate": 0.01}), small_cases, tmp_path, resume=True, device=CPU,
              progress=False)


def test_tuning_covers_every_fold_of_the_folder_out_of_fold(small_cases: list, tmp_path: Path, caplog) -> None:
    first = train(one_epoch_config(), small_cases, tmp_path, device=CPU, progress=False)
    second = train(one_epoch_config(**{"train.fold": 1}), small_cases, tmp_path, device=CPU, progress=False)
    assert set(first.validation_ids).isdisjoint(second.validation_ids)
    (tmp_path / "model.pt").write_bytes((tmp_path / "fold0.pt").read_bytes())  # an explicit-list run's weights
    runs = held_out_runs(tmp_path, second.config, small_cases, [(second.weights, second.validation_ids)])
    assert runs == [(tmp_path / "fold0.pt", first.validation_ids), (tmp_path / "fold1.pt", second.validation_ids)]
    assert "model.pt: not tuned with the others" in caplog.text


def test_a_folds_second_network_is_a_run_of_the_next_seed_on_the_same_split(small_cases: list,
                                                                            tmp_path: Path) -> None:
    config = one_epoch_config(**{"train.networks_per_fold": 2})
    first = train(config, small_cases, tmp_path / "folder", device=CPU, progress=False)
    second = train(config, small_cases, tmp_path / "folder", network=1, device=CPU, progress=False)
    alone = train(one_epoch_config(**{"train.seed": config.train.seed + 1}), small_cases, tmp_path / "alone",
                  validation_ids=first.validation_ids, device=CPU, progress=False)
    assert (first.weights.name, second.weights.name) == ("fold0.pt", "fold0-net1.pt")
    assert (tmp_path / "folder" / "runs" / "fold0-net1" / "last.ckpt").is_file()
    assert second.validation_ids == first.validation_ids == alone.validation_ids
    assert second.training_ids == alone.training_ids
    weights = [torch.load(result.weights, weights_only=True) for result in (first, second, alone)]
    assert all(torch.equal(weights[1][name], weights[2][name]) for name in weights[1])
    assert not all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    runs = held_out_runs(tmp_path / "folder", second.config, small_cases, [])
    assert runs == [(second.weights, first.validation_ids), (first.weights, first.validation_ids)]  # by name


def test_cli_tunes_a_folds_networks_on_their_mean(small_release: Path, tmp_path: Path, monkeypatch) -> None:
    from hieseg.cli import train as train_cli

    scored = []
    real_tune = train_cli.tune_trained_folder.__globals__["tune"]

    def recording_tune(config, held_out, device, progress=True):
        scored.extend((part.weights, len(part.cases)) for part in held_out)
        return real_tune(config, held_out, device, progress)

    monkeypatch.setitem(train_cli.tune_trained_folder.__globals__, "tune", recording_tune)
    config_file = tmp_path / "base.json"
    one_epoch_config(**{"train.networks_per_fold": 2, "tuning.thresholds": (0.5,), "tuning.try_tta": False,
                        "tuning.min_component_mm3": (0.0,), "tuning.empty_fallback_probability": (0.0,)}
                     ).save(config_file)
    out = tmp_path / "out"
    assert train_cli.main(["--data", str(small_release), "--out", str(out), "--config", str(config_file),
                           "--device", "cpu", "--no-progress"]) == 0
    assert sorted(path.name for path in out.glob("*.pt")) == ["fold0-net1.pt", "fold0.pt"]
    assert scored == [((out / "fold0-net1.pt", out / "fold0.pt"), 2)]


def run_train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True, cwd=REPO,
    )


def test_cli_tunes_post_processing_on_the_validation_fold(small_release: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "base.json"
    one_epoch_config(**{"tuning.thresholds": (0.4, 0.6), "tuning.min_component_mm3": (0.0, 30.0),
                        "tuning.empty_fallback_probability": (0.0, 0.2)}).save(config_file)
    result = run_train_cli("--data", str(small_release), "--out", str(tmp_path / "out"), "--config",
                           str(config_file), "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "post-processing tuned on 2 validation case(s)" in result.stdout
    tuning = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert len(tuning["candidates"]) == 16
    saved = ExperimentConfig.load(tmp_path / "out" / CONFIG_FILENAME).inference
    chosen = tuning["chosen"]
    assert (saved.threshold, saved.min_component_mm3, saved.empty_fallback_probability, saved.tta_flips) == (
        chosen["threshold"], chosen["min_component_mm3"], chosen["empty_fallback_probability"], chosen["tta_flips"])
    assert saved.threshold in (0.4, 0.6)


def test_intra_op_threads_leave_cores_to_the_loader_workers(monkeypatch) -> None:
    monkeypatch.setattr(optimization.os, "sched_getaffinity", lambda pid: {0, 1})
    assert optimization.intra_op_threads(tiny_config(**{"train.num_workers": 1})) == 1
    assert optimization.intra_op_threads(tiny_config(**{"train.num_workers": 0})) == 2
    assert optimization.intra_op_threads(tiny_config(**{"train.num_workers": 4})) == 1
    assert optimization.intra_op_threads(tiny_config(**{"train.torch_threads": 3})) == 3


def test_training_runs_with_the_chosen_threads_and_restores_them(small_cases: list, tmp_path: Path,
                                                                   monkeypatch) -> None:
    seen = []
    real_epoch = Trainer.train_epoch

    def recording_epoch(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", recording_epoch)
    before = torch.get_num_threads()
    train(one_epoch_config(**{"train.torch_threads": 1}), small_cases, tmp_path, device=CPU, progress=False)
    assert seen == [1]
    assert torch.get_num_threads() == before
