"""scripts/versus_nnunet.sh: hie-seg's recipe against nnU-Net v2 on one budget, and the pieces it is made of.

The smoke run (``SMOKE=1``: 6 training and 2 evaluation cases of 64 x 64 x 16, half a minute of epochs per
system) runs the whole path where nnunetv2 is importable and skips, saying so, where it is not. The
budget arithmetic and the report's reading of the records are checked without nnU-Net.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hieseg.errors import DatasetError
from hieseg.evaluation.baselines import BASELINES
from hieseg.studies import versus
from hieseg.training.logs import METRICS_FILE, write_metrics

REPO = Path(__file__).resolve().parents[1]
SMOKE_BUDGET_MIN = 0.5
BUDGET_TOLERANCE = 2.0
"""Each system's epochs may outrun the smoke budget by this factor: with half a minute, one epoch is a sizeable part
of it, and the machine is shared (the full run's epochs are a few percent of its budget). Both read the clock:
nnU-Net's budget trainer and train.py's ``train.budget_min``."""


def test_the_recipes_record_and_minutes_cover_every_network_of_its_fold(tmp_path: Path) -> None:
    recipe = versus.Layout(tmp_path).recipe
    seconds = {"fold0": [10.0, 12.0], "fold0-net1": [11.0], "fold1": [99.0]}
    for name, epochs in seconds.items():
        (recipe / "runs" / name).mkdir(parents=True)
        write_metrics(recipe / "runs" / name / METRICS_FILE,
                      [{"epoch": i + 1, "train_loss": 0.5, "val_dice": 0.6, "learning_rate": 0.0, "seconds": s}
                       for i, s in enumerate(epochs)])
    (recipe / "config.json").write_text(json.dumps({"train": {
        "steps_per_epoch": 60, "epochs": 40, "budget_min": 0.0, "batch_size": 4, "patch_size": [64, 64, 32]}}))
    record = versus.recipe_record(versus.Layout(tmp_path), 0, None)
    assert (record["networks"], record["epochs"], record["steps"], record["training_s"]) == (2, 3, 180, 33.0)
    assert [point["network"] for point in record["curve"]] == [0, 0, 1]
    assert "recipe network 1 | 1 |" in versus.curve_table({"recipe": record})
    minutes = subprocess.run([sys.executable, "-m", "hieseg.versus", "minutes", str(recipe), "--fold", "0"],
                             cwd=REPO, capture_output=True, text=True, check=False)
    assert minutes.returncode == 0 and minutes.stdout.strip() == "0.55", minutes.stderr
    with pytest.raises(DatasetError, match="no run of fold 2"):
        versus.runs_of_fold(recipe, 2)


def test_the_split_check_compares_the_validation_cases(tmp_path: Path) -> None:
    (tmp_path / "splits.json").write_text(json.dumps([{"train": ["c", "d"], "val": ["b", "a"]}]))
    (tmp_path / "tuning.json").write_text(json.dumps({"case_ids": ["a", "b"]}))
    assert versus.split_check(tmp_path / "splits.json", tmp_path / "tuning.json", 0)["equal"]
    (tmp_path / "tuning.json").write_text(json.dumps({"case_ids": ["a", "c"]}))
    assert not versus.split_check(tmp_path / "splits.json", tmp_path / "tuning.json", 0)["equal"]


EARLIER_SETTINGS = {"train": "data/train", "eval": "data/eval", "budget_s": 1500.0, "folds": 5, "seed": 42,
                    "device": "cpu", "budget_source": "BUDGET_MIN"}


def test_an_earlier_run_is_reusable_only_with_the_same_cases_budget_split_and_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    now = {**EARLIER_SETTINGS, "train": str(tmp_path / "data" / "train"), "budget_source": "another"}
    assert versus.reuse_mismatches(EARLIER_SETTINGS, now) == [], "a path is compared resolved; the source is not compared"
    changed = {**now, "budget_s": 1800.0, "eval": "data/other", "seed": 7}
    assert versus.reuse_mismatches(EARLIER_SETTINGS, changed) == [
        "eval: 'data/eval' != 'data/other'", "budget_s: 1500.0 != 1800.0", "seed: 42 != 7"]


def test_reusing_a_run_without_a_report_or_with_another_budget_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no versus.json"):
        versus.check_reusable(tmp_path, EARLIER_SETTINGS)
    (tmp_path / versus.VERSUS_JSON).write_text(json.dumps({"settings": EARLIER_SETTINGS}))
    versus.check_reusable(tmp_path, EARLIER_SETTINGS)
    with pytest.raises(DatasetError, match=r"budget_s: 1500.0 != 600.0"):
        versus.check_reusable(tmp_path, {**EARLIER_SETTINGS, "budget_s": 600.0})


def finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


TORCHVISION_ON_A_CPU_ONLY_INSTALL = '''
import sys


class CudaBuildOfTorchvision:
    """torchvision as a CUDA build meets a CPU-only machine: importing it fails as nnUNetv2_train then does."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


sys.meta_path.insert(0, CudaBuildOfTorchvision())
'''


def without_torchvision(folder: Path) -> Path:
    """A folder whose ``sitecustomize.py`` makes every import of torchvision fail as a CUDA build of it fails
    on a CPU-only install, so the smoke run shows that nothing of the nnU-Net path needs it."""
    site = folder / "cpu-only-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(TORCHVISION_ON_A_CPU_ONLY_INSTALL)
    return site


def test_the_simulated_cuda_torchvision_fails_as_nnunets_trainer_lookup_does(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(without_torchvision(tmp_path))}
    result = subprocess.run([sys.executable, "-c", "import torchvision"], env=env, check=False, capture_output=True,
                            text=True)
    assert result.returncode == 1 and "operator torchvision::nms does not exist" in result.stderr


@pytest.mark.slow
def test_the_smoke_run_scores_every_system_on_one_budget_and_one_split(tmp_path: Path) -> None:
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not importable here: pip install -e '.[nnunet]' (nnunetv2==2.8.1) to run "
                    "scripts/versus_nnunet.sh")
    out = tmp_path / "versus"
    env = {**os.environ, "SMOKE": "1", "BUDGET_MIN": str(SMOKE_BUDGET_MIN),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(without_torchvision(tmp_path)),
                                                       os.environ.get("PYTHONPATH"))))}
    result = subprocess.run(["bash", str(REPO / "scripts" / "versus_nnunet.sh"), str(out)], env=env,
                            check=False, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = json.loads((out / "versus.json").read_text())
    assert (out / "versus.md").read_text().startswith("# hie-seg's recipe against nnU-Net v2")

    systems = ("recipe", "nnunet_2d", "nnunet_3d_fullres")
    methods = (*systems, *BASELINES)
    assert set(report["overall"]) == set(methods)
    for method in methods:
        assert all(finite(report["overall"][method][metric]["mean"]) for metric in ("dice", "masd_mm", "nsd"))
        rows = report["cases"][method]
        assert len(rows) == 2
        assert all(finite(row[metric]) for row in rows for metric in ("dice", "masd_mm", "nsd", "truth_lesions"))

    budget_s = report["settings"]["budget_s"]
    assert budget_s == pytest.approx(SMOKE_BUDGET_MIN * 60)
    for name in systems:
        system = report["systems"][name]
        assert system["training_s"] > 0 and finite(system["wall_s"]), name
        assert system["epochs"] >= 1 and system["steps"] >= system["epochs"], name
    for name in systems:  # every trainer reads the clock: each keeps the budget
        system = report["systems"][name]
        assert system["training_s"] <= BUDGET_TOLERANCE * budget_s, name
        assert len(system["curve"]) == system["epochs"], name
    recipe = report["systems"]["recipe"]
    assert recipe["budget_min"] == SMOKE_BUDGET_MIN and recipe["networks"] == 2 and recipe["most_epochs"] == 40
    assert recipe["epochs"] < recipe["networks"] * recipe["most_epochs"]
    assert [point["network"] for point in recipe["curve"]].count(1) >= 1, "both networks' curves are recorded"
    assert recipe["curve"][-1]["val_dice"] is not None, "the budget's last epoch validates"
    assert recipe["curve"][-1]["learning_rate"] == pytest.approx(0.0, abs=1e-12), "the schedule ends with the budget"
    for configuration in versus.NNUNET_CONFIGURATIONS:
        plan = report["systems"][versus.nnunet_name(configuration)]["plan"]
        assert plan["patch_size"] and plan["batch_size"] >= 1

    split = report["split"]
    assert split["equal"] and split["recipe_val"], split

    again = tmp_path / "again"
    env["NNUNET_FROM"] = str(out)
    result = subprocess.run(["bash", str(REPO / "scripts" / "versus_nnunet.sh"), str(again)], env=env,
                            check=False, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "not rerun" in result.stdout and not (again / "data").exists()
    reused = json.loads((again / "versus.json").read_text())
    assert reused["settings"]["nnunet_from"] == str(out)
    for configuration in versus.NNUNET_CONFIGURATIONS:
        name = versus.nnunet_name(configuration)
        assert reused["systems"][name] == report["systems"][name], "nnU-Net's records are the earlier run's"
        assert reused["cases"][name] == report["cases"][name], "and so are its predictions"
    assert reused["split"]["equal"] and reused["systems"]["recipe"]["training_s"] > 0

    env["BUDGET_MIN"] = str(2 * SMOKE_BUDGET_MIN)
    refused = subprocess.run(["bash", str(REPO / "scripts" / "versus_nnunet.sh"), str(tmp_path / "refused")],
                             env=env, check=False, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "budget_s" in refused.stderr
    assert not (tmp_path / "refused" / "recipe").exists(), "the check comes before any training"
