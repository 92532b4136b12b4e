"""The hie-seg steps of the MONAI bundle's ``inference.json``, needing MONAI, torch, numpy, scipy and SimpleITK alone.

``hieseg-export bundle`` copies this file, unchanged, to ``scripts/hieseg_steps.py`` of the bundle, so
the bundle runs without hie-seg installed. It must therefore import nothing from ``hieseg``
(``test/test_export.py`` checks that, and that the bundle's masks equal ``inference.py``'s).

What MONAI provides is used as it is in ``inference.json``: ``Spacingd`` (the network grid),
``CropForegroundd`` (the brain's box), ``SlidingWindowInferer``, ``Invertd`` (undoing the crop and
the resampling), ``MaskIntensityd`` (0 outside the brain), ``CopyItemsd`` and ``AsDiscreted`` (the
threshold). The steps here are the ones MONAI has no equivalent of, each the same computation as
hie-seg's own:

* :func:`find_cases`: the cases of an input folder (the challenge container's ``/input``, a
  BONBID-HIE release root, or a folder of container-layout cases);
* :class:`LoadCased`: ADC and Z_ADC read with SimpleITK (MONAI's ITK reader needs the ``itk``
  package) into one 2-channel image, both channels 0 outside the brain (ADC > 0), with the ITK
  (LPS) affine (``hieseg.data.transforms.case_to_dict``);
* the z-score of each channel over the brain, in the order the weights were trained with
  (``preprocess.normalization``, ``hieseg.data.transforms.preprocess_transforms``):
  :class:`NormalizeNatived` on the native grid before ``Spacingd``, which resamples the brain
  indicator beside the image, then :class:`BrainOnGridd` (``native``); or :class:`NormalizeInBraind`
  on the network grid after ``Spacingd`` (``network_grid``, weights of config format 1 and 2); Z_ADC
  z-scored too, or only centred on the brain's median (``preprocess.zadc_normalization`` ``centred``);
* :class:`FoldEnsemble` and :class:`FlipEnsembleInferer`: the mean sigmoid probability over the
  folds' networks and the flips of the test-time augmentation, each network run by MONAI's
  sliding window (``hieseg.inference.predictor.Predictor``);
* :class:`RemoveSmallComponentsd`, :class:`PeakFallbackd` and :class:`MinTotalVolumed`: components under
  a volume in mm³ dropped (26-connectivity), the empty-mask fallback, and the per-case empty decision
  (``hieseg.inference.postprocess``);
* :class:`SaveMaskd`: the uint8 mask written atomically with exactly the ADC's size, spacing,
  origin and direction;
* :func:`predict`: the loop over the cases that ``inference.json``'s ``run`` calls.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform
from scipy import ndimage

LOG = logging.getLogger("hieseg_steps")

IMAGE, BRAIN, NATIVE_BRAIN, NATIVE_SPACING = "image", "brain", "native_brain", "native_spacing"
ADC, ZADC, CASE_ID, MASK_PATH = "adc", "zadc", "case_id", "mask_path"
IMAGE_SUFFIX = ".mha"
CONTAINER_ADC_DIR = Path("images/skull-stripped-adc-brain-mri")
CONTAINER_ZADC_DIR = Path("images/z-score-adc")
RELEASE_ADC_DIR, RELEASE_ADC_SUFFIX = "1ADC_ss", "-ADC_ss.mha"
RELEASE_ZADC_DIR, RELEASE_ZADC_PREFIX, RELEASE_ZADC_SUFFIX = "2Z_ADC", "Zmap_", "-ADC_smooth2mm_clipped10.mha"
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
BRAIN_COVER = 0.5
ADC_FENCE_PERCENTILES = (1.0, 99.0)
ADC_FENCE_SPREAD = 2.0
"""The ADC is clipped to ``ADC_FENCE_SPREAD`` P1-P99 spreads beyond P1 and P99 of the brain before its z-score
(``hieseg.data.transforms.adc_fence``, where the reasons are): far outside any real tissue, so only wild voxels move."""
"""A network-grid voxel is brain where the resampled native brain indicator (0/1, bilinear) reaches this."""
ZADC_NORMALIZATIONS = ("z_score", "centred")
"""How Z_ADC may be normalised (``preprocess.zadc_normalization``)."""


# ---------------------------------------------------------------------------------------------- cases


def find_cases(input_dir: str | os.PathLike) -> list[dict[str, str]]:
    """``{"case_id", "adc", "zadc"}`` for each case of ``input_dir``, sorted by case id.

    ``input_dir`` is one of:

    * the challenge container's input: ``images/skull-stripped-adc-brain-mri/<uuid>.mha`` and
      ``images/z-score-adc/<uuid>.mha`` (one file each; several are paired by file name), the case
      id being the ADC file's name without ``.mha``, as ``inference.py`` names its mask;
    * a BONBID-HIE release root: ``1ADC_ss/<case>-ADC_ss.mha`` and
      ``2Z_ADC/Zmap_<case>-ADC_smooth2mm_clipped10.mha``;
    * a folder of container-layout cases, ``<case>/images/...``, the case id being the sub-folder's name.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: input folder not found (override input_dir)")
    if (root / CONTAINER_ADC_DIR).is_dir():
        return _container_cases(root)
    if (root / RELEASE_ADC_DIR).is_dir():
        return _release_cases(root)
    nested = sorted(p for p in root.iterdir() if (p / CONTAINER_ADC_DIR).is_dir())
    if nested:
        return [{**case, CASE_ID: folder.name} for folder in nested for case in _container_cases(folder)]
    raise FileNotFoundError(
        f"{root}: no cases found; expected {CONTAINER_ADC_DIR}/ and {CONTAINER_ZADC_DIR}/ (the container's input), "
        f"{RELEASE_ADC_DIR}/ and {RELEASE_ZADC_DIR}/ (a release root), or sub-folders laid out like the container's input"
    )


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix == IMAGE_SUFFIX and not p.name.startswith("."))


def _container_cases(root: Path) -> list[dict[str, str]]:
    adcs, zadcs = _images(root / CONTAINER_ADC_DIR), _images(root / CONTAINER_ZADC_DIR)
    if len(adcs) == 1 and len(zadcs) == 1:
        pairs = [(adcs[0], zadcs[0])]
    else:
        by_name = {p.name: p for p in zadcs}
        missing = [p.name for p in adcs if p.name not in by_name]
        if missing or not adcs:
            raise FileNotFoundError(f"{root}: no Z_ADC in {CONTAINER_ZADC_DIR} for {', '.join(missing) or 'any ADC'}")
        pairs = [(p, by_name[p.name]) for p in adcs]
    return [{CASE_ID: adc.name[: -len(IMAGE_SUFFIX)], ADC: str(adc), ZADC: str(zadc)} for adc, zadc in pairs]


def _release_cases(root: Path) -> list[dict[str, str]]:
    cases = []
    pattern = re.compile(rf"^(.+){re.escape(RELEASE_ADC_SUFFIX)}$")
    for adc in _images(root / RELEASE_ADC_DIR):
        match = pattern.match(adc.name)
        if match is None:
            continue
        case_id = match.group(1)
        zadc = root / RELEASE_ZADC_DIR / f"{RELEASE_ZADC_PREFIX}{case_id}{RELEASE_ZADC_SUFFIX}"
        if not zadc.is_file():
            raise FileNotFoundError(f"case {case_id}: missing partner file {zadc}")
        cases.append({CASE_ID: case_id, ADC: str(adc), ZADC: str(zadc)})
    if not cases:
        raise FileNotFoundError(f"{root}: no cases found (expected {RELEASE_ADC_DIR}/<case>{RELEASE_ADC_SUFFIX})")
    return cases


# ---------------------------------------------------------------------------------------------- preprocessing


def xyz_array(image: sitk.Image) -> np.ndarray:
    """Voxel array with axes (x, y, z), float32, as MONAI's transforms expect."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32, copy=False))


def itk_affine(image: sitk.Image) -> np.ndarray:
    """4x4 voxel-to-world (ITK, LPS) matrix for array axes (x, y, z)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


class LoadCased(MapTransform):
    """Read a case's ADC and Z_ADC into a 2-channel ``image``, both 0 outside the brain (ADC > 0).

    Adds ``native_brain`` (1 channel, the brain on the native grid) and ``native_spacing`` (the
    ADC's spacing in mm, x, y, z) for the post-processing. Partners on different grids, and an
    ADC without brain, are refused.
    """

    def __init__(self, adc_key: str = ADC, zadc_key: str = ZADC, tolerance: float = 1e-4) -> None:
        super().__init__(keys=[adc_key, zadc_key])
        self.adc_key, self.zadc_key, self.tolerance = adc_key, zadc_key, tolerance

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        adc_path, zadc_path = str(data[self.adc_key]), str(data[self.zadc_key])
        adc_image, zadc_image = sitk.ReadImage(adc_path), sitk.ReadImage(zadc_path)
        self._check_partners(adc_image, adc_path, zadc_image, zadc_path)
        adc = xyz_array(adc_image)
        brain = adc > 0
        if not brain.any():
            raise ValueError(f"{adc_path}: no brain voxels (the skull-stripped ADC has no value above 0)")
        image = np.stack([np.where(brain, adc, 0), np.where(brain, xyz_array(zadc_image), 0)]).astype(np.float32)
        affine = torch.as_tensor(itk_affine(adc_image), dtype=torch.float64)
        result[IMAGE] = MetaTensor(image, affine=affine)
        result[NATIVE_BRAIN] = MetaTensor(torch.from_numpy(brain[None].astype(np.uint8)), affine=affine.clone())
        result[NATIVE_SPACING] = tuple(adc_image.GetSpacing())
        return result

    def _check_partners(self, adc: sitk.Image, adc_path: str, zadc: sitk.Image, zadc_path: str) -> None:
        for image, path in ((adc, adc_path), (zadc, zadc_path)):
            if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
                raise ValueError(f"{path}: expected a 3D scalar image")
        if adc.GetSize() != zadc.GetSize():
            raise ValueError(f"{zadc_path}: size {zadc.GetSize()} differs from the ADC's {adc.GetSize()} ({adc_path})")
        for name in ("GetSpacing", "GetOrigin", "GetDirection"):
            mine, theirs = np.asarray(getattr(adc, name)()), np.asarray(getattr(zadc, name)())
            scale = max(1.0, float(np.abs(mine).max(initial=0.0)))
            if not np.allclose(mine, theirs, atol=self.tolerance * scale):
                raise ValueError(f"{zadc_path}: {name[3:].lower()} differs from the ADC's ({adc_path})")


def _normalised(values: torch.Tensor, brain: torch.Tensor, zadc: str) -> torch.Tensor:
    """ADC (channel 0) clipped to :func:`adc_fence` and z-scored over ``brain``; Z_ADC (channel 1) z-scored too (``zadc`` ``z_score``) or minus its
    median over ``brain`` (``centred``); 0 elsewhere. A constant channel is only centred."""
    if zadc not in ZADC_NORMALIZATIONS:
        raise ValueError(f"zadc must be one of {', '.join(ZADC_NORMALIZATIONS)}, got {zadc!r}")
    normalised = torch.zeros_like(values)
    for channel, channel_values in enumerate(values):
        inside = channel_values[brain]
        if not inside.numel():
            continue
        if channel == 1 and zadc == "centred":
            normalised[channel][brain] = inside - float(torch.median(inside))
            continue
        if channel == 0:
            inside = inside.clamp(*adc_fence(inside))
        mean, std = float(torch.mean(inside)), float(torch.std(inside, unbiased=False))
        normalised[channel][brain] = (inside - mean) / (std if std != 0.0 else 1.0)
    return normalised


def adc_fence(inside: torch.Tensor) -> tuple[float, float]:
    """The range the brain's ADC values are clipped to before their mean and std, so that a few wild voxels
    cannot flatten the z-score (``hieseg.data.transforms.adc_fence``)."""
    low, high = np.percentile(inside.detach().cpu().numpy(), ADC_FENCE_PERCENTILES)
    spread = float(high - low)
    return float(low) - ADC_FENCE_SPREAD * spread, float(high) + ADC_FENCE_SPREAD * spread


class NormalizeInBraind(MapTransform):
    """After the resampling: z-score each channel of ``image`` over the brain (resampled ADC channel > 0; Z_ADC
    as ``zadc`` says, ``preprocess.zadc_normalization``), 0 elsewhere; the brain goes to ``brain``
    (``preprocess.normalization`` ``network_grid``)."""

    def __init__(self, keys: str = IMAGE, brain_key: str = BRAIN, zadc: str = "z_score") -> None:
        super().__init__(keys=[keys] if isinstance(keys, str) else keys)
        self.brain_key, self.zadc = brain_key, zadc

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            image = result[key]
            values = image.as_tensor().float()
            brain = values[0] > 0
            result[key] = MetaTensor(_normalised(values, brain, self.zadc), meta=image.meta,
                                     applied_operations=list(image.applied_operations))
            result[self.brain_key] = MetaTensor(brain[None].to(torch.uint8), meta=image.meta)
        return result


class NormalizeNatived(MapTransform):
    """Before the resampling: z-score each channel of ``image`` over the native brain (ADC channel > 0; Z_ADC as
    ``zadc`` says, ``preprocess.zadc_normalization``), 0 elsewhere; the brain goes to ``brain`` as a 0/1 float
    channel, for ``Spacingd`` to resample beside the image (``preprocess.normalization`` ``native``)."""

    def __init__(self, keys: str = IMAGE, brain_key: str = BRAIN, zadc: str = "z_score") -> None:
        super().__init__(keys=[keys] if isinstance(keys, str) else keys)
        self.brain_key, self.zadc = brain_key, zadc

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            image = result[key]
            values = image.as_tensor().float()
            brain = values[0] > 0
            # separate metadata: the resampling of one key must not move the other's affine
            result[key] = MetaTensor(_normalised(values, brain, self.zadc), meta=copy.deepcopy(image.meta),
                                     applied_operations=list(image.applied_operations))
            result[self.brain_key] = MetaTensor(brain[None].float(), meta=copy.deepcopy(image.meta))
        return result


class BrainOnGridd(MapTransform):
    """After the resampling of :class:`NormalizeNatived`'s output: the brain on the network grid is where the
    resampled brain indicator reaches ``cover`` (uint8 under ``brain``); ``image`` is set to 0 outside it."""

    def __init__(self, keys: str = IMAGE, brain_key: str = BRAIN, cover: float = BRAIN_COVER) -> None:
        super().__init__(keys=[keys] if isinstance(keys, str) else keys)
        self.brain_key, self.cover = brain_key, float(cover)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        brain = data[self.brain_key].as_tensor()[0] >= self.cover
        for key in self.key_iterator(result):
            image = result[key]
            result[key] = MetaTensor(image.as_tensor() * brain, meta=image.meta,
                                     applied_operations=list(image.applied_operations))
        result[self.brain_key] = MetaTensor(brain[None].to(torch.uint8), meta=data[self.brain_key].meta)
        return result


# ---------------------------------------------------------------------------------------------- networks and inferer


class FoldEnsemble(torch.nn.Module):
    """The networks of several folds, one state dict (``members.<fold>.<...>``).

    :class:`FlipEnsembleInferer` runs each member through the sliding window and averages their
    probabilities; calling the ensemble itself gives the members' mean logit (what
    ``verify_net_in_out`` checks the shape of).
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


class FlipEnsembleInferer(Inferer):
    """Mean sigmoid probability over the networks (the members of a :class:`FoldEnsemble`, or the one
    network) and the flips of ``flip_axes`` (``[[]]``: no test-time augmentation), each prediction
    made by ``window`` (MONAI's ``SlidingWindowInferer``) and flipped back. Mixed precision only on CUDA."""

    def __init__(self, window: Inferer, flip_axes: Sequence[Sequence[int]] = ((),), amp: bool = True) -> None:
        self.window = window
        self.flip_axes = [tuple(int(a) for a in axes) for axes in flip_axes]
        if not self.flip_axes:
            raise ValueError("flip_axes needs at least one entry ([] is the unflipped input)")
        self.amp = amp

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        members = list(network.members) if isinstance(network, FoldEnsemble) else [network]
        use_amp = self.amp and inputs.device.type == "cuda"
        total = torch.zeros_like(inputs[:, :1], dtype=torch.float32)
        for member in members:
            for axes in self.flip_axes:
                flipped = torch.flip(inputs, axes) if axes else inputs
                with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                    logits = self.window(flipped, member, *args, **kwargs)
                probability = torch.sigmoid(logits.float())
                total += torch.flip(probability, axes) if axes else probability
        return total / (len(members) * len(self.flip_axes))


# ---------------------------------------------------------------------------------------------- post-processing


def _mask_array(value: Any) -> np.ndarray:
    """The (X, Y, Z) uint8 0/1 array of a 1-channel mask."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return (array[0] != 0).astype(np.uint8)


class _VolumeStepd(MapTransform):
    """A step that keeps or drops parts of a binary mask by their volume in mm³ against a minimum (0: off), at the
    native spacing stored by :class:`LoadCased`; subclasses say what is measured in :meth:`apply`."""

    def __init__(self, keys: str, minimum_mm3: float, name: str, spacing_key: str) -> None:
        super().__init__(keys=[keys] if isinstance(keys, str) else keys)
        if minimum_mm3 < 0:
            raise ValueError(f"{name} must be >= 0, got {minimum_mm3}")
        self.minimum_mm3, self.spacing_key = float(minimum_mm3), spacing_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            mask = _mask_array(result[key])
            if self.minimum_mm3 > 0 and mask.any():
                mask = self.apply(mask, float(np.prod(result[self.spacing_key])))
            result[key] = torch.from_numpy(mask[None])
        return result

    def apply(self, mask: np.ndarray, voxel_mm3: float) -> np.ndarray:
        raise NotImplementedError


class RemoveSmallComponentsd(_VolumeStepd):
    """Drop the connected components (26-connectivity) of a binary mask smaller than ``min_volume_mm3``.

    Volumes use the native spacing stored by :class:`LoadCased`; 0 keeps every component.
    """

    def __init__(self, keys: str, min_volume_mm3: float, spacing_key: str = NATIVE_SPACING) -> None:
        super().__init__(keys, min_volume_mm3, "min_volume_mm3", spacing_key)

    def apply(self, mask: np.ndarray, voxel_mm3: float) -> np.ndarray:
        labels, count = ndimage.label(mask, structure=FULL_CONNECTIVITY)
        keep = np.bincount(labels.ravel(), minlength=count + 1) * voxel_mm3 >= self.minimum_mm3
        keep[0] = False
        return keep[labels].astype(np.uint8)


class PeakFallbackd(MapTransform):
    """When the mask is empty and the peak probability reaches ``min_peak``, keep the component around the peak.

    The component: voxels at or above half the peak (26-connected) holding the peak. ``min_peak`` 0 is off.
    """

    def __init__(self, keys: str, probability_key: str, min_peak: float) -> None:
        super().__init__(keys=[keys] if isinstance(keys, str) else keys)
        self.probability_key, self.min_peak = probability_key, float(min_peak)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            mask = _mask_array(result[key])
            if self.min_peak > 0.0 and not mask.any():
                probability = result[self.probability_key]
                probability = probability.detach().cpu().numpy() if isinstance(probability, torch.Tensor) else probability
                mask = _peak_component(np.asarray(probability)[0], self.min_peak)
            result[key] = torch.from_numpy(mask[None])
        return result


class MinTotalVolumed(_VolumeStepd):
    """Empty a mask whose total volume in mm³ is under ``min_total_mm3``: the per-case decision that the image
    holds no lesion. Volumes use the native spacing stored by :class:`LoadCased`; 0 keeps every mask."""

    def __init__(self, keys: str, min_total_mm3: float, spacing_key: str = NATIVE_SPACING) -> None:
        super().__init__(keys, min_total_mm3, "min_total_mm3", spacing_key)

    def apply(self, mask: np.ndarray, voxel_mm3: float) -> np.ndarray:
        return np.zeros_like(mask) if float(mask.sum()) * voxel_mm3 < self.minimum_mm3 else mask


def _peak_component(probability: np.ndarray, min_peak: float) -> np.ndarray:
    peak = float(probability.max()) if probability.size else 0.0
    if peak <= 0.0 or peak < min_peak:
        return np.zeros(probability.shape, dtype=np.uint8)
    labels, _ = ndimage.label(probability >= peak / 2.0, structure=FULL_CONNECTIVITY)
    return (labels == labels[np.unravel_index(int(np.argmax(probability)), probability.shape)]).astype(np.uint8)


class SaveMaskd(MapTransform):
    """Write ``keys`` as ``<output_dir>/<case_id>.mha``: uint8 0/1 with exactly the ADC's size, spacing, origin
    and direction (read from the ADC file), through a temporary file renamed into place. Its path goes to ``mask_path``."""

    def __init__(self, keys: str, output_dir: str | os.PathLike, reference_key: str = ADC,
                 name_key: str = CASE_ID) -> None:
        super().__init__(keys=[keys] if isinstance(keys, str) else keys)
        self.output_dir, self.reference_key, self.name_key = Path(output_dir), reference_key, name_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            reference = sitk.ImageFileReader()
            reference.SetFileName(str(result[self.reference_key]))
            reference.ReadImageInformation()
            mask = _mask_array(result[key])
            if tuple(mask.shape) != tuple(reference.GetSize()):
                raise ValueError(f"mask of shape {mask.shape} is not on the grid of {result[self.reference_key]}")
            image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
            image.SetSpacing(reference.GetSpacing())
            image.SetOrigin(reference.GetOrigin())
            image.SetDirection(reference.GetDirection())
            path = self.output_dir / f"{result[self.name_key]}{IMAGE_SUFFIX}"
            _write_atomic(image, path)
            result[MASK_PATH] = str(path)
        return result


def _write_atomic(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, name, True)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(name, 0o666 & ~mask)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the run


def predict(
    dataset: Sequence[Mapping[Hashable, Any]],
    network: torch.nn.Module,
    inferer: Inferer,
    postprocessing: Callable[[dict], dict],
    device: str | torch.device = "cpu",
) -> list[str]:
    """Predict every case of ``dataset`` (its items preprocessed) and post-process it; the masks written.

    The network sees ``image`` with a batch axis added; ``pred`` receives the probability on the
    network grid, which ``postprocessing`` brings to the native grid, binarises and writes.
    """
    device = torch.device(device)
    network.to(device).eval()
    written = []
    for index in range(len(dataset)):
        item = dict(dataset[index])
        batch = item[IMAGE].as_tensor()[None].to(device)
        with torch.inference_mode():
            probability = inferer(batch, network)[0]
        item["pred"] = MetaTensor(probability.float().cpu())
        result = postprocessing(item)
        volume_ml = float(_mask_array(result["pred"]).sum()) * float(np.prod(item[NATIVE_SPACING])) / 1000.0
        LOG.info("case %s: wrote %s (lesion volume %.2f ml)", item[CASE_ID], result[MASK_PATH], volume_ml)
        written.append(result[MASK_PATH])
    return written
