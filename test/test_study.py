"""The loss-comparison study: tables from hand-made rows, fold bookkeeping, and one tiny end-to-end study."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from conftest import tiny_config
from hieseg import study, training
from hieseg.losses import LOSS_NAMES
from hieseg.metrics import SUMMARY_METRICS, CaseMetrics, burden_group

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_LOSSES = ("dice", "tversky_hausdorffdt")


def row(
    loss: str, case_id: str, dice: float, masd: float, nsd: float, burden: float, fold: int = 0, pred_ml: float = 1.0
) -> study.StudyRow:
    metrics = CaseMetrics(
        case_id=case_id, dice=dice, masd_mm=masd, nsd=nsd, truth_ml=1.0, pred_ml=pred_ml,
        brain_ml=100.0, burden_fraction=burden, burden_group=burden_group(burden),
    )
    return study.StudyRow(loss=loss, fold=fold, metrics=metrics)


HAND_ROWS = [
    # dice: better Dice and NSD, worse MASD than tversky; no case above 5 % burden.
    row("dice", "a", 0.8, 4.0, 0.9, 0.005),
    row("dice", "b", 0.6, 6.0, 0.7, 0.02, fold=1),
    row("dice", "c", 0.7, 5.0, 0.8, 0.03, fold=1),
    row("tversky", "a", 0.5, 2.0, 0.6, 0.005),
    row("tversky", "b", 0.5, 3.0, 0.8, 0.02, fold=1),
    row("tversky", "c", 0.5, 1.0, 0.7, 0.03, fold=1, pred_ml=0.0),
]


def test_summary_counts_each_burden_group_and_leaves_empty_groups_blank() -> None:
    records = {r["loss"]: r for r in study.summary_records(study.summarize_by_loss(HAND_ROWS))}
    assert list(records) == ["dice", "tversky"]
    dice = records["dice"]
    assert (dice["n"], dice["lt1pct_n"], dice["1to5pct_n"], dice["gt5pct_n"]) == (3, 1, 2, 0)
    assert dice["dice_mean"] == pytest.approx(0.7)
    assert dice["dice_std"] == pytest.approx(math.sqrt(2 / 300))
    assert dice["1to5pct_masd_mm_mean"] == pytest.approx(5.5)
    assert dice["gt5pct_dice_mean"] == "" and dice["gt5pct_nsd_std"] == ""
    assert (dice["n_one_empty"], records["tversky"]["n_one_empty"]) == (0, 1)


def test_markdown_bolds_the_best_loss_per_metric_and_direction() -> None:
    markdown = study.render_markdown(study.summarize_by_loss(HAND_ROWS), {"folds": 2})
    overall = markdown.split("## All cases")[1].split("##")[0]
    assert "| dice | 3 | **0.700 ± 0.082** | 5.000 ± 0.816 | **0.800 ± 0.082** |" in overall
    assert "| tversky | 3 | 0.500 ± 0.000 | **2.000 ± 0.816** | 0.700 ± 0.082 |" in overall
    low_burden = markdown.split("## Lesion burden <1%")[1].split("##")[0]
    assert "| dice | 1 |" in low_burden and "| tversky | 1 |" in low_burden
    high_burden = markdown.split("## Lesion burden >5%")[1]
    assert "| dice | 0 | – | – | – |" in high_burden
    assert "folds = 2" in markdown
    assert "MASD = the image diagonal: dice 0, tversky 1." in markdown


def test_best_losses_keeps_ties() -> None:
    statistics = {
        loss: {"n": 1, **{m: {"mean": 0.5, "std": 0.0, "median": 0.5} for m in SUMMARY_METRICS}}
        for loss in ("x", "y")
    }
    assert study.best_losses(statistics) == {"dice": {"x", "y"}, "masd_mm": {"x", "y"}, "nsd": {"x", "y"}}


def test_rows_round_trip_through_csv(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    study.write_rows(path, HAND_ROWS)
    assert study.read_rows(path) == HAND_ROWS
    with_ceiling = [with_ceilings(r, 0.9) for r in HAND_ROWS]
    study.write_rows(path, with_ceiling)
    assert study.read_rows(path) == with_ceiling


def with_ceilings(study_row: study.StudyRow, ceiling: float) -> study.StudyRow:
    return dataclasses.replace(study_row, metrics=dataclasses.replace(study_row.metrics, ceiling_dice=ceiling))


def test_scores_written_before_the_ceiling_existed_still_read(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    study.write_rows(path, HAND_ROWS[:1])
    header, values = path.read_text().splitlines()
    legacy = {key: value for key, value in zip(header.split(","), values.split(",")) if key != "ceiling_dice"}
    assert study.StudyRow.from_record(legacy) == HAND_ROWS[0]


def test_the_ceiling_is_reported_beside_each_loss() -> None:
    rows = [with_ceilings(r, ceiling) for r, ceiling in zip(HAND_ROWS, (0.9, 0.7, 0.8) * 2)]
    summaries = study.summarize_by_loss(rows)
    markdown = study.render_markdown(summaries, {"folds": 2})
    overall = markdown.split("## All cases")[1].split("##")[0]
    assert "| loss | n | Dice | MASD (mm) | NSD | ceiling Dice |" in overall
    assert "| dice | 3 | **0.700 ± 0.082** | 5.000 ± 0.816 | **0.800 ± 0.082** | 0.800 ± 0.082 |" in overall
    assert "| dice | 2 | **0.650 ± 0.050** | 5.500 ± 0.500 | **0.750 ± 0.050** | 0.750 ± 0.050 |" in markdown
    assert "| dice | 0 | – | – | – | – |" in markdown
    records = {r["loss"]: r for r in study.summary_records(summaries)}
    assert records["tversky"]["lt1pct_ceiling_dice_mean"] == pytest.approx(0.9)
    assert records["tversky"]["gt5pct_ceiling_dice_mean"] == ""


def test_parse_losses() -> None:
    assert study.parse_losses("all") == LOSS_NAMES
    assert study.parse_losses(" tversky , dice") == ("tversky", "dice")
    with pytest.raises(ValueError, match="unknown loss name.*dicee"):
        study.parse_losses("dice,dicee")
    with pytest.raises(ValueError, match="twice"):
        study.parse_losses("dice,dice")


def test_folds_are_written_once_and_a_changed_data_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    config = tiny_config(**{"train.folds": 2})
    burdens = {f"case{i}": 0.002 * i for i in range(6)}
    folds = study.folds_for(path, burdens, config)
    assert sorted(sum(folds, [])) == sorted(burdens)
    assert json.loads(path.read_text())["folds"] == folds
    assert study.folds_for(path, burdens, config) == folds
    with pytest.raises(ValueError, match="new: case9; gone: case0"):
        study.folds_for(path, {**{k: v for k, v in burdens.items() if k != "case0"}, "case9": 0.0}, config)
    with pytest.raises(ValueError, match="burdens changed"):
        study.folds_for(path, {**burdens, "case5": 0.2, "case4": 0.3}, config)


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    study.check_settings(path, {"config": {"train": {"epochs": 2}}, "nsd_tolerance_mm": 2.0})
    study.check_settings(path, {"config": {"train": {"epochs": 2}}, "nsd_tolerance_mm": 2.0})
    with pytest.raises(ValueError, match="train.epochs: 2 then, 3 now"):
        study.check_settings(path, {"config": {"train": {"epochs": 3}}, "nsd_tolerance_mm": 2.0})
    with pytest.raises(ValueError, match="train.seed: absent then, 1 now"):
        study.check_settings(path, {"config": {"train": {"epochs": 2, "seed": 1}}, "nsd_tolerance_mm": 2.0})


def test_cli_reports_bad_arguments_in_one_line(tmp_path: Path, small_release: Path, capsys) -> None:
    base = ["--data", str(small_release), "--out", str(tmp_path / "study")]
    assert study.main([*base, "--losses", "dice,focal"]) == 2
    assert "unknown loss name(s) focal" in capsys.readouterr().err
    assert study.main([*base, "--set", "loss.name=dice"]) == 2
    assert "--losses" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def tiny_study_args(tmp_path: Path, data: Path, out: Path, losses: tuple[str, ...]) -> list[str]:
    """Command line of a CPU-sized study: tiny network, 2 folds, 2 epochs of one step each."""
    config_path = tmp_path / "base.json"
    tiny_config(**{"train.steps_per_epoch": 1}).save(config_path)
    return ["--data", str(data), "--out", str(out), "--config", str(config_path), "--losses", ",".join(losses),
            "--folds", "2", "--epochs", "2", "--seed", "5", "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume_does_no_training(
    tmp_path: Path, small_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, STUDY_LOSSES)
    assert study.main(argv) == 0

    folds = json.loads((out / "splits.json").read_text())["folds"]
    cases = sorted(sum(folds, []))
    assert len(folds) == 2 and len(cases) == 8
    with open(out / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    for loss in STUDY_LOSSES:
        held_out = [(r["case_id"], int(r["fold"])) for r in results if r["loss"] == loss]
        assert sorted(case_id for case_id, _ in held_out) == cases
        assert all(case_id in folds[fold] for case_id, fold in held_out)
        assert len(list((out / "predictions" / loss).glob("*.mha"))) == 8
        for fold in range(2):
            run_config = json.loads((out / "models" / loss / f"fold{fold}" / "config.json").read_text())
            assert run_config["loss"]["name"] == loss and run_config["train"]["seed"] == 5

    with open(out / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert [r["loss"] for r in summary] == list(STUDY_LOSSES)
    for record in summary:
        assert int(record["n"]) == 8
        values = [float(record[f"{metric}_{statistic}"]) for metric in SUMMARY_METRICS for statistic in ("mean", "std")]
        assert all(math.isfinite(value) for value in values)
    markdown = (out / "results.md").read_text()
    assert all(f"| {loss} | 8 |" in markdown for loss in STUDY_LOSSES)
    assert "ceiling Dice" in markdown
    assert all(0.0 < float(r["ceiling_dice"]) <= 1.0 for r in results)
    for name in ("boxplots.png", "validation_curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000

    before = {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.mha")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished study must not train again")

    monkeypatch.setattr(training, "train", no_training)
    assert study.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.mha")} == before
    with open(out / "results.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == results


@pytest.mark.slow
def test_a_run_interrupted_after_training_resumes_without_repeating_epochs(
    tmp_path: Path, small_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, ("dice",))
    predict_and_score = study.predict_and_score

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "predict_and_score", interrupted)
    assert study.main(argv) == 130  # Ctrl-C: 128 + SIGINT, after the clean-ups
    run_dir = out / "models" / "dice" / "fold0"
    assert (run_dir / "model.pt").exists() and not (run_dir / "scores.csv").exists()

    monkeypatch.setattr(study, "predict_and_score", predict_and_score)
    assert study.main(argv) == 0
    with open(run_dir / "runs" / "model" / "metrics.csv", newline="") as handle:
        assert [int(float(r["epoch"])) for r in csv.DictReader(handle)] == [1, 2]
    assert (run_dir / "scores.csv").exists() and (out / "results.csv").exists()
