"""Batch prediction: the same masks as inference.py, named for evaluate, resumable, robust to a bad case."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SMALL_SIZE

from hieseg.cli import evaluate as evaluate_cli
from hieseg.cli import infer as inference_cli
from hieseg.cli import predict as predict_cli
from hieseg.cli.common import parse_shard
from hieseg.evaluation import folders as evaluate
from hieseg.inference import batch as predict
from hieseg.io.layout import (
    CONTAINER_ADC_DIR,
    CONTAINER_OUTPUT_DIR,
    CONTAINER_ZADC_DIR,
    adc_path,
    zadc_path,
)
from hieseg.runtime.devices import worker_devices
from hieseg.runtime.shards import Shard
from hieseg.synthesis.generator import make_case, write_container_case

THRESHOLD = "0.02"
"""Near the random network's in-brain probabilities (1st-99th percentile 0.007-0.08): masks of
many voxels whose borders any change in the computed probabilities would move."""
CASE_IDS = ("case_a", "case_b", "case_c")


@pytest.fixture(scope="module")
def container_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three container-layout case folders, each with its own uuid (read-only for tests)."""
    root = tmp_path_factory.mktemp("cases")
    for seed, case_id in enumerate(CASE_IDS):
        write_container_case(root / case_id, make_case(case_id, seed=10 + seed, size=SMALL_SIZE), f"uuid-{case_id}")
    return root


def flags(model: Path) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "--threshold", THRESHOLD]


def inference_mask(case_input: Path, output: Path, model: Path) -> Path:
    """The mask inference.py's main writes for one container case."""
    assert inference_cli.main(["--input", str(case_input), "--output", str(output), *flags(model)]) == 0
    (mask,) = (output / CONTAINER_OUTPUT_DIR).glob("*.mha")
    return mask


def assert_identical_images(path: Path, reference: Path) -> None:
    image, expected = sitk.ReadImage(str(path)), sitk.ReadImage(str(reference))
    assert image.GetPixelID() == expected.GetPixelID()
    assert (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()) == (
        expected.GetSize(), expected.GetSpacing(), expected.GetOrigin(), expected.GetDirection())
    array, reference_array = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected)
    assert np.array_equal(array, reference_array)
    assert 0 < reference_array.sum() < reference_array.size  # a mask with a border to move, not all or nothing


def read_table(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def test_masks_of_container_cases_are_bit_identical_to_inference_py(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    assert predict_cli.main(["--input", str(container_cases), "--output", str(out), *flags(untrained_model_dir)]) == 0
    assert sorted(p.name for p in out.glob("*.mha")) == [f"{case_id}.mha" for case_id in CASE_IDS]
    for case_id in CASE_IDS:
        reference = inference_mask(container_cases / case_id, tmp_path / f"inference-{case_id}", untrained_model_dir)
        assert_identical_images(out / f"{case_id}.mha", reference)


def test_release_masks_equal_inference_py_and_evaluate_reads_them(
    small_release: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    assert predict_cli.main(["--input", str(small_release), "--output", str(out), *flags(untrained_model_dir)]) == 0
    case_ids = sorted(p.name[: -len("-ADC_ss.mha")] for p in (small_release / "1ADC_ss").glob("*.mha"))
    assert sorted(p.stem for p in out.glob("*.mha")) == case_ids
    # The first case as the container would receive it.
    single = tmp_path / "input"
    for folder, source in ((CONTAINER_ADC_DIR, adc_path), (CONTAINER_ZADC_DIR, zadc_path)):
        (single / folder).mkdir(parents=True)
        shutil.copy(source(small_release, case_ids[0]), single / folder / "some-uuid.mha")
    assert_identical_images(out / f"{case_ids[0]}.mha", inference_mask(single, tmp_path / "inference", untrained_model_dir))
    assert evaluate_cli.main(["--pred", str(out), "--truth", str(small_release), "--out", str(tmp_path / "report")]) == 0
    assert len(read_table(tmp_path / "report" / evaluate.PER_CASE_CSV)) == len(case_ids)


def test_table_has_seconds_and_the_written_masks_lesion_volume(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    assert predict_cli.main(["--input", str(container_cases), "--output", str(out), *flags(untrained_model_dir)]) == 0
    rows = read_table(out / predict.TABLE_NAME)
    assert sorted(rows) == list(CASE_IDS)
    for case_id, row in rows.items():
        mask = sitk.ReadImage(str(out / f"{case_id}.mha"))
        voxel_ml = np.prod(mask.GetSpacing()) / 1000.0
        assert row["status"] == predict.WRITTEN and float(row["seconds"]) > 0 and row["device"] == "cpu"
        assert float(row["lesion_ml"]) == pytest.approx(sitk.GetArrayViewFromImage(mask).sum() * voxel_ml, abs=1e-4)


@pytest.fixture
def bundle_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The arguments of each weights folder predict loads from now on."""
    calls: list[tuple] = []
    real = predict.load_bundle
    monkeypatch.setattr(predict, "load_bundle", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_weights_are_loaded_once_for_all_cases(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, bundle_loads: list[tuple]
) -> None:
    assert predict_cli.main(["--input", str(container_cases), "--output", str(tmp_path), *flags(untrained_model_dir)]) == 0
    assert len(bundle_loads) == 1 and len(list(tmp_path.glob("*.mha"))) == len(CASE_IDS)


def earlier_mask(container_cases: Path, case_id: str) -> sitk.Image:
    """An earlier run's mask of a container case: empty, on the case's ADC grid."""
    (adc,) = (container_cases / case_id / CONTAINER_ADC_DIR).glob("*.mha")
    reference = sitk.ReadImage(str(adc))
    mask = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(reference)
    return mask


def test_existing_masks_are_kept_unless_overwrite(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    argv = ["--input", str(container_cases), "--output", str(tmp_path), *flags(untrained_model_dir)]
    kept = tmp_path / f"{CASE_IDS[0]}.mha"
    sitk.WriteImage(earlier_mask(container_cases, CASE_IDS[0]), str(kept))
    assert predict_cli.main(argv) == 0
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(kept))).any()  # the earlier (empty) mask, kept
    rows = read_table(tmp_path / predict.TABLE_NAME)
    assert rows[CASE_IDS[0]]["status"] == predict.EXISTING and rows[CASE_IDS[1]]["status"] == predict.WRITTEN
    assert predict_cli.main([*argv, "--overwrite"]) == 0
    assert sitk.ReadImage(str(kept)).GetSize() == SMALL_SIZE
    assert {row["status"] for row in read_table(tmp_path / predict.TABLE_NAME).values()} == {predict.WRITTEN}


@pytest.mark.parametrize(("leftover", "reason"), [
    ("text", "no readable image header"),
    ("other grid", "not on the case's grid: size (96, 96, 20) vs (2, 2, 2)"),
    ("not binary", "mask must be binary 0/1"),
])
def test_a_leftover_that_is_no_mask_of_the_case_is_predicted_again_with_the_reason(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, leftover: str, reason: str
) -> None:
    path = tmp_path / f"{CASE_IDS[0]}.mha"
    if leftover == "text":
        path.write_text("garbage, not a mask")
    elif leftover == "other grid":
        sitk.WriteImage(sitk.Image(2, 2, 2, sitk.sitkUInt8), str(path))
    else:
        sitk.WriteImage(earlier_mask(container_cases, CASE_IDS[0]) + 2, str(path))
    argv = ["--input", str(container_cases), "--output", str(tmp_path), *flags(untrained_model_dir)]
    assert predict_cli.main(argv) == 0
    row = read_table(tmp_path / predict.TABLE_NAME)[CASE_IDS[0]]
    assert row["status"] == predict.WRITTEN and reason in row["note"] and str(path) in row["note"]
    assert sitk.ReadImage(str(path)).GetSize() == SMALL_SIZE


def test_the_table_path_is_checked_before_any_case(container_cases: Path, untrained_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / predict.TABLE_NAME).mkdir()
    argv = ["--input", str(container_cases), "--output", str(tmp_path), *flags(untrained_model_dir)]
    assert predict_cli.main(argv) == 2
    assert "predictions.csv: is a folder, so the file cannot be written there" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.mha"))


def test_a_release_case_without_its_partner_is_failed_and_the_others_are_predicted(
    small_release: Path, untrained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = tmp_path / "release"
    shutil.copytree(small_release, release)
    case_ids = sorted(p.name[: -len("-ADC_ss.mha")] for p in (release / "1ADC_ss").glob("*.mha"))[:3]
    for case_id in sorted(p.name[: -len("-ADC_ss.mha")] for p in (release / "1ADC_ss").glob("*.mha"))[3:]:
        adc_path(release, case_id).unlink()
        zadc_path(release, case_id).unlink()
    zadc_path(release, case_ids[1]).unlink()
    out = tmp_path / "masks"
    argv = ["--input", str(release), "--output", str(out), *flags(untrained_model_dir)]
    assert predict_cli.main([*argv, "--strict"]) == 2
    assert f"case {case_ids[1]}: missing partner file(s): {zadc_path(release, case_ids[1])}" in capsys.readouterr().err
    assert not out.exists()
    assert predict_cli.main(argv) == 2
    assert sorted(p.stem for p in out.glob("*.mha")) == [case_ids[0], case_ids[2]]
    row = read_table(out / predict.TABLE_NAME)[case_ids[1]]
    assert row["status"] == predict.FAILED and "missing partner file(s)" in row["error"]
    assert f"  {case_ids[1]}: case {case_ids[1]}: missing partner file(s)" in capsys.readouterr().err


def test_a_run_stopped_by_sigterm_writes_the_table_of_the_finished_cases(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = predict.predict_case

    def terminated_on_the_second_case(predictor, job):
        if job.case_id == CASE_IDS[1]:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(predictor, job)

    monkeypatch.setattr(predict, "predict_case", terminated_on_the_second_case)
    argv = ["--input", str(container_cases), "--output", str(tmp_path), *flags(untrained_model_dir)]
    assert predict_cli.main(argv) == 143
    rows = read_table(tmp_path / predict.TABLE_NAME)
    assert list(rows) == [CASE_IDS[0]] and rows[CASE_IDS[0]]["status"] == predict.WRITTEN


def test_a_bad_case_is_reported_and_the_others_are_written(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = tmp_path / "cases"
    shutil.copytree(container_cases, cases)
    (bad,) = (cases / CASE_IDS[1] / CONTAINER_ADC_DIR).glob("*.mha")
    bad.write_bytes(b"not an image")
    out = tmp_path / "masks"
    assert predict_cli.main(["--input", str(cases), "--output", str(out), *flags(untrained_model_dir)]) == 2
    assert sorted(p.stem for p in out.glob("*.mha")) == [CASE_IDS[0], CASE_IDS[2]]
    err = capsys.readouterr().err
    assert "1 case(s) failed" in err and f"{CASE_IDS[1]} (" in err and f"{bad}: " in err
    rows = read_table(out / predict.TABLE_NAME)
    assert rows[CASE_IDS[1]]["status"] == predict.FAILED and str(bad) in rows[CASE_IDS[1]]["error"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_shard_takes_every_nth_case_and_writes_its_own_table(
    small_release: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    argv = ["--input", str(small_release), "--output", str(tmp_path), *flags(untrained_model_dir), "--shard", "1/3"]
    assert predict_cli.main(argv) == 0
    case_ids = sorted(p.name[: -len("-ADC_ss.mha")] for p in (small_release / "1ADC_ss").glob("*.mha"))
    assert sorted(p.stem for p in tmp_path.glob("*.mha")) == case_ids[1::3]
    assert sorted(read_table(tmp_path / "predictions.shard-1-of-3.csv")) == case_ids[1::3]


def test_shards_are_disjoint_and_cover_the_list() -> None:
    items = list(range(10))
    shards = [parse_shard(f"{k}/3") for k in range(3)]
    assert shards[0] == Shard(0, 3) and shards[2].take(items) == [2, 5, 8]
    assert sorted(i for shard in shards for i in shard.take(items)) == items
    for bad in ("3/3", "1", "a/2", "-1/2", "0/0"):
        with pytest.raises(Exception, match="K/N"):
            parse_shard(bad)


def test_an_input_that_is_no_case_folder_is_refused_in_one_line(
    tmp_path: Path, untrained_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out"), *flags(untrained_model_dir)]
    assert predict_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no cases found" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_worker_counts_and_devices_are_checked() -> None:
    assert worker_devices("cpu", None, 3) == ["cpu"] * 3
    assert worker_devices("auto", "cpu,cpu", 2) == ["cpu"] * 4
    with pytest.raises(Exception, match="--workers must be at least 1"):
        worker_devices("cpu", None, 0)
    with pytest.raises(Exception, match="--device gpu7: not a supported device"):
        worker_devices("cpu", "cpu,gpu7", 1)


@pytest.mark.slow
def test_worker_processes_write_the_same_masks(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    """Two spawned CPU workers (one intra-op thread each) against the one-process run."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert predict_cli.main(["--input", str(container_cases), "--output", str(one), *flags(untrained_model_dir)]) == 0
    assert predict_cli.main(["--input", str(container_cases), "--output", str(two), *flags(untrained_model_dir),
                         "--workers", "2"]) == 0
    for case_id in CASE_IDS:
        assert_identical_images(two / f"{case_id}.mha", one / f"{case_id}.mha")
    assert len({row["device"] for row in read_table(two / predict.TABLE_NAME).values()}) == 1


def corrupt_model(model: Path, folder: Path) -> Path:
    """A copy of the weights folder whose weights file is not a torch file."""
    shutil.copytree(model, folder)
    (folder / "fold0.pt").write_bytes(b"not torch")
    return folder


def test_a_worker_without_weights_fails_each_case_with_the_reason_and_loads_once(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, bundle_loads: list[tuple]
) -> None:
    """What each spawned worker does, here in this process: a bad weights folder is a failed case, not a stop."""
    setup = predict.WorkerSetup(corrupt_model(untrained_model_dir, tmp_path / "model"), ())
    jobs, incomplete = predict.find_jobs(container_cases, tmp_path / "masks")
    assert incomplete == {}
    predict._process_predictor.cache_clear()
    results = [predict.predict_on_device(setup, "cpu", job) for job in jobs]
    predict._process_predictor.cache_clear()
    assert [r.case_id for r in results] == list(CASE_IDS) and len(bundle_loads) == 1
    assert all(r.status == predict.FAILED and not r.bug and "fold0.pt: unreadable weights file" in r.error
               for r in results)
    assert not (tmp_path / "masks").exists()


def dies_on_the_second_case(setup: predict.WorkerSetup, device: str, job: predict.CaseJob) -> predict.CaseResult:
    """predict_on_device, except that the worker given the second case is killed as the OOM killer would."""
    if job.case_id == CASE_IDS[1]:
        time.sleep(1)  # let the worker's "started" report leave before it dies
        os.kill(os.getpid(), signal.SIGKILL)
    return predict.predict_on_device(setup, device, job)


@pytest.mark.slow
def test_a_dead_worker_stops_the_run_with_its_case_listed_and_the_table_written(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(predict, "predict_on_device", dies_on_the_second_case)  # the workers unpickle it from here
    out = tmp_path / "masks"
    argv = ["--input", str(container_cases), "--output", str(out), *flags(untrained_model_dir), "--workers", "2"]
    assert predict_cli.main(argv) == predict_cli.EXIT_BUG
    err = capsys.readouterr().err
    assert f"died with signal 9 while running case {CASE_IDS[1]}" in err and "run it again" in err
    rows = read_table(out / predict.TABLE_NAME)
    assert rows[CASE_IDS[1]]["status"] == predict.FAILED and "died with signal 9" in rows[CASE_IDS[1]]["error"]
    done = {case_id for case_id, row in rows.items() if row["status"] == predict.WRITTEN}
    assert set(rows) == done | {CASE_IDS[1]} and CASE_IDS[1] not in done
    assert sorted(p.stem for p in out.glob("*.mha")) == sorted(done)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # a stopped worker's mask left no temporary
    # A rerun predicts the cases left and keeps the masks written.
    monkeypatch.undo()
    assert predict_cli.main(argv[:-2]) == 0
    rows = read_table(out / predict.TABLE_NAME)
    assert {case_id for case_id, row in rows.items() if row["status"] == predict.EXISTING} == done
    assert sorted(rows) == list(CASE_IDS)


def test_weights_that_cannot_be_loaded_refuse_a_one_process_run_in_one_line(
    container_cases: Path, untrained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = corrupt_model(untrained_model_dir, tmp_path / "model")
    argv = ["--input", str(container_cases), "--output", str(tmp_path / "masks"), *flags(model)]
    assert predict_cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's start
    assert last.startswith("error: ") and "fold0.pt: unreadable weights file" in last
    assert not list((tmp_path / "masks").glob("*.mha"))
