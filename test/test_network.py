"""The four networks: configuration checks, training steps, saving, reloading and native-grid prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_SIZE, tiny_config

from hieseg.benchmark.timing import draw_batches
from hieseg.config.settings import (
    CONFIG_FILENAME,
    CONFIG_FORMAT_VERSION,
    NETWORK_NAMES,
    ExperimentConfig,
)
from hieseg.errors import ConfigError, ModelError
from hieseg.inference.predictor import Predictor
from hieseg.io.images import write_image_atomic
from hieseg.io.layout import adc_path, discover_cases, label_path, load_case, zadc_path
from hieseg.model.losses import build_training_loss
from hieseg.model.network import (
    build_network,
    network_of_state,
    parameter_count,
    supervised_outputs,
)
from hieseg.model.weights import load_bundle
from hieseg.synthesis.generator import make_case
from hieseg.training.folder import write_config
from hieseg.training.optimization import build_optimization, optimisation_step

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")

TINY = {
    "unet": {},
    "dynunet": {
        "dynunet.kernel_size": [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "dynunet.strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]],
        "dynunet.filters": [4, 8, 16, 32],
    },
    "segresnet": {
        "segresnet.init_filters": 4, "segresnet.blocks_down": [1, 1, 1], "segresnet.blocks_up": [1, 1],
        "segresnet.num_groups": 2,
    },
    "swinunetr": {
        "swinunetr.feature_size": 12, "swinunetr.depths": [1, 1, 1, 1], "swinunetr.num_heads": [3, 3, 3, 3],
        "train.patch_size": [64, 32, 32], "inference.roi_size": [64, 32, 32],
    },
}
"""Settings small enough to train and predict in seconds on a CPU, for each network."""


def tiny_network_config(name: str, **overrides: object) -> ExperimentConfig:
    return tiny_config(**{"network.name": name, **TINY[name], **overrides})


@pytest.fixture(scope="module")
def case(small_release: Path):
    return load_case(discover_cases(small_release)[1])


@pytest.fixture(scope="module")
def lesioned_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release of one small case whose lesion fills a tenth of the brain."""
    root = tmp_path_factory.mktemp("lesioned")
    synthetic = make_case("LESIONED", seed=7, size=SMALL_SIZE, lesion_burden=0.1)
    for image, path in ((synthetic.adc, adc_path), (synthetic.zadc, zadc_path), (synthetic.label, label_path)):
        write_image_atomic(image, path(root, synthetic.case_id))
    return root


def test_the_demo_weights_config_of_format_1_is_read_as_the_same_unet() -> None:
    """The v3 demo weights' config.json (format 1, kept in test/) migrates to the U-Net the shipped weights still use."""
    old = json.loads((REPO / "test" / "config_format1.json").read_text())
    assert old["format_version"] == 1
    config = ExperimentConfig.from_dict(old)
    assert config.network.name == "unet" and config.format_version == CONFIG_FORMAT_VERSION
    assert config.preprocess.normalization == "network_grid"  # what those weights were trained with
    assert {key: getattr(config.unet, key) for key in ("channels", "strides")} == {
        "channels": tuple(old["network"]["channels"]), "strides": tuple(old["network"]["strides"])}
    assert config.unet.num_res_units == old["network"]["num_res_units"]
    assert config.unet.dropout == old["network"]["dropout"] and config.unet.norm == old["network"]["norm"]
    assert config.network.output_prior == old["network"]["output_prior"]
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    bundle = load_bundle(REPO / "model", CPU)
    assert type(bundle.networks[0]).__name__ == "UNet" and bundle.config.unet == config.unet


def test_the_unet_settings_named_in_the_old_place_point_to_their_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'network.channels' \(the U-Net's settings are in "
                                          r"section 'unet'"):
        ExperimentConfig().with_overrides({"network.channels": [8, 16]})
    data = ExperimentConfig().to_dict()
    data["network"]["strides"] = [2, 2, 2]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in section 'network': strides \(the U-Net's"):
        ExperimentConfig.from_dict(data)


@pytest.mark.parametrize("overrides, message", [
    ({"network.name": "swinunetr", "train.patch_size": [64, 64, 48], "inference.roi_size": [64, 64, 32]},
     "train.patch_size: network swinunetr needs each axis to be a multiple of 32 x 32 x 32 (see its section "
     "'swinunetr'), got [64, 64, 48]"),
    ({"network.name": "swinunetr", "inference.roi_size": [96, 96, 16]},
     "inference.roi_size: network swinunetr needs each axis to be a multiple of 32 x 32 x 32"),
    ({"network.name": "dynunet", "train.patch_size": [96, 96, 20]},
     "train.patch_size: network dynunet needs each axis to be a multiple of 16 x 16 x 8"),
    ({"train.patch_size": [96, 96, 20]}, "train.patch_size: network unet needs each axis to be a multiple of 8 x 8 x 8"),
    ({"dynunet.strides": [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]},
     "dynunet.strides: the input stage must keep the full resolution (1, 1, 1)"),
    ({"dynunet.kernel_size": [[3, 3, 2], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]},
     "dynunet.kernel_size: each value must be odd on every axis, got [[3, 3, 2], [3, 3, 3]"),
    ({"dynunet.filters": [32, 64, 128]}, "one of each per stage and at least 3 stages"),
    ({"dynunet.deep_supervision_heads": 4}, "dynunet.deep_supervision_heads: at most 3 with 5 stages"),
    ({"segresnet.blocks_up": [1, 1]}, "segresnet.blocks_up: one per decoder level, so 3 for 4 encoder levels"),
    ({"segresnet.num_groups": 3}, "segresnet.num_groups: must divide segresnet.init_filters (16)"),
    ({"swinunetr.feature_size": 20}, "swinunetr.feature_size: must be a positive multiple of 12, got 20"),
    ({"swinunetr.num_heads": [3, 6, 12, 5]}, "swinunetr.num_heads: stage 3 has 192 features, which 5 heads"),
    ({"network.name": "swinunetr", "train.patch_size": [32, 32, 32]},
     "train.patch_size: network swinunetr reduces [32, 32, 32] to a single voxel at its coarsest resolution"),
    ({"network.name": "vnet"}, "network.name: must be one of unet, dynunet, segresnet, swinunetr"),
])
def test_network_settings_are_checked_when_the_config_is_built(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ExperimentConfig().with_overrides(overrides)
    assert message in str(excinfo.value)


def test_the_defaults_of_every_network_fit_the_default_patch_and_nnunet_supervises_all_but_the_coarsest() -> None:
    for name in NETWORK_NAMES:
        ExperimentConfig().with_overrides({"network.name": name})
    dynunet = ExperimentConfig().with_overrides({"network.name": "dynunet"})
    assert supervised_outputs(dynunet) == 3  # full, 1/2, 1/4 of 5 stages; nnU-Net drops the 1/8 output
    assert supervised_outputs(dynunet.with_overrides({"dynunet.deep_supervision_heads": 0})) == 1
    assert supervised_outputs(ExperimentConfig()) == 1


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_each_network_maps_two_channels_to_one_logit_per_voxel_and_its_weights_name_it(name: str) -> None:
    config = tiny_network_config(name)
    network = build_network(config).eval()
    size = config.train.patch_size
    with torch.no_grad():
        logits = network(torch.zeros(1, 2, *size))
    assert logits.shape == (1, 1, *size)
    prior = config.network.output_prior  # the untrained network starts near it (0.5 without the bias set)
    assert prior / 5 < torch.sigmoid(logits).mean().item() < prior * 5
    assert network_of_state(network.state_dict()) == name
    assert parameter_count(network) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_a_few_training_steps_reduce_the_loss_on_a_synthetic_case(name: str, lesioned_release: Path) -> None:
    """Ten steps on one batch of two lesion-centred patches; the loss of the default config (compound)."""
    config = tiny_network_config(name, **{"train.learning_rate": 1e-2, "train.lesion_fraction": 1.0,
                                          "train.batch_size": 1})
    torch.manual_seed(0)
    (batch,), _ = draw_batches(config, lesioned_release, 1)
    network = build_network(config).train()
    loss_function = build_training_loss(config.loss, supervised_outputs(config))
    optimization = build_optimization(config, network, CPU)
    with torch.no_grad():
        outputs = network(batch["image"].as_tensor())
    if name == "dynunet":  # deep supervision: the full resolution, then half of it (in-plane and z here)
        patch = config.train.patch_size
        assert [tuple(o.shape[2:]) for o in outputs] == [patch, (patch[0] // 2, patch[1] // 2, patch[2])]
    losses = [optimisation_step(config, network, loss_function, optimization, batch, CPU) for _ in range(10)]
    assert losses[-1] < 0.95 * losses[0], f"{name}: loss {[round(loss, 3) for loss in losses]}"


def _save_model(config: ExperimentConfig, folder: Path, on_gpu: bool, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """A weights folder with ``config`` and one network's state dict, tagged as saved from cuda:0 if ``on_gpu``."""
    folder.mkdir()
    config.save(folder / CONFIG_FILENAME)
    torch.manual_seed(0)
    network = build_network(config).eval()
    with monkeypatch.context() as patch:
        if on_gpu:  # what torch.save writes for tensors that live on the first GPU
            patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(network.state_dict(), folder / "fold0.pt")
    return network


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_saved_and_reloaded_the_network_predicts_the_same_in_the_native_grid(
    name: str, case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_network_config(name)
    network = _save_model(config, tmp_path / "model", on_gpu=False, monkeypatch=monkeypatch)
    bundle = load_bundle(tmp_path / "model", CPU)
    assert bundle.config == config
    reloaded = Predictor.from_bundle(bundle, CPU)
    probability = reloaded.probability(case)
    assert probability.shape == case.adc.GetSize()
    assert np.array_equal(probability, Predictor(config, [network], CPU).probability(case))
    mask = reloaded.mask(case)
    assert mask.shape == case.adc.GetSize() and set(np.unique(mask)) <= {0, 1}


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_weights_saved_on_a_gpu_predict_on_a_cpu(name: str, case, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_network_config(name, **{"train.amp": True, "inference.amp": True})
    network = _save_model(config, tmp_path / "model", on_gpu=True, monkeypatch=monkeypatch)
    if not torch.cuda.is_available():  # the file really asks for a GPU: torch.load alone would fail here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "model" / "fold0.pt", weights_only=True)
    bundle = load_bundle(tmp_path / "model", CPU)
    assert all(p.device == CPU for p in bundle.networks[0].parameters())
    probability = Predictor.from_bundle(bundle, CPU).probability(case)
    assert np.array_equal(probability, Predictor(config, [network], CPU).probability(case))


def test_a_folder_refuses_the_weights_of_another_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save_model(tiny_network_config("dynunet"), tmp_path / "model", on_gpu=False, monkeypatch=monkeypatch)
    torch.save(build_network(tiny_network_config("segresnet")).state_dict(), tmp_path / "model" / "fold1.pt")
    with pytest.raises(ModelError, match=r"fold1.pt: weights of network segresnet, but config.json names network "
                                         r"dynunet; the weights of one folder are ensembled"):
        load_bundle(tmp_path / "model", CPU)


def test_training_refuses_a_folder_of_another_network(tmp_path: Path) -> None:
    write_config(tiny_network_config("unet"), tmp_path)
    with pytest.raises(ConfigError, match=r"config.json is for network unet, this run trains segresnet"):
        write_config(tiny_network_config("segresnet", **{"train.fold": 1}), tmp_path)
