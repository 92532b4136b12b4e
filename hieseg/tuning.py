"""Post-processing chosen on validation cases: threshold, smallest component, flip TTA.

A fixed threshold of 0.5 and no cleaning is a guess; the challenge scores Dice, MASD and
NSD, and a few false-positive specks cost little Dice but many millimetres of MASD. After
training, every validation case is predicted once per TTA setting, every (threshold,
minimum component) pair of :class:`hieseg.config.TuningConfig` is scored on the native
grid with the challenge metrics, and the pair with the best mean rank over the three
metrics wins, as the challenge ranks its entries. An ensemble is tuned on out-of-fold
predictions: each fold's weights predict only the cases that fold held out.

Flip TTA costs five predictions per case, so it is switched on only when the best TTA
setting beats the best plain one in that ranking and adds at least ``tta_min_dice_gain``
mean Dice. The winner is written into ``config.json``; every candidate's means go to
``tuning.json`` beside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from hieseg.config import CONFIG_FILENAME, ExperimentConfig, TuningConfig
from hieseg.image_io import to_xyz_array, write_atomic
from hieseg.layout import CaseImages, discover_cases, load_case
from hieseg.metrics import score_case
from hieseg.postprocess import final_mask
from hieseg.predictor import Predictor, load_network

LOG = logging.getLogger(__name__)
TUNING_JSON = "tuning.json"
MetricTriple = tuple[float, float, float]
"""(Dice, MASD mm, NSD) of one case under one setting."""
Setting = tuple[float, float, float]
"""(threshold, minimum component mm3, empty-fallback peak probability)."""


@dataclass(frozen=True)
class Candidate:
    """One post-processing setting and its mean scores over the validation cases."""

    threshold: float
    min_component_mm3: float
    empty_fallback_probability: float
    tta_flips: bool
    dice: float
    masd_mm: float
    nsd: float


@dataclass(frozen=True)
class TuningResult:
    """The chosen setting, the best with and without TTA, and every candidate scored."""

    chosen: Candidate
    best_plain: Candidate
    best_tta: Candidate | None
    candidates: list[Candidate]
    case_ids: list[str]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class HeldOut:
    """Weights and the validation cases they never trained on."""

    weights: Path
    cases: list[CaseImages]


def tune(config: ExperimentConfig, held_out: Sequence[HeldOut], device: torch.device, progress: bool = True) -> TuningResult:
    """Score every candidate setting on the pooled held-out cases and choose one."""
    settings = config.tuning
    case_ids = [case.files.case_id for part in held_out for case in part.cases]
    if not case_ids:
        raise ValueError("post-processing tuning needs at least one validation case")
    tta_options = (False, True) if settings.try_tta else (False,)
    candidates = []
    for tta in tta_options:
        per_case: list[dict[Setting, MetricTriple]] = []
        for part in held_out:
            predictor = Predictor(
                config,
                [load_network(config, part.weights, device)],
                device,
                dataclasses.replace(config.inference, tta_flips=tta),
            )
            for case in tqdm(part.cases, desc=f"tuning (TTA {'on' if tta else 'off'})", unit="case",
                             disable=not progress, leave=False):
                per_case.append(score_settings(predictor.probability(case), case, settings))
        candidates += [_mean_candidate(key, tta, [scores[key] for scores in per_case]) for key in per_case[0]]
    best_plain = best_candidate([c for c in candidates if not c.tta_flips])
    tta_candidates = [c for c in candidates if c.tta_flips]
    best_tta = best_candidate(tta_candidates) if tta_candidates else None
    chosen = best_plain
    if best_tta is not None and best_candidate([best_plain, best_tta]) is best_tta:
        if best_tta.dice - best_plain.dice >= settings.tta_min_dice_gain:
            chosen = best_tta
    return TuningResult(chosen=chosen, best_plain=best_plain, best_tta=best_tta, candidates=candidates,
                        case_ids=case_ids)


def score_settings(
    probability: np.ndarray, case: CaseImages, settings: TuningConfig
) -> dict[Setting, MetricTriple]:
    """Challenge scores of one case's probability map under every (threshold, minimum component, fallback).

    Most settings leave the mask of a neighbouring one unchanged (a larger minimum size that
    removes nothing more, a fallback that only acts on empty masks); their scores are then
    reused instead of recomputing the surface distances.
    """
    truth = to_xyz_array(case.label, np.uint8).astype(bool)
    spacing = tuple(case.adc.GetSpacing())
    scores: dict[Setting, MetricTriple] = {}
    known: list[tuple[np.ndarray, MetricTriple]] = []
    for setting in itertools.product(settings.thresholds, sorted(settings.min_component_mm3),
                                     settings.empty_fallback_probability):
        mask = final_mask(probability, spacing, *setting)
        reused = next((triple for seen, triple in known if np.array_equal(seen, mask)), None)
        if reused is None:
            metrics = score_case(mask, truth, spacing)
            reused = (metrics.dice, metrics.masd_mm, metrics.nsd)
            known.append((mask, reused))
        scores[setting] = reused
    return scores


def best_candidate(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate with the best mean rank over Dice (high), MASD (low) and NSD (high); ties go to Dice."""
    ranks = np.mean(
        [
            rankdata([-c.dice for c in candidates]),
            rankdata([c.masd_mm for c in candidates]),
            rankdata([-c.nsd for c in candidates]),
        ],
        axis=0,
    )
    order = np.lexsort(([-c.dice for c in candidates], ranks))
    return candidates[int(order[0])]


def apply_tuning(model_dir: Path, result: TuningResult) -> ExperimentConfig:
    """Write the chosen setting into ``config.json`` and the whole measurement into ``tuning.json``."""
    model_dir = Path(model_dir)
    config = ExperimentConfig.load(model_dir / CONFIG_FILENAME).with_overrides(
        {
            "inference.threshold": result.chosen.threshold,
            "inference.min_component_mm3": result.chosen.min_component_mm3,
            "inference.empty_fallback_probability": result.chosen.empty_fallback_probability,
            "inference.tta_flips": result.chosen.tta_flips,
        }
    )
    write_atomic(model_dir / TUNING_JSON, lambda path: path.write_text(json.dumps(result.to_dict(), indent=2) + "\n"))
    write_atomic(model_dir / CONFIG_FILENAME, config.save)
    LOG.info(
        "post-processing tuned on %d case(s): threshold %g, min component %g mm3, empty fallback %g, "
        "flip TTA %s (Dice %.3f, MASD %.2f mm, NSD %.3f)",
        len(result.case_ids), result.chosen.threshold, result.chosen.min_component_mm3,
        result.chosen.empty_fallback_probability,
        "on" if result.chosen.tta_flips else "off", result.chosen.dice, result.chosen.masd_mm, result.chosen.nsd,
    )
    return config


def tune_trained_folder(
    data_root: Path,
    model_dir: Path,
    runs: Sequence[tuple[Path, Sequence[str]]],
    device: torch.device,
    progress: bool = True,
) -> TuningResult:
    """Tune a weights folder just trained from ``data_root``: ``runs`` pairs each weights file with its held-out ids."""
    files = {f.case_id: f for f in discover_cases(data_root)}
    config = ExperimentConfig.load(Path(model_dir) / CONFIG_FILENAME)
    held_out = [HeldOut(weights, [load_case(files[case_id]) for case_id in ids]) for weights, ids in runs]
    result = tune(config, held_out, device, progress)
    apply_tuning(model_dir, result)
    return result


def _mean_candidate(key: Setting, tta: bool, scores: list[MetricTriple]) -> Candidate:
    dice, masd, nsd = (float(v) for v in np.mean(np.asarray(scores, dtype=float), axis=0))
    return Candidate(threshold=key[0], min_component_mm3=key[1], empty_fallback_probability=key[2], tta_flips=tta,
                     dice=dice, masd_mm=masd, nsd=nsd)
