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


def recipe_args(grid: str | None) -> str:
    """scripts/recipe.sh's RECIPE_ARGS with RECIPE_GRID set to ``grid`` (unset: None)."""
    env = {k: v for k, v in os.environ.items() if k != "RECIPE_GRID"}
    if grid is not None:
        env["RECIPE_GRID"] = grid
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
