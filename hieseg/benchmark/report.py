"""The benchmark's report: the machine it ran on, and its figures as ``bench.json`` and ``bench.md``."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hieseg.benchmark.timing import (
    BASELINE,
    CROPPED_BASELINE,
    PROJECT,
    STAGES,
    TRAIN_WARMUP_STEPS,
)
from hieseg.io.images import write_atomic
from hieseg.runtime.devices import select_device
from hieseg.runtime.versions import library_versions

JSON_NAME, MARKDOWN_NAME = "bench.json", "bench.md"
MIB = 1024 * 1024


def size_name(size: Sequence[int]) -> str:
    return "x".join(str(n) for n in size)


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """CPU, cores, threads, library versions and the device, to read the timings against."""
    resolved = select_device(device)
    versions = library_versions()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": threads or torch.get_num_threads(),
        **{name: versions[name] for name in ("torch", "monai", "simpleitk", "python")},
        "device": str(resolved),
        "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else cpu_model(),
        "load_average_at_start": list(os.getloadavg()),
    }


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for the machine line of a report."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"



def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, model, whole-case table, stage table, training."""
    machine = report["machine"]
    lines = [
        "# hieseg benchmark",
        "",
        f"- Machine: {machine['cpu']}, {machine['usable_cores']} usable of {machine['cpu_count']} cores, "
        f"torch {machine['torch']} (intra-op threads: {machine['torch_threads']}), MONAI {machine['monai']}, "
        f"device {machine['device']} ({machine['device_name']})",
        f"- Load average (1, 5, 15 min) at start {_load(machine['load_average_at_start'])}, "
        f"at end {_load(machine['load_average_at_end'])}",
        f"- Model: {report['model']['note']}; weights (SHA-256 prefix): {_settings(report['model']['weights'])}",
        f"- Each figure: median [min-max] of {report['repeats']} whole-case runs after one warm-up run "
        "(cold s), each predictor in a fresh process; whole case = read .mha, preprocess, predict, "
        "invert to the native grid, threshold, write .mha",
        "- Baseline: the same read, resampling, normalisation, inversion, threshold and write, but the whole "
        "resampled volume (no brain crop) through a default MONAI sliding window",
    ]
    if report["cases"]:
        lines += [f"- Project settings: {_settings(report['cases'][0]['project']['settings'])}",
                  f"- Baseline settings: {_settings(report['cases'][0]['baseline']['settings'])}"]
    lines += ["", "## Whole-case inference", "", *_case_table(report["cases"]), "", *AGREEMENT_NOTES,
              "", "## Against a baseline on the same brain-cropped input", "", *CROPPED_NOTES, "",
              *_cropped_table(report["cases"]),
              "", "## Where the time goes (median seconds per stage)", "", *_stage_table(report["cases"])]
    if "batch" in report:
        lines += ["", "## Batch prediction", "", *_batch_lines(report["batch"])]
    if "training" in report:
        lines += ["", "## Training", "", *_training_lines(report["training"])]
    return "\n".join(lines) + "\n"


AGREEMENT_NOTES = (
    "Differing voxels: where the two written masks differ, and as a % of the brain's voxels (ADC > 0). "
    "Mask Dice: between the two masks. Max abs dP: largest difference of the two probability maps on the "
    "native grid. Dice at baseline q95: both probability maps thresholded at the baseline's 95th percentile "
    "in the brain (informative even for random weights, whose masks are near empty). Dice vs truth: each "
    "mask against the synthetic case's lesion label.",
)


def _case_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| case (x y z) | project s | baseline s | ratio | project Mvox/s | baseline Mvox/s "
        "| project RSS MiB | baseline RSS MiB | differing voxels (of brain) | mask Dice "
        "| max abs dP | Dice at baseline q95 | Dice vs truth project / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        project, baseline, agree = case["project"], case["baseline"], case["agreement"]
        rows.append(
            f"| {size_name(case['size'])} | {_spread(project['seconds'])} | {_spread(baseline['seconds'])} "
            f"| {case['ratio']:.2f} | {case['project_voxels_per_second'] / 1e6:.2f} "
            f"| {case['baseline_voxels_per_second'] / 1e6:.2f} | {_mib(project)} | {_mib(baseline)} "
            f"| {agree['differing_voxels']} ({100 * agree['differing_fraction_of_brain']:.3f} %) "
            f"| {agree['dice']:.4f} | {agree['max_abs_probability_difference']:.4f} | {agree['quantile_dice']:.4f} "
            f"| {agree['project_truth_dice']:.4f} / {agree['baseline_truth_dice']:.4f} |"
        )
    return rows


CROPPED_NOTES = (
    "The same default MONAI sliding window, given exactly the project's brain-cropped input and inverted "
    "with MONAI's own inverse: what remains is batching, inference mode, blending and the support-only "
    "inversion. With the same (constant) blending the masks are identical up to float rounding.",
)


def _cropped_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = ["| case (x y z) | project s | cropped baseline s | ratio | differing voxels (of brain) | max abs dP |",
            "|---|---|---|---|---|---|"]
    for case in cases:
        agree = case["cropped_agreement"]
        rows.append(
            f"| {size_name(case['size'])} | {_spread(case[PROJECT]['seconds'])} "
            f"| {_spread(case[CROPPED_BASELINE]['seconds'])} | {case['cropped_ratio']:.2f} "
            f"| {agree['differing_voxels']} ({100 * agree['differing_fraction_of_brain']:.3f} %) "
            f"| {agree['max_abs_probability_difference']:.2e} |"
        )
    return rows


def _stage_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = ["| case | predictor | network grid | cold s | " + " | ".join(STAGES) + " |",
            "|---|---|---|---|" + "---|" * len(STAGES)]
    for case in cases:
        for kind in (PROJECT, BASELINE, CROPPED_BASELINE):
            timing = case[kind]
            stages = " | ".join(f"{timing['stage_seconds'][name]:.3f}" for name in STAGES)
            rows.append(f"| {size_name(case['size'])} | {kind} | {size_name(timing['network_grid'])} "
                        f"| {timing['cold_seconds']:.2f} | {stages} |")
    return rows


def _batch_lines(batch: dict[str, Any]) -> list[str]:
    return [
        f"{batch['cases']} synthetic cases of {size_name(batch['size'])} voxels in container layout, the weights "
        "folder's own settings; each command timed from outside, process start, imports and weight loading "
        "included, in the same run:",
        "",
        "| command | processes | seconds | cases/s |",
        "|---|---|---|---|",
        f"| one `inference.py` per case | {batch['cases']} | {batch['loop_seconds']:.2f} "
        f"| {batch['loop_cases_per_second']:.2f} |",
        f"| `python -m hieseg.predict` | 1 | {batch['predict_seconds']:.2f} | {batch['predict_cases_per_second']:.2f} |",
        "",
        f"- Ratio (predict cases/s over the loop's): **{batch['ratio']:.2f}**",
        f"- Masks identical to `inference.py`'s (voxels and geometry): {batch['identical_masks']} of {batch['cases']}",
    ]


def _training_lines(training: dict[str, Any]) -> list[str]:
    return [
        f"- Configuration: loss {training['loss']}, network {training['network']} ({training['parameters']:,} "
        f"parameters), patch "
        f"{size_name(training['patch_size'])}, batch {training['batch_size']} cases x "
        f"{training['samples_per_case']} patches = {training['samples_per_step']} patches per step",
        f"- {training['steps_per_second']:.3f} steps/s, {training['samples_per_second']:.2f} patches/s "
        f"(median of {len(training['step_seconds'])} steps after {TRAIN_WARMUP_STEPS} warm-up; step "
        f"{_spread(training['step_seconds'])} s)",
        f"- Drawing and augmenting patches: {training['data_seconds_per_step']:.3f} s per step in one process "
        "(training overlaps it in DataLoader workers)",
        f"- Peak RSS {training['peak_rss_bytes'] / MIB:.0f} MiB" + (
            f", CUDA peak {training['cuda_peak_bytes'] / MIB:.0f} MiB" if training["cuda_peak_bytes"] else ""),
    ]


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _mib(timing: dict[str, Any]) -> str:
    text = f"{timing['peak_rss_bytes'] / MIB:.0f}"
    if timing["cuda_peak_bytes"]:
        text += f" (CUDA {timing['cuda_peak_bytes'] / MIB:.0f})"
    return text


def _load(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def write_report(report: dict[str, Any], out: Path) -> str:
    """Write ``bench.json`` and ``bench.md`` to ``out``, each atomically; return the Markdown."""
    text = markdown(report)
    for name, content in ((JSON_NAME, json.dumps(report, indent=2) + "\n"), (MARKDOWN_NAME, text)):
        write_atomic(Path(out) / name, lambda temporary, content=content: temporary.write_text(content))
    return text


