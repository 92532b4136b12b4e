"""One prepared check of the project on a CUDA machine: ``scripts/gpu_check.sh OUT`` (``python -m hieseg.gpu_check``).

In under 8 minutes on one GPU it runs, each step in its own process with its own time box, and
writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (rewritten after every step, so a check
stopped midway still leaves what it measured), with each step's full output in ``OUT/logs/``:

* ``machine``: the GPU, its memory, the driver, torch, CUDA, cuDNN and NCCL versions;
* ``inference-cpu``, ``inference-cuda-amp``, ``inference-cuda-fp32``: ``inference.py`` on the sample
  (``test/input``, the weights of ``model/``) on the CPU, then on CUDA with mixed precision and
  without it (a copy of the weights folder with ``inference.amp`` false): seconds (process
  included), peak GPU memory, and how many voxels each CUDA mask differs from the CPU one;
* ``bench-<size>``: ``python -m hieseg.bench --device cuda`` at each of ``BENCH_SIZES``: the project's
  predictor against plain MONAI ``sliding_window_inference`` on the same weights, the ratio measured
  in the same run and the masks compared;
* ``predict``: ``python -m hieseg.predict`` on ``PREDICT_CASES`` generated cases on one GPU: cases/s;
* ``training-<network>``: ``python -m hieseg.bench --training --device cuda``, the default recipe
  (96x96x32 patches, AMP) with ``TRAINING_LOOP_STEPS`` loop steps: steps/s, peak memory, the loader's
  wait per step, the workers needed (:mod:`hieseg.benchmark.pipeline`), for each of ``TRAINING_NETWORKS``;
* ``torchrun``: ``train.py`` under ``torchrun --nproc_per_node 1`` on CUDA (NCCL), one short epoch;
* ``docker``: ``do_test_run.sh`` (the image on the sample, ``--gpus all``) when a container engine
  answers; the image is built first unless it is there (``BASE_IMAGE``, ``DOCKER_IMAGE_TAG`` as for
  ``do_build.sh``).

A step that fails or outlives its time box is recorded with its error and the next one runs. The
steps share a budget (``DEFAULT_BUDGET_S``): a step gets at most what is left of it, and one that
would get less than ``MIN_STEP_S`` is skipped, so the whole check ends in time. Without CUDA nothing
runs: one line says so (:func:`no_cuda_line`) and the exit status is 0.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import hieseg
from hieseg.benchmark.gpu_report import (
    FAILED,
    OK,
    SKIPPED,
    STATUSES,
    TIMED_OUT,
    bench_summary,
    docker_summary,
    one_line,
    training_summary,
    write_report,
)
from hieseg.benchmark.report import cpu_model, size_name
from hieseg.benchmark.suite import write_batch_cases
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.io.images import MHA_SUFFIX
from hieseg.io.layout import container_interface
from hieseg.model.weights import WEIGHTS_PATTERN
from hieseg.synthesis.generator import write_release

LOGS_DIR, MASKS_DIR = "logs", "masks"
REPORT_FORMAT = 1
DEFAULT_BUDGET_S = 440.0
"""Seconds the steps may take together: with start-up and the report the check stays under 8 minutes."""
MIN_STEP_S = 15.0
"""A step that would get less time than this is skipped."""
KILL_GRACE_S = 5.0
"""Seconds a timed-out step's processes get between SIGTERM and SIGKILL."""
ERROR_CHARS = 2000
"""The end of a failed step's output kept in the report (the whole of it is in ``logs/``)."""
BENCH_SIZES: tuple[tuple[int, int, int], ...] = ((128, 128, 16), (192, 192, 32), (256, 256, 64), (512, 512, 128))
BENCH_REPEATS = 2
PREDICT_CASES = 24
PREDICT_SIZE = (192, 192, 32)
TRAINING_NETWORKS = ("unet", "dynunet", "swinunetr")
TRAINING_LOOP_STEPS = 200
TRAINING_NETWORK_STEPS = 20
TRAINING_CASES = 24
TRAINING_CASE_SIZE = (192, 192, 48)
"""12 batches per pass at batch 2: the 12 workers auto starts on 16 cores all draw."""
TORCHRUN_CASES = 4
TORCHRUN_CASE_SIZE = (128, 128, 32)
CASE_SEED = 20242
INFERENCE_PROBE = """
import json, sys, time
started = time.perf_counter()
import torch
from hieseg.cli.infer import main
status = main(sys.argv[2:])
peak = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_initialized() else None
with open(sys.argv[1], "w") as handle:
    json.dump({"status": status, "seconds_in_process": time.perf_counter() - started, "cuda_peak_bytes": peak}, handle)
sys.exit(status)
"""
"""``inference.py`` (its ``main``) in a process that then records its peak GPU memory: argv[1] the record's path."""


class StepFailed(Exception):
    """A step did not give its figures; the message says why."""


class StepTimedOut(StepFailed):
    """A step's command outlived its time box and was stopped."""


class StepSkipped(Exception):
    """A step that cannot run here (no container engine, no time left); the message says why."""


@dataclass
class StepResult:
    """One step of the check as the report holds it."""

    name: str
    status: str
    seconds: float
    timeout_seconds: float | None
    result: dict[str, Any] | None = None
    error: str | None = None
    """Why a step failed or timed out (the end of its output), or why it was skipped."""


@dataclass
class Context:
    """What the steps share: where things are, and what earlier steps prepared."""

    out: Path
    scratch: Path
    model: Path
    sample: Path
    repo: Path
    device: str = "cuda"
    """Where the steps run: ``cuda``; ``cpu`` only rehearses the steps on a machine without a GPU."""
    python: str = sys.executable
    environment: dict[str, str] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict)

    def log_path(self, step: str) -> Path:
        return self.out / LOGS_DIR / f"{step}.log"


@dataclass
class Step:
    """A named action with its time box: ``action(context, seconds allowed)`` returns the step's figures."""

    name: str
    budget_s: float
    action: Callable[[Context, float], dict[str, Any]]


@dataclass
class CommandOutcome:
    returncode: int
    seconds: float
    output: str


def no_cuda_line(out: Path, torch_version: str, steps: Sequence[str]) -> str:
    """What the check says, and all it does, on a machine without CUDA."""
    return (f"gpu_check: no CUDA device (torch {torch_version}, torch.cuda.is_available() is False): skipped "
            f"{', '.join(steps)}; nothing written to {out}")


def run_command(command: Sequence[str], timeout: float, context: Context, log_name: str | None = None,
                environment: dict[str, str] | None = None) -> CommandOutcome:
    """Run ``command`` in the repository in its own process group, at most ``timeout`` seconds.

    On timeout the whole group (the command and every process it started) gets SIGTERM, then
    SIGKILL after ``KILL_GRACE_S``, and :class:`StepTimedOut` is raised; a non-zero exit raises
    :class:`StepFailed`. Either carries the end of the output; all of it goes to ``logs/<log_name>.log``.
    """
    started = time.perf_counter()
    process = subprocess.Popen(list(command), cwd=context.repo, env=environment or context.environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    timed_out = False
    try:
        output, _ = process.communicate(timeout=max(timeout, 0.001))
    except subprocess.TimeoutExpired:
        timed_out = True
        output = _stop_group(process)
    except BaseException:  # Ctrl-C or SIGTERM of the check: its step's processes, in their own group, end too
        _stop_group(process)
        raise
    seconds = time.perf_counter() - started
    output = output or ""
    if log_name:
        path = context.log_path(log_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(f"$ {' '.join(command)}\n{output}\n[exit {process.returncode} after {seconds:.1f} s]\n")
    if timed_out:
        raise StepTimedOut(f"stopped after {timeout:.0f} s: {' '.join(command[:4])} ...; output ends: "
                           f"{_tail(output)}")
    if process.returncode != 0:
        raise StepFailed(f"exit status {process.returncode}: {_tail(output)}")
    return CommandOutcome(process.returncode, seconds, output)


def _stop_group(process: subprocess.Popen) -> str:
    """SIGTERM to the process's group, SIGKILL if it lingers; the output it had written."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        try:
            output, _ = process.communicate(timeout=KILL_GRACE_S)
            if signum == signal.SIGTERM:
                try:  # what the command started may outlive it: end the group's remaining processes too
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return output
        except subprocess.TimeoutExpired:
            continue
    return ""


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= ERROR_CHARS else "..." + text[-ERROR_CHARS:]


def run_steps(steps: Sequence[Step], context: Context, budget_s: float,
              clock: Callable[[], float] = time.monotonic,
              on_step: Callable[[list[StepResult]], None] | None = None) -> list[StepResult]:
    """Every step in turn, each given ``min(its budget, what is left of budget_s)`` seconds; a failing step is
    recorded and the next one runs; a step that would get less than ``MIN_STEP_S`` is skipped.
    ``on_step`` sees the results so far after each step."""
    deadline = clock() + budget_s
    results: list[StepResult] = []
    for step in steps:
        left = deadline - clock()
        if left < MIN_STEP_S:
            results.append(StepResult(step.name, SKIPPED, 0.0, None, error=(
                f"out of time: {max(left, 0):.0f} s left of the {budget_s:.0f} s budget")))
        else:
            timeout = min(step.budget_s, left)
            started = clock()
            status, figures, error = OK, None, None
            try:
                figures = step.action(context, timeout)
            except StepSkipped as reason:
                status, error = SKIPPED, str(reason)
            except StepTimedOut as reason:
                status, error = TIMED_OUT, str(reason)
            except Exception as exc:  # noqa: BLE001 - any failure is recorded, and the next step runs
                status, error = FAILED, _tail(f"{type(exc).__name__}: {exc}")
            results.append(StepResult(step.name, status, round(clock() - started, 3), round(timeout, 3),
                                      figures, error))
        if on_step is not None:
            on_step(results)
    return results


def assemble_report(results: Sequence[StepResult], started: str, seconds: float, budget_s: float,
                    planned: Sequence[str]) -> dict[str, Any]:
    """The report: the machine (the ``machine`` step's figures), every step, and the count of each status.
    ``planned``: every step's name, so a report written midway says which steps are still to come."""
    done = [result.name for result in results]
    machine = next((r.result for r in results if r.name == "machine" and r.status == OK), None)
    return {
        "format_version": REPORT_FORMAT,
        "started": started,
        "seconds": round(seconds, 3),
        "budget_seconds": budget_s,
        "machine": machine,
        "steps": [dataclasses.asdict(result) for result in results],
        "pending": [name for name in planned if name not in done],
        "summary": {status: sum(result.status == status for result in results) for status in STATUSES},
    }


# --- the steps ----------------------------------------------------------------------------------------------------

def machine_step(context: Context, timeout: float) -> dict[str, Any]:
    """The GPU, the driver and the libraries."""
    import monai
    import torch

    properties = torch.cuda.get_device_properties(0)
    driver = None
    if shutil.which("nvidia-smi"):
        smi = run_command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], min(timeout, 20),
                          context, "machine")
        driver = smi.output.strip().splitlines()[0] if smi.output.strip() else None
    try:
        nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
    except (AttributeError, RuntimeError):
        nccl = None
    return {
        "gpu": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_bytes": int(properties.total_memory),
        "capability": f"{properties.major}.{properties.minor}",
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "docker": shutil.which("docker") is not None,
    }


def inference_step(device: str, amp: bool | None) -> Callable[[Context, float], dict[str, Any]]:
    """``inference.py`` on the sample on ``device`` (``amp`` None: as the weights folder says)."""

    def action(context: Context, timeout: float) -> dict[str, Any]:
        name = "cpu" if amp is None else f"cuda-{'amp' if amp else 'fp32'}"
        model = context.model if amp is None else with_amp(context.model, context.scratch / f"model-{name}", amp)
        target = device if amp is None else context.device
        output = context.scratch / f"inference-{name}"
        record = context.scratch / f"inference-{name}.json"
        command = [context.python, "-c", INFERENCE_PROBE, str(record), "--input", str(context.sample),
                   "--output", str(output), "--model", str(model), "--device", target]
        outcome = run_command(command, timeout, context, f"inference-{name}")
        probe = json.loads(record.read_text())
        mask = context.out / MASKS_DIR / f"inference-{name}{MHA_SUFFIX}"
        mask.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(only_mask(output), mask)
        result = {"device": target, "amp": amp, "seconds": outcome.seconds,
                  "seconds_in_process": probe["seconds_in_process"], "cuda_peak_bytes": probe["cuda_peak_bytes"],
                  "lesion_voxels": lesion_voxels(mask), "mask": str(mask.relative_to(context.out))}
        if amp is None:
            context.prepared["cpu_mask"] = mask
        else:
            reference = context.prepared.get("cpu_mask")
            result["differing_voxels_vs_cpu"] = None if reference is None else differing_voxels(mask, reference)
        return result

    return action


def with_amp(model: Path, folder: Path, amp: bool) -> Path:
    """The weights folder itself when its ``inference.amp`` is ``amp``, else a copy in ``folder`` whose config.json
    says ``amp`` (the weights linked, not copied)."""
    config = ExperimentConfig.load(Path(model) / CONFIG_FILENAME)
    if config.inference.amp == amp:
        return Path(model)
    if not (folder / CONFIG_FILENAME).exists():
        folder.mkdir(parents=True, exist_ok=True)
        for weights in Path(model).glob(WEIGHTS_PATTERN):
            (folder / weights.name).symlink_to(weights.resolve())
        config.with_overrides({"inference.amp": amp}).save(folder / CONFIG_FILENAME)
    return folder


def only_mask(output_root: Path) -> Path:
    masks = sorted((output_root / container_interface().output_dir).glob(f"*{MHA_SUFFIX}"))
    if len(masks) != 1:
        raise StepFailed(f"expected one mask in {output_root / container_interface().output_dir}, found {len(masks)}")
    return masks[0]


def bench_step(size: tuple[int, int, int]) -> Callable[[Context, float], dict[str, Any]]:
    """``python -m hieseg.bench`` on one size on CUDA: the project against plain MONAI, the same weights."""

    def action(context: Context, timeout: float) -> dict[str, Any]:
        out = context.out / "bench" / size_name(size)
        command = [context.python, "-m", "hieseg.bench", "--model", str(context.model), "--sizes", size_name(size),
                   "--device", context.device, "--repeats", str(BENCH_REPEATS), "--batch-cases", "0", "--no-train",
                   "--out", str(out)]
        run_command(command, timeout, context, f"bench-{size_name(size)}")
        return {**bench_summary(json.loads((out / "bench.json").read_text())), "report": str(out / "bench.md")}

    return action


def predict_step(context: Context, timeout: float) -> dict[str, Any]:
    """``python -m hieseg.predict`` on ``PREDICT_CASES`` generated cases, one GPU."""
    cases = write_batch_cases(PREDICT_SIZE, PREDICT_CASES, context.scratch / "predict-cases")
    output = context.scratch / "predict-masks"
    command = [context.python, "-m", "hieseg.predict", "--input", str(cases), "--output", str(output),
               "--model", str(context.model), "--device", context.device, "--no-progress"]
    outcome = run_command(command, timeout, context, "predict")
    written = sorted(output.glob(f"*{MHA_SUFFIX}"))
    predicting = _predicting_seconds(output / "predictions.csv")
    return {"cases": PREDICT_CASES, "size": list(PREDICT_SIZE), "masks_written": len(written),
            "seconds": outcome.seconds, "cases_per_second": PREDICT_CASES / outcome.seconds,
            "predicting_seconds": predicting,
            "cases_per_second_predicting": PREDICT_CASES / predicting if predicting else 0.0}


def _predicting_seconds(table: Path) -> float:
    """The sum of the per-case seconds in predict's table (reading, predicting and writing each case)."""
    with table.open(newline="") as handle:
        return sum(float(row["seconds"]) for row in csv.DictReader(handle) if row.get("seconds"))


def training_step(network: str) -> Callable[[Context, float], dict[str, Any]]:
    """``python -m hieseg.bench --training`` on CUDA: the default recipe with ``network``."""

    def action(context: Context, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        release = prepared_release(context, "training_release", TRAINING_CASE_SIZE, TRAINING_CASES)
        out = context.out / f"training-{network}"
        command = [context.python, "-m", "hieseg.bench", "--training", "--data", str(release),
                   "--device", context.device,
                   "--set", f"network.name={network}", "--steps", str(TRAINING_NETWORK_STEPS),
                   "--loop-steps", str(TRAINING_LOOP_STEPS), "--out", str(out)]
        run_command(command, timeout - (time.monotonic() - started), context, f"training-{network}")
        return {**training_summary(json.loads((out / "training.json").read_text())),
                "report": str(out / "training.md")}

    return action


def prepared_release(context: Context, key: str, size: tuple[int, int, int], cases: int) -> Path:
    """A synthetic release written once for the steps that share it."""
    if key not in context.prepared:
        root = context.scratch / key
        write_release(root, cases, seed=CASE_SEED, sizes=size)
        context.prepared[key] = root
    return context.prepared[key]


def torchrun_step(context: Context, timeout: float) -> dict[str, Any]:
    """``train.py`` under ``torchrun --nproc_per_node 1`` on CUDA (NCCL): one short epoch, one validation."""
    started = time.monotonic()
    release = prepared_release(context, "torchrun_release", TORCHRUN_CASE_SIZE, TORCHRUN_CASES)
    out = context.scratch / "torchrun-model"
    command = [context.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(context.repo / "train.py"), "--data", str(release), "--out", str(out), "--device", context.device,
               "--epochs", "1", "--folds", "2", "--no-progress", "--set", "train.steps_per_epoch=5",
               "--set", "tuning.enabled=false"]
    outcome = run_command(command, timeout - (time.monotonic() - started), context, "torchrun")
    return {"backend": "nccl" if context.device == "cuda" else "gloo", "world_size": 1, "seconds": outcome.seconds,
            "weights_written": (out / "fold0.pt").is_file(), "command": " ".join(command[1:])}


def docker_step(context: Context, timeout: float) -> dict[str, Any]:
    """``do_test_run.sh`` (the image on the sample, ``--gpus all``), building the image when it is not there."""
    if shutil.which("docker") is None:
        raise StepSkipped("no docker command: no container engine on this machine")
    started = time.monotonic()
    try:
        run_command(["docker", "info"], min(20.0, timeout), context, "docker")
    except StepFailed as reason:
        raise StepSkipped(f"docker does not answer (no engine running): {one_line(str(reason))[:300]}") from None
    image = context.environment.get("DOCKER_IMAGE_TAG", "hie-seg")
    try:
        run_command(["docker", "image", "inspect", image], min(20.0, timeout), context, "docker")
        built = False
    except StepFailed:
        built = True
    environment = {**context.environment, **({} if built else {"SKIP_BUILD": "1"})}
    outcome = run_command([str(context.repo / "do_test_run.sh")], timeout - (time.monotonic() - started), context,
                          "docker", environment)
    return docker_summary(outcome.output, image, built)


def planned_steps() -> list[Step]:
    """The check's steps in the order they run, each with its time box (seconds)."""
    return [
        Step("machine", 30, machine_step),
        Step("inference-cpu", 60, inference_step("cpu", None)),
        Step("inference-cuda-amp", 45, inference_step("cuda", True)),
        Step("inference-cuda-fp32", 45, inference_step("cuda", False)),
        *(Step(f"bench-{size_name(size)}", budget, bench_step(size))
          for size, budget in zip(BENCH_SIZES, (45, 45, 60, 90))),
        Step("predict", 60, predict_step),
        *(Step(f"training-{network}", budget, training_step(network))
          for network, budget in zip(TRAINING_NETWORKS, (90, 75, 90))),
        Step("torchrun", 60, torchrun_step),
        Step("docker", 120, docker_step),
    ]


def select_steps(steps: Sequence[Step], only: Sequence[str] | None) -> list[Step]:
    """The steps named in ``only`` (a name, or its part before ``-``: ``bench`` is every bench step); all when None.
    ``machine`` always runs first, so the report says where it ran."""
    if not only:
        return list(steps)
    wanted = set(only) | {"machine"}
    unknown = wanted - {step.name for step in steps} - {step.name.split("-")[0] for step in steps}
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(sorted(unknown))}; the steps are "
                         f"{', '.join(step.name for step in steps)}")
    return [step for step in steps if step.name in wanted or step.name.split("-")[0] in wanted]


def subprocess_environment(repo: Path) -> dict[str, str]:
    """This environment with the checkout importable, for the steps' commands."""
    python_path = os.pathsep.join(filter(None, (str(repo), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "PYTHONPATH": python_path}


def repository_root() -> Path:
    """The checkout holding the package (``inference.py``, ``train.py``, ``test/input``, ``model/``)."""
    return Path(hieseg.__file__).resolve().parent.parent


def run_gpu_check(out: Path, scratch: Path, model: Path, sample: Path, budget_s: float = DEFAULT_BUDGET_S,
                  only: Sequence[str] | None = None, progress: Callable[[StepResult], None] | None = None,
                  device: str = "cuda") -> dict[str, Any]:
    """Run the check's steps, rewriting the report in ``out`` after each; the final report."""
    repo = repository_root()
    steps = select_steps(planned_steps(), only)
    context = Context(out=Path(out), scratch=Path(scratch), model=Path(model).resolve(),
                      sample=Path(sample).resolve(), repo=repo, device=device,
                      environment=subprocess_environment(repo))
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.monotonic()
    planned = [step.name for step in steps]

    def record(results: list[StepResult]) -> None:
        write_report(assemble_report(results, started_at, time.monotonic() - started, budget_s, planned), out)
        if progress is not None:
            progress(results[-1])

    results = run_steps(steps, context, budget_s, on_step=record)
    return assemble_report(results, started_at, time.monotonic() - started, budget_s, planned)


def differing_voxels(path: Path, reference: Path) -> int:
    """Voxels where two masks of one grid differ (a grid that differs is an error)."""
    image, other = sitk.ReadImage(str(path)), sitk.ReadImage(str(reference))
    if image.GetSize() != other.GetSize():
        raise StepFailed(f"{path} is {image.GetSize()} voxels, {reference} {other.GetSize()}")
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(image) != sitk.GetArrayViewFromImage(other)))


def lesion_voxels(path: Path) -> int:
    """Foreground voxels of a mask."""
    return int(np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))))
