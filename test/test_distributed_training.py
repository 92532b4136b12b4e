"""Distributed training under torchrun: two CPU ranks (gloo) train one model in lock step.

Run as a script (``torchrun ... test/test_distributed_training.py <train.py arguments>``) this
file is train.py with recorders around the training step, the epoch and validation. Each rank
appends what it saw to ``$HIESEG_PROBE_DIR/<what>-rank<R>.jsonl``: after every step a digest of
its weights and of its batch, the cases of the batch and the loss. ``HIESEG_PROBE_DICE`` scripts
rank 0's validation Dice (a comma-separated list, one per validation), which makes the early
stop predictable, and ``HIESEG_PROBE_STOP_AFTER`` interrupts every rank after that many epochs,
as Ctrl-C would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from itertools import count
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
TRAINING_CASES = 6
"""small_release has 8 cases; tiny_config's 4 folds hold 2 out."""
STEPS_PER_EPOCH = 3
EPOCHS_RUN = 4
SCRIPTED_DICE = (0.1, 0.2, 0.3, 0.3)
"""Best at epoch 3; with patience 1 the fourth validation stops a run of at most 5 epochs."""


def digest(tensors) -> str:
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def probe_main(argv: list[str]) -> int:
    """train.py's command line, recording each rank's steps and validations (see the module docstring)."""
    from hieseg.cli import train as train_cli
    from hieseg.data.transforms import IMAGE
    from hieseg.training.trainer import Trainer

    folder, rank = Path(os.environ["HIESEG_PROBE_DIR"]), int(os.environ.get("RANK", "0"))
    real_step, real_epoch = Trainer.train_step, Trainer.train_epoch
    scripted_dice = iter(float(value) for value in os.environ["HIESEG_PROBE_DICE"].split(","))
    stop_after = int(os.environ.get("HIESEG_PROBE_STOP_AFTER", "0"))
    epochs_here = count(1)
    current = {"epoch": 0}

    def record(kind: str, entry: dict) -> None:
        with (folder / f"{kind}-rank{rank}.jsonl").open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def step(trainer, batch) -> float:
        loss = real_step(trainer, batch)
        record("steps", {"epoch": current["epoch"], "loss": loss, "weights": digest(trainer.model.parameters()),
                         "batch": digest([batch[IMAGE].as_tensor()]), "cases": sorted(set(batch["case_id"]))})
        return loss

    def epoch(*args, **kwargs) -> float:
        current["epoch"] = args[-1] + 1
        loss = real_epoch(*args, **kwargs)
        if next(epochs_here) == stop_after:
            raise KeyboardInterrupt
        return loss

    def validate(*args, **kwargs) -> float:
        value = next(scripted_dice)
        record("validations", {"epoch": current["epoch"], "dice": value})
        return value

    Trainer.train_step, Trainer.train_epoch, Trainer.validate = step, epoch, validate
    return train_cli.main(argv)


def read_records(folder: Path, kind: str, rank: int) -> list[dict]:
    path = folder / f"{kind}-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_training(out: Path, data: Path, config_file: Path, *args: str, ranks: int | None,
                 dice: tuple[float, ...] = SCRIPTED_DICE, stop_after: int = 0) -> subprocess.CompletedProcess:
    """train.py as one process (``ranks`` None) or under torchrun with ``ranks`` CPU processes.

    The records go to the folder ``<out>-probe`` beside ``out``.
    """
    probe = out.parent / f"{out.name}-probe"
    probe.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HIESEG_PROBE_DIR": str(probe),
           "HIESEG_PROBE_DICE": ",".join(map(str, dice)), "HIESEG_PROBE_STOP_AFTER": str(stop_after)}
    launcher = [] if ranks is None else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    command = [sys.executable, *launcher, str(Path(__file__)), "--data", str(data), "--out", str(out),
               "--config", str(config_file), "--device", "cpu", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)


def layout(folder: Path) -> list[str]:
    """The files of an output folder, with the host, time and process in TensorBoard's file names blanked."""
    return sorted(re.sub(r"tfevents\..*", "tfevents.*", str(p.relative_to(folder)))
                  for p in folder.rglob("*") if p.is_file())


def final_model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "runs" / "fold0" / "last.ckpt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import tiny_config

    path = tmp_path_factory.mktemp("ddp-config") / "config.json"
    tiny_config(**{
        "train.epochs": EPOCHS_RUN + 1, "train.steps_per_epoch": STEPS_PER_EPOCH, "train.patience": 1,
        "train.learning_rate": 3e-3, "train.torch_threads": 1, "train.num_workers": 0,
        "tuning.thresholds": (0.4, 0.6), "tuning.min_component_mm3": (0.0,),
        "tuning.empty_fallback_probability": (0.0,), "tuning.try_tta": False,
    }).save(path)
    return path


@pytest.fixture(scope="module")
def two_ranks(small_release: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted two-rank run; returns its output folder (its records are beside it)."""
    out = tmp_path_factory.mktemp("ddp") / "whole"
    result = run_training(out, small_release, config_file, ranks=2)
    assert result.returncode == 0, result.stderr[-4000:]
    (out.parent / "stdout.txt").write_text(result.stdout)
    return out


@pytest.mark.slow
def test_two_ranks_take_identical_steps_on_different_patches_and_learn(two_ranks: Path) -> None:
    probe = two_ranks.parent / "whole-probe"
    steps = [read_records(probe, "steps", rank) for rank in (0, 1)]
    expected_epochs = [epoch for epoch in range(1, EPOCHS_RUN + 1) for _ in range(STEPS_PER_EPOCH)]
    assert [[s["epoch"] for s in ranked] for ranked in steps] == [expected_epochs] * 2, "ranks stopped apart"
    for first, second in zip(*steps):
        assert first["weights"] == second["weights"], f"weights differ after a step of epoch {first['epoch']}"
        assert first["batch"] != second["batch"], f"both ranks drew the same patches in epoch {first['epoch']}"
    assert len({s["weights"] for s in steps[0]}) == len(steps[0]), "a step left the weights unchanged"
    for epoch in range(1, EPOCHS_RUN + 1):  # a pass (each rank's first 2 steps: 2 + 1 cases) deals every case once
        first_pass = [[s for s in ranked if s["epoch"] == epoch][:2] for ranked in steps]
        dealt = [case for ranked in first_pass for s in ranked for case in s["cases"]]
        assert len(dealt) == len(set(dealt)) == TRAINING_CASES, f"epoch {epoch}: cases {dealt}"

    with (two_ranks / "runs" / "fold0" / "metrics.csv").open() as handle:
        rows = [line.split(",") for line in handle.read().splitlines()[1:]]
    losses = [float(row[1]) for row in rows]
    assert [int(row[0]) for row in rows] == list(range(1, EPOCHS_RUN + 1))
    for epoch, logged in enumerate(losses, start=1):  # rank 0 logs the mean over both ranks
        both = [s["loss"] for ranked in steps for s in ranked if s["epoch"] == epoch]
        assert logged == pytest.approx(sum(both) / len(both), rel=1e-9)
    assert losses[-1] < losses[0], f"training loss per epoch {losses}"

    from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
    from hieseg.model.network import build_network

    saved = build_network(ExperimentConfig.load(two_ranks / CONFIG_FILENAME))
    saved.load_state_dict(final_model(two_ranks))
    assert digest(saved.parameters()) == steps[0][-1]["weights"], "the checkpoint is not the ranks' final weights"
    assert [v["epoch"] for v in read_records(probe, "validations", 0)] == list(range(1, EPOCHS_RUN + 1))
    assert read_records(probe, "validations", 1) == [], "a rank other than 0 validated"

    stdout = (two_ranks.parent / "stdout.txt").read_text()
    assert stdout.count("best validation Dice") == 1 and "Dice 0.3000 at epoch 3 (4 epochs" in stdout, stdout
    assert stdout.count("post-processing tuned on 2 validation case(s)") == 1, stdout


@pytest.mark.slow
def test_two_ranks_write_the_files_of_a_single_process(two_ranks: Path, small_release: Path, config_file: Path,
                                                       tmp_path: Path) -> None:
    single = tmp_path / "single"
    result = run_training(single, small_release, config_file, "--epochs", "1", ranks=None)
    assert result.returncode == 0, result.stderr[-4000:]
    assert layout(two_ranks) == layout(single)
    assert "tuning.json" in layout(single) and "fold0.pt" in layout(single)


@pytest.mark.slow
def test_an_interrupted_two_rank_run_resumed_equals_the_uninterrupted_one(
    two_ranks: Path, small_release: Path, config_file: Path, tmp_path: Path
) -> None:
    split = tmp_path / "split"
    stopped = run_training(split, small_release, config_file, ranks=2, dice=SCRIPTED_DICE[:1], stop_after=2)
    assert stopped.returncode != 0
    assert torch.load(split / "runs" / "fold0" / "last.ckpt", weights_only=True)["state"]["epoch"] == 1

    (tmp_path / "split-probe").rename(tmp_path / "stopped-probe")
    resumed = run_training(split, small_release, config_file, "--resume", ranks=2, dice=SCRIPTED_DICE[1:])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank in (0, 1):
        whole = [s["weights"] for s in read_records(two_ranks.parent / "whole-probe", "steps", rank) if s["epoch"] > 1]
        again = [s["weights"] for s in read_records(tmp_path / "split-probe", "steps", rank)]
        assert again == whole, f"rank {rank}'s resumed steps differ from the uninterrupted run's"
    whole_model, split_model = final_model(two_ranks), final_model(split)
    assert all(torch.equal(whole_model[key], split_model[key]) for key in whole_model)
    whole_best, split_best = (torch.load(out / "fold0.pt", weights_only=True) for out in (two_ranks, split))
    assert all(torch.equal(whole_best[key], split_best[key]) for key in whole_best)


def test_without_torchrun_a_process_trains_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from hieseg.training import distributed

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.current() == distributed.Ranks()
    assert distributed.rank_device("cpu", distributed.Ranks()) == torch.device("cpu")
    assert distributed.on_main(lambda: 7, distributed.Ranks()) == 7


def test_torchrun_ranks_come_from_the_environment_and_are_checked() -> None:
    from hieseg.errors import ConfigError
    from hieseg.training import distributed

    ranks = distributed.torchrun_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert ranks == distributed.Ranks(rank=3, world_size=4, local_rank=1, local_world_size=2, launched=True)
    assert not ranks.is_main
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        distributed.torchrun_ranks({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="integers"):
        distributed.torchrun_ranks({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="inconsistent"):
        distributed.torchrun_ranks({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_under_torchrun_each_rank_takes_its_own_gpu_or_the_cpu() -> None:
    from hieseg.errors import ConfigError
    from hieseg.training import distributed

    second = distributed.Ranks(rank=1, world_size=2, local_rank=1, local_world_size=2, launched=True)
    assert distributed.rank_device("cpu", second) == torch.device("cpu")
    with pytest.raises(ConfigError, match="its own GPU, here cuda:1"):
        distributed.rank_device("cuda:0", second)
    if torch.cuda.device_count() >= 2:
        assert distributed.rank_device("auto", second) == distributed.rank_device("cuda", second) == torch.device(
            "cuda", 1)
    elif not torch.cuda.is_available():
        assert distributed.rank_device("auto", second) == torch.device("cpu")


def test_a_torchrun_process_without_a_process_group_refuses_to_train(monkeypatch: pytest.MonkeyPatch) -> None:
    from hieseg.errors import ConfigError
    from hieseg.training import distributed

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="no process group"):
        distributed.current()


def test_each_rank_has_its_own_seed_and_rank_0_keeps_the_single_process_one() -> None:
    import numpy as np

    from hieseg.training.data import epoch_seed

    assert epoch_seed(42, 3) == epoch_seed(42, 3, rank=0) == int(np.random.SeedSequence([42, 3]).generate_state(1)[0])
    assert len({epoch_seed(42, 3, rank) for rank in range(4)}) == 4


def test_the_threads_are_shared_among_the_ranks_of_a_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import tiny_config

    from hieseg.training import optimization

    monkeypatch.setattr(optimization.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert optimization.intra_op_threads(tiny_config(**{"train.num_workers": 2}), processes=4) == 2
    assert optimization.intra_op_threads(tiny_config(**{"train.num_workers": 2})) == 14


if __name__ == "__main__":
    sys.exit(probe_main(sys.argv[1:]))
