"""The container entry point on good input, as the container runs it (bad input: test_faults.py)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import UUID, files_under

from hieseg.cli.infer import main
from hieseg.io.layout import CONTAINER_ADC_DIR, CONTAINER_OUTPUT_DIR

REPO = Path(__file__).resolve().parent.parent


def test_container_run_writes_a_mask_on_the_input_grid(container: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "inference.py")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    written = files_under(container["output"])
    assert written == [container["output"] / CONTAINER_OUTPUT_DIR / f"{UUID}.mha"]
    mask, adc = sitk.ReadImage(str(written[0])), sitk.ReadImage(str(container["input"] / CONTAINER_ADC_DIR / f"{UUID}.mha"))
    assert mask.GetSize() == adc.GetSize() and mask.GetSpacing() == adc.GetSpacing()
    assert mask.GetOrigin() == adc.GetOrigin() and mask.GetDirection() == adc.GetDirection()
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}


def test_flags_override_the_environment(container, tmp_path: Path) -> None:
    other_output = tmp_path / "elsewhere"
    assert main(["--output", str(other_output)]) == 0
    assert (other_output / CONTAINER_OUTPUT_DIR / f"{UUID}.mha").is_file()
    assert files_under(container["output"]) == []


def test_without_a_model_folder_anywhere_it_asks_for_one(container, tmp_path: Path, monkeypatch, capsys) -> None:
    from hieseg.io import layout

    monkeypatch.delenv("HIESEG_MODEL")
    monkeypatch.setattr(layout, "CONTAINER_MODEL_DIR", tmp_path / "opt-ml-model")
    monkeypatch.setattr(layout, "BUNDLED_MODEL_DIR", tmp_path / "no-bundled-model")
    assert main([]) == 2
    assert capsys.readouterr().err.strip().endswith("carries no weights (the demo weights are the model/ folder of "
                                                    "the repository); pass --model DIR or set HIESEG_MODEL")
    assert files_under(container["output"]) == []


def test_a_checkout_without_weights_names_both_folders(container, tmp_path: Path, monkeypatch, capsys) -> None:
    from hieseg.io import layout

    checkout = tmp_path / "checkout"
    (checkout / "model").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    monkeypatch.delenv("HIESEG_MODEL")
    monkeypatch.setattr(layout, "CONTAINER_MODEL_DIR", tmp_path / "opt-ml-model")
    monkeypatch.setattr(layout, "BUNDLED_MODEL_DIR", checkout / "model")
    assert main([]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"neither {tmp_path / 'opt-ml-model'} nor {checkout / 'model'} holds a config.json; pass --model DIR or set "
        "HIESEG_MODEL")


def test_the_bundled_model_is_the_default_outside_the_container(monkeypatch, tmp_path: Path) -> None:
    from hieseg.io import layout

    monkeypatch.setattr(layout, "CONTAINER_MODEL_DIR", tmp_path / "opt-ml-model")
    assert layout.default_model_dir() == REPO / "model"


def test_refine_without_a_refinement_stage_is_refused_naming_it(container, capsys) -> None:
    assert main(["--refine"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(container["model"] / "refinement.json") in err
    assert files_under(container["output"]) == []
