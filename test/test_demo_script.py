"""scripts/train_demo_model.sh's training folder: DATA_DIR alone, or its union with ALSO's release folders.

The script is run with a stand-in ``python`` first on PATH that prints its arguments instead of generating or
training, so what is checked is the folder the script hands train.py and the refusals, in well under a second.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

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
    if also is not None:
        env["ALSO"] = also
    return subprocess.run(["bash", str(SCRIPT), str(data), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, check=False)


def trained_on(result: subprocess.CompletedProcess[str]) -> str:
    words = result.stdout.split()
    return words[words.index("--data") + 1]


def test_also_links_the_union_once_and_train_py_gets_it(tmp_path: Path) -> None:
    data, other = release(tmp_path / "a", "A_001"), release(tmp_path / "b", "B_001", "B_002")
    result = run_script(tmp_path, data, str(other))
    assert result.returncode == 0, result.stderr
    union = Path(trained_on(result))
    assert union == tmp_path / "a+also"
    for sub in SUBFOLDERS:
        links = sorted((union / sub).iterdir())
        assert len(links) == 3 and all(link.is_symlink() for link in links)
        assert {link.resolve().parent for link in links} == {(data / sub).resolve(), (other / sub).resolve()}
    again = run_script(tmp_path, data, str(other))
    assert again.returncode == 0 and trained_on(again) == str(union)


def test_an_empty_also_trains_on_data_dir_alone(tmp_path: Path) -> None:
    data = release(tmp_path / "a", "A_001")
    result = run_script(tmp_path, data, "")
    assert result.returncode == 0, result.stderr
    assert trained_on(result) == str(data)
    assert not (tmp_path / "a+also").exists()


def test_a_union_built_from_other_folders_is_refused_not_reused(tmp_path: Path) -> None:
    data = release(tmp_path / "a", "A_001")
    first, second = release(tmp_path / "b", "B_001"), release(tmp_path / "c", "C_001")
    assert run_script(tmp_path, data, str(first)).returncode == 0
    result = run_script(tmp_path, data, str(second))
    assert result.returncode == 2
    assert "a+also holds the union of other folders than DATA_DIR and ALSO; remove it to rebuild" in result.stderr
    assert "python train.py" not in result.stdout


@pytest.mark.parametrize("problem", ["case id in both", "not a release folder"])
def test_a_bad_also_stops_before_training_and_leaves_no_union(tmp_path: Path, problem: str) -> None:
    data = release(tmp_path / "a", "A_001")
    also = release(tmp_path / "b", "A_001") if problem == "case id in both" else tmp_path / "missing"
    result = run_script(tmp_path, data, str(also))
    assert result.returncode == 2
    assert "python train.py" not in result.stdout
    assert not (tmp_path / "a+also").exists()
    expected = ("is in an earlier folder too" if problem == "case id in both"
                else f"{also} is not a release folder (1ADC_ss/, 2Z_ADC/ and 3LABEL/)")
    assert expected in result.stderr
