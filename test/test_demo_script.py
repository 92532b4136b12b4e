"""scripts/train_demo_model.sh's training folders: DATA_DIR alone, or with ALSO's release folders after it.

The script is run with a stand-in ``python`` first on PATH that prints its arguments instead of generating or
training, so what is checked is the folders the script hands train.py, in well under a second. Refusing a case id
found in two folders is train.py's (test_layout.py, test_faults.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hieseg.io.layout import ADC_DIR, LABEL_DIR, ZADC_DIR, adc_path, label_path, zadc_path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_demo_model.sh"
SUBFOLDERS = (ADC_DIR, ZADC_DIR, LABEL_DIR)


def release(root: Path, *case_ids: str) -> Path:
    """A release folder of empty files named as the public release names them."""
    for sub in SUBFOLDERS:
        (root / sub).mkdir(parents=True)
    for case_id in case_ids:
        for path in (adc_path, zadc_path, label_path):
            path(root, case_id).touch()
    return root


def run_script(tmp_path: Path, data: Path, also: str | None) -> subprocess.CompletedProcess[str]:
    stand_in = tmp_path / "bin"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "python").write_text('#!/bin/sh\necho "python $*"\n')
    (stand_in / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{stand_in}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ALSO", None)
    env.pop("RECIPE_GRID", None)
    env.pop("RECIPE_TUNING", None)
    env.pop("RECIPE_SAMPLING", None)
    env.pop("RECIPE_NETWORKS", None)
    if also is not None:
        env["ALSO"] = also
    return subprocess.run(["bash", str(SCRIPT), str(data), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, check=False)


def trained_on(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The release folders the script handed ``train.py --data``, in order."""
    words = result.stdout.split()
    roots = words[words.index("--data") + 1:]
    return roots[:roots.index("--out")]


def test_also_folders_follow_data_dir_in_train_pys_data(tmp_path: Path) -> None:
    data = release(tmp_path / "a", "A_001")
    first, second = release(tmp_path / "b", "B_001"), release(tmp_path / "c", "C_001")
    result = run_script(tmp_path, data, f"{first} {second}")
    assert result.returncode == 0, result.stderr
    assert trained_on(result) == [str(data), str(first), str(second)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "b", "bin", "c"]


def test_an_empty_also_trains_on_data_dir_alone(tmp_path: Path) -> None:
    data = release(tmp_path / "a", "A_001")
    result = run_script(tmp_path, data, "")
    assert result.returncode == 0, result.stderr
    assert trained_on(result) == [str(data)]


def test_also_defaults_to_family_a_train(tmp_path: Path) -> None:
    data = release(tmp_path / "a", "A_001")
    result = run_script(tmp_path, data, None)
    assert result.returncode == 0, result.stderr
    assert trained_on(result) == [str(data), "../shared/data/family-a-train"]


def recipe_args(grid: str | None, tuning: str | None = None, sampling: str | None = None) -> str:
    """scripts/recipe.sh's RECIPE_ARGS with RECIPE_GRID, RECIPE_TUNING and RECIPE_SAMPLING set to ``grid``, ``tuning``
    and ``sampling`` (None: unset)."""
    names = ("RECIPE_GRID", "RECIPE_TUNING", "RECIPE_SAMPLING")
    env = {k: v for k, v in os.environ.items() if k not in names}
    for name, value in zip(names, (grid, tuning, sampling)):
        if value is not None:
            env[name] = value
    result = subprocess.run(["bash", "-c", 'source scripts/recipe.sh && echo "${RECIPE_ARGS[*]}"'], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_recipe_takes_the_fine_grid_and_the_demo_script_keeps_v9s_median() -> None:
    assert "--set preprocess.spacing_percentile=10 " in recipe_args(None)
    assert "--set preprocess.spacing_percentile=50 " in recipe_args("median")
    result = subprocess.run(["bash", "-c", "RECIPE_GRID=coarse; source scripts/recipe.sh"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "RECIPE_GRID must be fine or median, got 'coarse'" in result.stderr


def test_the_demo_script_trains_on_the_median_grid_unless_told(tmp_path: Path) -> None:
    data = release(tmp_path / "a", "A_001")
    assert "--set preprocess.spacing_percentile=50 " in run_script(tmp_path, data, "").stdout


def test_the_recipe_tunes_with_lesion_free_copies_and_the_demo_script_keeps_v9s_plain_tuning(tmp_path: Path) -> None:
    copies = "--set tuning.lesion_free_share=0.2 --set tuning.min_total_mm3=[0,25,50,100,200,400,800] "
    assert copies in recipe_args(None)
    assert "--set tuning.lesion_free_share=0.0 " in recipe_args(None, "plain") and copies not in recipe_args(None, "plain")
    data = release(tmp_path / "a", "A_001")
    assert "--set tuning.lesion_free_share=0.0 " in run_script(tmp_path, data, "").stdout
    result = subprocess.run(["bash", "-c", "RECIPE_TUNING=some; source scripts/recipe.sh"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "RECIPE_TUNING must be copies or plain, got 'some'" in result.stderr


def test_the_recipe_tunes_edges_from_zadc_and_the_demo_script_keeps_v9s_network_edges(tmp_path: Path) -> None:
    assert "--set tuning.zadc_boundary=[0,0.4] " in recipe_args(None)
    demo = run_script(tmp_path, release(tmp_path / "a", "A_001"), "").stdout
    assert "--set tuning.zadc_boundary=[0] " in demo and "zadc_boundary=[0,0.4]" not in demo
    result = subprocess.run(["bash", "-c", "RECIPE_EDGES=both; source scripts/recipe.sh"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "RECIPE_EDGES must be zadc or network, got 'both'" in result.stderr


def test_the_recipe_centres_patches_on_lesion_mimics_and_the_demo_script_keeps_v9s_sampling(tmp_path: Path) -> None:
    four_cases = "--set train.batch_size=4 --set train.samples_per_case=1 "
    assert four_cases + "--set train.mimic_fraction=0.17 " in recipe_args(None)
    assert four_cases in recipe_args(None, sampling="cases4") and "mimic" not in recipe_args(None, sampling="cases4")
    demo = run_script(tmp_path, release(tmp_path / "a", "A_001"), "").stdout
    assert four_cases in demo and "mimic_fraction" not in demo
    result = subprocess.run(["bash", "-c", "RECIPE_SAMPLING=cases3; source scripts/recipe.sh"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "RECIPE_SAMPLING must be mimic, cases4 or cases2, got 'cases3'" in result.stderr


def test_the_recipe_trains_two_networks_of_40_epochs_and_the_demo_script_keeps_v9s_one_of_60(tmp_path: Path) -> None:
    assert "--set train.networks_per_fold=2 --epochs 40 " in recipe_args(None)
    demo = run_script(tmp_path, release(tmp_path / "a", "A_001"), "").stdout
    assert "--set train.networks_per_fold=1 --epochs 60 " in demo
    result = subprocess.run(["bash", "-c", "RECIPE_NETWORKS=three; source scripts/recipe.sh"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "RECIPE_NETWORKS must be two or one, got 'three'" in result.stderr
