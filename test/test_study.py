"""The network and loss study: tables from hand-made rows, fold and settings bookkeeping, tiny end-to-end studies."""

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

from hieseg.cli import study as study_cli
from hieseg.config.settings import LOSS_NAMES, ExperimentConfig
from hieseg.data.burden import burden_group
from hieseg.errors import OutputError
from hieseg.evaluation.metrics import HIGHER_IS_BETTER, SUMMARY_METRICS, CaseMetrics
from hieseg.io.tables import best_per_metric
from hieseg.model.network import build_network, parameter_count
from hieseg.runtime import claims
from hieseg.studies import plan, results
from hieseg.studies import runner as study
from hieseg.training import trainer as training
from hieseg.training.logs import read_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_LOSSES = ("dice", "tversky_hausdorffdt")


def row(
    loss: str, case_id: str, dice: float, masd: float, nsd: float, burden: float, fold: int = 0, pred_ml: float = 1.0,
    network: str = "unet", seconds: float | None = None,
) -> study.StudyRow:
    metrics = CaseMetrics(
        case_id=case_id, dice=dice, masd_mm=masd, nsd=nsd, truth_ml=1.0, pred_ml=pred_ml,
        brain_ml=100.0, burden_fraction=burden, burden_group=burden_group(burden),
    )
    return study.StudyRow(network=network, loss=loss, fold=fold, metrics=metrics, inference_seconds=seconds)


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
    records = {r["loss"]: r for r in results.summary_records(results.summarize_by_method(HAND_ROWS), {})}
    assert list(records) == ["dice", "tversky"]
    dice = records["dice"]
    assert dice["network"] == "unet" and dice["parameters"] == "" and dice["inference_seconds_mean"] == ""
    assert (dice["n"], dice["lt1pct_n"], dice["1to5pct_n"], dice["gt5pct_n"]) == (3, 1, 2, 0)
    assert dice["dice_mean"] == pytest.approx(0.7)
    assert dice["dice_std"] == pytest.approx(math.sqrt(2 / 300))
    assert dice["1to5pct_masd_mm_mean"] == pytest.approx(5.5)
    assert dice["gt5pct_dice_mean"] == "" and dice["gt5pct_nsd_std"] == ""
    assert (dice["n_one_empty"], records["tversky"]["n_one_empty"]) == (0, 1)


def test_markdown_bolds_the_best_loss_per_metric_and_direction() -> None:
    markdown = results.render_markdown(results.summarize_by_method(HAND_ROWS), {}, {"folds": 2})
    overall = markdown.split("## All cases")[1].split("##")[0]
    assert "| network | loss | n | Dice | MASD (mm) | NSD |" in overall
    assert "| unet | dice | 3 | **0.700 ± 0.082** | 5.000 ± 0.816 | **0.800 ± 0.082** |" in overall
    assert "| unet | tversky | 3 | 0.500 ± 0.000 | **2.000 ± 0.816** | 0.700 ± 0.082 |" in overall
    low_burden = markdown.split("## Lesion burden <1%")[1].split("##")[0]
    assert "| unet | dice | 1 |" in low_burden and "| unet | tversky | 1 |" in low_burden
    high_burden = markdown.split("## Lesion burden >5%")[1]
    assert "| unet | dice | 0 | – | – | – |" in high_burden
    assert "folds = 2" in markdown
    assert "MASD = the image diagonal: unet / dice 0, unet / tversky 1." in markdown
    assert "| unet | dice | – | – | – | – |" in markdown.split("## Cost")[1]  # no cost measured


NETWORK_ROWS = [
    # unet: 2 folds of 2 cases; segresnet: the same cases, better Dice, slower per case.
    *(row("dice", case, 0.6, 3.0, 0.7, 0.02, fold=fold, seconds=0.5 + 0.1 * fold)
      for case, fold in (("a", 0), ("b", 0), ("c", 1), ("d", 1))),
    *(row("dice", case, 0.8, 2.0, 0.9, 0.02, fold=fold, network="segresnet", seconds=2.0)
      for case, fold in (("a", 0), ("b", 0), ("c", 1), ("d", 1))),
]
NETWORK_COSTS = [
    results.RunCost(study.RunKey(network, "dice", fold), parameters, epochs_run=epochs, training_seconds=seconds)
    for network, parameters, epochs, seconds in (("unet", 1000, 2, 10.0), ("segresnet", 250000, 2, 40.0))
    for fold, seconds in ((0, seconds), (1, seconds + 2.0))
]


def test_tables_compare_networks_with_their_cost() -> None:
    summaries = results.summarize_by_method(NETWORK_ROWS)
    costs = results.cost_statistics(NETWORK_COSTS, NETWORK_ROWS)
    assert list(summaries) == [("unet", "dice"), ("segresnet", "dice")]
    records = {(r["network"], r["loss"]): r for r in results.summary_records(summaries, costs)}
    unet, segresnet = records[("unet", "dice")], records[("segresnet", "dice")]
    assert (unet["parameters"], segresnet["parameters"]) == (1000, 250000)
    assert unet["training_seconds_mean"] == pytest.approx(11.0) and unet["training_seconds_std"] == pytest.approx(1.0)
    assert unet["inference_seconds_mean"] == pytest.approx(0.55)
    assert unet["inference_seconds_std"] == pytest.approx(0.05)
    assert segresnet["epochs_run_mean"] == 2 and segresnet["inference_seconds_mean"] == pytest.approx(2.0)
    assert (unet["dice_mean"], segresnet["dice_mean"]) == (pytest.approx(0.6), pytest.approx(0.8))
    markdown = results.render_markdown(summaries, costs, {"networks": "unet, segresnet"})
    overall = markdown.split("## All cases")[1].split("##")[0]
    assert "| unet | dice | 4 | 0.600 ± 0.000 | 3.000 ± 0.000 | 0.700 ± 0.000 |" in overall
    assert "| segresnet | dice | 4 | **0.800 ± 0.000** | **2.000 ± 0.000** | **0.900 ± 0.000** |" in overall
    cost = markdown.split("## Cost")[1].split("##")[0]
    assert "| network | loss | parameters | epochs run (mean) | training s per fold | inference s per case |" in cost
    assert "| unet | dice | 1,000 | 2 | 11.0 ± 1.0 | 0.550 ± 0.050 |" in cost
    assert "| segresnet | dice | 250,000 | 2 | 41.0 ± 1.0 | 2.000 ± 0.000 |" in cost


def test_best_per_metric_keeps_ties() -> None:
    statistics = {
        method: {"n": 1, **{m: {"mean": 0.5, "std": 0.0, "median": 0.5} for m in SUMMARY_METRICS}}
        for method in (("unet", "x"), ("segresnet", "x"))
    }
    both = {("unet", "x"), ("segresnet", "x")}
    assert best_per_metric(statistics, HIGHER_IS_BETTER) == {"dice": both, "masd_mm": both, "nsd": both}


def test_rows_round_trip_through_csv(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    study.write_rows(path, HAND_ROWS)
    assert study.read_rows(path) == HAND_ROWS
    with_ceiling = [with_ceilings(r, 0.9) for r in HAND_ROWS]
    study.write_rows(path, with_ceiling)
    assert study.read_rows(path) == with_ceiling
    study.write_rows(path, NETWORK_ROWS)
    assert study.read_rows(path) == NETWORK_ROWS


def with_ceilings(study_row: study.StudyRow, ceiling: float) -> study.StudyRow:
    return dataclasses.replace(study_row, metrics=dataclasses.replace(study_row.metrics, ceiling_dice=ceiling))


def test_scores_written_before_the_ceiling_and_the_network_existed_still_read(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    study.write_rows(path, HAND_ROWS[:1])
    header, values = path.read_text().splitlines()
    record = dict(zip(header.split(","), values.split(",")))
    legacy = {key: value for key, value in record.items() if key != "ceiling_dice"}
    assert study.StudyRow.from_record(legacy) == HAND_ROWS[0]
    before_networks = {key: value for key, value in legacy.items() if key not in ("network", "inference_seconds")}
    assert study.StudyRow.from_record(before_networks, "segresnet") == dataclasses.replace(
        HAND_ROWS[0], network="segresnet")


def test_the_ceiling_is_reported_beside_each_loss() -> None:
    rows = [with_ceilings(r, ceiling) for r, ceiling in zip(HAND_ROWS, (0.9, 0.7, 0.8) * 2)]
    summaries = results.summarize_by_method(rows)
    markdown = results.render_markdown(summaries, {}, {"folds": 2})
    overall = markdown.split("## All cases")[1].split("##")[0]
    assert "| network | loss | n | Dice | MASD (mm) | NSD | ceiling Dice |" in overall
    assert "| unet | dice | 3 | **0.700 ± 0.082** | 5.000 ± 0.816 | **0.800 ± 0.082** | 0.800 ± 0.082 |" in overall
    assert "| unet | dice | 2 | **0.650 ± 0.050** | 5.500 ± 0.500 | **0.750 ± 0.050** | 0.750 ± 0.050 |" in markdown
    assert "| unet | dice | 0 | – | – | – | – |" in markdown
    records = {r["loss"]: r for r in results.summary_records(summaries, {})}
    assert records["tversky"]["lt1pct_ceiling_dice_mean"] == pytest.approx(0.9)
    assert records["tversky"]["gt5pct_ceiling_dice_mean"] == ""


def test_parse_losses() -> None:
    assert study_cli.parse_losses("all") == LOSS_NAMES
    assert study_cli.parse_losses(" tversky , dice") == ("tversky", "dice")
    with pytest.raises(ValueError, match="unknown loss name.*dicee"):
        study_cli.parse_losses("dice,dicee")
    with pytest.raises(ValueError, match="twice"):
        study_cli.parse_losses("dice,dice")


def test_parse_networks() -> None:
    assert study_cli.parse_networks(" segresnet ,unet") == ("segresnet", "unet")
    with pytest.raises(ValueError, match=r"unknown network name\(s\) vnet; use a comma list of: unet, dynunet"):
        study_cli.parse_networks("unet,vnet")
    with pytest.raises(ValueError, match="twice"):
        study_cli.parse_networks("unet,unet")


def test_folds_are_written_once_and_a_changed_data_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    config = tiny_config(**{"train.folds": 2})
    burdens = {f"case{i}": 0.002 * i for i in range(6)}
    folds = plan.folds_for(path, burdens, config)
    assert sorted(sum(folds, [])) == sorted(burdens)
    assert json.loads(path.read_text())["folds"] == folds
    assert plan.folds_for(path, burdens, config) == folds
    with pytest.raises(ValueError, match="new: case9; gone: case0"):
        plan.folds_for(path, {**{k: v for k, v in burdens.items() if k != "case0"}, "case9": 0.0}, config)
    with pytest.raises(ValueError, match="burdens changed"):
        plan.folds_for(path, {**burdens, "case5": 0.2, "case4": 0.3}, config)


def settings_of(networks: tuple[str, ...] = ("unet",), **overrides: object) -> dict[str, object]:
    """study.json's settings of a study of ``networks`` on the tiny configuration with ``overrides``."""
    the_study = study.Study(data=Path("data"), out=Path("out"), config=tiny_config(**overrides), losses=("dice",),
                            networks=networks)
    return plan.study_settings(the_study)


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    plan.check_settings(path, settings_of(**{"train.epochs": 2}))
    plan.check_settings(path, settings_of(**{"train.epochs": 2}))
    with pytest.raises(ValueError, match="train.epochs: 2 then, 3 now"):
        plan.check_settings(path, settings_of(**{"train.epochs": 3}))
    with pytest.raises(ValueError, match="train.seed: 42 then, 1 now"):
        plan.check_settings(path, settings_of(**{"train.epochs": 2, "train.seed": 1}))
    with pytest.raises(ValueError, match=r"swinunetr.feature_size: 24 then, 48 now"):  # another network's settings
        plan.check_settings(path, settings_of(**{"train.epochs": 2, "swinunetr.feature_size": 48}))
    recorded = json.loads(path.read_text())
    assert recorded["networks"] == ["unet"] and "name" not in recorded["config"]["network"]
    assert recorded["budget"]["unit"] == "steps" and "not seconds" in recorded["budget"]["why"]


def test_adding_a_network_with_the_same_settings_extends_the_study(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    plan.check_settings(path, settings_of(("unet",)))
    plan.check_settings(path, settings_of(("segresnet",)))
    plan.check_settings(path, settings_of(("dynunet", "unet")), record=False)
    assert json.loads(path.read_text())["networks"] == ["unet", "segresnet"]  # --report records nothing
    plan.check_settings(path, settings_of(("dynunet", "unet")))
    assert json.loads(path.read_text())["networks"] == ["unet", "segresnet", "dynunet"]
    with pytest.raises(ValueError, match="train.epochs: 2 then, 4 now"):
        plan.check_settings(path, settings_of(("segresnet",), **{"train.epochs": 4}))
    assert json.loads(path.read_text())["networks"] == ["unet", "segresnet", "dynunet"]


def previous_version_settings(**overrides: object) -> dict[str, object]:
    """study.json as the version before --networks wrote it: the whole config but loss.name and train.fold."""
    config = tiny_config(**overrides).to_dict()
    del config["loss"]["name"], config["train"]["fold"]
    return {"config": config, "nsd_tolerance_mm": 2.0}


def format_1(settings: dict[str, object]) -> dict[str, object]:
    """The same settings with the configuration in format 1: the U-Net's keys in network, no other networks."""
    config = json.loads(json.dumps(settings["config"]))
    config["network"] = {key: value for key, value in config["network"].items() if key != "name"}
    config["network"].update(config.pop("unet"))
    for section in ("dynunet", "segresnet", "swinunetr"):
        del config[section]
    return {**settings, "config": {**config, "format_version": 1}}


@pytest.mark.parametrize("old", [previous_version_settings, lambda **o: format_1(previous_version_settings(**o))],
                         ids=["format 2", "format 1"])
def test_a_study_json_of_an_older_version_is_the_same_study_unless_a_setting_differs(tmp_path: Path, old) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(old()))
    with pytest.raises(ValueError, match=r"train.epochs: 2 then, 3 now\)"):
        plan.check_settings(path, settings_of(**{"train.epochs": 3}))
    plan.check_settings(path, settings_of(("segresnet",)), record=False)
    assert "networks" not in json.loads(path.read_text())
    plan.check_settings(path, settings_of(("segresnet",)))
    assert json.loads(path.read_text()) == settings_of(("unet", "segresnet"))  # brought to today's form


def test_a_folder_laid_out_by_the_previous_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(previous_version_settings()))
    (tmp_path / "models" / "dice" / "fold0").mkdir(parents=True)
    with pytest.raises(OutputError, match="laid out by an older version of hieseg.study .models/dice: "
                                          r"models/<loss>/fold<k>.*move models/<loss> to models/unet/<loss>"):
        plan.check_settings(path, settings_of())
    assert "networks" not in json.loads(path.read_text())


def test_cli_reports_bad_arguments_in_one_line(tmp_path: Path, small_release: Path, capsys) -> None:
    base = ["--data", str(small_release), "--out", str(tmp_path / "study")]
    assert study_cli.main([*base, "--losses", "dice,focal"]) == 2
    assert "unknown loss name(s) focal" in capsys.readouterr().err
    assert study_cli.main([*base, "--set", "loss.name=dice"]) == 2
    assert "--losses" in capsys.readouterr().err
    assert study_cli.main([*base, "--networks", "unet,unetr"]) == 2
    assert "--networks: unknown network name(s) unetr" in capsys.readouterr().err
    assert study_cli.main([*base, "--set", "network.name=segresnet"]) == 2
    assert "choose networks with --networks" in capsys.readouterr().err
    assert study_cli.main([*base, "--set", "train.networks_per_fold=2"]) == 2
    assert "train.networks_per_fold: a study trains and scores one network" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def test_a_network_that_cannot_take_the_patches_is_refused_before_any_work(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, ("dice",), networks=("unet", "swinunetr"))
    assert study_cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--networks swinunetr: train.patch_size: network swinunetr needs each axis " \
        "to be a multiple of 32 x 32 x 32 (see its section 'swinunetr'), got [48, 48, 16]" in error
    assert fake_runs == [] and not out.exists()
    roi_only = [*argv, "--set", "train.patch_size=[64,64,32]"]
    assert study_cli.main(roi_only) == 2
    assert "--networks swinunetr: inference.roi_size: network swinunetr needs" in capsys.readouterr().err
    assert fake_runs == [] and not out.exists()


TINY_NETWORKS = {"segresnet.init_filters": 8, "segresnet.blocks_down": (1, 1, 1), "segresnet.blocks_up": (1, 1)}
"""A SegResNet small enough to train in seconds on a CPU, beside the tiny U-Net."""


def tiny_study_args(
    tmp_path: Path, data: Path, out: Path, losses: tuple[str, ...], networks: tuple[str, ...] = ()
) -> list[str]:
    """Command line of a CPU-sized study: tiny networks, 2 folds, 2 epochs of one step each."""
    config_path = tmp_path / "base.json"
    tiny_config(**{"train.steps_per_epoch": 1, **TINY_NETWORKS}).save(config_path)
    return ["--data", str(data), "--out", str(out), "--config", str(config_path), "--losses", ",".join(losses),
            *(["--networks", ",".join(networks)] if networks else []),
            "--folds", "2", "--epochs", "2", "--seed", "5", "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume_does_no_training(
    tmp_path: Path, small_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, STUDY_LOSSES)
    assert study_cli.main(argv) == 0

    folds = json.loads((out / "splits.json").read_text())["folds"]
    cases = sorted(sum(folds, []))
    assert len(folds) == 2 and len(cases) == 8
    with open(out / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert {r["network"] for r in results} == {"unet"}  # the config's network.name, without --networks
    for loss in STUDY_LOSSES:
        held_out = [(r["case_id"], int(r["fold"])) for r in results if r["loss"] == loss]
        assert sorted(case_id for case_id, _ in held_out) == cases
        assert all(case_id in folds[fold] for case_id, fold in held_out)
        assert len(list((out / "predictions" / "unet" / loss).glob("*.mha"))) == 8
        for fold in range(2):
            run_config = json.loads((out / "models" / "unet" / loss / f"fold{fold}" / "config.json").read_text())
            assert run_config["loss"]["name"] == loss and run_config["train"]["seed"] == 5

    with open(out / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert [r["loss"] for r in summary] == list(STUDY_LOSSES)
    for record in summary:
        assert int(record["n"]) == 8
        values = [float(record[f"{metric}_{statistic}"]) for metric in SUMMARY_METRICS for statistic in ("mean", "std")]
        assert all(math.isfinite(value) for value in values)
    markdown = (out / "results.md").read_text()
    assert all(f"| unet | {loss} | 8 |" in markdown for loss in STUDY_LOSSES)
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
    assert study_cli.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.mha")} == before
    assert {p: p.stat().st_mtime_ns for p in (out / "report" / "qc").rglob("*.png")} == pictures  # kept, not redrawn
    with open(out / "results.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == results


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_networks_train_on_the_same_folds_and_budget_and_are_tabled_with_their_cost(
    tmp_path: Path, small_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, ("dice",), networks=("unet", "segresnet"))
    budgets: list[tuple[str, int, int, int]] = []
    train = training.train

    def recording_train(config, *args, **kwargs):
        budgets.append((config.network.name, config.train.fold, config.train.epochs, config.train.steps_per_epoch))
        return train(config, *args, **kwargs)

    monkeypatch.setattr(training, "train", recording_train)
    assert study_cli.main(argv) == 0
    assert budgets == [("unet", 0, 2, 1), ("unet", 1, 2, 1), ("segresnet", 0, 2, 1), ("segresnet", 1, 2, 1)]

    folds = json.loads((out / "splits.json").read_text())["folds"]
    results = read_csv(out / "results.csv")
    for network in ("unet", "segresnet"):
        held_out = {(r["case_id"], int(r["fold"])) for r in results if r["network"] == network}
        assert held_out == {(case_id, fold) for fold, ids in enumerate(folds) for case_id in ids}
        assert len(list((out / "predictions" / network / "dice").glob("*.mha"))) == 8
        run_config = json.loads((out / "models" / network / "dice" / "fold1" / "config.json").read_text())
        assert run_config["network"]["name"] == network and run_config["train"]["fold"] == 1
    assert all(float(r["inference_seconds"]) > 0 for r in results)

    runs = {(r["network"], int(r["fold"])): r for r in read_csv(out / "runs.csv")}
    assert len(runs) == 4
    for (network, fold), record in runs.items():
        history = read_history(out / "models" / network / "dice" / f"fold{fold}" / "runs" / "model"
                                        / "metrics.csv")
        assert int(record["epochs_run"]) == len(history) == 2
        assert float(record["training_seconds"]) == pytest.approx(sum(r["seconds"] for r in history))
    summary = {r["network"]: r for r in read_csv(out / "summary.csv")}
    assert list(summary) == ["unet", "segresnet"]
    for network, record in summary.items():
        config = tiny_config(**{"network.name": network, **TINY_NETWORKS})
        assert int(record["parameters"]) == parameter_count(build_network(config))
        assert float(record["training_seconds_mean"]) == pytest.approx(
            (float(runs[(network, 0)]["training_seconds"]) + float(runs[(network, 1)]["training_seconds"])) / 2)
        assert float(record["inference_seconds_mean"]) == pytest.approx(
            sum(float(r["inference_seconds"]) for r in results if r["network"] == network) / 8)
        assert int(record["n"]) == 8 and record["dice_mean"] != ""
    assert summary["unet"]["parameters"] != summary["segresnet"]["parameters"]
    markdown = (out / "results.md").read_text()
    assert "| unet | dice | 8 |" in markdown and "| segresnet | dice | 8 |" in markdown
    assert "networks = unet, segresnet" in markdown and "optimiser steps, not seconds" in markdown
    report = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "segresnet / dice" in report and 'id="cost"' in report
    assert len(list((out / "report" / "qc" / "segresnet" / "dice").glob("*.thumb.png"))) == 8
    assert sorted(p.name for p in (out / "claims").iterdir() if "fold" in p.name) == [
        f"{network}.dice.fold{fold}.0.json" for network in ("segresnet", "unet") for fold in (0, 1)]

    budgets.clear()
    assert study_cli.main(argv) == 0  # resumed: every run finished
    assert budgets == []
    assert read_csv(out / "results.csv") == results


def test_adding_a_network_trains_only_its_runs_and_other_settings_are_still_refused(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    assert study_cli.main(tiny_study_args(tmp_path, small_release, out, ("dice",))) == 0
    assert fake_runs == [("dice", 0), ("dice", 1)]
    capsys.readouterr()
    both = tiny_study_args(tmp_path, small_release, out, ("dice",), networks=("unet", "segresnet"))
    assert study_cli.main([*both, "--shard", "1/2"]) == 0  # runs 1 and 3 of unet 0, unet 1, segresnet 0, segresnet 1
    assert fake_runs[2:] == [("segresnet", "dice", 1)]
    assert "1 run(s) trained, 1 already finished" in capsys.readouterr().out
    assert study_cli.main(both) == 0
    assert fake_runs[3:] == [("segresnet", "dice", 0)]
    assert "16 held-out case score(s) over 2 network(s) x 1 loss(es)" in capsys.readouterr().out
    assert json.loads((out / "study.json").read_text())["networks"] == ["unet", "segresnet"]
    results = read_csv(out / "results.csv")
    for fold in range(2):
        ids = {network: sorted(r["case_id"] for r in results if r["network"] == network and r["fold"] == str(fold))
               for network in ("unet", "segresnet")}
        assert ids["unet"] == ids["segresnet"] and len(ids["unet"]) == 4
    summary = read_csv(out / "summary.csv")
    assert [(r["network"], r["loss"]) for r in summary] == [("unet", "dice"), ("segresnet", "dice")]
    assert [float(r["training_seconds_mean"]) for r in summary] == [1.0, 1.0]
    assert [float(r["inference_seconds_mean"]) for r in summary] == [0.25, 0.25]

    assert study_cli.main([*both, "--epochs", "3"]) == 2
    assert "train.epochs: 2 then, 3 now" in capsys.readouterr().err
    assert study_cli.main([*both, "--set", "segresnet.init_filters=16"]) == 2
    assert "segresnet.init_filters: 8 then, 16 now" in capsys.readouterr().err
    assert len(fake_runs) == 4


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
    assert study_cli.main(argv) == 130  # Ctrl-C: 128 + SIGINT, after the clean-ups
    run_dir = out / "models" / "unet" / "dice" / "fold0"
    assert (run_dir / "model.pt").exists() and not (run_dir / "scores.csv").exists()

    monkeypatch.setattr(study, "predict_and_score", predict_and_score)
    assert study_cli.main(argv) == 0
    with open(run_dir / "runs" / "model" / "metrics.csv", newline="") as handle:
        assert [int(float(r["epoch"])) for r in csv.DictReader(handle)] == [1, 2]
    assert (run_dir / "scores.csv").exists() and (out / "results.csv").exists()


# Several processes on one study folder: claims, shards, --report, workers.

TWO_LOSSES = ("dice", "tversky")


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int] | tuple[str, str, int]]:
    """Replace training, prediction and the HTML report by fast stand-ins; returns the runs trained, as
    (loss, fold) for the U-Net and (network, loss, fold) for the others.

    A stand-in run writes what a real one leaves behind for the tables: its scores.csv (one
    hand-made row per held-out case) and a metrics.csv with a validation Dice.
    """
    trained: list[tuple[str, int] | tuple[str, str, int]] = []

    def fake_job(the_study: study.Study, run: study.RunKey, held_out: list) -> list[study.StudyRow]:
        trained.append((run.loss, run.fold) if run.network == "unet" else (run.network, run.loss, run.fold))
        metrics_path = the_study.metrics_path(run, [f.case_id for f in held_out])
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("epoch,train_loss,val_dice,learning_rate,seconds\n1,0.5,0.6,0.001,1.0\n")
        rows = [row(run.loss, f.case_id, 0.5 + 0.1 * run.fold, 3.0, 0.7, 0.02, fold=run.fold, network=run.network,
                    seconds=0.25) for f in held_out]
        study.write_rows(the_study.scores_path(run), rows)
        return rows

    monkeypatch.setattr(study, "run_job", fake_job)
    monkeypatch.setattr(results, "write_html", lambda *args, **kwargs: None)
    return trained


def test_shards_split_the_runs_and_the_last_one_writes_the_tables(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, TWO_LOSSES)
    assert study_cli.main([*argv, "--shard", "0/2"]) == 0
    assert fake_runs == [("dice", 0), ("tversky", 0)]  # runs 0 and 2 of dice 0, dice 1, tversky 0, tversky 1
    printed = capsys.readouterr().out
    assert "2 run(s) trained, 0 already finished" in printed
    assert "2 run(s) of the study not finished yet (unet / dice fold 1, unet / tversky fold 1)" in printed
    assert not (out / "results.csv").exists()

    assert study_cli.main([*argv, "--report"]) == 2
    error = capsys.readouterr().err
    assert ("2 of the study's 4 run(s) are not finished: unet / dice fold 1 (not started), "
            "unet / tversky fold 1 (not started)") in error
    assert not (out / "results.csv").exists()
    claim_file(out, "unet.tversky.fold1", 0, pid=dead_pid())
    assert study_cli.main([*argv, "--report"]) == 2
    assert "unet / tversky fold 1 (stopped; rerun to resume it)" in capsys.readouterr().err

    assert study_cli.main([*argv, "--shard", "1/2"]) == 0
    assert fake_runs[2:] == [("dice", 1), ("tversky", 1)]
    assert "16 held-out case score(s) over 1 network(s) x 2 loss(es)" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert [(r["loss"], r["fold"]) for r in results][::4] == [("dice", "0"), ("dice", "1"), ("tversky", "0"),
                                                              ("tversky", "1")]
    assert (out / "boxplots.png").read_bytes().startswith(PNG_MAGIC)

    (out / "results.csv").unlink()
    assert study_cli.main([*argv, "--report"]) == 0
    assert len(fake_runs) == 4  # --report trains nothing
    with open(out / "results.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == results
    claimed = ["unet.dice.fold0.0.json", "unet.dice.fold1.0.json", "unet.tversky.fold0.0.json",
               "unet.tversky.fold1.1.json",  # the stale claim 0 taken over
               "report.1.json"]  # report.0 (the last shard's) released, then taken anew by --report
    assert sorted(p.name for p in (out / "claims").iterdir()) == sorted(claimed)


def test_report_refuses_a_folder_without_a_study_and_flags_that_train(tmp_path: Path, small_release: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, TWO_LOSSES)
    assert study_cli.main([*argv, "--report"]) == 2
    assert "no study here (study.json missing)" in capsys.readouterr().err
    assert not out.exists()
    assert study_cli.main([*argv, "--report", "--shard", "0/2"]) == 2
    assert "--report trains nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study_cli.main([*argv, "--shard", "2/2"])
    assert "expected K/N with 0 <= K < N" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a GPU this machine lacks")
def test_devices_that_are_not_there_are_refused_before_any_work(tmp_path: Path, small_release: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, TWO_LOSSES)
    assert study_cli.main([*argv, "--devices", "cuda:0,cuda:1"]) == 2
    assert "--device cuda:0: CUDA is not available" in capsys.readouterr().err
    assert study_cli.main([*argv, "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_two_threads_racing_for_one_run_train_it_once(
    tmp_path: Path, small_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    the_study = study.Study(data=small_release, out=tmp_path, config=tiny_config(**{"train.folds": 2}),
                            losses=("dice",), device="cpu", progress=False)
    held_out = study.prepare(the_study, create=True).held_out(0)
    start, calls = threading.Barrier(2), []

    def slow_job(the_study: study.Study, run: study.RunKey, held_out: list) -> list[study.StudyRow]:
        calls.append((run.loss, run.fold))
        time.sleep(0.5)  # long enough for the other thread to find the run claimed, not finished
        rows = [row(run.loss, f.case_id, 0.5, 3.0, 0.7, 0.02, fold=run.fold) for f in held_out]
        study.write_rows(the_study.scores_path(run), rows)
        return rows

    monkeypatch.setattr(study, "run_job", slow_job)
    outcomes: list[study.RunOutcome] = []

    def race() -> None:
        start.wait()
        outcomes.append(study.run_claimed(the_study, study.RunKey("unet", "dice", 0), held_out))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [("dice", 0)]
    assert sorted(o.status for o in outcomes) == [study.HELD, study.TRAINED]
    held = next(o for o in outcomes if o.status == study.HELD)
    assert held.holder.pid == os.getpid() and held.rows == ()
    later = study.run_claimed(the_study, study.RunKey("unet", "dice", 0), held_out)
    assert later.status == study.FINISHED and len(later.rows) == len(held_out) and calls == [("dice", 0)]


def test_racing_processes_record_the_settings_once_and_refuse_others(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    start, refused = threading.Barrier(6), []

    settings = {epochs: settings_of(**{"train.epochs": epochs}) for epochs in (2, 3)}

    def start_study(epochs: int) -> None:
        start.wait()
        try:
            plan.check_settings(path, settings[epochs])
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
    claim_file(out, "unet.dice.fold0", 0, pid=dead_pid())
    claim_file(out, "unet.dice.fold1", 0, host="node17.cluster", pid=4242)
    assert study_cli.main(argv) == 0
    assert fake_runs == [("dice", 0)]
    printed = capsys.readouterr().out
    assert "1 run(s) trained, 0 already finished, 1 left to the processes that claim them" in printed
    assert "unet / dice fold 1: claimed by node17.cluster pid 4242 since" in printed and "--reclaim" in printed
    assert not (out / "results.csv").exists()

    assert study_cli.main([*argv, "--report"]) == 2
    assert "unet / dice fold 1 (claimed by node17.cluster pid 4242 since" in capsys.readouterr().err

    assert study_cli.main([*argv, "--reclaim"]) == 0
    assert fake_runs == [("dice", 0), ("dice", 1)]
    assert "8 held-out case score(s) over 1 network(s) x 1 loss(es)" in capsys.readouterr().out
    assert (out / "claims" / "unet.dice.fold1.1.json").exists()
    assert not (out / "claims" / "unet.dice.fold1.0.json").exists()


def test_a_live_report_claim_leaves_the_tables_to_its_holder(
    tmp_path: Path, small_release: Path, fake_runs: list, capsys
) -> None:
    out = tmp_path / "study"
    argv = tiny_study_args(tmp_path, small_release, out, ("dice",))
    claim_file(out, "report", 0, host="node3.cluster")
    assert study_cli.main(argv) == 0
    assert "the tables and plots are being written by node3.cluster pid" in capsys.readouterr().out
    assert not (out / "results.csv").exists()
    assert study_cli.main([*argv, "--report"]) == 2
    assert "being written by node3.cluster" in capsys.readouterr().err
    assert study_cli.main([*argv, "--report", "--reclaim"]) == 0
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
    assert any("8 held-out case score(s) over 1 network(s) x 1 loss(es)" in text for text in printed)
    for fold in range(2):
        with open(out / "models" / "unet" / "dice" / f"fold{fold}" / "runs" / "model" / "metrics.csv",
                  newline="") as handle:
            assert [int(float(r["epoch"])) for r in csv.DictReader(handle)] == [1]
    claimed = sorted(p.name for p in (out / "claims").iterdir() if not p.name.startswith("report"))
    assert claimed == ["unet.dice.fold0.0.json", "unet.dice.fold1.0.json"]  # claimed once each, never taken over
    with open(out / "results.csv", newline="") as handle:
        assert sorted(r["case_id"] for r in csv.DictReader(handle)) == sorted(
            sum(json.loads((out / "splits.json").read_text())["folds"], []))
    assert (out / "report" / "report.html").exists()


def test_the_network_grid_is_described_as_configured_or_as_each_run_derived_it(tmp_path: Path) -> None:
    runs = (study.RunKey("unet", "dice", 0), study.RunKey("segresnet", "dice", 0))
    plan = study.Plan(files=(), folds=(("A",),), runs=runs)
    configured = study.Study(data=tmp_path, out=tmp_path, config=ExperimentConfig().with_overrides(
        {"preprocess.target_spacing": [1.0, 1.0, 2.5]}), losses=("dice",))
    assert results.network_grids(configured, plan) == "1 x 1 x 2.5"
    derived = study.Study(data=tmp_path, out=tmp_path, config=ExperimentConfig(), losses=("dice",),
                          networks=("unet", "segresnet"))
    for run in runs:
        derived.run_dir(run).mkdir(parents=True)
        derived.run_config(run).with_overrides({"preprocess.target_spacing": [0.9, 0.9, 2.8]}).save(
            derived.run_dir(run) / "config.json")
    assert results.network_grids(derived, plan) == "0.9 x 0.9 x 2.8 (from the data)"
