"""Tests of ``hieseg.synthesis.generator``: determinism, release-like grids, tissue and lesion contrast
in ADC and Z_ADC, lesion burden control and distribution, the release and container writers
(read back through ``hieseg.io.layout``) and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hieseg.cli.synthetic import main
from hieseg.io.images import Geometry, read_image, to_xyz_array
from hieseg.io.layout import (
    CONTAINER_ADC_DIR,
    CONTAINER_ZADC_DIR,
    adc_path,
    discover_cases,
    label_path,
    load_case,
    zadc_path,
)
from hieseg.synthesis.generator import (
    SyntheticCase,
    TissueClass,
    draw_lesion_burden,
    make_case,
    write_container_case,
    write_release,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = (64, 64, 16)
TINY = (48, 48, 12)


def arrays(case: SyntheticCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) arrays of ADC, Z_ADC and the boolean lesion mask."""
    return to_xyz_array(case.adc), to_xyz_array(case.zadc), to_xyz_array(case.label, np.uint8) > 0


def burden(case: SyntheticCase) -> float:
    return float(to_xyz_array(case.label, np.uint8).sum() / (case.tissue > 0).sum())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hieseg.synthetic", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def lesioned() -> SyntheticCase:
    return make_case("LESIONED", seed=11, size=(96, 96, 24), lesion_burden=0.03)


@pytest.fixture(scope="module")
def healthy_twin() -> SyntheticCase:
    """Same seed as ``lesioned``: same brain and noise, no lesion."""
    return make_case("TWIN", seed=11, size=(96, 96, 24), lesion_burden=0.0)


def test_same_seed_gives_identical_case_and_other_seed_another():
    first, again, other = (make_case("C", seed, size=SMALL) for seed in (5, 5, 6))
    for image in ("adc", "zadc", "label"):
        first_array, again_array = (sitk.GetArrayViewFromImage(getattr(case, image)) for case in (first, again))
        assert np.array_equal(first_array, again_array)
        assert Geometry.of(getattr(first, image)) == Geometry.of(getattr(again, image))
    assert not np.array_equal(arrays(first)[0], arrays(other)[0])
    assert not np.array_equal(arrays(first)[2], arrays(other)[2])


@pytest.mark.parametrize("seed", range(6))
def test_default_grid_is_release_like_and_shared_by_the_three_images(seed):
    case = make_case("G", seed)
    geometry = Geometry.of(case.adc)
    assert Geometry.of(case.zadc) == geometry == Geometry.of(case.label)
    assert case.adc.GetPixelID() == sitk.sitkFloat32 == case.zadc.GetPixelID()
    assert case.label.GetPixelID() == sitk.sitkUInt8
    (nx, ny, nz), (sx, sy, sz) = geometry.size, geometry.spacing
    assert nx == ny and nx in (128, 160, 192, 224, 256)
    assert 16 <= nz <= 64
    assert 180.0 <= nx * sx <= 240.0 and sx == pytest.approx(sy)
    assert 2.0 <= sz <= 6.0
    assert 90.0 <= nz * sz <= 130.0 or sz == 6.0
    direction = np.asarray(geometry.direction).reshape(3, 3)
    assert np.allclose(direction @ direction.T, np.eye(3), atol=1e-9) and np.linalg.det(direction) > 0
    assert case.tissue.shape == geometry.size


def test_adc_is_zero_outside_the_brain_and_tissue_contrast_is_neonatal(lesioned):
    adc, zadc, lesion = arrays(lesioned)
    tissue = lesioned.tissue
    brain = tissue > 0
    assert 0.05 < brain.mean() < 0.6
    assert np.all(adc[~brain] == 0) and np.all(zadc[~brain] == 0)
    assert np.all(adc[brain] > 0)

    def median(tissue_class: TissueClass) -> float:
        return float(np.median(adc[(tissue == tissue_class) & ~lesion]))

    assert 2500 < median(TissueClass.CSF) < 3400
    assert 1300 < median(TissueClass.WHITE_MATTER) < 1800
    assert 950 < median(TissueClass.DEEP_GREY) < 1300
    ordered = [TissueClass.CSF, TissueClass.WHITE_MATTER, TissueClass.CORTEX, TissueClass.DEEP_GREY]
    assert [median(tissue_class) for tissue_class in ordered] == sorted(map(median, ordered), reverse=True)


def test_lesions_have_restricted_diffusion_and_strongly_negative_z(lesioned, healthy_twin):
    adc, zadc, lesion = arrays(lesioned)
    twin_adc, twin_z, twin_lesion = arrays(healthy_twin)
    assert lesion.any() and not twin_lesion.any()
    assert np.array_equal(lesioned.tissue, healthy_twin.tissue)
    assert 400 < np.median(adc[lesion]) < 0.7 * np.median(twin_adc[lesion])
    assert zadc[lesion].mean() < -2.0
    assert zadc.min() >= -10.0 and zadc.max() <= 10.0
    white_matter = healthy_twin.tissue == TissueClass.WHITE_MATTER
    assert abs(np.median(twin_z[white_matter])) < 0.5


def test_label_is_binary_and_in_parenchyma(lesioned):
    label = sitk.GetArrayViewFromImage(lesioned.label)
    assert set(np.unique(label)) == {0, 1}
    lesion_tissue = lesioned.tissue[arrays(lesioned)[2]]
    assert np.isin(lesion_tissue, [TissueClass.CORTEX, TissueClass.WHITE_MATTER, TissueClass.DEEP_GREY]).all()


@pytest.mark.parametrize("target", [0.003, 0.03, 0.2])
def test_achieved_burden_is_close_to_the_target(target):
    achieved = [burden(make_case("B", seed, size=SMALL, lesion_burden=target)) for seed in range(3)]
    assert all(target / 2 <= value <= target * 2 for value in achieved), achieved


def test_zero_burden_gives_an_empty_label():
    assert burden(make_case("Z", 2, size=SMALL, lesion_burden=0.0)) == 0.0


def test_default_burdens_are_skewed_small_like_the_release():
    achieved = np.array([burden(make_case("D", seed, size=TINY)) for seed in range(40)])
    assert np.all(achieved > 0)
    assert np.mean(achieved < 0.01) > 0.5
    assert achieved.max() > 0.05
    rng = np.random.default_rng(0)
    draws = np.array([draw_lesion_burden(rng) for _ in range(4000)])
    assert 0.55 < np.mean(draws < 0.01) < 0.65
    assert draws.min() >= 0.0005 and draws.max() <= 0.30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (4, 64, 16)},
        {"size": (64, 64)},
        {"spacing": (1.0, -1.0, 2.0)},
        {"lesion_burden": -0.01},
        {"lesion_burden": 0.9},
        {"size": (16, 16, 8), "spacing": (0.5, 0.5, 0.5)},
    ],
)
def test_impossible_requests_are_rejected(kwargs):
    with pytest.raises(ValueError):
        make_case("E", 0, **kwargs)


def test_release_is_accepted_by_the_loader_and_stable_as_it_grows(tmp_path):
    ids = write_release(tmp_path / "three", 3, seed=4, sizes=TINY)
    assert ids == ["SYNTH_001-VISIT_01", "SYNTH_002-VISIT_01", "SYNTH_003-VISIT_01"]
    for case_id in ids:
        for path_of in (adc_path, zadc_path, label_path):
            assert path_of(tmp_path / "three", case_id).is_file()
    found = discover_cases(tmp_path / "three")
    assert [files.case_id for files in found] == ids
    for files in found:
        images = load_case(files)
        assert images.label is not None and images.adc.GetSize() == TINY
    write_release(tmp_path / "two", 2, seed=4, sizes=TINY)
    for path in (adc_path, label_path):
        grown = read_image(path(tmp_path / "three", ids[1]))
        shorter = read_image(path(tmp_path / "two", ids[1]))
        assert np.array_equal(sitk.GetArrayViewFromImage(grown), sitk.GetArrayViewFromImage(shorter))
    assert not np.array_equal(
        sitk.GetArrayViewFromImage(read_image(adc_path(tmp_path / "three", ids[0]))),
        sitk.GetArrayViewFromImage(read_image(adc_path(tmp_path / "three", ids[1]))),
    )


def test_release_sizes_can_differ_per_case(tmp_path):
    ids = write_release(tmp_path, 2, seed=0, sizes=[TINY, SMALL])
    assert [read_image(adc_path(tmp_path, case_id)).GetSize() for case_id in ids] == [TINY, SMALL]
    with pytest.raises(ValueError):
        write_release(tmp_path, 3, seed=0, sizes=[TINY, SMALL])


def test_container_case_is_written_where_the_platform_puts_inputs(tmp_path, lesioned):
    adc_file, zadc_file = write_container_case(tmp_path, lesioned, "1234-abcd")
    assert adc_file == tmp_path / CONTAINER_ADC_DIR / "1234-abcd.mha"
    assert zadc_file == tmp_path / CONTAINER_ZADC_DIR / "1234-abcd.mha"
    assert Geometry.of(read_image(adc_file)) == Geometry.of(lesioned.adc)
    assert np.array_equal(to_xyz_array(read_image(zadc_file)), arrays(lesioned)[1])
    with pytest.raises(ValueError):
        write_container_case(tmp_path, lesioned, "../escape")


def test_cli_writes_a_release(tmp_path):
    result = run_cli("--out", str(tmp_path), "--cases", "2", "--seed", "3", "--size", *map(str, TINY))
    assert result.returncode == 0, result.stderr
    assert "wrote 2 case(s)" in result.stdout
    assert [files.case_id for files in discover_cases(tmp_path)] == ["SYNTH_001-VISIT_01", "SYNTH_002-VISIT_01"]


def test_cli_writes_a_container_case_with_its_label(tmp_path):
    result = run_cli("--out", str(tmp_path), "--container", "case-uuid", "--size", *map(str, TINY))
    assert result.returncode == 0, result.stderr
    written = [tmp_path / folder / "case-uuid.mha" for folder in (CONTAINER_ADC_DIR, CONTAINER_ZADC_DIR, Path("label"))]
    for path in written:
        assert path.is_file() and str(path) in result.stdout
    assert Geometry.of(read_image(written[2])) == Geometry.of(read_image(written[0]))


def test_cli_bad_arguments_exit_non_zero_with_a_message(tmp_path):
    result = run_cli("--out", str(tmp_path), "--cases", "0")
    assert result.returncode != 0 and "--cases" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--cases", "2", "--container", "abc"],
        ["--cases", "1", "--size", "4", "64", "16"],
        ["--cases", "1", "--size", "64", "64"],
    ],
)
def test_cli_usage_errors(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), *args])
    assert exit_info.value.code != 0
    assert "error" in capsys.readouterr().err


def test_cli_reports_unwritable_output_and_bad_uuid(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--out", str(blocker), "--cases", "1", "--size", *map(str, TINY)]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "out"), "--container", "a/b"]) == 1
    assert "invalid case uuid" in capsys.readouterr().err
