"""The container entry point: the happy path as the container runs it, and every bad input."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hieseg.config import CONFIG_FILENAME
from hieseg.inference_cli import main
from hieseg.layout import CONTAINER_ADC_DIR, CONTAINER_OUTPUT_DIR, CONTAINER_ZADC_DIR
from hieseg.synthetic import make_case, write_container_case

REPO = Path(__file__).resolve().parent.parent
UUID = "1b2c3d4e-0000-4000-8000-000000000001"


@pytest.fixture
def container(tmp_path: Path, untrained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A one-case /input, an empty /output and a weights folder, wired through the environment."""
    paths = {"input": tmp_path / "input", "output": tmp_path / "output", "model": untrained_model_dir}
    write_container_case(paths["input"], make_case("CASE", seed=5, size=(96, 96, 20)), UUID)
    paths["output"].mkdir()
    monkeypatch.setenv("HIESEG_INPUT", str(paths["input"]))
    monkeypatch.setenv("HIESEG_OUTPUT", str(paths["output"]))
    monkeypatch.setenv("HIESEG_MODEL", str(paths["model"]))
    monkeypatch.setenv("HIESEG_DEVICE", "cpu")
    return paths


def output_files(container: dict[str, Path]) -> list[Path]:
    return [p for p in container["output"].rglob("*") if p.is_file()]


def run_expecting_error(container: dict[str, Path], capsys: pytest.CaptureFixture, *fragments: str) -> str:
    status = main([])
    message = capsys.readouterr().err
    assert status == 2, message
    for fragment in fragments:
        assert fragment in message, message
    assert output_files(container) == [], "a failed run must leave /output empty"
    return message


def rewrite(path: Path, array: np.ndarray | None = None, **geometry: tuple) -> None:
    image = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) if array is None else array)
    new.CopyInformation(image)
    for name, value in geometry.items():
        getattr(new, f"Set{name}")(value)
    sitk.WriteImage(new, str(path))


def test_container_run_writes_a_mask_on_the_input_grid(container: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "inference.py")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    written = output_files(container)
    assert written == [container["output"] / CONTAINER_OUTPUT_DIR / f"{UUID}.mha"]
    mask, adc = sitk.ReadImage(str(written[0])), sitk.ReadImage(str(container["input"] / CONTAINER_ADC_DIR / f"{UUID}.mha"))
    assert mask.GetSize() == adc.GetSize() and mask.GetSpacing() == adc.GetSpacing()
    assert mask.GetOrigin() == adc.GetOrigin() and mask.GetDirection() == adc.GetDirection()
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}


def test_missing_input_file(container, capsys) -> None:
    (container["input"] / CONTAINER_ZADC_DIR / f"{UUID}.mha").unlink()
    run_expecting_error(container, capsys, "z-score-adc", "expected exactly one .mha file, found nothing")


def test_extra_input_file(container, capsys) -> None:
    (container["input"] / CONTAINER_ADC_DIR / "second.mha").write_bytes(b"")
    run_expecting_error(container, capsys, "skull-stripped-adc-brain-mri", "found", "second.mha")


def test_geometry_mismatch(container, capsys) -> None:
    rewrite(container["input"] / CONTAINER_ZADC_DIR / f"{UUID}.mha", Origin=(5.0, 5.0, 5.0))
    run_expecting_error(container, capsys, "geometry disagrees", "origin")


def test_non_finite_voxels(container, capsys) -> None:
    path = container["input"] / CONTAINER_ADC_DIR / f"{UUID}.mha"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    array[3, 10, 10], array[4, 11, 11] = np.nan, np.inf
    rewrite(path, array)
    run_expecting_error(container, capsys, f"{UUID}.mha", "2 NaN or infinite voxel(s)")


def test_two_dimensional_image(container, capsys) -> None:
    path = container["input"] / CONTAINER_ADC_DIR / f"{UUID}.mha"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkFloat32), str(path))
    run_expecting_error(container, capsys, str(path), "expected a 3D image, got 2D")


def test_unreadable_file(container, capsys) -> None:
    path = container["input"] / CONTAINER_ZADC_DIR / f"{UUID}.mha"
    path.write_bytes(b"not an image at all")
    run_expecting_error(container, capsys, str(path), "cannot be read as an image")


def test_empty_brain(container, capsys) -> None:
    path = container["input"] / CONTAINER_ADC_DIR / f"{UUID}.mha"
    rewrite(path, np.zeros_like(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))))
    run_expecting_error(container, capsys, "no brain voxels")


def test_missing_weights(container, capsys, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    monkeypatch.setenv("HIESEG_MODEL", str(empty))
    run_expecting_error(container, capsys, "config.json: missing")


def test_incompatible_weights(container, capsys, tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / CONFIG_FILENAME).write_bytes((container["model"] / CONFIG_FILENAME).read_bytes())
    (broken / "fold0.pt").write_bytes(b"not torch")
    monkeypatch.setenv("HIESEG_MODEL", str(broken))
    run_expecting_error(container, capsys, "fold0.pt: incompatible")


def test_flags_override_the_environment(container, tmp_path: Path) -> None:
    other_output = tmp_path / "elsewhere"
    assert main(["--output", str(other_output)]) == 0
    assert (other_output / CONTAINER_OUTPUT_DIR / f"{UUID}.mha").is_file()
    assert output_files(container) == []
