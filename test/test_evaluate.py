"""Tests of the evaluation command on tiny synthetic masks written to disk."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hieseg.cli.evaluate import main
from hieseg.data.burden import UNKNOWN_GROUP
from hieseg.evaluation.folders import evaluate_folders

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE = (24, 24, 10)
SPACING = (0.9, 0.9, 3.0)
BRAIN_VOXELS = 20 * 24 * 10
CAP_MM = math.sqrt((24 * 0.9) ** 2 + (24 * 0.9) ** 2 + (10 * 3.0) ** 2)


def box(corner: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = 1
    return mask


def write_xyz(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> None:
    """Write an (x, y, z) array as an image with the given spacing."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def adc_image() -> np.ndarray:
    """Positive ADC on x < 20 only, so the brain has BRAIN_VOXELS voxels."""
    adc = np.zeros(SHAPE, dtype=np.float32)
    adc[:20] = 1200.0
    return adc


PLATE = box((6, 6, 4), (10, 10, 1))
CASES = {
    # case id: (truth, prediction or None for no file, prediction file name)
    "case01": (box((4, 4, 3), (3, 3, 2)), box((4, 4, 3), (3, 3, 2)), "case01.mha"),
    "case02": (PLATE, np.roll(PLATE, 1, axis=2), "case02.mha"),
    "case03": (box((2, 2, 2), (10, 10, 4)), np.zeros(SHAPE, np.uint8), "case03_lesion.mha"),
    "case04": (np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8), "case04.mha"),
}


@pytest.fixture()
def release(tmp_path: Path) -> tuple[Path, Path]:
    """A release root (3LABEL/ and 1ADC_ss/) and a prediction folder."""
    root, pred_dir = tmp_path / "release", tmp_path / "pred"
    for case_id, (truth, pred, pred_name) in CASES.items():
        write_xyz(root / "3LABEL" / f"{case_id}_lesion.mha", truth)
        write_xyz(root / "1ADC_ss" / f"{case_id}-ADC_ss.mha", adc_image())
        write_xyz(pred_dir / pred_name, pred)
    return root, pred_dir


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hieseg.evaluate", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def test_cli_scores_a_release_root(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, pred_dir = release
    out = tmp_path / "report"
    result = run_cli("--pred", str(pred_dir), "--truth", str(root), "--out", str(out))
    assert result.returncode == 0, result.stderr

    with open(out / "per_case.csv", newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["case01", "case02", "case03", "case04"]
    assert float(rows["case01"]["dice"]) == 1.0 and float(rows["case01"]["masd_mm"]) == 0.0
    # The plate moved by one voxel along z: MASD is half the z spacing only if axes are not mixed up.
    assert float(rows["case02"]["dice"]) == 0.0
    assert float(rows["case02"]["masd_mm"]) == pytest.approx(SPACING[2] / 2, abs=1e-5)
    assert float(rows["case02"]["nsd"]) == pytest.approx(0.5, abs=1e-6)
    assert float(rows["case03"]["masd_mm"]) == pytest.approx(CAP_MM, rel=1e-9)
    assert float(rows["case03"]["pred_ml"]) == 0.0
    assert float(rows["case03"]["truth_ml"]) == pytest.approx(400 * 0.9 * 0.9 * 3.0 / 1000)
    assert float(rows["case03"]["brain_ml"]) == pytest.approx(BRAIN_VOXELS * 0.9 * 0.9 * 3.0 / 1000)
    assert float(rows["case02"]["burden_fraction"]) == pytest.approx(100 / BRAIN_VOXELS)
    assert [rows[c]["burden_group"] for c in rows] == ["<1%", "1-5%", ">5%", "<1%"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"] == {"nsd_tolerance_mm": 2.0}
    assert summary["n_cases"] == 4 and summary["n_one_empty"] == 1
    assert summary["overall"]["dice"]["mean"] == pytest.approx(0.5)
    assert {group: stats["n"] for group, stats in summary["by_burden"].items()} == {"<1%": 2, "1-5%": 1, ">5%": 1}

    markdown = (out / "summary.md").read_text()
    assert "| all | 4 | 0.500 ± 0.500 | 0.500 |" in markdown
    assert "| >5% | 1 |" in markdown


def test_cli_fails_on_missing_predictions_naming_the_cases(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, pred_dir = release
    (pred_dir / "case02.mha").unlink()
    (pred_dir / "case03_lesion.mha").unlink()
    result = run_cli("--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "report"))
    assert result.returncode == 2
    assert "case02, case03" in result.stderr and "case01" not in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_allow_missing_scores_an_empty_prediction(release: tuple[Path, Path]) -> None:
    root, pred_dir = release
    (pred_dir / "case02.mha").unlink()
    rows = {row.case_id: row for row in evaluate_folders(pred_dir, root, allow_missing=True, progress=False)}
    assert (rows["case02"].dice, rows["case02"].nsd, rows["case02"].pred_ml) == (0.0, 0.0, 0.0)
    assert rows["case02"].masd_mm == pytest.approx(CAP_MM)


def test_geometry_mismatch_names_the_file(release: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, pred_dir = release
    bad = pred_dir / "case01.mha"
    write_xyz(bad, CASES["case01"][1], spacing=(0.9, 0.9, 2.0))
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "report")]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and "spacing" in error


def test_non_binary_prediction_is_refused(release: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, pred_dir = release
    bad = pred_dir / "case04.mha"
    write_xyz(bad, box((1, 1, 1), (2, 2, 2)) * 255)
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "report")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_two_predictions_for_one_case_are_refused(release: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, pred_dir = release
    write_xyz(pred_dir / "case01_lesion.mha", CASES["case01"][1])
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "report")]) == 2
    assert "case01" in capsys.readouterr().err


def test_plain_truth_folder_without_brain_has_unknown_burden(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, pred_dir = release
    out = tmp_path / "report"
    assert main(["--pred", str(pred_dir), "--truth", str(root / "3LABEL"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_burden"][UNKNOWN_GROUP]["n"] == 4
    assert "| unknown | 4 |" in (out / "summary.md").read_text()


def test_brain_folder_gives_the_burden_for_a_plain_truth_folder(release: tuple[Path, Path]) -> None:
    root, pred_dir = release
    rows = evaluate_folders(pred_dir, root / "3LABEL", brain_dir=root / "1ADC_ss", progress=False)
    assert [row.burden_group for row in rows] == ["<1%", "1-5%", ">5%", "<1%"]
    assert rows[2].burden_fraction == pytest.approx(400 / BRAIN_VOXELS)


def test_ceiling_spacing_adds_the_ceiling_column_and_its_summary(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, pred_dir = release
    plain, native, coarse = tmp_path / "plain", tmp_path / "native", tmp_path / "coarse"
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(plain)]) == 0
    assert "ceiling_dice" not in (plain / "per_case.csv").read_text()
    assert "ceiling" not in (plain / "summary.md").read_text()
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(native),
                 "--ceiling-spacing", *map(str, SPACING)]) == 0
    with open(native / "per_case.csv", newline="") as handle:
        assert [float(row["ceiling_dice"]) for row in csv.DictReader(handle)] == pytest.approx([1.0] * 4)
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(coarse),
                 "--ceiling-spacing", "2", "2", "6"]) == 0
    with open(coarse / "per_case.csv", newline="") as handle:
        ceilings = {row["case_id"]: float(row["ceiling_dice"]) for row in csv.DictReader(handle)}
    # A one-slice plate does not come back intact from 6 mm slices; the empty case keeps its ceiling of 1.
    assert ceilings["case02"] < 0.9 and ceilings["case04"] == 1.0
    summary = json.loads((coarse / "summary.json").read_text())
    assert summary["settings"]["ceiling_spacing_mm"] == [2.0, 2.0, 6.0]
    assert summary["overall"]["ceiling_dice"]["mean"] == pytest.approx(np.mean(list(ceilings.values())))
    assert summary["by_burden"]["1-5%"]["ceiling_dice"]["mean"] == pytest.approx(ceilings["case02"])
    assert "ceiling Dice mean ± std" in (coarse / "summary.md").read_text()


def test_model_gives_the_ceiling_spacing_from_its_config(
    release: tuple[Path, Path], tmp_path: Path, untrained_model_dir: Path
) -> None:
    root, pred_dir = release
    by_model, by_spacing = tmp_path / "by_model", tmp_path / "by_spacing"
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(by_model),
                 "--model", str(untrained_model_dir)]) == 0
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(by_spacing),
                 "--ceiling-spacing", "2", "2", "4"]) == 0  # the tiny test configuration's target spacing
    assert (by_model / "per_case.csv").read_text() == (by_spacing / "per_case.csv").read_text()


def test_a_model_without_config_is_reported_in_one_line(release: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, pred_dir = release
    argv = ["--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "report")]
    assert main([*argv, "--model", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "nowhere" / "config.json") in error and len(error.strip().splitlines()) == 1
    assert main([*argv, "--ceiling-spacing", "2", "-1", "4"]) == 2
    assert "spacing" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_compat_bonbid2023_scores_as_the_2023_evaluation(release: tuple[Path, Path], tmp_path: Path) -> None:
    """The z-moved plate of case02: the official pairing gives axis z the x spacing (0.9 mm), so
    MASD is 0.9 / 2 and all of the surface is within 2 mm; case03's single empty mask has MASD NaN,
    left out of the mean, which is therefore that of 0, 0.45 and 0."""
    root, pred_dir = release
    out = tmp_path / "report"
    assert main(["--pred", str(pred_dir), "--truth", str(root), "--out", str(out), "--compat", "bonbid2023"]) == 0
    with open(out / "per_case.csv", newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert float(rows["case02"]["masd_mm"]) == pytest.approx(SPACING[0] / 2, abs=1e-5)
    assert float(rows["case02"]["nsd"]) == 1.0
    assert math.isnan(float(rows["case03"]["masd_mm"])) and float(rows["case03"]["nsd"]) == 0.0
    assert (float(rows["case01"]["masd_mm"]), float(rows["case04"]["masd_mm"])) == (0.0, 0.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"] == {"nsd_tolerance_mm": 2.0, "compat": "bonbid2023"}
    assert summary["overall"]["masd_mm"]["mean"] == pytest.approx(SPACING[0] / 2 / 3, abs=1e-6)
    assert summary["overall"]["dice"]["mean"] == pytest.approx(0.5) and summary["overall"]["n"] == 4
    assert "MASD NaN, left out of the MASD statistics" in (out / "summary.md").read_text()


def test_compat_prediction_takes_the_truths_geometry_but_not_another_size(
    release: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    root, pred_dir = release
    moved = sitk.ReadImage(str(pred_dir / "case01.mha"))
    moved.SetOrigin((50.0, 0.0, 0.0))
    moved.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(moved, str(pred_dir / "case01.mha"))
    argv = ["--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "r")]
    assert main(argv) == 2 and "case01.mha: geometry disagrees" in capsys.readouterr().err
    assert main([*argv, "--compat", "bonbid2023"]) == 0
    with open(tmp_path / "r" / "per_case.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["dice"] == "1.0"
    write_xyz(pred_dir / "case01.mha", np.zeros((24, 24, 9), np.uint8))
    assert main([*argv, "--compat", "bonbid2023"]) == 2
    assert "case01.mha: size (24, 24, 9) differs from the truth's (24, 24, 10)" in capsys.readouterr().err


def test_compat_refuses_another_nsd_tolerance(release: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, pred_dir = release
    argv = ["--pred", str(pred_dir), "--truth", str(root), "--out", str(tmp_path / "r"), "--compat", "bonbid2023"]
    assert main([*argv, "--nsd-tolerance", "1"]) == 2
    assert "scores NSD at 2 mm" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_release_with_its_z_adc_gets_the_conspicuous_lesions(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, pred_dir = release
    for case_id, (truth, _, _) in CASES.items():
        write_xyz(root / "2Z_ADC" / f"Zmap_{case_id}-ADC_smooth2mm_clipped10.mha", np.where(truth > 0, -4.0, 0.0))
    out = tmp_path / "report"
    assert run_cli("--pred", str(pred_dir), "--truth", str(root), "--out", str(out)).returncode == 0
    lesion_wise = json.loads((out / "summary.json").read_text())["overall"]["lesion_wise"]
    # case01 found, case02's plate missed (the prediction is one slice off), case03 missed (empty prediction)
    assert {key: lesion_wise[key] for key in ("truth_lesions", "found_lesions", "pred_lesions", "true_pred_lesions",
                                              "conspicuous_lesions", "conspicuous_found")} == {
        "truth_lesions": 3, "found_lesions": 1, "pred_lesions": 2, "true_pred_lesions": 1,
        "conspicuous_lesions": 3, "conspicuous_found": 1}
    assert lesion_wise["conspicuous_recall"] == pytest.approx(1 / 3)
    # missed: the plate (100 voxels, 243 mm3) and case03's box (400 voxels, 972 mm3)
    assert [lesion_wise[name] for name in ("missed_lt10_mm3", "missed_10_100_mm3", "missed_100_1000_mm3",
                                           "missed_ge1000_mm3")] == [0, 0, 2, 0]
    markdown = (out / "summary.md").read_text()
    assert "## Lesion-wise" in markdown and "| all | 1/3 | 0.333 | 0.500 | 0.400 | 1/3 | 0.333 | 0 / 0 / 2 / 0 |" in markdown
