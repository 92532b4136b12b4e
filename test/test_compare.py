"""One run scoring a model beside the baselines: reports, predictions, and one-line errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

from hieseg.cli import compare as compare_cli
from hieseg.data.burden import BURDEN_GROUPS
from hieseg.evaluation import compare
from hieseg.evaluation.baselines import BASELINES
from hieseg.io.images import Geometry
from hieseg.io.layout import adc_path
from hieseg.synthesis.generator import write_release

N_CASES = 3
MODEL_NAME = "tiny"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    write_release(root, n_cases=N_CASES, seed=3, sizes=(96, 96, 20))
    return root


@pytest.fixture(scope="module")
def compared(release: Path, untrained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The output folder and stdout of one comparison of the untrained model with the baselines."""
    out = tmp_path_factory.mktemp("compare")
    argv = ["--data", str(release), "--model", str(untrained_model_dir), "--name", MODEL_NAME,
            "--out", str(out), "--device", "cpu", "--no-progress", "--html", str(out / "html")]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert compare_cli.main(argv) == 0
    return out, stdout.getvalue()


def test_html_report_shows_every_method_beside_the_others(compared: tuple[Path, str]) -> None:
    out, stdout = compared
    page = (out / "html" / "report.html").read_text(encoding="utf-8")
    assert f"HTML report: {out / 'html' / 'report.html'}" in stdout
    case_table = page.split('id="case-table"')[1].split("</table>")[0]
    assert case_table.count("<tr>") == 2 + N_CASES  # two header rows, then one row per case
    for method in (MODEL_NAME, *BASELINES):
        assert f">{method}</th>" in page
        assert len(list((out / "html" / "qc" / method).glob("*.thumb.png"))) == N_CASES


def test_one_row_per_method_and_case_with_the_ceiling_for_the_model(compared: tuple[Path, str]) -> None:
    out, _ = compared
    with open(out / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    methods = [MODEL_NAME, *BASELINES]
    assert sorted((r["method"], r["case_id"]) for r in rows) == sorted(
        (method, case_id) for method in methods for case_id in {r["case_id"] for r in rows}
    )
    assert len(rows) == len(methods) * N_CASES
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0
        if row["method"] == MODEL_NAME:
            assert 0.0 < float(row["ceiling_dice"]) <= 1.0
        else:
            assert row["ceiling_dice"] == ""


def test_predictions_are_on_the_native_grid(compared: tuple[Path, str], release: Path) -> None:
    out, _ = compared
    for method in (MODEL_NAME, *BASELINES):
        masks = sorted((out / "predictions" / method).glob("*.mha"))
        assert len(masks) == N_CASES
        for path in masks:
            mask = sitk.ReadImage(str(path))
            assert mask.GetPixelID() == sitk.sitkUInt8
            assert Geometry.of(mask) == Geometry.of(sitk.ReadImage(str(adc_path(release, path.stem))))


def test_json_and_markdown_hold_every_method_and_only_the_groups_present(compared: tuple[Path, str]) -> None:
    out, stdout = compared
    summary = json.loads((out / "comparison.json").read_text())
    methods = summary["methods"]
    assert list(methods) == [MODEL_NAME, *BASELINES]
    assert methods[MODEL_NAME]["kind"] == "model" and methods[MODEL_NAME]["target_spacing_mm"] == [2.0, 2.0, 4.0]
    assert "ceiling_dice" in methods[MODEL_NAME]["overall"]
    assert all("ceiling_dice" not in methods[name]["overall"] for name in BASELINES)
    official = methods["zadc_lt2"]["overall"]["masd_official_mm"]
    assert 0 <= official["n"] <= N_CASES

    with open(out / "comparison.csv", newline="") as handle:
        present = {r["burden_group"] for r in csv.DictReader(handle)}
    markdown = (out / "comparison.md").read_text()
    assert "## All cases" in markdown
    for group in BURDEN_GROUPS:
        assert (f"## Lesion burden {group} of brain volume" in markdown) == (group in present)
    overall, lesion_wise = markdown.split("## All cases")[1].split("##")[0].strip().split("\n\n")[:2]
    for name in (MODEL_NAME, *BASELINES):
        assert f"| {name} | {N_CASES} |" in overall
    ceilings = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in overall.splitlines()
                if line.startswith("| ") and not line.startswith("| method")}
    assert ceilings[MODEL_NAME] != "–" and all(ceilings[name] == "–" for name in BASELINES)  # no baseline ceiling
    assert lesion_wise.splitlines()[0].startswith("| method | lesions found | lesion sensitivity |")
    assert [line.split("|")[1].strip() for line in lesion_wise.splitlines()[2:]] == [MODEL_NAME, *BASELINES]
    assert stdout.splitlines()[: len(BASELINES) + 3] == compare.comparison_table(summary)


@pytest.mark.parametrize(
    "problem", ["missing data", "no cases", "missing model", "bad weights", "name count", "baseline name"]
)
def test_bad_input_is_one_line_naming_the_path_and_writes_nothing(
    problem: str, release: Path, untrained_model_dir: Path, tmp_path: Path, capsys
) -> None:
    data, model, names = release, untrained_model_dir, [MODEL_NAME]
    named = ""
    if problem == "missing data":
        data = named = tmp_path / "nowhere"
    elif problem == "no cases":
        data = named = tmp_path / "empty"
        (data / "1ADC_ss").mkdir(parents=True)
    elif problem == "missing model":
        model = tmp_path / "no_model"
        named = model / "config.json"
    elif problem == "bad weights":
        model = tmp_path / "bad_model"
        shutil.copytree(untrained_model_dir, model)
        named = model / "fold0.pt"
        named.write_bytes(b"not a state dict")
    elif problem == "name count":
        names = [MODEL_NAME, "other"]
    else:
        names = ["zadc_lt2"]
    out = tmp_path / "out"
    argv = ["--data", str(data), "--model", str(model), "--out", str(out), "--device", "cpu", "--no-progress"]
    for name in names:
        argv += ["--name", name]
    assert compare_cli.main(argv) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert str(named) in error
    assert not out.exists()
