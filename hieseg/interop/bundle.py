"""A weights folder as a MONAI bundle in the Model Zoo layout, predicting exactly what ``inference.py`` predicts.

Layout written by :func:`export_bundle`::

    configs/metadata.json    versions (from the weights' provenance), task, network_data_format, intended use
    configs/inference.json   network, preprocessing, sliding-window inferer, post-processing, the run
    configs/logging.conf     INFO messages to stdout (one line per mask written)
    models/model.pt          the state dict: the one fold's network, or a FoldEnsemble of all folds
    scripts/__init__.py      (empty) makes scripts/ importable as the bundle's package
    scripts/hieseg_steps.py  the hie-seg steps MONAI has no transform for (hieseg/interop/bundle_steps.py, copied)
    docs/README.md           how to run it, what it needs, why the scripts/ module
    docs/hieseg_config.json  the weights' config.json as hie-seg reads it (older formats migrated), for the record
    LICENSE

The bundle needs MONAI, torch, numpy, scipy and SimpleITK, not hie-seg: the steps of
``scripts/hieseg_steps.py`` (loading the two channels, the brain-masked normalisation, the
fold/flip ensemble, the small-component removal, the empty-mask fallback, the per-case empty decision and
the writer) are the
same computations as hie-seg's, and ``test/test_export.py`` checks that the bundle's masks equal
``inference.py``'s voxel for voxel.

The preprocessing follows the weights' ``preprocess.normalization``
(:func:`hieseg.data.transforms.preprocess_transforms`): ``native`` (config format 3 and the default)
z-scores each channel over the brain on the native grid, resamples image and brain indicator
together and keeps as brain the network-grid voxels the resampled indicator covers at least half
of; ``network_grid`` (weights of config format 1 and 2, migrated) resamples first and z-scores over
the resampled ADC > 0. The post-processing values are the weights' :class:`~hieseg.config.settings.PostProcessing`.

The inversion to the native grid is MONAI's ``Invertd`` over the whole preprocessing, where
hie-seg's predictor interpolates only the box the brain crop reaches (``hieseg.data.resampling``, a
speed-up): both give the same probabilities (``test/test_resampling.py`` bounds the difference at
1e-6), so the masks match (``test/test_export.py``: 0 voxels differ).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import numpy as np
import scipy
import SimpleITK as sitk
import torch

import hieseg
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.config.validation import shown
from hieseg.errors import InputError, ModelError
from hieseg.interop import bundle_steps
from hieseg.interop.staging import require_new_folder, staged_folder
from hieseg.io.jsonfile import read_weights_json
from hieseg.model.refinement import REFINEMENT_FILENAME
from hieseg.model.weights import load_bundle

LOG = logging.getLogger(__name__)
SCRIPT_MODULE = "hieseg_steps"
"""The name of :mod:`hieseg.interop.bundle_steps` inside the bundle: ``scripts/hieseg_steps.py``."""
STEPS = f"scripts.{SCRIPT_MODULE}"
TUNING_JSON = "tuning.json"
"""What ``hieseg.training.tuning`` writes beside config.json: the chosen post-processing and its validation scores."""
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
DEFAULT_VERSION = "0.1.0"
INPUT_NAMES = ("ADC", "Z_ADC")
TTA_FLIP_AXES = ((), (2,), (3,), (4,), (2, 3))
"""The flips of hie-seg's test-time augmentation (batch, channel, x, y, z axes), as ``hieseg.inference.predictor`` makes them."""
NOT_CLINICAL = (
    "Research and education only. These are NOT clinical weights: they are not a medical device, have not been "
    "validated on patients, and must not be used for diagnosis or treatment decisions."
)


@dataclass(frozen=True)
class BundleExport:
    """What :func:`export_bundle` wrote."""

    folder: Path
    folds: int
    network: str
    files: list[str]


def export_bundle(model_dir: Path, out: Path, *, version: str = DEFAULT_VERSION,
                  license_file: Path | None = None) -> BundleExport:
    """Write the MONAI bundle of the weights folder ``model_dir`` to the new folder ``out``.

    The weights are loaded and checked first (a folder that ``inference.py`` cannot use is a
    :class:`~hieseg.errors.ModelError`), ``out`` must not exist or be empty, and the bundle is
    written into a temporary folder beside it that is renamed at the end: nothing half-written.
    """
    model_dir, out = Path(model_dir), Path(out)
    weights = load_bundle(model_dir, torch.device("cpu"))
    if weights.config.inference.refine:
        raise ModelError(f"{model_dir / CONFIG_FILENAME}: inference.refine is true, and the refinement stage "
                         f"({REFINEMENT_FILENAME}) has no MONAI bundle form; set it to false there to export the "
                         "networks alone")
    if weights.config.inference.zadc_boundary > 0:
        raise ModelError(f"{model_dir / CONFIG_FILENAME}: inference.zadc_boundary is "
                         f"{weights.config.inference.zadc_boundary:g}, and the Z_ADC boundary step has no MONAI bundle "
                         "form; set it to 0 there to export the networks' own edges")
    tuning = _read_tuning(model_dir / TUNING_JSON)
    require_new_folder(out)
    license_text = _license_text(license_file)
    config = weights.config
    folds = len(weights.networks)
    with staged_folder(out) as staging:
        for folder in ("configs", "models", "scripts", "docs"):
            (staging / folder).mkdir()
        _write_json(staging / "configs" / "metadata.json", metadata(config, folds, version, tuning))
        _write_json(staging / "configs" / "inference.json", inference_config(config, folds))
        (staging / "configs" / "logging.conf").write_text(LOGGING_CONF)
        torch.save(_state_dict(weights.networks), staging / "models" / "model.pt")
        (staging / "scripts" / "__init__.py").write_text("")
        (staging / "scripts" / f"{SCRIPT_MODULE}.py").write_text(Path(bundle_steps.__file__).read_text())
        (staging / "docs" / "README.md").write_text(readme(config, folds, weights.weight_files, version))
        config.save(staging / "docs" / "hieseg_config.json")
        (staging / "LICENSE").write_text(license_text)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    return BundleExport(folder=out, folds=folds, network=config.network.name, files=files)


def _license_text(license_file: Path | None) -> str:
    if license_file is None:
        LOG.warning("no --license given: the bundle's LICENSE says that no license has been chosen for these weights")
        return NO_LICENSE
    try:
        return Path(license_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--license {license_file}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from exc


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
"""``configs/logging.conf``, as Model Zoo bundles have it: INFO and above to stdout."""


NO_LICENSE = """No license has been chosen for these weights.

The hie-seg project that trained them ships no license file, so this bundle grants no rights
beyond those the law gives without one. Whoever holds the rights to the weights (and to the data
they were trained on) should re-export the bundle with `hieseg-export bundle --license FILE`
before sharing it, e.g. in the MONAI Model Zoo, which requires a license.
"""


TUNING_METRICS = {"dice": (0.0, 1.0), "masd_mm": (0.0, math.inf), "nsd": (0.0, 1.0)}
"""The validation scores of tuning.json's ``chosen`` setting that metadata.json reports, and their ranges."""


def _read_tuning(path: Path) -> dict[str, Any] | None:
    """The post-processing chosen on validation (tuning.json's ``chosen``), when the folder has it, with finite scores
    in their ranges: they go into metadata.json, which must stay valid JSON."""
    if not path.exists():
        return None
    data = read_weights_json(path, "the scores of a tuning")
    chosen = data.get("chosen") if isinstance(data, dict) else None
    if not isinstance(chosen, dict):
        raise ModelError(f"{path}: chosen: expected the object of the chosen setting and its scores, as train.py "
                         "writes it")
    for name, (low, high) in TUNING_METRICS.items():
        value = chosen.get(name)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not low <= value <= high):
            bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
            raise ModelError(f"{path}: chosen.{name}: expected a finite number {bounds}, got {shown(value)}")
    return chosen


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=4, allow_nan=False) + "\n")


def _state_dict(networks: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The one network's state dict, or the folds' as ``members.<fold>.<key>`` of a FoldEnsemble."""
    if len(networks) == 1:
        return {key: value.cpu() for key, value in networks[0].state_dict().items()}
    return {key: value.cpu() for key, value in bundle_steps.FoldEnsemble(networks).state_dict().items()}


# ------------------------------------------------------------------------------------------- configs/inference.json


def network_definition(config: ExperimentConfig) -> dict[str, Any]:
    """MONAI's network class and arguments for ``config``'s network, as ``hieseg.model.network`` builds it.

    Its state dict is the one training saved (for DynUNet: MONAI's ``DynUNet``, whose evaluation
    output is ``hieseg.model.network.DeepSupervisedDynUNet``'s; the heads are built so the weights load).
    """
    common, name = config.network, config.network.name
    settings = config.network_settings()
    channels = {"in_channels": common.in_channels, "out_channels": common.out_channels}
    if name == "unet":
        return {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, **channels,
                "channels": list(settings.channels), "strides": list(settings.strides),
                "num_res_units": settings.num_res_units, "norm": settings.norm, "dropout": settings.dropout}
    if name == "dynunet":
        heads = settings.heads()
        return {"_target_": "monai.networks.nets.DynUNet", "spatial_dims": 3, **channels,
                "kernel_size": [list(k) for k in settings.kernel_size], "strides": [list(s) for s in settings.strides],
                "upsample_kernel_size": [list(s) for s in settings.strides[1:]], "filters": list(settings.filters),
                "dropout": settings.dropout or None,
                "norm_name": ["instance", {"affine": True}] if settings.norm == "instance" else settings.norm,
                "deep_supervision": heads > 0, "deep_supr_num": max(heads, 1), "res_block": settings.res_block}
    if name == "segresnet":
        return {"_target_": "monai.networks.nets.SegResNet", "spatial_dims": 3, "init_filters": settings.init_filters,
                **channels, "dropout_prob": settings.dropout or None,
                "norm": ["group", {"num_groups": settings.num_groups}] if settings.norm == "group" else settings.norm,
                "blocks_down": list(settings.blocks_down), "blocks_up": list(settings.blocks_up),
                "upsample_mode": settings.upsample_mode}
    if name == "swinunetr":
        return {"_target_": "monai.networks.nets.SwinUNETR", **channels, "feature_size": settings.feature_size,
                "depths": list(settings.depths), "num_heads": list(settings.num_heads),
                "window_size": list(settings.window_size), "norm_name": settings.norm, "drop_rate": settings.drop_rate,
                "attn_drop_rate": settings.attn_drop_rate, "dropout_path_rate": settings.dropout_path_rate,
                "use_v2": settings.use_v2, "use_checkpoint": settings.use_checkpoint, "spatial_dims": 3}
    raise ValueError(f"no MONAI definition for network {name!r}")


def preprocessing_steps(config: ExperimentConfig) -> list[Any]:
    """The transforms of ``inference.json``'s ``preprocessing``, in the order of ``config.preprocess.normalization``.

    ``native``: z-score on the native grid (``NormalizeNatived``), image and brain indicator resampled
    together (``Spacingd``, bilinear), brain = indicator >= 0.5 (``BrainOnGridd``); ``network_grid``:
    resampled first, then z-scored over the resampled ADC > 0 (``NormalizeInBraind``). Either way the
    brain's box is then cropped, as :func:`hieseg.data.transforms.inference_transforms` does. Z_ADC is
    normalised as ``preprocess.zadc_normalization`` says (``zadc`` of the normalising step).
    """
    load = {"_target_": f"{STEPS}.LoadCased"}
    normalization = config.preprocess.normalization
    if normalization == "network_grid":
        return [load,
                {"_target_": "Spacingd", "keys": "image", "pixdim": "@target_spacing", "mode": "bilinear"},
                {"_target_": f"{STEPS}.NormalizeInBraind", "zadc": config.preprocess.zadc_normalization},
                "@crop"]
    if normalization == "native":
        return [load,
                {"_target_": f"{STEPS}.NormalizeNatived", "zadc": config.preprocess.zadc_normalization},
                {"_target_": "Spacingd", "keys": ["image", "brain"], "pixdim": "@target_spacing",
                 "mode": ["bilinear", "bilinear"]},
                {"_target_": f"{STEPS}.BrainOnGridd", "cover": bundle_steps.BRAIN_COVER},
                "@crop"]
    raise ValueError(f"no MONAI bundle preprocessing for preprocess.normalization {normalization!r}")


def inference_config(config: ExperimentConfig, folds: int) -> dict[str, Any]:
    """``configs/inference.json``: every setting from ``config``, the run as ``inference.py`` does it.

    Top-level values meant to be overridden on the command line: ``input_dir``, ``output_dir``,
    ``device``, ``bundle_root``, and the saved post-processing (:class:`~hieseg.config.settings.PostProcessing`)
    ``threshold``, ``min_component_mm3``, ``empty_fallback_probability``, ``min_total_mm3``, ``tta_flips``. The
    normalisation order is fixed by the weights (``preprocess.normalization``), not a value to override.
    """
    inference, preprocess = config.inference, config.preprocess
    post = inference.postprocessing
    member = network_definition(config)
    if folds == 1:
        network_def: dict[str, Any] | str = member
    else:
        network_def = {"_target_": f"{STEPS}.FoldEnsemble", "members": ["%fold_network_def"] * folds}
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "input_dir": "/input",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "target_spacing": list(preprocess.target_spacing),
        "crop_margin": preprocess.crop_margin,
        "roi_size": list(inference.roi_size),
        "sw_batch_size": inference.sw_batch_size,
        "overlap": inference.overlap,
        "blend_mode": inference.blend_mode,
        "tta_flips": post.tta_flips,
        "amp": inference.amp,
        "threshold": post.threshold,
        "min_component_mm3": post.min_component_mm3,
        "empty_fallback_probability": post.empty_fallback_probability,
        "min_total_mm3": post.min_total_mm3,
        **({} if folds == 1 else {"fold_network_def": member}),
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "datalist": {"_target_": f"{STEPS}.find_cases", "input_dir": "@input_dir"},
        "crop": {"_target_": "CropForegroundd", "keys": "image", "source_key": "brain", "margin": "@crop_margin",
                 "allow_smaller": True},
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_steps(config)},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": {
            "_target_": f"{STEPS}.FlipEnsembleInferer",
            "window": {"_target_": "SlidingWindowInferer", "roi_size": "@roi_size", "sw_batch_size": "@sw_batch_size",
                       "overlap": "@overlap", "mode": "@blend_mode"},
            "flip_axes": f"$[{', '.join(str(list(a)) for a in TTA_FLIP_AXES)}] if @tta_flips else [[]]",
            "amp": "@amp",
        },
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False},
            {"_target_": "MaskIntensityd", "keys": "pred", "mask_key": "native_brain"},
            {"_target_": "CopyItemsd", "keys": "pred", "names": "probability"},
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": "@threshold"},
            {"_target_": f"{STEPS}.RemoveSmallComponentsd", "keys": "pred", "min_volume_mm3": "@min_component_mm3"},
            {"_target_": f"{STEPS}.PeakFallbackd", "keys": "pred", "probability_key": "probability",
             "min_peak": "@empty_fallback_probability"},
            {"_target_": f"{STEPS}.MinTotalVolumed", "keys": "pred", "min_total_mm3": "@min_total_mm3"},
            {"_target_": f"{STEPS}.SaveMaskd", "keys": "pred", "output_dir": "@output_dir"},
        ]},
        "run": [
            "$@network.load_state_dict(torch.load(@ckpt_path, map_location='cpu', weights_only=True))",
            {"_target_": f"{STEPS}.predict", "dataset": "@dataset", "network": "@network", "inferer": "@inferer",
             "postprocessing": "@postprocessing", "device": "@device"},
        ],
    }


# ------------------------------------------------------------------------------------------- configs/metadata.json


def metadata(config: ExperimentConfig, folds: int, version: str, tuning: dict[str, Any] | None) -> dict[str, Any]:
    """``configs/metadata.json``: the versions that trained the weights, the task, the data format, the intended use.

    MONAI, PyTorch and SimpleITK versions are the weights' provenance (config.json); where it has
    none (weights trained before provenance was recorded) and for numpy and scipy, which it does
    not record, the exporting environment's versions are given.
    """
    provenance = config.provenance
    recorded = provenance is not None
    roi = list(config.inference.roi_size)
    origin = (f"hie-seg {provenance.hieseg}" + (f" at commit {provenance.git_commit}" if provenance.git_commit else "")
              + (" (uncommitted changes)" if provenance.git_dirty else "")) if recorded else "hie-seg (no provenance recorded)"
    network = config.network.name
    eval_metrics = {}
    if tuning is not None:
        eval_metrics = {"validation_mean_dice": tuning.get("dice"), "validation_mean_masd_mm": tuning.get("masd_mm"),
                        "validation_mean_nsd": tuning.get("nsd")}
    return {
        "schema": META_SCHEMA,
        "version": version,
        "changelog": {version: f"exported by hieseg-export (hie-seg {hieseg.__version__}) from {folds} fold(s) of "
                               f"{network} weights trained with {origin}"},
        "monai_version": (provenance.monai if recorded and provenance.monai else monai.__version__),
        "pytorch_version": (provenance.torch if recorded and provenance.torch else torch.__version__).split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "SimpleITK": provenance.simpleitk if recorded and provenance.simpleitk else sitk.Version.VersionString(),
            "scipy": scipy.__version__,
        },
        "supported_apps": {},
        "name": "HIE lesion segmentation (hie-seg)",
        "task": "Segmentation of hypoxic-ischemic encephalopathy (HIE) lesions in neonatal diffusion MRI",
        "description": (
            f"A MONAI {network} of hie-seg ({folds} fold(s)) that segments HIE lesions from two channels, the "
            "skull-stripped ADC map and the Z_ADC map of the BONBID-HIE challenge, on the native grid of the ADC. "
            "Preprocessing, test-time augmentation and the post-processing tuned on validation are those of "
            "hie-seg's inference.py, whose masks this bundle reproduces voxel for voxel."
        ),
        "authors": "hie-seg project",
        "copyright": "see LICENSE",
        "data_source": "BONBID-HIE 2023 (https://bonbid-hie2023.grand-challenge.org/), or hie-seg's synthetic cases",
        "data_type": "mha",
        "image_classes": "2 channels: 0 = skull-stripped ADC (10^-6 mm^2/s, brain where > 0), 1 = Z_ADC (z-score map)",
        "label_classes": "1 channel: 1 = HIE lesion, 0 = everything else",
        "pred_classes": "1 channel: lesion logit (network); the written mask is uint8 0/1 on the ADC's grid",
        "eval_metrics": {key: value for key, value in eval_metrics.items() if value is not None},
        "intended_use": NOT_CLINICAL,
        "references": [
            "Multimodal HIE Lesion Segmentation in Neonates: A Comparative Study of Loss Functions, arXiv 2502.09148",
            "BONBID-HIE 2023 challenge, https://bonbid-hie2023.grand-challenge.org/",
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": 2,
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): name for i, name in enumerate(INPUT_NAMES)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 1,
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "lesion (logit; sigmoid gives the probability)"},
                }
            },
        },
    }


# ------------------------------------------------------------------------------------------- docs/README.md


def readme(config: ExperimentConfig, folds: int, weight_files: list[Path], version: str) -> str:
    """``docs/README.md`` of the bundle."""
    inference, post = config.inference, config.inference.postprocessing
    spacing = " x ".join(f"{s:g}" for s in config.preprocess.target_spacing)
    provenance = config.provenance
    trained = ("unknown versions (no provenance in config.json)" if provenance is None else
               f"hie-seg {provenance.hieseg}, torch {provenance.torch}, MONAI {provenance.monai}, "
               f"SimpleITK {provenance.simpleitk}, commit {provenance.git_commit or 'unknown'}")
    fallback = ("off" if post.empty_fallback_probability == 0 else
                f"keep the component around the peak when the peak reaches {post.empty_fallback_probability:g}")
    total = ("no per-case empty decision" if post.min_total_mm3 == 0 else
             f"a mask under {post.min_total_mm3:g} mm³ in all emptied (the case called lesion-free)")
    zadc = ("Z_ADC only centred on its brain median, keeping its units (`preprocess.zadc_normalization` "
            "\"centred\")" if config.preprocess.zadc_normalization == "centred" else
            "Z_ADC z-scored like the ADC (`preprocess.zadc_normalization` \"z_score\")")
    if config.preprocess.normalization == "native":
        grid = (f"each channel z-scored inside the brain (ADC > 0) on the native grid, then resampled to {spacing} mm "
                f"with the brain indicator, the brain on that grid being the voxels the indicator covers at least "
                f"{bundle_steps.BRAIN_COVER:g} of (`preprocess.normalization` \"native\")")
    else:
        grid = (f"resampled to {spacing} mm, then each channel z-scored inside the resampled brain (ADC > 0) "
                f"(`preprocess.normalization` \"network_grid\", weights of config format 1 and 2)")
    return f"""# HIE lesion segmentation (hie-seg), bundle version {version}

{NOT_CLINICAL}

Segments hypoxic-ischemic encephalopathy (HIE) lesions in neonatal diffusion MRI from two images
of the BONBID-HIE challenge: the skull-stripped ADC map and the Z_ADC map. The mask is written on
the ADC's grid (same size, spacing, origin and direction), uint8, 1 = lesion.

- Network: MONAI `{config.network.name}`, {folds} fold(s) ({', '.join(p.name for p in weight_files)}),
  trained with {trained}.
- Grid: {grid}; {zadc}; cropped to the brain's box plus {config.preprocess.crop_margin} voxels.
- Inference: sliding window {' x '.join(map(str, inference.roi_size))}, overlap {inference.overlap:g},
  {inference.blend_mode} blending; flip test-time augmentation {'on' if post.tta_flips else 'off'};
  mean sigmoid probability over folds and flips.
- Post-processing (tuned on validation): threshold {post.threshold:g}, components under
  {post.min_component_mm3:g} mm³ removed, empty-mask fallback {fallback}, {total}.

## Running it

Needs Python 3.10+, `monai`, `torch`, `numpy`, `scipy` and `SimpleITK` (the versions in
`configs/metadata.json` are those that trained the weights), and `fire` for MONAI's command line.
It does not need hie-seg. From this folder:

```bash
python -m monai.bundle run --config_file configs/inference.json --input_dir /path/to/input --output_dir /path/to/masks
python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json --config_file configs/inference.json
```

From elsewhere add `--bundle_root /path/to/this/bundle` to `run`, and run `verify_net_in_out`
with `PYTHONPATH=/path/to/this/bundle` (it needs `scripts/` importable when the weights are an ensemble).

`--input_dir` is one of:

- the challenge container's input: `images/skull-stripped-adc-brain-mri/<uuid>.mha` and
  `images/z-score-adc/<uuid>.mha` (the mask is `<output_dir>/<uuid>.mha`, the ADC file's name);
- a BONBID-HIE release root: `1ADC_ss/<case>-ADC_ss.mha` and `2Z_ADC/Zmap_<case>-ADC_smooth2mm_clipped10.mha`
  (masks `<output_dir>/<case>.mha`);
- a folder of container-layout cases, `<case>/images/...` (masks `<output_dir>/<case>.mha`).

Other overrides: `--device cpu|cuda`, `--tta_flips False`, `--threshold 0.5`, `--min_component_mm3 0`,
`--empty_fallback_probability 0.1`, `--min_total_mm3 0` (fire reads `True`/`False` capitalised).

## Why a `scripts/` module, and not hie-seg's classes

MONAI's own transforms and inferer are used wherever they compute what hie-seg computes:
`Spacingd`, `CropForegroundd`, `SlidingWindowInferer`, `Invertd` (undoing the crop and the
resampling), `MaskIntensityd`, `CopyItemsd`, `AsDiscreted`. The steps with no MONAI equivalent
are in `scripts/hieseg_steps.py` (under 500 lines with their documentation; it needs MONAI, torch,
numpy, scipy and SimpleITK): reading the .mha pair with SimpleITK (MONAI's ITK reader needs the `itk` package) with the brain
masking of both channels, the brain-masked z-score (on the native grid before the resampling, or on
the network grid after it, as the weights were trained) and the brain on the network grid, the fold and flip ensemble (the mean of
sigmoid probabilities, not of logits), the small-component removal in mm³ with 26-connectivity
(MONAI's `RemoveSmallObjects` needs scikit-image), the empty-mask fallback, the per-case empty decision and
the writer that copies the ADC's geometry. The bundle is thereby self-contained, as Model Zoo bundles are:
a MONAI user need not install hie-seg (not on PyPI, and pinned to a training stack) to run it,
and the bundle keeps working whatever hie-seg's modules are later called. The module is a copy
of `hieseg/interop/bundle_steps.py`, and hie-seg's tests check that this bundle's masks equal
`inference.py`'s voxel for voxel on the shipped sample case and on a fold ensemble.

`docs/hieseg_config.json` is the weights' complete hie-seg configuration (in hie-seg's current config
format: an older file is shown migrated, e.g. with the normalisation order its weights were trained with).
"""
