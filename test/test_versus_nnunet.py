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

from hieseg.evaluation.baselines import BASELINES
from hieseg.studies import versus

REPO = Path(__file__).resolve().parents[1]
SMOKE_BUDGET_MIN = 0.5
BUDGET_TOLERANCE = 2.0
"""nnU-Net's epochs may outrun the smoke budget by this factor: with half a minute, one epoch is a sizeable part of
it, and the machine is shared (the full run's epochs are a few percent of its budget). The recipe's time is not
bounded by the test: train.py has no clock, and its epochs, fitted by a calibration run, take what the load of the
moment makes them take."""


def test_the_recipe_trains_the_epochs_that_fit_after_its_start_up() -> None:
    startup, per_epoch = versus.calibrated_epoch([14.0, 2.0, 8.0], validate_every=6)
    assert startup == pytest.approx(12.0)
    assert per_epoch == pytest.approx(2.0 + 6.0 / 6)
    assert versus.recipe_epochs(60.0, startup, per_epoch, most=60) == 16
    assert versus.recipe_epochs(3600.0, startup, per_epoch, most=60) == 60  # never past the recipe's own schedule
    assert versus.recipe_epochs(5.0, startup, per_epoch, most=60) == 1


def test_a_calibration_of_another_length_is_refused() -> None:
    with pytest.raises(versus.DatasetError, match="3 epochs"):
        versus.calibrated_epoch([1.0, 2.0], validate_every=6)


def test_the_split_check_compares_the_validation_cases(tmp_path: Path) -> None:
    (tmp_path / "splits.json").write_text(json.dumps([{"train": ["c", "d"], "val": ["b", "a"]}]))
    (tmp_path / "tuning.json").write_text(json.dumps({"case_ids": ["a", "b"]}))
    assert versus.split_check(tmp_path / "splits.json", tmp_path / "tuning.json", 0)["equal"]
    (tmp_path / "tuning.json").write_text(json.dumps({"case_ids": ["a", "c"]}))
    assert not versus.split_check(tmp_path / "splits.json", tmp_path / "tuning.json", 0)["equal"]


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
    for configuration in versus.NNUNET_CONFIGURATIONS:  # nnU-Net's trainer reads the clock: it keeps the budget
        system = report["systems"][versus.nnunet_name(configuration)]
        assert system["training_s"] <= BUDGET_TOLERANCE * budget_s, configuration
        assert len(system["curve"]) == system["epochs"], configuration
    # train.py has no clock: the recipe trains the epochs its calibration fits into the budget, all of them
    recipe = report["systems"]["recipe"]
    calibration = recipe["calibration"]
    assert recipe["epochs"] == recipe["planned_epochs"] == versus.recipe_epochs(
        budget_s, calibration["startup_s"], calibration["per_epoch_s"], most=60)
    assert recipe["curve"][-1]["val_dice"] is not None
    for configuration in versus.NNUNET_CONFIGURATIONS:
        plan = report["systems"][versus.nnunet_name(configuration)]["plan"]
        assert plan["patch_size"] and plan["batch_size"] >= 1

    split = report["split"]
    assert split["equal"] and split["recipe_val"], split
