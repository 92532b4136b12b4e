"""Whole-case prediction: native images in, native-grid lesion probability and mask out.

The same code serves validation during training and the challenge container, so what is
scored while training is exactly what is submitted.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, Spacingd

from hieseg.config.settings import ExperimentConfig, InferenceConfig
from hieseg.data.resampling import invert_resampling_on_support
from hieseg.data.transforms import (
    IMAGE,
    case_to_dict,
    check_network_grid,
    inference_transforms,
)
from hieseg.errors import ModelError
from hieseg.inference.boundary import ZadcMap
from hieseg.inference.postprocess import final_mask
from hieseg.io.brain import brain_of
from hieseg.io.images import from_xyz_array, to_xyz_array, write_image_atomic
from hieseg.io.layout import CaseImages
from hieseg.model.refinement import Refiner, require_refiner
from hieseg.model.weights import ModelBundle


class Predictor:
    """Predicts lesion masks for whole cases with an ensemble of networks."""

    def __init__(
        self,
        config: ExperimentConfig,
        networks: list[torch.nn.Module],
        device: torch.device,
        settings: InferenceConfig | None = None,
        refiner: Refiner | None = None,
    ) -> None:
        self.config = config
        self.networks = networks
        self.device = device
        self.settings = settings or config.inference
        if self.settings.refine and refiner is None:
            raise ModelError("inference.refine is true but no refinement stage was given (refinement.json)")
        self.refiner = refiner
        self.transforms = inference_transforms(config)
        steps = list(self.transforms.transforms)
        resampling = [index for index, step in enumerate(steps) if isinstance(step, Spacingd)]
        if len(resampling) != 1:
            raise ValueError("the inference transforms must hold exactly one resampling step (Spacingd)")
        self._after_resampling = Compose(steps[resampling[0] + 1:])

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, device: torch.device, **overrides: object) -> Predictor:
        """A predictor for a loaded weights folder, with inference settings optionally overridden."""
        settings = dataclasses.replace(bundle.config.inference, **overrides)
        if settings.refine:
            require_refiner(bundle.refiner, bundle.weight_files[0].parent)
        return cls(bundle.config, bundle.networks, device, settings, bundle.refiner)

    def probability(self, case: CaseImages) -> np.ndarray:
        """Lesion probability on the case's native grid, axes (x, y, z), 0 outside the brain (ADC > 0):
        the networks', refined when ``settings.refine`` is on."""
        probability = self.network_probability(case)
        if not self.settings.refine:
            return probability
        assert self.refiner is not None
        return self.refiner.refine(probability, to_xyz_array(case.adc), to_xyz_array(case.zadc),
                                   case.adc.GetSpacing())

    def network_probability(self, case: CaseImages) -> np.ndarray:
        """The networks' lesion probability on the native grid, before any refinement."""
        network_input = self.preprocess(case)
        return self.to_native(self.predict(network_input), network_input) * brain_of(case.adc)

    def preprocess(self, case: CaseImages) -> MetaTensor:
        """The resampled, normalised, brain-cropped 2-channel input, carrying its inversion record."""
        check_network_grid(case.files.adc, case.adc, self.config.preprocess.target_spacing)
        return self.transforms(case_to_dict(case))[IMAGE]

    def predict(self, network_input: MetaTensor) -> torch.Tensor:
        """Lesion probability (1, X, Y, Z) on the network's grid (CPU or the predictor's device)."""
        batch = network_input.as_tensor()[None].to(self.device)
        with torch.inference_mode():
            return self._ensemble_probability(batch)[0]

    def to_native(self, probability: torch.Tensor, network_input: MetaTensor) -> np.ndarray:
        """Bring a network-grid probability back to the native grid: undo the crop, then the resampling.

        Undoing the crop zero-pads the probability to the resampled grid; undoing the resampling
        is done by :func:`invert_resampling_on_support`, which interpolates only the native box
        that the brain crop covers, where MONAI's inverse would interpolate the whole native grid.
        The record is copied because MONAI's inverse consumes it, so the input can be inverted again.
        """
        tracked = MetaTensor(
            probability.float().cpu(),
            meta=network_input.meta,
            applied_operations=copy.deepcopy(network_input.applied_operations),
        )
        resampled = self._after_resampling.inverse({IMAGE: tracked})[IMAGE]
        return invert_resampling_on_support(resampled)[0].numpy()

    def mask(self, case: CaseImages) -> np.ndarray:
        """Binary uint8 lesion mask on the native grid, axes (x, y, z)."""
        settings = self.settings.postprocessing
        return final_mask(self.probability(case), case.adc.GetSpacing(), settings,
                          ZadcMap.if_needed(case, settings.zadc_boundary))

    def mask_image(self, case: CaseImages) -> sitk.Image:
        """The mask as an image with exactly the ADC's size, spacing, origin and direction."""
        return from_xyz_array(self.mask(case), case.adc)

    def _ensemble_probability(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid probability over networks and (optionally) flips of the spatial axes."""
        flips: list[tuple[int, ...]] = [()]
        if self.settings.tta_flips:
            flips += [(2,), (3,), (4,), (2, 3)]
        total = torch.zeros_like(batch[:, :1], dtype=torch.float32)
        for network in self.networks:
            for axes in flips:
                flipped = torch.flip(batch, axes) if axes else batch
                logits = self._sliding_window(network, flipped)
                probability = torch.sigmoid(logits.float())
                total += torch.flip(probability, axes) if axes else probability
        return total / (len(self.networks) * len(flips))

    def _sliding_window(self, network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        use_amp = self.settings.amp and self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
        with autocast:
            return sliding_window_inference(
                batch,
                roi_size=self.settings.roi_size,
                sw_batch_size=self.settings.sw_batch_size,
                predictor=network,
                overlap=self.settings.overlap,
                mode=self.settings.blend_mode,
            )


def segment_case(predictor: Predictor, case: CaseImages, out_path: Path) -> sitk.Image:
    """Predict one case's mask and write it, atomically, to ``out_path``; the mask is returned."""
    mask = predictor.mask_image(case)
    write_image_atomic(mask, out_path)
    return mask
