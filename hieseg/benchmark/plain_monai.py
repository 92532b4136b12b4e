"""The benchmark's baseline predictor: MONAI's plain sliding window at its defaults.

It shares the project's weights, reading, resampling, normalisation, inversion and
post-processing, and differs only in inference strategy, so a timing against it measures that
strategy: the whole resampled, normalised volume (or, with ``brain_crop``, exactly the
project's brain-cropped input) through ``monai.inferers.sliding_window_inference`` with
roi = the training patch, ``sw_batch_size=1``, ``overlap=0.25``, ``mode="constant"``, under
``torch.no_grad()``; the networks' sigmoids are averaged, without test-time flips; the
probability goes back to the native grid by MONAI's own inverse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose

from hieseg.config.settings import ExperimentConfig, InferenceConfig
from hieseg.data.transforms import (
    IMAGE,
    case_to_dict,
    inference_transforms,
    invert_to_native,
    preprocess_transforms,
)
from hieseg.io.layout import CaseImages

BASELINE_SW_BATCH_SIZE = 1
BASELINE_OVERLAP = 0.25
BASELINE_BLEND_MODE = "constant"


class BaselinePredictor:
    """MONAI's plain sliding window at its defaults, on the whole resampled, normalised volume,
    or (``brain_crop``) on exactly the project's brain-cropped input.

    It has the stages of :class:`hieseg.inference.predictor.Predictor` that the timing harness times
    (``preprocess``, ``predict``, ``to_native``) and the same ``settings`` attribute, so the
    post-processing is the library's (:func:`hieseg.inference.postprocess.final_mask`) for both.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        networks: list[torch.nn.Module],
        device: torch.device,
        settings: InferenceConfig,
        brain_crop: bool,
    ) -> None:
        self.config = config
        self.networks = networks
        self.device = device
        self.settings = settings
        self.brain_crop = brain_crop
        self.transforms = (
            inference_transforms(config) if brain_crop
            else Compose(preprocess_transforms(config.preprocess, with_label=False))
        )

    def preprocess(self, case: CaseImages) -> MetaTensor:
        """Resampled and normalised exactly like the project's input, cropped to the brain or not."""
        return self.transforms(case_to_dict(case))[IMAGE]

    def predict(self, network_input: MetaTensor) -> torch.Tensor:
        """Mean sigmoid over the networks, each by a default ``sliding_window_inference``."""
        batch = network_input.as_tensor()[None].to(self.device)
        total = torch.zeros_like(batch[:, :1])
        with torch.no_grad():
            for network in self.networks:
                logits = sliding_window_inference(
                    batch,
                    roi_size=self.config.train.patch_size,
                    sw_batch_size=BASELINE_SW_BATCH_SIZE,
                    predictor=network,
                    overlap=BASELINE_OVERLAP,
                    mode=BASELINE_BLEND_MODE,
                )
                total += torch.sigmoid(logits.float())
        return (total / len(self.networks))[0]

    def to_native(self, probability: torch.Tensor, network_input: MetaTensor) -> np.ndarray:
        """Undo the crop and the resampling with MONAI's own inverse."""
        return invert_to_native(probability, network_input, self.transforms)[0].numpy()

    def report_settings(self) -> dict[str, Any]:
        """The baseline's sliding-window parameters and the post-processing it shares, for the report."""
        return {
            "roi_size": list(self.config.train.patch_size),
            "sw_batch_size": BASELINE_SW_BATCH_SIZE,
            "overlap": BASELINE_OVERLAP,
            "blend_mode": BASELINE_BLEND_MODE,
            "brain_crop": self.brain_crop,
            "threshold": self.settings.threshold,
            "min_component_mm3": self.settings.min_component_mm3,
            "empty_fallback_probability": self.settings.empty_fallback_probability,
            "min_total_mm3": self.settings.min_total_mm3,
            "zadc_boundary": self.settings.zadc_boundary,
        }
