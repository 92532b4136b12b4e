"""Faults of the input images themselves: damaged .mha files, intensities no brain has, paths SimpleITK cannot take.

Each refusal exits with status 2 and one ``error:`` line naming the file and the cause, and writes nothing;
a tolerable fault (a few wild ADC voxels) gives the clean case's mask and a warning naming the file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import UUID, files_under, rewrite
from test_faults import adc_file, refused, voxels, zadc_file

from hieseg.cli import infer as inference_cli
from hieseg.cli import predict as predict_cli
from hieseg.cli import synthetic as synthetic_cli
from hieseg.data.transforms import (
    ADC_FENCE_PERCENTILES,
    ADC_FENCE_SPREAD,
    adc_fence,
    normalised_channels,
)
from hieseg.errors import ImageError
from hieseg.inference import batch
from hieseg.interop import bundle_steps
from hieseg.io.images import read_image
from hieseg.io.intensities import ADC_IMPOSSIBLE
from hieseg.io.layout import CONTAINER_ADC_DIR, CONTAINER_OUTPUT_DIR, read_input_case
from hieseg.io.tables import read_csv
from hieseg.synthesis.effects import PROFILES, resolve_profile
from hieseg.synthesis.generator import make_case, write_container_case

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "model"
SMALL_UUID = "11111111-2222-3333-4444-555555555555"


def header_and_data(path: Path) -> tuple[bytes, bytes]:
    """A MetaImage file split after its ``ElementDataFile`` line."""
    content = path.read_bytes()
    end = content.index(b"\n", content.index(b"ElementDataFile")) + 1
    return content[:end], content[end:]


def set_header_field(header: bytes, key: str, value: str) -> bytes:
    return re.sub(rb"^" + key.encode() + rb" = [^\n]*$", f"{key} = {value}".encode(), header, flags=re.MULTILINE)


def external_data(path: Path, data_file: Path) -> None:
    """Rewrite a compressed .mha as a header whose voxel data are in ``data_file`` (which is not written)."""
    header, _ = header_and_data(path)
    path.write_bytes(set_header_field(header, "ElementDataFile", os.path.relpath(data_file, path.parent)))


# ---- row 1: damaged compressed .mha files ------------------------------------------------------

def _flip_bits(path: Path) -> None:
    header, data = header_and_data(path)
    damaged = bytearray(data)
    for offset in range(len(damaged) // 3, len(damaged) // 3 + 40):
        damaged[offset] ^= 0x55
    path.write_bytes(header + bytes(damaged))


def _bad_checksum(path: Path) -> None:
    header, data = header_and_data(path)
    path.write_bytes(header + data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))


def _halve_compressed_size(path: Path) -> None:
    header, data = header_and_data(path)
    path.write_bytes(set_header_field(header, "CompressedDataSize", str(len(data) // 2)) + data)


def _uncompressed_with_extra_bytes(path: Path) -> None:
    sitk.WriteImage(sitk.ReadImage(str(path)), str(path), False)
    path.write_bytes(path.read_bytes() + b"\0" * 8)


def _inflates_short(path: Path) -> None:
    header, _ = header_and_data(path)
    data = zlib.compress(b"\0" * 1000)
    path.write_bytes(set_header_field(header, "CompressedDataSize", str(len(data))) + data)


DAMAGED_FILES = {
    "bits flipped in the zlib stream": (_flip_bits, ("compressed voxel data", "corrupt")),
    "a failing Adler-32 checksum": (_bad_checksum, ("compressed voxel data fail their checksum: corrupt",)),
    "a halved CompressedDataSize": (_halve_compressed_size, ("bytes of voxel data (compressed), the file holds",
                                                             "after the header: the header is damaged")),
    "uncompressed data longer than announced": (_uncompressed_with_extra_bytes,
                                                ("bytes of voxel data, the file holds", "after the header: the header")),
    "a stream that inflates short": (_inflates_short, ("inflate to 1000 bytes", "DimSize and ElementType need")),
}


@pytest.mark.parametrize("fault", DAMAGED_FILES)
def test_a_damaged_compressed_mha_is_refused_with_its_cause(container, capsys, fault: str) -> None:
    damage, fragments = DAMAGED_FILES[fault]
    damage(adc_file(container))
    refused(inference_cli.main([]), capsys, str(adc_file(container)), *fragments)
    assert files_under(container["output"]) == []


def test_the_sample_cases_files_pass_the_integrity_check() -> None:
    case = read_input_case(REPO / "test" / "input")
    assert case.adc.GetSize() == (192, 192, 32)


# ---- row 5: messages naming the true cause -----------------------------------------------------

def test_a_missing_external_data_file_is_named(container, capsys, tmp_path: Path) -> None:
    external_data(adc_file(container), tmp_path / "elsewhere" / "adc.raw")
    refused(inference_cli.main([]), capsys, "its voxel data file", "adc.raw (ElementDataFile) does not exist")


def test_an_external_data_file_that_is_a_fifo_is_refused_without_blocking(container, capsys, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "adc.raw")
    external_data(adc_file(container), tmp_path / "adc.raw")
    refused(inference_cli.main([]), capsys, "adc.raw is not a regular file (a FIFO)")


def test_an_adc_that_is_a_fifo_is_named_so(container, capsys) -> None:
    adc_file(container).unlink()
    os.mkfifo(adc_file(container))
    refused(inference_cli.main([]), capsys, f"{adc_file(container)}: not a regular file (a FIFO)")


def test_a_singular_direction_matrix_is_named(container, capsys) -> None:
    header, data = header_and_data(adc_file(container))
    adc_file(container).write_bytes(set_header_field(header, "TransformMatrix", "1 0 0 1 0 0 0 0 1") + data)
    refused(inference_cli.main([]), capsys, "the direction matrix (TransformMatrix 1 0 0 1 0 0 0 0 1) is singular")


def test_a_symbolic_link_loop_as_input_folder_is_named(container, capsys, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(inference_cli.main(["--input", str(loop)]), capsys, f"{loop}: a symbolic link that loops back on itself")
    refused(predict_cli.main(["--input", str(loop), "--output", str(tmp_path / "out")]), capsys,
            f"{loop}: a symbolic link that loops back on itself")


def test_a_permission_denied_adc_is_named_so(container, tmp_path: Path) -> None:
    """Root ignores permission bits, so as root the command runs without the capability that lets it."""
    adc_file(container).chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop the capability to read any file")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    result = subprocess.run([*prefix, sys.executable, str(REPO / "inference.py"), "--input", str(container["input"]),
                             "--output", str(container["output"]), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {adc_file(container)}: cannot be read: permission denied"
    assert files_under(container["output"]) == []


# ---- row 2: intensities no brain has -----------------------------------------------------------

def _noise_background(container: dict[str, Path]) -> None:
    adc = voxels(adc_file(container))
    noise = np.random.default_rng(0).uniform(0.001, 1.0, adc.shape).astype(adc.dtype)
    rewrite(adc_file(container), np.where(adc > 0, adc, noise))


def _scaled_adc(factor: float):
    return lambda c: rewrite(adc_file(c), (voxels(adc_file(c)) * factor).astype(np.float32))


def _swapped(container: dict[str, Path]) -> None:
    adc, zadc = voxels(adc_file(container)), voxels(zadc_file(container))
    rewrite(adc_file(container), zadc)
    rewrite(zadc_file(container), adc)


def _zadc_unclipped(container: dict[str, Path]) -> None:
    rewrite(zadc_file(container), voxels(zadc_file(container)) * 3.0)


def _garbage_voxels(container: dict[str, Path]) -> None:
    adc = voxels(adc_file(container))
    inside = np.flatnonzero(adc > 0)
    adc.flat[inside[: len(inside) // 50]] = -2.2e38
    rewrite(adc_file(container), adc)


BAD_INTENSITIES = {
    "a noise background": (_noise_background, ("fills 100% of the image", "is the map skull-stripped?")),
    "ADC in mm^2/s": (_scaled_adc(1e-6), ("median ADC is 0.00", "wrong units?")),
    "ADC in 10^-9 mm^2/s": (_scaled_adc(1e3), ("outside the 100-10,000 of brain tissue", "wrong units?")),
    "ADC and Z_ADC swapped": (_swapped, ("wrong units?", "are ADC and Z_ADC swapped?")),
    "a Z_ADC beyond +-10": (_zadc_unclipped, ("outside the +-10", "not a Z_ADC map")),
    "2 % garbage voxels": (_garbage_voxels, ("impossible for tissue", "-2.2e+38", "damaged or in other units")),
}


@pytest.mark.parametrize("fault", BAD_INTENSITIES)
def test_intensities_no_brain_has_are_refused(container, capsys, fault: str) -> None:
    breaker, fragments = BAD_INTENSITIES[fault]
    breaker(container)
    message = refused(inference_cli.main([]), capsys, *fragments)
    assert ("swapped" in message) == (fault in ("ADC and Z_ADC swapped", "a Z_ADC beyond +-10"))
    assert files_under(container["output"]) == []


@pytest.mark.parametrize("profile", list(PROFILES))
def test_real_looking_cases_pass_the_checks_and_the_fence_clips_nothing(tmp_path: Path, profile: str) -> None:
    for seed in (1, 2):
        write_container_case(tmp_path / f"{seed}", make_case("C", seed=seed, profile=resolve_profile(profile)), UUID)
        _assert_accepted_and_unclipped(tmp_path / f"{seed}")
    _assert_accepted_and_unclipped(REPO / "test" / "input")


def _assert_accepted_and_unclipped(case_dir: Path) -> None:
    case = read_input_case(case_dir)
    adc = torch.from_numpy(sitk.GetArrayFromImage(case.adc))
    inside = adc[adc > 0]
    low, high = adc_fence(inside)
    assert low < float(inside.min()) and float(inside.max()) < high


def test_the_bundle_clips_wild_adc_voxels_as_hieseg_does() -> None:
    generator = torch.Generator().manual_seed(5)
    values = torch.stack([torch.rand(12, 10, 8, generator=generator) * 2500 + 500,
                          torch.randn(12, 10, 8, generator=generator)])
    values[0, 3, 3, 3] = 1e6
    brain = values[0] > 0
    for zadc in ("z_score", "centred"):
        assert torch.equal(bundle_steps._normalised(values, brain, zadc), normalised_channels(values, brain, zadc))
    assert (bundle_steps.ADC_FENCE_PERCENTILES, bundle_steps.ADC_FENCE_SPREAD) == (ADC_FENCE_PERCENTILES,
                                                                                  ADC_FENCE_SPREAD)
    assert float(normalised_channels(values, brain, "z_score")[0].max()) < 10.0


def test_clean_data_normalise_exactly_as_a_plain_z_score() -> None:
    case = read_input_case(REPO / "test" / "input")
    adc = torch.from_numpy(sitk.GetArrayFromImage(case.adc)).float()
    values = torch.stack([adc, torch.from_numpy(sitk.GetArrayFromImage(case.zadc)).float()])
    brain = adc > 0
    inside = adc[brain]
    expected = (inside - float(inside.mean())) / float(inside.std(unbiased=False))
    assert torch.equal(normalised_channels(values, brain, "z_score")[0][brain], expected)


@pytest.fixture(scope="module")
def small_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The issue's small case (80 x 80 x 20, seed 7, basic) and its clean mask with the shipped weights."""
    root = tmp_path_factory.mktemp("small")
    assert synthetic_cli.main(["--out", str(root / "case"), "--container", SMALL_UUID, "--size", "80", "80", "20",
                               "--seed", "7", "--profile", "basic", "--no-progress"]) == 0
    return root / "case", _predict(root / "case", root / "clean")


def _predict(case: Path, output: Path) -> np.ndarray:
    assert inference_cli.main(["--input", str(case), "--output", str(output), "--model", str(DEMO_MODEL),
                               "--device", "cpu"]) == 0
    return voxels(output / CONTAINER_OUTPUT_DIR / f"{SMALL_UUID}.mha").astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize(("count", "value"), [(1, 1e6), (20, 1e5)])
def test_a_few_wild_adc_voxels_keep_the_clean_mask_and_are_warned_about(
    small_case, tmp_path: Path, caplog, count: int, value: float
) -> None:
    source, clean = small_case
    case = tmp_path / "case"
    shutil.copytree(source, case)
    adc_path = case / CONTAINER_ADC_DIR / f"{SMALL_UUID}.mha"
    adc = voxels(adc_path)
    inside = np.flatnonzero(adc > 0)
    adc.flat[inside[np.linspace(0, len(inside) - 1, count).astype(int)]] = value
    rewrite(adc_path, adc)
    assert clean.sum() > 300
    assert _dice(_predict(case, tmp_path / "out"), clean) >= 0.9
    assert f"{adc_path}: {count} voxel(s) beyond +-{ADC_IMPOSSIBLE:,.0f}" in caplog.text


def test_a_handful_of_garbage_voxels_in_the_background_is_a_warning(container, caplog) -> None:
    adc = voxels(adc_file(container))
    adc.flat[np.flatnonzero(adc == 0)[:3]] = -2.2e38
    rewrite(adc_file(container), adc)
    read_input_case(container["input"])
    assert f"{adc_file(container)}: 3 voxel(s) beyond +-{ADC_IMPOSSIBLE:,.0f}" in caplog.text


# ---- row 3: a path that is not UTF-8 -----------------------------------------------------------

NON_UTF8 = os.fsdecode(b"case_\xff")


def test_a_non_utf8_case_folder_fails_alone_in_predict(tmp_path: Path, untrained_model_dir: Path, capsys) -> None:
    cases = tmp_path / "cases"
    for seed, name in enumerate(("case_a", "case_b", "case_c")):
        write_container_case(cases / name, make_case(name, seed=20 + seed, size=(64, 64, 16)), f"uuid-{seed}")
    (cases / "case_b").rename(cases / NON_UTF8)  # SimpleITK cannot write there either
    out = tmp_path / "masks"
    result = subprocess.run([sys.executable, "-m", "hieseg.predict", "--input", str(cases), "--output", str(out),
                             "--model", str(untrained_model_dir), "--device", "cpu", "--no-progress"],
                            capture_output=True, timeout=300, cwd=REPO, check=False)
    assert result.returncode == 2, result.stderr
    assert b"case_\\xff" in result.stderr and b"is not valid UTF-8" in result.stderr
    assert sorted(p.name for p in out.glob("*.mha")) == ["case_a.mha", "case_c.mha"]
    rows = {row["case_id"]: row for row in read_csv(out / batch.TABLE_NAME)}
    assert rows["case_\\xff"]["status"] == batch.FAILED
    assert "case_\\xff" in rows["case_\\xff"]["error"] and "is not valid UTF-8" in rows["case_\\xff"]["error"]


def test_a_non_utf8_input_folder_is_refused_by_inference(container, capsys, tmp_path: Path) -> None:
    moved = tmp_path / NON_UTF8
    container["input"].rename(moved)
    refused(inference_cli.main(["--input", str(moved)]), capsys, "case_\\xff", "the path is not valid UTF-8 (byte 0xff)")
    assert files_under(container["output"]) == []


def test_a_non_utf8_output_folder_is_refused_before_simpleitk_writes(container, capsys, tmp_path: Path) -> None:
    output = tmp_path / NON_UTF8
    refused(inference_cli.main(["--output", str(output)]), capsys, "case_\\xff/", "UTF-8")
    assert not output.exists()


def test_read_image_refuses_a_non_utf8_path_before_simpleitk(tmp_path: Path) -> None:
    path = tmp_path / f"{NON_UTF8}.mha"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkFloat32), str(tmp_path / "x.mha"))
    (tmp_path / "x.mha").rename(path)
    with pytest.raises(ImageError, match=r"case_\\xff\.mha: the path is not valid UTF-8"):
        read_image(path)


# ---- row 4: synthetic's size and seed ----------------------------------------------------------

@pytest.mark.parametrize(("argv", "fragment"), [
    (["--size", "100000", "100000", "100000"], "--size 100000 100000 100000: each axis must be at most 1024 voxels"),
    (["--size", "1024", "1024", "100"], "104,857,600 voxels, over the 67,108,864 accepted"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
])
def test_synthetic_refuses_a_huge_size_and_a_negative_seed(tmp_path: Path, capsys, argv: list[str],
                                                          fragment: str) -> None:
    with pytest.raises(SystemExit) as stop:
        synthetic_cli.main(["--out", str(tmp_path / "out"), "--cases", "1", *argv])
    refused(stop.value.code, capsys, fragment)
    assert not (tmp_path / "out").exists()
