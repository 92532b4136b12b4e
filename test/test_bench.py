"""The benchmark's report (structure only: timings are printed, never asserted) and its parts."""

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_SIZE, tiny_config

from hieseg.benchmark import report as bench_report
from hieseg.benchmark import suite as bench
from hieseg.benchmark.plain_monai import BASELINE_SW_BATCH_SIZE
from hieseg.benchmark.timing import BASELINE, CROPPED_BASELINE, PROJECT, STAGES
from hieseg.cli import bench as bench_cli
from hieseg.config.settings import CONFIG_FILENAME
from hieseg.io import layout
from hieseg.io.images import read_image, to_xyz_array


@pytest.fixture(scope="module")
def report(untrained_model_dir: Path, bench_scratch: Path) -> tuple[dict, Path]:
    """One tiny case, one repeat, two batch cases, the tiny configuration's training steps; written to a folder
    (about 90 s on 2 cores: every test that uses it is slow)."""
    scratch = bench_scratch
    result = bench.run_benchmark(
        untrained_model_dir, [SMALL_SIZE], repeats=1, device="cpu", overrides={"sw_batch_size": 2},
        scratch=scratch / "work", threads=1, batch_cases=2,
    )
    out = scratch / "results"
    bench_report.write_report(result, out)
    return result, out


@pytest.fixture(scope="module")
def bench_scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


def written_outputs(scratch: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The mask and probability a predictor of the benchmark wrote for the one case."""
    folder = scratch / "work" / "cases" / "x".join(map(str, SMALL_SIZE)) / kind
    mask = to_xyz_array(read_image(folder / f"{bench.CASE_UUID}.mha"), np.uint8)
    return mask, np.load(folder / "probability.npy")


@pytest.mark.slow
def test_report_times_both_predictors_and_gives_a_positive_ratio(report: tuple[dict, Path]) -> None:
    result, _ = report
    (case,) = result["cases"]
    assert case["size"] == list(SMALL_SIZE)
    assert case["ratio"] == pytest.approx(
        statistics.median(case[PROJECT]["seconds"]) / statistics.median(case[BASELINE]["seconds"]))
    for kind in (PROJECT, BASELINE):
        timing = case[kind]
        assert len(timing["seconds"]) == 1 and timing["cold_seconds"] > 0
        assert set(timing["stage_seconds"]) == set(STAGES)
        assert timing["peak_rss_bytes"] >= timing["loaded_rss_bytes"] > 0
    assert case["project"]["settings"]["sw_batch_size"] == 2
    assert case["baseline"]["settings"]["sw_batch_size"] == BASELINE_SW_BATCH_SIZE
    # Both predictors share the library's post-processing and the weights folder's settings for it.
    for key in ("threshold", "min_component_mm3", "empty_fallback_probability"):
        assert case["baseline"]["settings"][key] == case["project"]["settings"][key]


@pytest.mark.slow
def test_project_predicts_the_brain_crop_and_the_baseline_the_whole_volume(report: tuple[dict, Path]) -> None:
    (case,) = report[0]["cases"]
    project, baseline = case["project"]["network_grid"], case["baseline"]["network_grid"]
    assert all(p <= b for p, b in zip(project, baseline)) and project != baseline


@pytest.mark.slow
def test_report_compares_the_masks_and_the_probabilities_the_predictors_wrote(
    report: tuple[dict, Path], bench_scratch: Path
) -> None:
    (case,) = report[0]["cases"]
    case_dir = bench_scratch / "work" / "cases" / "x".join(map(str, SMALL_SIZE))
    adc = read_image(next((case_dir / "input").rglob("skull-stripped-adc-brain-mri/*.mha")))
    brain = to_xyz_array(adc) > 0
    truth = to_xyz_array(read_image(case_dir / bench.LABEL_FILE), np.uint8).astype(bool)
    project_mask, project_probability = written_outputs(bench_scratch, PROJECT)
    for kind, key in ((BASELINE, "agreement"), (CROPPED_BASELINE, "cropped_agreement")):
        mask, probability = written_outputs(bench_scratch, kind)
        expected = bench.agreement(project_mask, mask, project_probability, probability, brain, truth)
        assert case[key] == dataclasses.asdict(expected)
    assert case["agreement"]["differing_voxels"] == int(np.count_nonzero(project_mask != written_outputs(
        bench_scratch, BASELINE)[0]))


@pytest.mark.slow
def test_cropped_baseline_sees_exactly_the_projects_input(report: tuple[dict, Path]) -> None:
    result, out = report
    (case,) = result["cases"]
    cropped = case[CROPPED_BASELINE]
    assert cropped["network_grid"] == case[PROJECT]["network_grid"]
    assert cropped["settings"]["brain_crop"] is True and case["baseline"]["settings"]["brain_crop"] is False
    assert case["cropped_ratio"] == pytest.approx(
        statistics.median(case[PROJECT]["seconds"]) / statistics.median(cropped["seconds"]))
    assert "## Against a baseline on the same brain-cropped input" in (out / bench_report.MARKDOWN_NAME).read_text()


@pytest.mark.slow
def test_report_times_predict_against_a_loop_of_inference_processes(report: tuple[dict, Path]) -> None:
    result, out = report
    batch = result["batch"]
    assert batch["cases"] == 2 and batch["size"] == list(SMALL_SIZE)
    assert batch["loop_seconds"] > 0 and batch["predict_seconds"] > 0
    assert batch["ratio"] == pytest.approx(batch["predict_cases_per_second"] / batch["loop_cases_per_second"])
    assert batch["identical_masks"] == 2
    text = (out / bench_report.MARKDOWN_NAME).read_text()
    assert "## Batch prediction" in text and f"**{batch['ratio']:.2f}**" in text


@pytest.mark.slow
def test_report_has_training_throughput(report: tuple[dict, Path]) -> None:
    training = report[0]["training"]
    assert training["steps_per_second"] > 0 and training["samples_per_second"] > 0
    assert training["samples_per_step"] == tiny_config().train.batch_size * tiny_config().train.samples_per_case
    assert training["peak_rss_bytes"] > 0


@pytest.mark.slow
def test_report_is_written_as_json_and_markdown(report: tuple[dict, Path]) -> None:
    result, out = report
    assert json.loads((out / bench_report.JSON_NAME).read_text())["cases"][0]["ratio"] == result["cases"][0]["ratio"]
    text = (out / bench_report.MARKDOWN_NAME).read_text()
    assert "| case (x y z) | project s | baseline s | ratio |" in text
    assert f"| {'x'.join(map(str, SMALL_SIZE))} |" in text and "steps/s" in text
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["device"] == "cpu"
    assert result["machine"]["torch_threads"] == 1


def test_agreement_of_identical_and_of_shifted_outputs() -> None:
    brain = np.ones((4, 4, 4), dtype=bool)
    probability = np.linspace(0, 1, 64, dtype=np.float32).reshape(4, 4, 4)
    mask = (probability >= 0.5).astype(np.uint8)
    same = bench.agreement(mask, mask, probability, probability, brain, mask.astype(bool))
    assert same.differing_voxels == 0 and same.dice == 1.0 and same.max_abs_probability_difference == 0.0
    assert same.project_truth_dice == same.baseline_truth_dice == 1.0
    other = mask.copy()
    other[0, 0, 0] = 1
    shifted = bench.agreement(other, mask, np.clip(probability + 0.1, 0, 1), probability, brain, mask.astype(bool))
    assert shifted.differing_voxels == 1 and shifted.differing_fraction_of_brain == 1 / 64
    assert shifted.dice < 1.0 and shifted.max_abs_probability_difference == pytest.approx(0.1)
    assert shifted.project_truth_dice < shifted.baseline_truth_dice == 1.0


def test_without_trained_weights_a_random_default_network_is_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(layout, "CONTAINER_MODEL_DIR", tmp_path / "opt-ml-model")
    monkeypatch.setattr(layout, "BUNDLED_MODEL_DIR", tmp_path / "empty")
    folder, note = bench.resolve_model(None, tmp_path / "scratch")
    assert (folder / CONFIG_FILENAME).is_file() and list(folder.glob("*.pt"))
    assert "RANDOM" in note


def test_the_default_weights_are_the_librarys_default_model_folder(
    untrained_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(layout, "CONTAINER_MODEL_DIR", untrained_model_dir)
    assert bench.resolve_model(None, tmp_path) == (untrained_model_dir, f"trained weights from {untrained_model_dir}")


def test_sizes_parse_from_the_command_line() -> None:
    assert bench_cli.parse_size("256x256x64") == (256, 256, 64)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size like 256x256x64, got '256x256'"):
        bench_cli.parse_size("256x256")
