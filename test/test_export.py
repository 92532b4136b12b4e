"""hieseg-export: the weights as a MONAI bundle, the release as an nnU-Net v2 dataset, nnU-Net's masks scored back.

The bundle is run with MONAI's own command line (``python -m monai.bundle run`` and
``verify_net_in_out``, which need the ``fire`` package; where it is missing, the same MONAI
function the command line dispatches to) and its masks are compared voxel for voxel with
``inference.py``'s. The nnU-Net tests that need nnU-Net itself skip, saying so, where
``nnunetv2`` is not importable; the others check the raw dataset against nnU-Net v2's
conventions written out by hand (naming, dataset.json, splits_final.json) and the folds
against train.py's own split.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import SMALL_SIZE, UUID, files_under, tiny_config

from hieseg.cli import compare, evaluate, export
from hieseg.config.settings import (
    CONFIG_FILENAME,
    ZADC_NORMALIZATIONS,
    ExperimentConfig,
    PostProcessing,
)
from hieseg.data.burden import lesion_burden
from hieseg.data.spacing import data_target_spacing
from hieseg.data.splits import train_validation_split
from hieseg.data.transforms import BRAIN_COVER, normalised_channels
from hieseg.inference.postprocess import binarize, empty_below_total, final_mask
from hieseg.inference.predictor import Predictor
from hieseg.interop import bundle_steps, nnunet
from hieseg.interop.bundle import network_definition
from hieseg.io.images import from_xyz_array
from hieseg.io.layout import (
    ADC_DIR,
    ADC_SUFFIX,
    CONTAINER_ADC_DIR,
    CONTAINER_OUTPUT_DIR,
    CONTAINER_ZADC_DIR,
    LABEL_DIR,
    ZADC_DIR,
    ZADC_PREFIX,
    ZADC_SUFFIX,
    CaseFiles,
    adc_path,
    discover_cases,
    label_path,
    load_case,
    zadc_path,
)
from hieseg.model.network import build_network
from hieseg.model.refinement import FEATURE_NAMES, Refiner, save_refiner
from hieseg.model.weights import load_bundle
from hieseg.synthesis.generator import make_case, write_container_case, write_release

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "model"
SAMPLE_INPUT = REPO / "test" / "input"
SAMPLE_UUID = "9f3b2c1a-4d5e-4f60-8a7b-0c1d2e3f4a5b"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HAS_FIRE = importlib.util.find_spec("fire") is not None
WITHOUT_FIRE = """
import sys
import monai.bundle

verb, rest, positional, keywords = sys.argv[1], sys.argv[2:], [], {}
while rest:
    item = rest.pop(0)
    if item.startswith("--"):
        keywords[item[2:]] = rest.pop(0)
    else:
        positional.append(item)
getattr(monai.bundle, verb)(*positional, **keywords)
"""
"""``python -m monai.bundle VERB --key value ...`` without ``fire``: the same MONAI function, called with those strings."""


def monai_bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ARGS`` in ``cwd`` (without hie-seg on the path: the bundle must not need it)."""
    command = [sys.executable, "-m", "monai.bundle", *args] if HAS_FIRE else [sys.executable, "-c", WITHOUT_FIRE, *args]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def refused(status: int, capsys: pytest.CaptureFixture, *fragments: str) -> str:
    """Exit 2 and exactly one line on stderr, ``error: ...``, holding every fragment."""
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return lines[0]


def no_leftovers(folder: Path) -> None:
    """No temporary folder of an export is left in ``folder``."""
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")] if folder.is_dir() else True


def same_image(a: Path, b: Path) -> None:
    """Two masks with the same voxels (uint8) and exactly the same grid."""
    first, second = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert first.GetPixelID() == second.GetPixelID() == sitk.sitkUInt8
    assert first.GetSize() == second.GetSize() and first.GetSpacing() == second.GetSpacing()
    assert first.GetOrigin() == second.GetOrigin() and first.GetDirection() == second.GetDirection()
    difference = int((sitk.GetArrayViewFromImage(first) != sitk.GetArrayViewFromImage(second)).sum())
    assert difference == 0, f"{difference} voxel(s) differ between {a} and {b}"


# ============================================================================================ MONAI bundle


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "bundle"
    assert export.main(["bundle", "--model", str(DEMO_MODEL), "--out", str(out)]) == 0
    return out


def test_the_bundle_has_the_model_zoo_layout_and_says_what_trained_it(demo_bundle: Path) -> None:
    assert [str(p.relative_to(demo_bundle)) for p in files_under(demo_bundle)] == [
        "LICENSE", "configs/inference.json", "configs/logging.conf", "configs/metadata.json", "docs/README.md",
        "docs/hieseg_config.json", "models/model.pt", "scripts/__init__.py", "scripts/hieseg_steps.py",
    ]
    meta = json.loads((demo_bundle / "configs" / "metadata.json").read_text())
    provenance = ExperimentConfig.load(DEMO_MODEL / CONFIG_FILENAME).provenance
    assert (meta["monai_version"], meta["pytorch_version"]) == (provenance.monai, provenance.torch.split("+")[0])
    assert meta["numpy_version"] == np.__version__  # numpy is not in the provenance: the exporting environment's
    assert meta["required_packages_version"]["SimpleITK"] == provenance.simpleitk
    assert provenance.git_commit in meta["changelog"][meta["version"]]
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 2 and image["channel_def"] == {"0": "ADC", "1": "Z_ADC"}
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 1
    assert "NOT clinical weights" in meta["intended_use"]
    tuned = json.loads((DEMO_MODEL / "tuning.json").read_text())["chosen"]
    assert meta["eval_metrics"]["validation_mean_dice"] == pytest.approx(tuned["dice"]) == 0.4937094512601921
    settings = json.loads((demo_bundle / "configs" / "inference.json").read_text())
    assert (settings["threshold"], settings["min_component_mm3"], settings["tta_flips"]) == (
        tuned["threshold"], tuned["min_component_mm3"], tuned["tta_flips"]) == (0.5, 0.0, False)
    # the demo weights (v8 and v9, format 4) normalise on the native grid, before the resampling, with Z_ADC centred
    preprocess = ExperimentConfig.load(DEMO_MODEL / CONFIG_FILENAME).preprocess
    assert (preprocess.normalization, preprocess.zadc_normalization) == ("native", "centred")
    assert preprocessing_targets(demo_bundle) == NATIVE_STEPS
    assert settings["preprocessing"]["transforms"][1]["zadc"] == "centred"
    shipped = json.loads((demo_bundle / "docs" / "hieseg_config.json").read_text())
    assert shipped["preprocess"]["normalization"] == "native"
    assert shipped["preprocess"]["zadc_normalization"] == "centred"
    assert settings["target_spacing"] == list(preprocess.target_spacing) == [0.9857, 0.9857, 2.9546]
    state = torch.load(demo_bundle / "models" / "model.pt", weights_only=True)
    saved = torch.load(DEMO_MODEL / "fold0.pt", weights_only=True)
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    assert (demo_bundle / "scripts" / "hieseg_steps.py").read_text() == Path(bundle_steps.__file__).read_text()
    assert "No license has been chosen" in (demo_bundle / "LICENSE").read_text()


def test_monai_runs_the_bundle_on_the_sample_and_writes_inference_py_mask(demo_bundle: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    container = subprocess.run([sys.executable, str(REPO / "inference.py"), "--input", str(SAMPLE_INPUT), "--output",
                                str(tmp_path / "container"), "--model", str(DEMO_MODEL), "--device", "cpu"],
                               env=ENV, capture_output=True, text=True)
    assert container.returncode == 0, container.stderr
    between = time.perf_counter()
    run = monai_bundle("run", "--config_file", "configs/inference.json", "--input_dir", str(SAMPLE_INPUT),
                       "--output_dir", str(tmp_path / "bundle"), "--device", "cpu", cwd=demo_bundle)
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"inference.py {between - started:.1f} s, bundle {time.perf_counter() - between:.1f} s "
          f"({'python -m monai.bundle' if HAS_FIRE else 'monai.bundle.run, fire missing'})")
    assert [p.name for p in files_under(tmp_path / "bundle")] == [f"{SAMPLE_UUID}.mha"]
    same_image(tmp_path / "bundle" / f"{SAMPLE_UUID}.mha",
               tmp_path / "container" / CONTAINER_OUTPUT_DIR / f"{SAMPLE_UUID}.mha")
    assert f"wrote {tmp_path / 'bundle' / SAMPLE_UUID}.mha (lesion volume 11.78 ml)" in run.stdout


def test_monai_verifies_the_network_against_the_metadata(demo_bundle: Path) -> None:
    verified = monai_bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
                            "--config_file", "configs/inference.json", "--device", "cpu", cwd=demo_bundle)
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert "data shape of network is verified with no error" in verified.stdout + verified.stderr


def ensemble_model(folder: Path, normalization: str = "native", zadc: str = "z_score", **inference: object) -> Path:
    """Two untrained folds whose logits start near 0 (prior 0.5), so masks are large and many-componented."""
    config = tiny_config(**{"network.output_prior": 0.5, "preprocess.normalization": normalization,
                            "preprocess.zadc_normalization": zadc,
                            **{f"inference.{k}": v for k, v in inference.items()}})
    folder.mkdir(parents=True)
    config.save(folder / CONFIG_FILENAME)
    for fold in range(2):
        torch.manual_seed(fold)
        torch.save(build_network(config).state_dict(), folder / f"fold{fold}.pt")
    return folder


def preprocessing_targets(bundle: Path) -> list[str]:
    """The ``_target_`` of each step of the bundle's preprocessing (references as written)."""
    steps = json.loads((bundle / "configs" / "inference.json").read_text())["preprocessing"]["transforms"]
    return [step if isinstance(step, str) else step["_target_"] for step in steps]


NATIVE_STEPS = ["scripts.hieseg_steps.LoadCased", "scripts.hieseg_steps.NormalizeNatived", "Spacingd",
                "scripts.hieseg_steps.BrainOnGridd", "@crop"]
NETWORK_GRID_STEPS = ["scripts.hieseg_steps.LoadCased", "Spacingd", "scripts.hieseg_steps.NormalizeInBraind", "@crop"]


@pytest.mark.parametrize("variant", ["components, container input", "fallback, TTA, release root",
                                     "components, the sample case", "components, the sample case, network grid",
                                     "components, the sample case, centred Z_ADC"])
def test_a_fold_ensemble_bundle_writes_the_predictor_masks(variant: str, tmp_path: Path) -> None:
    """Both hie-seg-only post-processing steps really act here, and the masks still match, in both
    normalisation orders: native (config format 3) and on the network grid (weights of format 1 and 2), and
    with Z_ADC centred instead of z-scored."""
    normalization = "network_grid" if variant.endswith("network grid") else "native"
    zadc = "centred" if variant.endswith("centred Z_ADC") else "z_score"
    if variant.startswith("components"):
        settings = {"threshold": 0.6, "min_component_mm3": 100.0, "empty_fallback_probability": 0.0, "tta_flips": False}
        if "the sample case" in variant:
            inputs, uuid = SAMPLE_INPUT, SAMPLE_UUID
        else:
            inputs, uuid = tmp_path / "input", UUID
            write_container_case(inputs, make_case("CASE", seed=5, size=SMALL_SIZE), UUID)
        cases = [(uuid, CaseFiles(uuid, inputs / CONTAINER_ADC_DIR / f"{uuid}.mha",
                                  inputs / CONTAINER_ZADC_DIR / f"{uuid}.mha", None))]
    else:
        settings = {"threshold": 0.9, "min_component_mm3": 0.0, "empty_fallback_probability": 0.3, "tta_flips": True}
        inputs = tmp_path / "release"
        write_release(inputs, n_cases=2, seed=11, sizes=SMALL_SIZE)
        cases = [(files.case_id, files) for files in discover_cases(inputs, require_labels=False)]
    model = ensemble_model(tmp_path / "model", normalization, zadc, **settings)
    assert export.main(["bundle", "--model", str(model), "--out", str(tmp_path / "bundle")]) == 0
    assert preprocessing_targets(tmp_path / "bundle") == (
        NETWORK_GRID_STEPS if normalization == "network_grid" else NATIVE_STEPS)
    run = monai_bundle("run", "--config_file", "configs/inference.json", "--input_dir", str(inputs),
                       "--output_dir", str(tmp_path / "masks"), "--device", "cpu", cwd=tmp_path / "bundle")
    assert run.returncode == 0, run.stderr[-3000:]
    predictor = Predictor.from_bundle(load_bundle(model, torch.device("cpu")), torch.device("cpu"))
    for case_id, files in cases:
        case = load_case(files)
        probability = predictor.probability(case)
        mask = final_mask(probability, case.adc.GetSpacing(), PostProcessing(**settings))  # what Predictor.mask_image writes
        expected = tmp_path / "expected" / f"{case_id}.mha"
        expected.parent.mkdir(exist_ok=True)
        sitk.WriteImage(from_xyz_array(mask, case.adc), str(expected), True)
        same_image(tmp_path / "masks" / f"{case_id}.mha", expected)
        thresholded = binarize(probability, settings["threshold"])
        if "the sample case" in variant:
            assert mask.sum() > 0
        elif settings["min_component_mm3"]:
            assert 0 < mask.sum() < thresholded.sum()  # components were removed, not all
        else:
            assert thresholded.sum() == 0 < mask.sum()  # nothing reaches the threshold: the fallback made the mask


@pytest.mark.parametrize("voxels", [0, 7, 8, 9, 40])
def test_the_bundle_empties_a_mask_below_the_total_as_the_library_does(voxels: int) -> None:
    spacing = (2.0, 1.0, 0.5)  # 1 mm3 voxels: the total is 8 mm3
    mask = np.zeros((10, 8, 6), dtype=np.uint8)
    mask.reshape(-1)[:voxels] = 1
    step = bundle_steps.MinTotalVolumed("pred", min_total_mm3=8.0)
    out = step({"pred": torch.from_numpy(mask[None]), bundle_steps.NATIVE_SPACING: spacing})["pred"][0].numpy()
    assert np.array_equal(out, empty_below_total(mask, spacing, 8.0))
    assert out.sum() == (voxels if voxels >= 8 else 0)


def test_the_bundle_steps_need_nothing_of_hieseg_and_share_its_layouts() -> None:
    tree = ast.parse(Path(bundle_steps.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "copy", "logging", "os", "re", "tempfile", "collections", "contextlib",
                        "pathlib", "typing", "numpy", "SimpleITK", "torch", "monai", "scipy"}, imported
    assert (bundle_steps.CONTAINER_ADC_DIR, bundle_steps.CONTAINER_ZADC_DIR) == (CONTAINER_ADC_DIR, CONTAINER_ZADC_DIR)
    assert (bundle_steps.RELEASE_ADC_DIR, bundle_steps.RELEASE_ADC_SUFFIX) == (ADC_DIR, ADC_SUFFIX)
    assert (bundle_steps.RELEASE_ZADC_DIR, bundle_steps.RELEASE_ZADC_PREFIX, bundle_steps.RELEASE_ZADC_SUFFIX) == (
        ZADC_DIR, ZADC_PREFIX, ZADC_SUFFIX)
    assert bundle_steps.BRAIN_COVER == BRAIN_COVER
    assert bundle_steps.ZADC_NORMALIZATIONS == ZADC_NORMALIZATIONS


@pytest.mark.parametrize("zadc", ZADC_NORMALIZATIONS)
def test_the_bundle_normalises_as_hieseg_does(zadc: str) -> None:
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(2, 9, 8, 7, generator=generator) * torch.tensor([300.0, 2.0])[:, None, None, None]
    values[0] += 1000.0
    brain = torch.rand(9, 8, 7, generator=generator) > 0.3
    assert torch.equal(bundle_steps._normalised(values, brain, zadc), normalised_channels(values, brain, zadc))


NETWORK_SETTINGS = {
    "unet": ({}, (48, 48, 16)),
    "dynunet": ({"dynunet.filters": [4, 8, 16, 16, 16]}, (32, 32, 16)),
    "segresnet": ({"segresnet.init_filters": 8}, (32, 32, 16)),
    "swinunetr": ({"swinunetr.feature_size": 12, "swinunetr.num_heads": [1, 2, 4, 8]}, (64, 32, 32)),
}


@pytest.mark.parametrize("name", list(NETWORK_SETTINGS))
def test_the_bundle_network_definition_is_hiesegs_network(name: str) -> None:
    from monai.bundle import ConfigParser

    overrides, size = NETWORK_SETTINGS[name]
    config = tiny_config(**{"network.name": name, "train.patch_size": size, "inference.roi_size": size, **overrides})
    torch.manual_seed(0)
    trained = build_network(config).eval()
    parser = ConfigParser({"network_def": network_definition(config)})
    exported = parser.get_parsed_content("network_def").eval()
    exported.load_state_dict(trained.state_dict())  # strict: same modules, same names, same shapes
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        assert torch.equal(exported(x), trained(x))


@pytest.mark.parametrize("problem", ["missing folder", "no config.json", "no weights", "corrupt weights", "refines",
                                     "redraws edges"])
def test_an_unusable_weights_folder_is_refused_and_nothing_written(
    problem: str, untrained_model_dir: Path, tmp_path: Path, capsys
) -> None:
    model = tmp_path / "model"
    if problem != "missing folder":
        shutil.copytree(untrained_model_dir, model)
    if problem == "no config.json":
        (model / CONFIG_FILENAME).unlink()
    elif problem == "no weights":
        (model / "fold0.pt").unlink()
    elif problem == "corrupt weights":
        (model / "fold0.pt").write_bytes(b"not weights")
    elif problem == "refines":  # a refinement stage the bundle could not reproduce
        config = ExperimentConfig.load(model / CONFIG_FILENAME)
        config.with_overrides({"inference.refine": True}).save(model / CONFIG_FILENAME)
        n = len(FEATURE_NAMES)
        save_refiner(Refiner(5.0, (0.0,) * n, (1.0,) * n, (0.0,) * n, 0.0), model)
    elif problem == "redraws edges":  # the Z_ADC boundary step, which the bundle could not reproduce either
        config = ExperimentConfig.load(model / CONFIG_FILENAME)
        config.with_overrides({"inference.zadc_boundary": 0.4}).save(model / CONFIG_FILENAME)
    named = {"missing folder": model / CONFIG_FILENAME, "no config.json": model / CONFIG_FILENAME,
             "no weights": model, "corrupt weights": model / "fold0.pt", "refines": "no MONAI bundle form",
             "redraws edges": "zadc_boundary is 0.4"}[problem]
    out = tmp_path / "out" / "bundle"
    refused(export.main(["bundle", "--model", str(model), "--out", str(out)]), capsys, str(named))
    assert not (tmp_path / "out").exists()


def test_a_non_empty_output_is_refused_and_left_as_it_was(untrained_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused(export.main(["bundle", "--model", str(untrained_model_dir), "--out", str(out)]), capsys,
            str(out), "not empty")
    assert files_under(out) == [out / "notes.txt"] and (out / "notes.txt").read_text() == "mine"
    no_leftovers(tmp_path)
    (tmp_path / "file").write_text("x")
    refused(export.main(["bundle", "--model", str(untrained_model_dir), "--out", str(tmp_path / "file")]), capsys,
            "is a file")


def test_an_interrupted_export_leaves_nothing(untrained_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from hieseg.interop import bundle

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle.torch, "save", interrupted)
    out = tmp_path / "deep" / "bundle"
    assert export.main(["bundle", "--model", str(untrained_model_dir), "--out", str(out)]) == 130
    assert "unfinished files were removed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the bundle, its temporary folder, nor the folder made for it


def test_an_empty_output_folder_is_used_and_a_license_file_shipped(untrained_model_dir: Path, tmp_path: Path) -> None:
    out, license_file = tmp_path / "bundle", tmp_path / "LICENSE.txt"
    out.mkdir()
    license_file.write_text("CC BY-NC 4.0\n")
    assert export.main(["bundle", "--model", str(untrained_model_dir), "--out", str(out), "--license",
                        str(license_file), "--version", "1.2.0"]) == 0
    assert (out / "LICENSE").read_text() == "CC BY-NC 4.0\n"
    assert json.loads((out / "configs" / "metadata.json").read_text())["version"] == "1.2.0"
    no_leftovers(tmp_path)


# ============================================================================================ nnU-Net v2


def nnunet_export(release: Path, raw: Path, *flags: str, dataset_id: int = 501) -> int:
    return export.main(["nnunet", "--data", str(release), "--out", str(raw), "--dataset-id", str(dataset_id), *flags])


@pytest.fixture(scope="module")
def exported(small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The 8 small cases as Dataset501_BONBIDHIE (default folds and seed) and what the command printed."""
    import contextlib
    import io

    raw = tmp_path_factory.mktemp("nnUNet_raw")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert nnunet_export(small_release, raw) == 0
    return raw / "Dataset501_BONBIDHIE", printed.getvalue()


def test_the_release_becomes_nnunet_raw_data_by_hard_links(exported: tuple[Path, str], small_release: Path) -> None:
    dataset, printed = exported
    ids = [files.case_id for files in discover_cases(small_release)]
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == sorted(
        f"{case}_{channel}.mha" for case in ids for channel in ("0000", "0001"))
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == sorted(f"{case}.mha" for case in ids)
    assert not (dataset / "imagesTs").exists()
    for case in ids:
        assert os.path.samefile(dataset / "imagesTr" / f"{case}_0000.mha", adc_path(small_release, case))
        assert os.path.samefile(dataset / "imagesTr" / f"{case}_0001.mha", zadc_path(small_release, case))
        assert os.path.samefile(dataset / "labelsTr" / f"{case}.mha", label_path(small_release, case))
    description = json.loads((dataset / "dataset.json").read_text())
    assert {key: description[key] for key in ("channel_names", "labels", "numTraining", "file_ending")} == {
        "channel_names": {"0": "ADC", "1": "Z_ADC"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 8,
        "file_ending": ".mha",
    }
    assert json.loads((dataset / "hieseg_export.json").read_text())["files"] == {"hard": 24}
    assert f"wrote {dataset}: 8 training case(s); files 24 hard-linked; 5 folds (seed 42)" in printed
    no_leftovers(dataset.parent)


def train_py_folds(release: Path, folds: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """(training, validation) of each fold exactly as train.py splits them (``hieseg.training.trainer.Trainer``)."""
    cases = [load_case(files) for files in discover_cases(release)]
    ids, burdens = [c.files.case_id for c in cases], [lesion_burden(c) for c in cases]
    return [train_validation_split(ids, burdens, folds=folds, fold=k, seed=seed) for k in range(folds)]


def test_splits_final_json_holds_the_folds_train_py_trains_on(exported: tuple[Path, str], small_release: Path) -> None:
    splits = json.loads((exported[0] / "splits_final.json").read_text())
    assert splits == [{"train": train, "val": val} for train, val in train_py_folds(small_release, 5, 42)]
    assert all(set(s["train"]) | set(s["val"]) == set(splits[0]["train"]) | set(splits[0]["val"]) for s in splits)
    assert sorted(case for s in splits for case in s["val"]) == sorted(splits[0]["train"] + splits[0]["val"])


def test_folds_and_seed_come_from_the_flags_or_a_config_json(small_release: Path, tmp_path: Path) -> None:
    assert nnunet_export(small_release, tmp_path / "a", "--folds", "4", "--seed", "7") == 0
    splits = json.loads((tmp_path / "a" / "Dataset501_BONBIDHIE" / "splits_final.json").read_text())
    assert splits == [{"train": t, "val": v} for t, v in train_py_folds(small_release, 4, 7)]
    config = tmp_path / "config.json"
    ExperimentConfig().with_overrides({"train.folds": 3, "train.seed": 11}).save(config)
    assert nnunet_export(small_release, tmp_path / "b", "--config", str(config), dataset_id=7) == 0
    splits = json.loads((tmp_path / "b" / "Dataset007_BONBIDHIE" / "splits_final.json").read_text())
    assert splits == [{"train": t, "val": v} for t, v in train_py_folds(small_release, 3, 11)]


@pytest.mark.parametrize("link", ["copy", "symlink", "auto without hard links"])
def test_files_are_copied_or_symlinked_when_asked_or_when_hard_links_fail(
    link: str, small_release: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    flags = ["--link", link] if link != "auto without hard links" else []
    if not flags:
        def refuse(*args: object) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(nnunet.os, "link", refuse)
    assert nnunet_export(small_release, tmp_path, *flags) == 0
    image = tmp_path / "Dataset501_BONBIDHIE" / "imagesTr" / "SYNTH_001-VISIT_01_0000.mha"
    source = adc_path(small_release, "SYNTH_001-VISIT_01")
    if link == "copy":
        assert not image.is_symlink() and not os.path.samefile(image, source)
        assert image.read_bytes() == source.read_bytes()
        assert "24 copied" in capsys.readouterr().out
    else:
        assert image.is_symlink() and image.resolve() == source.resolve()
        assert "24 symbolically linked" in capsys.readouterr().out


def test_a_test_release_goes_to_images_ts_without_labels(small_release: Path, tmp_path: Path) -> None:
    test_release = tmp_path / "test_release"
    write_release(test_release, n_cases=2, seed=9, sizes=SMALL_SIZE)
    shutil.rmtree(test_release / LABEL_DIR)
    assert nnunet_export(small_release, tmp_path / "raw", "--test", str(test_release)) == 0
    images = sorted(p.name for p in (tmp_path / "raw" / "Dataset501_BONBIDHIE" / "imagesTs").iterdir())
    assert images == ["SYNTH_001-VISIT_01_0000.mha", "SYNTH_001-VISIT_01_0001.mha",
                      "SYNTH_002-VISIT_01_0000.mha", "SYNTH_002-VISIT_01_0001.mha"]
    assert json.loads((tmp_path / "raw" / "Dataset501_BONBIDHIE" / "dataset.json").read_text())["numTraining"] == 8


@pytest.mark.parametrize("problem", ["missing partner", "id in nnUNet_raw", "id in nnUNet_preprocessed",
                                     "id 0", "id 1000", "out is a file"])
def test_bad_nnunet_exports_are_refused_and_nothing_written(
    problem: str, small_release: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    release, raw, dataset_id = small_release, tmp_path / "nnUNet_raw", 501
    raw.mkdir()
    if problem == "missing partner":
        release = tmp_path / "release"
        shutil.copytree(small_release, release)
        zadc_path(release, "SYNTH_003-VISIT_01").unlink()
        fragments = ["SYNTH_003-VISIT_01", "missing partner", str(zadc_path(release, "SYNTH_003-VISIT_01"))]
    elif problem == "id in nnUNet_raw":
        (raw / "Dataset501_Other").mkdir()
        fragments = ["dataset id 501 is already used by", str(raw / "Dataset501_Other")]
    elif problem == "id in nnUNet_preprocessed":
        (tmp_path / "pre" / "Dataset501_BONBIDHIE").mkdir(parents=True)
        monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
        fragments = ["dataset id 501 is already used by", str(tmp_path / "pre" / "Dataset501_BONBIDHIE")]
    elif problem == "out is a file":
        raw.rmdir()
        raw.write_text("x")
        fragments = [str(raw), "is a file"]
    else:
        dataset_id = int(problem.split()[1])
        fragments = ["--dataset-id must be in [1, 999]", f"got {dataset_id}"]
    before = sorted(tmp_path.rglob("*"))
    refused(nnunet_export(release, raw, dataset_id=dataset_id), capsys, *fragments)
    assert sorted(tmp_path.rglob("*")) == before


def test_nnunet_plans_spacing_is_read_in_x_y_z() -> None:
    # nnU-Net's spacings are (z, y, x); the plans permute them by transpose_forward: here (y, x, z).
    plans = {"transpose_forward": [1, 2, 0], "configurations": {"3d_fullres": {"spacing": [1.0, 0.9, 3.0]}}}
    assert nnunet.plans_target_spacing(plans) == (0.9, 1.0, 3.0)
    plans = {"transpose_forward": [0, 1, 2], "configurations": {"3d_fullres": {"spacing": [5.4076, 2.1409, 2.1409]}}}
    assert nnunet.plans_target_spacing(plans) == (2.1409, 2.1409, 5.4076)


def write_like_nnunet(release: Path, folder: Path, plans: dict, masks: dict[str, np.ndarray] | None = None) -> None:
    """A folder as ``nnUNetv2_predict`` leaves it: ``<case>.mha`` (its SimpleITK writer: uint8, the input's
    spacing, origin and direction) and its plans.json, dataset.json and arguments. The masks default to the truth."""
    folder.mkdir(parents=True)
    for files in discover_cases(release):
        truth = sitk.ReadImage(str(files.label))
        array = sitk.GetArrayFromImage(truth) if masks is None else masks[files.case_id]
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing(truth.GetSpacing())
        image.SetOrigin(truth.GetOrigin())
        image.SetDirection(truth.GetDirection())
        sitk.WriteImage(image, str(folder / f"{files.case_id}.mha"), True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(nnunet.dataset_json(len(discover_cases(release)))))
    (folder / "predict_from_raw_data_args.json").write_text(json.dumps({"output_folder": str(folder)}))


FAKE_PLANS = {"dataset_name": "Dataset501_BONBIDHIE", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
              "configurations": {"3d_fullres": {"spacing": [5.0, 2.0, 2.0]}}}


def test_nnunet_masks_are_scored_by_evaluate_and_compare_without_renaming(
    small_release: Path, untrained_model_dir: Path, tmp_path: Path, capsys
) -> None:
    predictions = tmp_path / "nnunet_preds"
    write_like_nnunet(small_release, predictions, FAKE_PLANS)
    assert evaluate.main(["--pred", str(predictions), "--truth", str(small_release), "--out", str(tmp_path / "eval")]) == 0
    assert "8 case(s): Dice 1.000, MASD 0.00 mm, NSD 1.000" in capsys.readouterr().out
    out = tmp_path / "compare"
    assert compare.main(["--data", str(small_release), "--model", str(untrained_model_dir), "--name", "hieseg",
                         "--pred", f"nnunet={predictions}", "--out", str(out), "--device", "cpu", "--no-progress",
                         "--html", str(out / "html")]) == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert list(summary["methods"]) == ["hieseg", "nnunet", "zadc_lt2", "zadc_lt2_clean10"]
    method = summary["methods"]["nnunet"]
    assert method["kind"] == "predictions" and "nnU-Net v2 predictions" in method["description"]
    assert "3d_fullres grid 2 × 2 × 5 mm" in method["description"]
    assert method["overall"]["dice"]["mean"] == 1.0 and method["n_cases"] == 8
    assert not (out / "predictions" / "nnunet").exists()  # scored where nnU-Net wrote them
    assert len(list((out / "html" / "qc" / "nnunet").glob("*.thumb.png"))) == 8  # and pictured from there
    assert ">nnunet</th>" in (out / "html" / "report.html").read_text(encoding="utf-8")


def test_compare_refuses_a_prediction_folder_missing_a_case_before_predicting(
    small_release: Path, untrained_model_dir: Path, tmp_path: Path, capsys
) -> None:
    predictions = tmp_path / "preds"
    write_like_nnunet(small_release, predictions, FAKE_PLANS)
    (predictions / "SYNTH_002-VISIT_01.mha").unlink()
    out = tmp_path / "compare"
    refused(compare.main(["--data", str(small_release), "--model", str(untrained_model_dir), "--pred", str(predictions),
                          "--out", str(out), "--device", "cpu", "--no-progress"]), capsys, "SYNTH_002-VISIT_01")
    assert not out.exists()


@pytest.mark.parametrize("problem", ["another grid", "not binary"])
def test_compare_checks_predicted_masks_as_evaluate_does(
    problem: str, small_release: Path, tmp_path: Path, capsys
) -> None:
    predictions = tmp_path / "preds"
    write_like_nnunet(small_release, predictions, FAKE_PLANS)
    mask = predictions / "SYNTH_001-VISIT_01.mha"
    image = sitk.ReadImage(str(mask))
    if problem == "another grid":
        image.SetOrigin(tuple(v + 5.0 for v in image.GetOrigin()))
        fragments = [str(mask), "geometry disagrees with", str(label_path(small_release, "SYNTH_001-VISIT_01"))]
    else:
        image = sitk.Cast(image, sitk.sitkUInt8) * 2
        fragments = [str(mask), "must be binary 0/1"]
    sitk.WriteImage(image, str(mask), True)
    refused(compare.main(["--data", str(small_release), "--pred", str(predictions), "--out", str(tmp_path / "compare"),
                          "--device", "cpu", "--no-progress"]), capsys, *fragments)


# ---------------------------------------------------------------------------- with nnU-Net itself (skips without it)


def nnunet_or_skip() -> None:
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not importable here: install it beside hie-seg (pip install -e '.[nnunet]', which "
                    "pins nnunetv2==2.8.1) to run nnU-Net on the exported dataset")


GRID_CASES = {
    # spacings (x, y, z) and sizes (x, y, z) of the cases; what nnU-Net's planner and hieseg.spacing decide.
    "median": ([(1.0, 1.0, 2.0), (1.2, 1.2, 2.4), (0.9, 0.9, 2.6)], [(200, 200, 40)] * 3),
    "thick slices, few of them": ([(0.9, 0.9, 6.0), (1.0, 1.0, 5.0), (0.8, 0.8, 2.0), (0.9, 0.9, 4.0)],
                                  [(256, 256, 24)] * 4),
    "thick slices, many of them": ([(0.9, 0.9, 6.0), (1.0, 1.0, 5.0), (0.8, 0.8, 2.0), (0.9, 0.9, 4.0)],
                                   [(100, 100, 60)] * 4),
    "a thin-slice minority": ([(1.0, 1.0, 0.8), (1.0, 1.0, 0.8), (1.0, 1.0, 4.0), (1.0, 1.0, 4.2), (1.0, 1.0, 4.4)],
                              [(256, 256, 24)] * 5),
}


@pytest.mark.parametrize("name", list(GRID_CASES))
def test_nnunet_and_hieseg_choose_the_grid_by_the_same_rule(name: str) -> None:
    """Both take the median spacing, and the 10th percentile on a much coarser axis; nnU-Net only when that
    axis also has 3 times fewer voxels, and it adds 1e-5 mm when it clips to the other axes (both documented)."""
    nnunet_or_skip()
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    spacings, sizes = GRID_CASES[name]
    planner = ExperimentPlanner.__new__(ExperimentPlanner)  # the planning rule alone, without a dataset on disk
    planner.overwrite_target_spacing, planner.anisotropy_threshold = None, 3
    planner.dataset_fingerprint = {"spacings": [s[::-1] for s in spacings], "shapes_after_crop": [s[::-1] for s in sizes]}
    theirs = tuple(float(v) for v in planner.determine_fullres_target_spacing()[::-1])
    ours = data_target_spacing(spacings)
    print(f"{name}: nnU-Net {theirs}, hie-seg {ours}")
    if name == "thick slices, many of them":
        assert ours[2] == pytest.approx(float(np.percentile([s[2] for s in spacings], 10)), abs=1e-4)
        assert theirs[2] == pytest.approx(float(np.median([s[2] for s in spacings])))  # 60 slices: not 'anisotropic'
        assert ours[:2] == pytest.approx(theirs[:2])
    else:
        assert ours == pytest.approx(theirs, abs=1e-4)


NNUNET_PREDICT = """
import json, sys, torch
from pathlib import Path
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

preprocessed, images, out = (Path(a) for a in sys.argv[1:4])
plans = PlansManager(str(preprocessed / "nnUNetPlans.json"))
dataset = json.loads((preprocessed / "dataset.json").read_text())
configuration = plans.get_configuration("3d_fullres")
torch.manual_seed(0)
network = get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                 configuration.network_arch_init_kwargs_req_import, 2,
                                 plans.get_label_manager(dataset).num_segmentation_heads, allow_init=True,
                                 deep_supervision=False)
predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                            allow_tqdm=False)
predictor.manual_initialization(network, plans, configuration, [network.state_dict()], dataset, "nnUNetTrainer", None)
out.mkdir(parents=True, exist_ok=True)
predictor.predict_from_files_sequential(str(images), str(out))
"""
"""nnU-Net's own prediction (preprocessing, sliding window, export) with an untrained network of the plans: no training."""


@pytest.mark.slow
def test_nnunet_plans_the_exported_dataset_on_the_project_grid_and_its_masks_score_beside_hieseg(
    tmp_path: Path, untrained_model_dir: Path
) -> None:
    nnunet_or_skip()
    release, folders = tmp_path / "release", {name: tmp_path / name for name in
                                               ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    env = {**ENV, **{name: str(path) for name, path in folders.items()}, "nnUNet_def_n_proc": "1"}

    def run(*command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        return result

    run(sys.executable, "-m", "hieseg.synthetic", "--out", str(release), "--cases", "4", "--seed", "0",
        "--size", "96", "96", "20", "--profile", "basic")
    exported_at = time.perf_counter()
    printed = run(sys.executable, "-m", "hieseg.export", "nnunet", "--data", str(release), "--out",
                  str(folders["nnUNet_raw"]), "--dataset-id", "502", "--folds", "2", "--test", str(release)).stdout
    assert "4 training case(s), 4 test case(s) in imagesTs/; files 20 hard-linked; 2 folds" in printed
    planned_at = time.perf_counter()
    planner = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    planned = run(str(planner), "-d", "502", "--verify_dataset_integrity", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    assert "verify_dataset_integrity Done" in planned.stdout
    predicted_at = time.perf_counter()
    preprocessed = folders["nnUNet_preprocessed"] / "Dataset502_BONBIDHIE"
    raw = folders["nnUNet_raw"] / "Dataset502_BONBIDHIE"
    assert json.loads((preprocessed / "splits_final.json").read_text()) == json.loads(
        (raw / "splits_final.json").read_text())
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    theirs = nnunet.plans_target_spacing(plans)
    ours = data_target_spacing([load_case(f).adc.GetSpacing() for f in discover_cases(release)])
    print(f"target spacing (x, y, z) mm: nnU-Net plans {theirs}, hie-seg (hieseg.data.spacing) {ours}")
    assert theirs == pytest.approx(ours, abs=1e-4)

    predictions = tmp_path / "predictions" / "nnunet"
    run(sys.executable, "-c", NNUNET_PREDICT, str(preprocessed), str(raw / "imagesTs"), str(predictions))
    done_at = time.perf_counter()
    assert sorted(p.name for p in predictions.glob("*.mha")) == sorted(
        f"{f.case_id}.mha" for f in discover_cases(release))
    scored = run(sys.executable, "-m", "hieseg.evaluate", "--pred", str(predictions), "--truth", str(release),
                 "--out", str(tmp_path / "eval"))
    assert "4 case(s): Dice" in scored.stdout
    compared = run(sys.executable, "-m", "hieseg.compare", "--data", str(release), "--model", str(untrained_model_dir),
                   "--pred", str(predictions), "--out", str(tmp_path / "compare"), "--device", "cpu", "--no-progress")
    summary = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert "nnU-Net v2 predictions (Dataset502_BONBIDHIE" in summary["methods"]["nnunet"]["description"]
    assert "| nnunet | 4 |" in compared.stdout
    print(f"export {planned_at - exported_at:.1f} s, plan and preprocess {predicted_at - planned_at:.1f} s, "
          f"nnU-Net prediction {done_at - predicted_at:.1f} s")
