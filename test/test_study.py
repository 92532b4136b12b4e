"""The loss-comparison study: tables from hand-made rows, fold bookkeeping, and one tiny end-to-end study."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from hieseg import claims, study, training
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
    report = (out / "report" / "report.html").read_text(encoding="utf-8")
    case_table = report.split('id="case-table"')[1].split("</table>")[0]
    assert case_table.count("<tr>") == 2 + 8 and 'src="validation_curves.png"' in report
    pictures = {p: p.stat().st_mtime_ns for p in (out / "report" / "qc").rglob("*.png")}
    assert len(pictures) == 2 * 8 * len(STUDY_LOSSES)  # a QC picture and its thumbnail per loss and case

    before = {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.mha")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished study must not train again")

    monkeypatch.setattr(training, "train", no_training)
    assert study.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.mha")} == before
    assert {p: p.stat().st_mtime_ns for p in (out / "report" / "qc").rglob("*.png")} == pictures  # kept, not redrawn
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


# Several processes on one study folder: claims, shards, --report, workers.

TWO_LOSSES = ("dice", "tversky")


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Replace training, prediction and the HTML report by fast stand-ins; returns the (loss, fold) runs trained.

    A stand-in run writes what a real one leaves behind for the tables: its scores.csv (one
    hand-made row per held-out case) and a metrics.csv with a validation Dice.
    """
    trained: list[tuple[str, int]] = []

    def fake_job(the_study: study.Study, loss: str, fold: int, held_out: list) -> list[study.StudyRow]:
        trained.append((loss, fold))
        metrics_path = the_study.metrics_path(loss, fold, [f.case_id for f in held_out])
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("epoch,train_loss,val_dice,learning_rate,seconds\n1,0.5,0.6,0.001,1.0\n")
        rows = [row(loss, f.case_id, 0.5 + 0.1 * fold, 3.0, 0.7, 0.02, fold=fold) for f in held_out]
        study.write_rows(the_study.scores_path(study.RunKey(loss, fold)), rows)
        return rows

    monkeypatch.setattr(study, "run_job", fake_job)
    monkeypatch.setattr(study, "write_html", lambda *args, **kwargs: None)
    return trained


def test_shards_split_the_runs_and_the_last_one_writes_the_tables(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, TWO_LOSSES)
    assert study.main([*argv, "--shard", "0/2"]) == 0
    assert fake_runs == [("dice", 0), ("tversky", 0)]  # runs 0 and 2 of dice 0, dice 1, tversky 0, tversky 1
    printed = capsys.readouterr().out
    assert "2 run(s) trained, 0 already finished" in printed
    assert "2 run(s) of the study not finished yet (dice fold 1, tversky fold 1)" in printed
    assert not (out / "results.csv").exists()

    assert study.main([*argv, "--report"]) == 2
    error = capsys.readouterr().err
    assert "2 of the study's 4 run(s) are not finished: dice fold 1 (not started), tversky fold 1 (not started)" in error
    assert not (out / "results.csv").exists()
    claim_file(out, "tversky.fold1", 0, pid=dead_pid())
    assert study.main([*argv, "--report"]) == 2
    assert "tversky fold 1 (stopped; rerun to resume it)" in capsys.readouterr().err

    assert study.main([*argv, "--shard", "1/2"]) == 0
    assert fake_runs[2:] == [("dice", 1), ("tversky", 1)]
    assert "16 held-out case score(s) over 2 loss(es)" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert [(r["loss"], r["fold"]) for r in results][::4] == [("dice", "0"), ("dice", "1"), ("tversky", "0"),
                                                              ("tversky", "1")]
    assert (out / "boxplots.png").read_bytes().startswith(PNG_MAGIC)

    (out / "results.csv").unlink()
    assert study.main([*argv, "--report"]) == 0
    assert len(fake_runs) == 4  # --report trains nothing
    with open(out / "results.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == results
    claimed = ["dice.fold0.0.json", "dice.fold1.0.json", "tversky.fold0.0.json",
               "tversky.fold1.1.json",  # the stale claim 0 taken over
               "report.1.json"]  # report.0 (the last shard's) released, then taken anew by --report
    assert sorted(p.name for p in (out / "claims").iterdir()) == sorted(claimed)


def test_report_refuses_a_folder_without_a_study_and_flags_that_train(tmp_path: Path, small_release: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, TWO_LOSSES)
    assert study.main([*argv, "--report"]) == 2
    assert "no study here (study.json missing)" in capsys.readouterr().err
    assert not out.exists()
    assert study.main([*argv, "--report", "--shard", "0/2"]) == 2
    assert "--report trains nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main([*argv, "--shard", "2/2"])
    assert "expected K/N with 0 <= K < N" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a GPU this machine lacks")
def test_devices_that_are_not_there_are_refused_before_any_work(tmp_path: Path, small_release: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, TWO_LOSSES)
    assert study.main([*argv, "--devices", "cuda:0,cuda:1"]) == 2
    assert "--device cuda:0: CUDA is not available" in capsys.readouterr().err
    assert study.main([*argv, "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_two_threads_racing_for_one_run_train_it_once(
    tmp_path: Path, small_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    the_study = study.Study(data=small_release, out=tmp_path, config=tiny_config(**{"train.folds": 2}),
                            losses=("dice",), device="cpu", progress=False)
    held_out = study.prepare(the_study, create=True).held_out(0)
    start, calls = threading.Barrier(2), []

    def slow_job(the_study: study.Study, loss: str, fold: int, held_out: list) -> list[study.StudyRow]:
        calls.append((loss, fold))
        time.sleep(0.5)  # long enough for the other thread to find the run claimed, not finished
        rows = [row(loss, f.case_id, 0.5, 3.0, 0.7, 0.02, fold=fold) for f in held_out]
        study.write_rows(the_study.scores_path(study.RunKey(loss, fold)), rows)
        return rows

    monkeypatch.setattr(study, "run_job", slow_job)
    outcomes: list[study.RunOutcome] = []

    def race() -> None:
        start.wait()
        outcomes.append(study.run_claimed(the_study, study.RunKey("dice", 0), held_out))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [("dice", 0)]
    assert sorted(o.status for o in outcomes) == [study.HELD, study.TRAINED]
    held = next(o for o in outcomes if o.status == study.HELD)
    assert held.holder.pid == os.getpid() and held.rows == ()
    later = study.run_claimed(the_study, study.RunKey("dice", 0), held_out)
    assert later.status == study.FINISHED and len(later.rows) == len(held_out) and calls == [("dice", 0)]


def test_racing_processes_record_the_settings_once_and_refuse_others(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    start, refused = threading.Barrier(6), []

    def start_study(epochs: int) -> None:
        start.wait()
        try:
            study.check_settings(path, {"config": {"train": {"epochs": epochs}}, "nsd_tolerance_mm": 2.0})
        except ValueError:
            refused.append(epochs)

    threads = [threading.Thread(target=start_study, args=(2 + i % 2,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = json.loads(path.read_text())["config"]["train"]["epochs"]
    assert len(refused) == 3 and set(refused) == {2, 3} - {recorded}


def claim_file(out: Path, key: str, number: int, **fields: object) -> None:
    holder = dataclasses.replace(claims.Holder.this_process(), **fields)
    (out / "claims").mkdir(parents=True, exist_ok=True)
    (out / "claims" / f"{key}.{number}.json").write_text(json.dumps(dataclasses.asdict(holder)))


def dead_pid() -> int:
    """The pid of a process of this host that has ended, as one killed while it trained."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_claims_of_killed_processes_are_taken_over_here_and_with_reclaim_from_elsewhere(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, ("dice",))
    claim_file(out, "dice.fold0", 0, pid=dead_pid())
    claim_file(out, "dice.fold1", 0, host="node17.cluster", pid=4242)
    assert study.main(argv) == 0
    assert fake_runs == [("dice", 0)]
    printed = capsys.readouterr().out
    assert "1 run(s) trained, 0 already finished, 1 left to the processes that claim them" in printed
    assert "dice fold 1: claimed by node17.cluster pid 4242 since" in printed and "--reclaim" in printed
    assert not (out / "results.csv").exists()

    assert study.main([*argv, "--report"]) == 2
    assert "dice fold 1 (claimed by node17.cluster pid 4242 since" in capsys.readouterr().err

    assert study.main([*argv, "--reclaim"]) == 0
    assert fake_runs == [("dice", 0), ("dice", 1)]
    assert "8 held-out case score(s) over 1 loss(es)" in capsys.readouterr().out
    assert (out / "claims" / "dice.fold1.1.json").exists() and not (out / "claims" / "dice.fold1.0.json").exists()


def test_a_live_report_claim_leaves_the_tables_to_its_holder(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, ("dice",))
    claim_file(out, "report", 0, host="node3.cluster")
    assert study.main(argv) == 0
    assert "the tables and plots are being written by node3.cluster pid" in capsys.readouterr().out
    assert not (out / "results.csv").exists()
    assert study.main([*argv, "--report"]) == 2
    assert "being written by node3.cluster" in capsys.readouterr().err
    assert study.main([*argv, "--report", "--reclaim"]) == 0
    assert (out / "results.csv").exists()


@pytest.mark.slow
def test_two_commands_on_one_folder_train_each_run_once_and_the_last_writes_the_tables(
    tmp_path: Path, small_release: Path
) -> None:
    out = tmp_path / "study"
    argv = [*tiny_study_args(tmp_path, small_release, out, ("dice",)), "--epochs", "1"]
    commands = [[sys.executable, "-m", "hieseg.study", *argv, "--workers", "2"],  # CPU workers, one per run
                [sys.executable, "-m", "hieseg.study", *argv]]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    outputs = [process.communicate(timeout=1800) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    printed = [stdout for stdout, _ in outputs]
    assert sum(int(text.split(" run(s) trained")[0].split()[-1]) for text in printed) == 2  # each run once
    assert any("8 held-out case score(s) over 1 loss(es)" in text for text in printed)
    for fold in range(2):
        with open(out / "models" / "dice" / f"fold{fold}" / "runs" / "model" / "metrics.csv", newline="") as handle:
            assert [int(float(r["epoch"])) for r in csv.DictReader(handle)] == [1]
    claimed = sorted(p.name for p in (out / "claims").iterdir() if not p.name.startswith("report"))
    assert claimed == ["dice.fold0.0.json", "dice.fold1.0.json"]  # claimed once each, never taken over
    with open(out / "results.csv", newline="") as handle:
        assert sorted(r["case_id"] for r in csv.DictReader(handle)) == sorted(
            sum(json.loads((out / "splits.json").read_text())["folds"], []))
    assert (out / "report" / "report.html").exists()
