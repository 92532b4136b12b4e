"""The training input pipeline benchmark (``python -m hieseg.bench --training``): its arithmetic exactly, its report's
structure; never its timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hieseg.benchmark import pipeline
from hieseg.benchmark.pipeline import workers_needed
from hieseg.cli import bench as bench_cli
from hieseg.training import optimization


@pytest.mark.parametrize(("steps_per_second", "patches_per_step", "per_worker", "expected"), [
    (2.5, 4, 3.0, 4),     # 10 patches/s wanted, 3 per worker: 3.33 workers -> 4
    (1.0, 4, 2.0, 2),     # exactly 2
    (3.0, 4, 4.0, 3),
    (0.1, 3, 0.3, 1),     # 1.0000000000000002 in floats: still 1
    (1.1, 3, 3.3, 1),     # idem
    (0.7, 3, 0.7, 3),     # 2.9999999999999996: 3
    (0.5, 4, 100.0, 1),   # far fewer than one worker's patches: still one worker, or the device waits each step
    (0.0, 4, 10.0, 1),
])
def test_workers_needed_is_the_ceiling_of_demand_over_one_workers_supply(
    steps_per_second: float, patches_per_step: int, per_worker: float, expected: int
) -> None:
    assert workers_needed(steps_per_second, patches_per_step, per_worker) == expected


def test_a_loader_that_produces_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="a worker must produce patches, got 0.0 per second"):
        workers_needed(1.0, 4, 0.0)


def hand_made_report() -> dict:
    return {
        "machine": {"cpu": "Test CPU", "usable_cores": 2, "cpu_count": 4, "torch": "2.13.0", "torch_threads": 1,
                    "monai": "1.6.1", "device": "cpu", "device_name": "Test CPU"},
        "recipe": {"source": "the default recipe", "network": "unet", "parameters": 1186682, "loss": "dice",
                   "patch_size": [96, 96, 32], "batch_size": 2, "samples_per_case": 2,
                   "target_spacing": [1.5, 1.5, 3.0]},
        "data": {"folder": "/data", "note": "release /data", "cases": 8, "cache_megabytes": 31.25},
        "loader": {"batches": 20, "patches_per_batch": 4, "seconds": 4.0, "patches_per_second": 20.0},
        "network": {"step_seconds": [2.0, 2.5, 1.5], "steps_per_second": 0.5, "patches_per_step": 4, "amp": False},
        "workers_needed": 1,
        "loop": {"workers": 1, "workers_chosen": "1 loader worker (train.num_workers auto: 2 usable cores, cpu)",
                 "torch_threads": 1, "steps": 4, "steps_per_pass": 4, "seconds": 10.0, "steps_per_second": 0.4,
                 "wait_seconds_per_step": 0.025, "wait_fraction": 0.01, "peak_rss_bytes": 1024 * 1024 * 1024,
                 "cuda_peak_bytes": None},
    }


def test_the_markdown_gives_the_rates_and_the_workers_they_ask_for() -> None:
    assert pipeline.markdown(hand_made_report()) == "\n".join([
        "# hieseg training input pipeline",
        "",
        "- Machine: Test CPU, 2 usable of 4 cores, torch 2.13.0 (intra-op threads: 1), MONAI 1.6.1, device cpu "
        "(Test CPU)",
        "- Recipe: the default recipe: network unet (1,186,682 parameters), loss dice, patch 96x96x32, batch 2 cases "
        "x 2 patches = 4 patches per step, grid 1.5 x 1.5 x 3 mm",
        "- Data: release /data; preprocessed cases cached in memory: 31.2 MB",
        "",
        "| measure | figure |",
        "|---|---|",
        "| loader: patches/s per worker process | 20.00 (20 batches of 4 in 4.00 s) |",
        "| network: steps/s on cpu | 0.500 (median of 3 steps) |",
        "| patches/s the network consumes | 2.00 |",
        "| **loader workers needed** | **1** (ceil(2.00 / 20.00)) |",
        "",
        "## Training loop: 1 loader worker (train.num_workers auto: 2 usable cores, cpu), 1 intra-op thread(s)",
        "",
        "- 0.400 steps/s over 4 steps after 3 warm-up (4 steps per pass of the loader; each pass starts fresh "
        "workers)",
        "- Waiting for the loader: 0.025 s per step, 1.0 % of the loop",
        "- Peak RSS 1024 MiB",
    ]) + "\n"


def test_the_markdown_without_a_loop_ends_with_the_table() -> None:
    report = {**hand_made_report(), "loop": None}
    assert pipeline.markdown(report).endswith("| **loader workers needed** | **1** (ceil(2.00 / 20.00)) |\n")


def test_the_command_times_the_pipeline_and_writes_its_report(
    untrained_model_dir: Path, small_release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setattr(optimization.os, "sched_getaffinity", lambda pid: {0, 1})
    status = bench_cli.main(["--training", "--model", str(untrained_model_dir), "--data", str(small_release),
                             "--set", "train.num_workers=null", "--device", "cpu", "--steps", "2",
                             "--loop-steps", "2", "--out", str(tmp_path)])
    assert status == 0
    report = json.loads((tmp_path / pipeline.JSON_NAME).read_text())
    loader, network, loop = report["loader"], report["network"], report["loop"]
    assert loader["batches"] == 4 and loader["patches_per_batch"] == 4  # tiny recipe: 2 cases x 2 patches
    assert loader["patches_per_second"] == pytest.approx(loader["batches"] * 4 / loader["seconds"])
    assert len(network["step_seconds"]) == 2 and network["patches_per_step"] == 4 and network["amp"] is False
    assert report["workers_needed"] == workers_needed(network["steps_per_second"], 4, loader["patches_per_second"])
    assert loop["workers"] == 1 and loop["torch_threads"] == 1 and loop["steps"] == 2 and loop["steps_per_pass"] == 4
    assert loop["workers_chosen"] == "1 loader worker (train.num_workers auto: 2 usable cores, cpu)"
    assert loop["wait_fraction"] == pytest.approx(loop["wait_seconds_per_step"] * loop["steps"] / loop["seconds"])
    assert report["data"] == {"folder": str(small_release), "note": f"release {small_release}", "cases": 8,
                              "cache_megabytes": report["data"]["cache_megabytes"]}
    assert report["data"]["cache_megabytes"] > 0
    assert report["recipe"]["source"] == f"the recipe of {untrained_model_dir} with train.num_workers=null"
    text = (tmp_path / pipeline.MARKDOWN_NAME).read_text()
    assert capsys.readouterr().out == text
    assert f"| **loader workers needed** | **{report['workers_needed']}** (ceil(" in text


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "0"], "error: --steps must be at least 1, got 0\n"),
    (["--loop-steps", "-1"], "error: --loop-steps must be 0 or more, got -1\n"),
    (["--workers", "-2"], "error: --workers must be 0 or more, got -2\n"),
])
def test_bad_training_flags_are_one_line(flags: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert bench_cli.main(["--training", "--device", "cpu", "--out", str(tmp_path), *flags]) == 2
    assert capsys.readouterr().err == message
