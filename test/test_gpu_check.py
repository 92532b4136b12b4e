"""The prepared GPU check (``scripts/gpu_check.sh``): without CUDA one line and exit 0; its steps time-boxed and
recorded, a failure not stopping the rest; its report assembled and written exactly. Nothing here needs a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hieseg.benchmark import gpu_check, gpu_report
from hieseg.benchmark.gpu_check import (
    FAILED,
    OK,
    SKIPPED,
    TIMED_OUT,
    Context,
    Step,
    StepFailed,
    StepResult,
    StepSkipped,
    StepTimedOut,
)
from hieseg.cli import gpu_check as gpu_check_cli
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
MIB, GIB = 1024 * 1024, 1024 * 1024 * 1024
ALL_STEPS = ["machine", "inference-cpu", "inference-cuda-amp", "inference-cuda-fp32", "bench-128x128x16",
             "bench-192x192x32", "bench-256x256x64", "bench-512x512x128", "predict", "training-unet",
             "training-dynunet", "training-swinunetr", "torchrun", "docker"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the whole check")
def test_without_cuda_the_script_says_what_it_skipped_in_one_line_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "check"
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"gpu_check: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False): skipped "
        f"{', '.join(ALL_STEPS)}; nothing written to {out}\n")
    assert result.stderr == "" and not out.exists()


def test_the_no_cuda_line_names_the_steps_selected(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check_cli.main([str(tmp_path / "x"), "--only", "bench,torchrun"]) == 0
    assert capsys.readouterr().out == (
        f"gpu_check: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False): skipped "
        f"machine, bench-128x128x16, bench-192x192x32, bench-256x256x64, bench-512x512x128, torchrun; "
        f"nothing written to {tmp_path / 'x'}\n")


def test_the_steps_are_those_of_the_issue_in_order() -> None:
    assert [step.name for step in gpu_check.planned_steps()] == ALL_STEPS


def test_steps_are_chosen_by_name_or_kind() -> None:
    steps = gpu_check.planned_steps()
    assert [s.name for s in gpu_check.select_steps(steps, None)] == ALL_STEPS
    assert [s.name for s in gpu_check.select_steps(steps, ["training", "inference-cpu"])] == [
        "machine", "inference-cpu", "training-unet", "training-dynunet", "training-swinunetr"]
    with pytest.raises(ValueError, match="unknown step\\(s\\) benches; the steps are machine, inference-cpu"):
        gpu_check.select_steps(steps, ["benches"])


def test_an_unknown_step_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gpu_check_cli.main([str(tmp_path), "--only", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --only: unknown step(s) nope; the steps are machine, ")


class FakeClock:
    """Time that passes only when a fake step says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def context(tmp_path: Path) -> Context:
    return Context(out=tmp_path / "out", scratch=tmp_path / "scratch", model=tmp_path / "model",
                   sample=tmp_path / "sample", repo=REPO, environment=dict(os.environ))


def test_each_step_gets_what_is_left_and_a_failure_does_not_stop_the_rest(tmp_path: Path) -> None:
    clock = FakeClock()
    given: dict[str, float] = {}

    def taking(seconds: float, outcome: object = None):
        def action(context: Context, timeout: float) -> dict:
            given[action.name] = timeout
            clock.now += seconds
            if isinstance(outcome, BaseException):
                raise outcome
            return {"took": seconds}
        return action

    steps = [Step("first", 100, taking(40)), Step("broken", 100, taking(10, RuntimeError("disk full"))),
             Step("slow", 100, taking(30, StepTimedOut("stopped after 30 s"))),
             Step("absent", 100, taking(0, StepSkipped("no container engine"))),
             Step("last", 100, taking(6)), Step("late", 100, taking(5))]
    for step in steps:
        step.action.name = step.name
    seen = []
    results = gpu_check.run_steps(steps, context(tmp_path), budget_s=100, clock=clock,
                                  on_step=lambda so_far: seen.append(len(so_far)))
    assert given == {"first": 100, "broken": 60, "slow": 50, "absent": 20, "last": 20}
    assert [(r.name, r.status, r.seconds, r.timeout_seconds, r.result, r.error) for r in results] == [
        ("first", OK, 40, 100, {"took": 40}, None),
        ("broken", FAILED, 10, 60, None, "RuntimeError: disk full"),
        ("slow", TIMED_OUT, 30, 50, None, "stopped after 30 s"),
        ("absent", SKIPPED, 0, 20, None, "no container engine"),
        ("last", OK, 6, 20, {"took": 6}, None),
        ("late", SKIPPED, 0.0, None, None, "out of time: 14 s left of the 100 s budget"),
    ]
    assert seen == [1, 2, 3, 4, 5, 6]


def test_a_command_past_its_time_box_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(StepTimedOut, match="stopped after 1 s: sh -c .*; output ends: waiting"):
        gpu_check.run_command(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo waiting; wait"], 1,
                              context(tmp_path), "slow")
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    for _ in range(50):  # the orphaned sleep is reaped by init once killed
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the command's child {child} outlived the time box")
    log = (tmp_path / "out" / "logs" / "slow.log").read_text()
    assert log.startswith(f"$ sh -c sleep 60 & echo $! > {pid_file}; echo waiting; wait\nwaiting\n")


def test_a_failing_command_raises_with_the_end_of_its_output(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="^exit status 3: line 1\nline 2$"):
        gpu_check.run_command(["sh", "-c", "echo line 1; echo line 2 >&2; exit 3"], 30, context(tmp_path))
    outcome = gpu_check.run_command(["sh", "-c", "echo fine"], 30, context(tmp_path))
    assert (outcome.returncode, outcome.output) == (0, "fine\n")
    with pytest.raises(StepFailed) as failure:
        gpu_check.run_command(["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x; exit 1"], 30, context(tmp_path))
    assert str(failure.value) == "exit status 1: ..." + "x" * gpu_check.ERROR_CHARS


MACHINE = {"gpu": "NVIDIA H200", "gpu_count": 1, "gpu_memory_bytes": 140 * GIB, "capability": "9.0",
           "driver": "550.54.15", "torch": "2.13.0", "cuda": "12.8", "cudnn": 91000, "nccl": "2.27.3",
           "monai": "1.6.1", "python": "3.11.7", "cpu": "AMD EPYC", "usable_cores": 16, "docker": False}
INFERENCE = {"device": "cuda", "amp": True, "seconds": 6.25, "seconds_in_process": 4.5, "cuda_peak_bytes": 512 * MIB,
             "lesion_voxels": 2707, "mask": "masks/inference-cuda-amp.mha", "differing_voxels_vs_cpu": 3}
BENCH = {"size": [128, 128, 16], "project_seconds": 0.5, "baseline_seconds": 2.0, "ratio": 0.25, "cropped_ratio": 0.8,
         "differing_voxels": 12, "differing_fraction_of_brain": 0.0001, "project_cuda_peak_bytes": 100 * MIB,
         "baseline_cuda_peak_bytes": 300 * MIB, "report": "bench/128x128x16/bench.md"}
PREDICT = {"cases": 24, "size": [192, 192, 32], "masks_written": 24, "seconds": 12.0, "cases_per_second": 2.0,
           "predicting_seconds": 6.0, "cases_per_second_predicting": 4.0}
TRAINING = {"network": "unet", "parameters": 1186682, "patch_size": [96, 96, 32], "patches_per_step": 4, "amp": True,
            "loader_patches_per_second_per_worker": 25.0, "device_steps_per_second": 20.0, "workers_needed": 4,
            "loop_workers": 12, "loop_steps": 200, "loop_steps_per_second": 15.5, "wait_seconds_per_step": 0.004,
            "wait_fraction": 0.062, "cuda_peak_bytes": 2048 * MIB, "peak_rss_bytes": 4 * GIB,
            "cache_megabytes": 500.0, "report": "training-unet/training.md"}
RESULTS = [
    StepResult("machine", OK, 1.5, 30, MACHINE),
    StepResult("inference-cuda-amp", OK, 6.25, 45, INFERENCE),
    StepResult("bench-128x128x16", OK, 30.0, 45, BENCH),
    StepResult("predict", OK, 20.0, 60, PREDICT),
    StepResult("training-unet", OK, 45.0, 90, TRAINING),
    StepResult("torchrun", FAILED, 12.0, 60, None, "StepFailed: exit status 1: NCCL error\n  at init"),
    StepResult("docker", SKIPPED, 0.1, 120, None, "no docker command: no container engine on this machine"),
]
PLANNED = [result.name for result in RESULTS] + ["training-dynunet"]


def test_the_report_holds_the_machine_every_step_and_the_count_of_each_status() -> None:
    report = gpu_check.assemble_report(RESULTS, "2026-12-04T10:00:00+00:00", 150.04, 450.0, PLANNED)
    assert report == {
        "format_version": 1,
        "started": "2026-12-04T10:00:00+00:00",
        "seconds": 150.04,
        "budget_seconds": 450.0,
        "machine": MACHINE,
        "steps": [
            {"name": r.name, "status": r.status, "seconds": r.seconds, "timeout_seconds": r.timeout_seconds,
             "result": r.result, "error": r.error} for r in RESULTS
        ],
        "pending": ["training-dynunet"],
        "summary": {"ok": 5, "failed": 1, "timed_out": 0, "skipped": 1},
    }
    assert gpu_check.assemble_report(RESULTS[1:], "t", 1.0, 450.0, PLANNED)["machine"] is None


def test_the_markdown_of_a_report() -> None:
    report = gpu_check.assemble_report(RESULTS, "2026-12-04T10:00:00+00:00", 150.04, 450.0, PLANNED)
    assert gpu_report.markdown(report) == "\n".join([
        "# hieseg GPU check",
        "",
        "- Started 2026-12-04T10:00:00+00:00; 150 s of a 450 s budget; steps: 5 ok, 1 failed, 0 timed out, "
        "1 skipped; not run yet: training-dynunet",
        "- GPU: NVIDIA H200 (140.0 GiB, compute capability 9.0), driver 550.54.15; torch 2.13.0, CUDA 12.8, "
        "cuDNN 91000, NCCL 2.27.3, MONAI 1.6.1; 16 usable CPU cores (AMD EPYC)",
        "",
        "| step | status | seconds | figures |",
        "|---|---|---|---|",
        "| machine | ok | 1.5 | NVIDIA H200, 1 GPU(s) |",
        "| inference-cuda-amp | ok | 6.2 | 6.25 s (4.50 s in process), CUDA peak 512 MiB, 2707 lesion voxels, "
        "3 voxels differ from the CPU mask |",
        "| bench-128x128x16 | ok | 30.0 | ratio 0.25 (0.50 s against 2.00 s) |",
        "| predict | ok | 20.0 | 24 cases of 192x192x32: 2.00 cases/s (process included; 4.00 cases/s predicting) |",
        "| training-unet | ok | 45.0 | 15.50 steps/s, 12 loader worker(s), wait 0.004 s/step; workers needed 4 |",
        "| torchrun | failed | 12.0 |  |",
        "| docker | skipped | 0.1 |  |",
        "",
        "## Inference against plain MONAI sliding_window_inference (same weights, same run)",
        "",
        "| case (x y z) | project s | plain MONAI s | ratio | vs cropped baseline | differing voxels (of brain) "
        "| project CUDA MiB | plain MONAI CUDA MiB |",
        "|---|---|---|---|---|---|---|---|",
        "| 128x128x16 | 0.50 | 2.00 | 0.25 | 0.80 | 12 (0.010 %) | 100 | 300 |",
        "",
        "## Training, default recipe",
        "",
        "| network | parameters | AMP | loader patches/s per worker | device steps/s | workers needed | loop workers "
        "| loop steps/s | wait s/step | wait % | CUDA peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| unet | 1,186,682 | yes | 25.0 | 20.00 | 4 | 12 | 15.50 | 0.004 | 6.2 | 2048 |",
        "",
        "## Failed, timed out or skipped",
        "",
        "- torchrun (failed): StepFailed: exit status 1: NCCL error at init",
        "- docker (skipped): no docker command: no container engine on this machine",
    ]) + "\n"


def test_a_report_without_its_machine_says_so() -> None:
    report = gpu_check.assemble_report([StepResult("machine", FAILED, 0.0, 30, None, "AssertionError: no CUDA")],
                                       "t", 0.5, 450.0, ["machine"])
    assert "- Machine: unknown (the machine step did not succeed)\n" in gpu_report.markdown(report)


def test_the_report_is_written_as_json_and_markdown(tmp_path: Path) -> None:
    report = gpu_check.assemble_report(RESULTS, "2026-12-04T10:00:00+00:00", 150.04, 450.0, PLANNED)
    text = gpu_report.write_report(report, tmp_path / "out")
    assert json.loads((tmp_path / "out" / gpu_report.JSON_NAME).read_text()) == report
    assert (tmp_path / "out" / gpu_report.MARKDOWN_NAME).read_text() == text == gpu_report.markdown(report)


def test_the_bench_and_training_reports_are_summarised() -> None:
    bench = {"cases": [{
        "size": [128, 128, 16], "ratio": 0.25, "cropped_ratio": 0.8,
        "project": {"seconds": [0.4, 0.5, 0.9], "cuda_peak_bytes": 1},
        "baseline": {"seconds": [2.0, 3.0], "cuda_peak_bytes": 2},
        "agreement": {"differing_voxels": 12, "differing_fraction_of_brain": 0.0001},
    }]}
    assert gpu_report.bench_summary(bench) == {
        "size": [128, 128, 16], "project_seconds": 0.5, "baseline_seconds": 2.5, "ratio": 0.25, "cropped_ratio": 0.8,
        "differing_voxels": 12, "differing_fraction_of_brain": 0.0001, "project_cuda_peak_bytes": 1,
        "baseline_cuda_peak_bytes": 2}
    training = {
        "recipe": {"network": "dynunet", "parameters": 7, "patch_size": [96, 96, 32]},
        "data": {"cache_megabytes": 12.5},
        "loader": {"patches_per_second": 30.0},
        "network": {"steps_per_second": 9.0, "patches_per_step": 4, "amp": True},
        "workers_needed": 2,
        "loop": {"workers": 12, "steps": 200, "steps_per_second": 8.5, "wait_seconds_per_step": 0.01,
                 "wait_fraction": 0.085, "cuda_peak_bytes": 3, "peak_rss_bytes": 4},
    }
    assert gpu_report.training_summary(training) == {
        "network": "dynunet", "parameters": 7, "patch_size": [96, 96, 32], "patches_per_step": 4, "amp": True,
        "loader_patches_per_second_per_worker": 30.0, "device_steps_per_second": 9.0, "workers_needed": 2,
        "loop_workers": 12, "loop_steps": 200, "loop_steps_per_second": 8.5, "wait_seconds_per_step": 0.01,
        "wait_fraction": 0.085, "cuda_peak_bytes": 3, "peak_rss_bytes": 4, "cache_megabytes": 12.5}


def test_the_container_tests_output_is_summarised() -> None:
    output = ("== sample case (test/input)\ndocker run: 12.345 s, exit status 0\nok\n== a case without its Z_ADC\n"
              "docker run: 3.001 s, exit status 2\ncontainer test passed\n")
    assert gpu_report.docker_summary(output, "hie-seg", built=False) == {
        "image": "hie-seg", "built": False, "docker_run_seconds": [12.345, 3.001],
        "docker_run_exit_statuses": [0, 2], "passed": True}
    assert gpu_report.docker_summary("docker run: 1.000 s, exit status 1\n", "x", True)["passed"] is False


def write_mask(path: Path, voxels: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(voxels.astype(np.uint8)), str(path))
    return path


def test_masks_are_compared_voxel_for_voxel(tmp_path: Path) -> None:
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1, 2, 3] = mask[2, 2, 2] = 1
    other = mask.copy()
    other[0, 0, 0], other[1, 2, 3] = 1, 0
    first, second = write_mask(tmp_path / "a.mha", mask), write_mask(tmp_path / "b.mha", other)
    assert gpu_check.differing_voxels(first, second) == 2
    assert gpu_check.differing_voxels(first, first) == 0
    assert gpu_check.lesion_voxels(first) == 2
    with pytest.raises(StepFailed, match="is \\(6, 5, 4\\) voxels"):
        gpu_check.differing_voxels(first, write_mask(tmp_path / "c.mha", np.zeros((4, 5, 7))))


def test_amp_off_is_a_copy_of_the_weights_folder_saying_so(untrained_model_dir: Path, tmp_path: Path) -> None:
    assert ExperimentConfig.load(untrained_model_dir / CONFIG_FILENAME).inference.amp is True
    assert gpu_check.with_amp(untrained_model_dir, tmp_path / "amp", True) == untrained_model_dir
    copy = gpu_check.with_amp(untrained_model_dir, tmp_path / "fp32", False)
    assert copy == tmp_path / "fp32"
    original, changed = (ExperimentConfig.load(folder / CONFIG_FILENAME) for folder in (untrained_model_dir, copy))
    assert changed.inference.amp is False
    assert changed.with_overrides({"inference.amp": True}).to_dict() == original.to_dict()
    assert (copy / "fold0.pt").resolve() == (untrained_model_dir / "fold0.pt").resolve()
    assert sorted(p.name for p in copy.iterdir()) == [CONFIG_FILENAME, "fold0.pt"]
