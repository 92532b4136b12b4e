"""The GPU check's report: ``gpu_check.json`` and ``gpu_check.md``, and what each step keeps of the reports and
masks of the commands it ran (:mod:`hieseg.benchmark.gpu_check`)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from hieseg.benchmark.report import size_name
from hieseg.io.images import write_atomic

OK, FAILED, TIMED_OUT, SKIPPED = "ok", "failed", "timed_out", "skipped"
STATUSES = (OK, FAILED, TIMED_OUT, SKIPPED)
JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"
MIB = 1024 * 1024
GIB = 1024 * MIB
DOCKER_RUN_LINE = re.compile(r"docker run: (\d+\.\d+) s, exit status (\d+)")


def write_report(report: dict[str, Any], out: Path) -> str:
    """``gpu_check.json`` and ``gpu_check.md`` in ``out``, each atomically; returns the Markdown."""
    text = markdown(report)
    for name, content in ((JSON_NAME, json.dumps(report, indent=2) + "\n"), (MARKDOWN_NAME, text)):
        write_atomic(Path(out) / name, lambda temporary, content=content: temporary.write_text(content))
    return text


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the machine, a table of the steps with their main figures, the benchmark and
    training tables, and every error."""
    summary = report["summary"]
    lines = [
        "# hieseg GPU check",
        "",
        f"- Started {report['started']}; {report['seconds']:.0f} s of a {report['budget_seconds']:.0f} s budget; "
        f"steps: {summary[OK]} ok, {summary[FAILED]} failed, {summary[TIMED_OUT]} timed out, "
        f"{summary[SKIPPED]} skipped" + (f"; not run yet: {', '.join(report['pending'])}" if report["pending"] else ""),
        f"- {_machine_line(report['machine'])}",
        "",
        "| step | status | seconds | figures |",
        "|---|---|---|---|",
    ]
    for step in report["steps"]:
        figures = step_figures(step) if step["status"] == OK else ""
        lines.append(f"| {step['name']} | {step['status']} | {step['seconds']:.1f} | {figures} |")
    steps = {step["name"]: step for step in report["steps"] if step["status"] == OK}
    bench = [steps[name]["result"] for name in steps if name.startswith("bench-")]
    if bench:
        lines += ["", "## Inference against plain MONAI sliding_window_inference (same weights, same run)", "",
                  "| case (x y z) | project s | plain MONAI s | ratio | vs cropped baseline | differing voxels "
                  "(of brain) | project CUDA MiB | plain MONAI CUDA MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [_bench_row(result) for result in bench]
    training = [steps[name]["result"] for name in steps if name.startswith("training-")]
    if training:
        lines += ["", "## Training, default recipe", "",
                  "| network | parameters | AMP | loader patches/s per worker | device steps/s | workers needed "
                  "| loop workers | loop steps/s | wait s/step | wait % | CUDA peak MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_training_row(result) for result in training]
    errors = [step for step in report["steps"] if step["status"] != OK]
    if errors:
        lines += ["", "## Failed, timed out or skipped", ""]
        lines += [f"- {step['name']} ({step['status']}): {one_line(step['error'] or '')}" for step in errors]
    return "\n".join(lines) + "\n"


def _machine_line(machine: dict[str, Any] | None) -> str:
    if machine is None:
        return "Machine: unknown (the machine step did not succeed)"
    return (f"GPU: {machine['gpu']} ({machine['gpu_memory_bytes'] / GIB:.1f} GiB, compute capability "
            f"{machine['capability']}), driver {machine['driver']}; torch {machine['torch']}, CUDA {machine['cuda']}, "
            f"cuDNN {machine['cudnn']}, NCCL {machine['nccl']}, MONAI {machine['monai']}; "
            f"{machine['usable_cores']} usable CPU cores ({machine['cpu']})")


def step_figures(step: dict[str, Any]) -> str:
    """A step's main figures in one table cell."""
    name, result = step["name"], step["result"]
    if name == "machine":
        return f"{result['gpu']}, {result['gpu_count']} GPU(s)"
    if name.startswith("inference-"):
        text = f"{result['seconds']:.2f} s ({result['seconds_in_process']:.2f} s in process)"
        if result["cuda_peak_bytes"] is not None:
            text += f", CUDA peak {result['cuda_peak_bytes'] / MIB:.0f} MiB"
        text += f", {result['lesion_voxels']} lesion voxels"
        if result.get("differing_voxels_vs_cpu") is not None:
            text += f", {result['differing_voxels_vs_cpu']} voxels differ from the CPU mask"
        return text
    if name.startswith("bench-"):
        return (f"ratio {result['ratio']:.2f} ({result['project_seconds']:.2f} s against "
                f"{result['baseline_seconds']:.2f} s)")
    if name == "predict":
        return (f"{result['cases']} cases of {size_name(result['size'])}: {result['cases_per_second']:.2f} cases/s "
                f"(process included; {result['cases_per_second_predicting']:.2f} cases/s predicting)")
    if name.startswith("training-"):
        return (f"{result['loop_steps_per_second']:.2f} steps/s, {result['loop_workers']} loader worker(s), "
                f"wait {result['wait_seconds_per_step']:.3f} s/step; workers needed {result['workers_needed']}")
    if name == "torchrun":
        return f"{result['backend']}, {result['world_size']} process, weights written: {result['weights_written']}"
    if name == "docker":
        runs = ", ".join(f"{seconds:.1f} s" for seconds in result["docker_run_seconds"])
        return f"image {result['image']}{' (built)' if result['built'] else ''}: docker run {runs}; " \
               f"passed: {result['passed']}"
    return json.dumps(result)


def _bench_row(result: dict[str, Any]) -> str:
    return (f"| {size_name(result['size'])} | {result['project_seconds']:.2f} | {result['baseline_seconds']:.2f} "
            f"| {result['ratio']:.2f} | {result['cropped_ratio']:.2f} | {result['differing_voxels']} "
            f"({100 * result['differing_fraction_of_brain']:.3f} %) | {_mib(result['project_cuda_peak_bytes'])} "
            f"| {_mib(result['baseline_cuda_peak_bytes'])} |")


def _training_row(result: dict[str, Any]) -> str:
    return (f"| {result['network']} | {result['parameters']:,} | {'yes' if result['amp'] else 'no'} "
            f"| {result['loader_patches_per_second_per_worker']:.1f} | {result['device_steps_per_second']:.2f} "
            f"| {result['workers_needed']} | {result['loop_workers']} | {result['loop_steps_per_second']:.2f} "
            f"| {result['wait_seconds_per_step']:.3f} | {100 * result['wait_fraction']:.1f} "
            f"| {_mib(result['cuda_peak_bytes'])} |")


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def one_line(text: str) -> str:
    return " ".join(text.split())


def bench_summary(bench: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``python -m hieseg.bench``'s bench.json (one case) that the check reports."""
    (case,) = bench["cases"]
    return {
        "size": case["size"],
        "project_seconds": statistics.median(case["project"]["seconds"]),
        "baseline_seconds": statistics.median(case["baseline"]["seconds"]),
        "ratio": case["ratio"],
        "cropped_ratio": case["cropped_ratio"],
        "differing_voxels": case["agreement"]["differing_voxels"],
        "differing_fraction_of_brain": case["agreement"]["differing_fraction_of_brain"],
        "project_cuda_peak_bytes": case["project"]["cuda_peak_bytes"],
        "baseline_cuda_peak_bytes": case["baseline"]["cuda_peak_bytes"],
    }


def training_summary(training: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``python -m hieseg.bench --training``'s training.json that the check reports."""
    loop = training["loop"]
    return {
        "network": training["recipe"]["network"],
        "parameters": training["recipe"]["parameters"],
        "patch_size": training["recipe"]["patch_size"],
        "patches_per_step": training["network"]["patches_per_step"],
        "amp": training["network"]["amp"],
        "loader_patches_per_second_per_worker": training["loader"]["patches_per_second"],
        "device_steps_per_second": training["network"]["steps_per_second"],
        "workers_needed": training["workers_needed"],
        "loop_workers": loop["workers"],
        "loop_steps": loop["steps"],
        "loop_steps_per_second": loop["steps_per_second"],
        "wait_seconds_per_step": loop["wait_seconds_per_step"],
        "wait_fraction": loop["wait_fraction"],
        "cuda_peak_bytes": loop["cuda_peak_bytes"],
        "peak_rss_bytes": loop["peak_rss_bytes"],
        "cache_megabytes": training["data"]["cache_megabytes"],
    }


def docker_summary(output: str, image: str, built: bool) -> dict[str, Any]:
    """``do_test_run.sh``'s output: the seconds of each ``docker run`` and whether the test passed."""
    return {
        "image": image,
        "built": built,
        "docker_run_seconds": [float(seconds) for seconds, _ in DOCKER_RUN_LINE.findall(output)],
        "docker_run_exit_statuses": [int(status) for _, status in DOCKER_RUN_LINE.findall(output)],
        "passed": "container test passed" in output,
    }
