"""Post-processing chosen on validation cases: threshold, smallest component, empty fallback, the per-case
empty decision, flip TTA.

A fixed threshold of 0.5 and no cleaning is a guess; the challenge scores Dice, MASD and
NSD, and a few false-positive specks cost little Dice but many millimetres of MASD. After
training, every validation case is predicted once per TTA setting, every (threshold,
minimum component, empty fallback, minimum total volume) of :class:`hieseg.config.settings.TuningConfig`
is scored on the native grid with the challenge metrics, and the setting with the best mean rank over the
three metrics wins, as the challenge ranks its entries. An ensemble is tuned on out-of-fold
predictions: each fold's weights predict only the cases that fold held out, and a fold's several networks
(``train.networks_per_fold``) predict them by their mean probability, as inference averages them.

With ``lesion_free_share`` above 0, each validation case's lesion-free copy (:mod:`hieseg.data.healing`)
is predicted and scored too, and the copies make up that share of every mean: the only way a release
without lesion-free cases can show the tuner what a per-case empty decision (``min_total_mm3``) saves. What
it costs, a few validation cases may not show; so after training only decisions under the smallest lesion
among all the cases given to training are tried.

Flip TTA costs five predictions per case, so it is switched on only when the best TTA
setting beats the best plain one in that ranking and adds at least ``tta_min_dice_gain``
mean Dice. With ``try_refinement``, the second stage of :mod:`hieseg.model.refinement` is scored
too, cross-fitted: each half of the validation cases is refined by a refiner fitted on the other
half, so no case is scored by a refiner that saw its label. It replaces the choice only when it
beats it in the ranking; it is then fitted on all the validation cases and saved as
``refinement.json``. The winner (a :class:`~hieseg.config.settings.PostProcessing`) is written into
``config.json``; every candidate's means go to ``tuning.json`` beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from hieseg.config.settings import (
    CONFIG_FILENAME,
    ExperimentConfig,
    PostProcessing,
    TuningConfig,
)
from hieseg.data.healing import heal_case
from hieseg.evaluation.scoring import Reference
from hieseg.inference.boundary import ZadcMap
from hieseg.inference.postprocess import cleaned_mask, empty_below_total, peak_component, redrawn_edges
from hieseg.inference.predictor import Predictor
from hieseg.io.images import MM3_PER_ML, mask_volume_ml, to_xyz_array, write_atomic
from hieseg.io.layout import CaseImages
from hieseg.model.refinement import (
    REFINEMENT_FILENAME,
    RefinementExample,
    Refiner,
    fit_refiner,
    save_refiner,
)
from hieseg.model.weights import load_network

LOG = logging.getLogger(__name__)
TUNING_JSON = "tuning.json"
MetricTriple = tuple[float, float, float]
"""(Dice, MASD mm, NSD) of one case under one setting."""
MIN_REFINEMENT_CASES = 4
"""Cross-fitting the refinement needs two halves of at least two validation cases each."""


@dataclass(frozen=True)
class Candidate:
    """One post-processing setting and its mean scores over the validation cases."""

    settings: PostProcessing
    dice: float
    masd_mm: float
    nsd: float
    lesion_free_empty: float | None = None
    """The share of the lesion-free copies this setting leaves empty; ``None`` when none were scored."""

    def to_dict(self) -> dict[str, object]:
        """The setting's fields, then its scores, in one flat record (as ``tuning.json`` lists candidates)."""
        record: dict[str, object] = {**dataclasses.asdict(self.settings), "dice": self.dice,
                                     "masd_mm": self.masd_mm, "nsd": self.nsd}
        if self.lesion_free_empty is not None:
            record["lesion_free_empty"] = self.lesion_free_empty
        return record


@dataclass(frozen=True)
class TuningResult:
    """The chosen setting, the best plain, with TTA and refined, every candidate scored, and the refiner
    fitted on every validation case when the chosen setting refines."""

    chosen: Candidate
    best_plain: Candidate
    best_tta: Candidate | None
    candidates: list[Candidate]
    case_ids: list[str]
    best_refined: Candidate | None = None
    refiner: Refiner | None = None
    lesion_free_ids: list[str] = dataclasses.field(default_factory=list)
    lesion_free_share: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "chosen": self.chosen.to_dict(),
            "best_plain": self.best_plain.to_dict(),
            "best_tta": None if self.best_tta is None else self.best_tta.to_dict(),
            "best_refined": None if self.best_refined is None else self.best_refined.to_dict(),
            "candidates": [candidate.to_dict() for candidate in self.candidates],
            "case_ids": list(self.case_ids),
            "lesion_free_ids": list(self.lesion_free_ids),
            "lesion_free_share": self.lesion_free_share,
        }


@dataclass(frozen=True)
class HeldOut:
    """Weights (one network, or several that share their training cases and are averaged) and the validation
    cases they never trained on."""

    weights: tuple[Path, ...]
    cases: list[CaseImages]


def tune(config: ExperimentConfig, held_out: Sequence[HeldOut], device: torch.device, progress: bool = True) -> TuningResult:
    """Score every candidate setting on the pooled held-out cases and choose one."""
    settings = config.tuning
    case_ids = [case.files.case_id for part in held_out for case in part.cases]
    if not case_ids:
        raise ValueError("post-processing tuning needs at least one validation case")
    tta_options = (False, True) if settings.try_tta else (False,)
    share = settings.lesion_free_share
    copies: dict[str, CaseImages | None] = {}
    candidates = []
    plain_maps: list[tuple[RefinementExample, CaseImages]] = []
    for tta in tta_options:
        per_case: list[dict[PostProcessing, MetricTriple]] = []
        lesion_free: list[dict[PostProcessing, MetricTriple]] = []
        for part in held_out:
            predictor = Predictor(
                config,
                [load_network(config, weights, device) for weights in part.weights],
                device,
                dataclasses.replace(config.inference, tta_flips=tta, refine=False),
            )
            for case in tqdm(part.cases, desc=f"tuning (TTA {'on' if tta else 'off'})", unit="case",
                             disable=not progress, leave=False):
                probability = predictor.network_probability(case)
                if settings.try_refinement and not tta:
                    plain_maps.append((_example(probability, case), case))
                per_case.append(score_settings(probability, case, settings, tta))
                if share > 0 and case.files.case_id not in copies:
                    copies[case.files.case_id] = lesion_free_copy(case)
                healed = copies.get(case.files.case_id)
                if healed is not None:
                    lesion_free.append(score_settings(predictor.network_probability(healed), healed, settings, tta))
        candidates += mean_candidates(per_case, lesion_free, share)
    refined = refinement_candidates(plain_maps, settings) if settings.try_refinement else []
    candidates += refined
    best_plain = best_candidate([c for c in candidates if not (c.settings.tta_flips or c.settings.refine)])
    tta_candidates = [c for c in candidates if c.settings.tta_flips]
    best_tta = best_candidate(tta_candidates) if tta_candidates else None
    chosen = best_plain
    if (best_tta is not None and best_candidate([best_plain, best_tta]) is best_tta
            and best_tta.dice - best_plain.dice >= settings.tta_min_dice_gain):
        chosen = best_tta
    best_refined = best_candidate(refined) if refined else None
    refiner = None
    if best_refined is not None and best_candidate([chosen, best_refined]) is best_refined:
        chosen = best_refined
        refiner = fit_refiner([example for example, _ in plain_maps], settings.refinement_neighbourhood_mm)
    return TuningResult(chosen=chosen, best_plain=best_plain, best_tta=best_tta, candidates=candidates,
                        case_ids=case_ids, best_refined=best_refined, refiner=refiner,
                        lesion_free_ids=[copy.files.case_id for copy in copies.values() if copy is not None],
                        lesion_free_share=share)


def lesion_free_copy(case: CaseImages) -> CaseImages | None:
    """The case's healed copy, the same at every call (its noise seeded by the case id); ``None``, with a
    warning naming the case, when its lesion leaves no brain to heal it from."""
    try:
        return heal_case(case, seed=zlib.crc32(case.files.case_id.encode()))
    except ValueError as exc:
        LOG.warning("no lesion-free copy tuned on: %s", exc)
        return None


def refinement_candidates(maps: Sequence[tuple[RefinementExample, CaseImages]],
                          settings: TuningConfig) -> list[Candidate]:
    """Every setting's mean scores on cross-fitted refined probabilities (none when too few cases).

    ``maps`` pairs each validation case's plain network probability and arrays (read once) with the case;
    the cases are dealt alternately into two halves, and each half is refined by a refiner fitted on the other.
    """
    if len(maps) < MIN_REFINEMENT_CASES:
        LOG.warning("refinement not tried: cross-fitting needs at least %d validation cases, there are %d",
                    MIN_REFINEMENT_CASES, len(maps))
        return []
    halves = (list(maps[0::2]), list(maps[1::2]))
    per_case: list[dict[PostProcessing, MetricTriple]] = []
    for scored, fitted in ((halves[0], halves[1]), (halves[1], halves[0])):
        try:
            refiner = fit_refiner([example for example, _ in fitted], settings.refinement_neighbourhood_mm)
        except ValueError as exc:
            LOG.warning("refinement not tried: a half of the validation cases cannot fit it (%s)", exc)
            return []
        for example, case in scored:
            refined = refiner.refine(example.probability, example.adc, example.zadc, example.spacing)
            per_case.append(score_settings(refined, case, settings, refine=True))
    return mean_candidates(per_case, [], 0.0)


def candidate_settings(settings: TuningConfig, tta: bool, refine: bool = False) -> list[PostProcessing]:
    """Every (threshold, minimum component, empty fallback, Z_ADC boundary, minimum total) of the grid, smaller
    components and totals first, with ``tta`` and ``refine``."""
    return [PostProcessing(threshold, minimum, fallback, tta, refine, total, boundary)
            for threshold, minimum, fallback, boundary, total in itertools.product(
                settings.thresholds, sorted(settings.min_component_mm3), settings.empty_fallback_probability,
                sorted(settings.zadc_boundary), sorted(settings.min_total_mm3))]


def score_settings(
    probability: np.ndarray, case: CaseImages, settings: TuningConfig, tta: bool = False, refine: bool = False
) -> dict[PostProcessing, MetricTriple]:
    """Challenge scores of one case's probability map (predicted with flip TTA ``tta`` or not, refined or not)
    under every setting.

    Most settings leave the mask of a neighbouring one unchanged (a larger minimum size that removes nothing more,
    a fallback that only acts on empty masks), so each step runs once per distinct input: the threshold and minimum
    component once per pair (:func:`~hieseg.inference.postprocess.cleaned_mask`), the fallback's peak component
    once per fallback probability, the edge redrawing and the surface distances once per distinct mask (known by
    its fingerprint) and Z_ADC boundary; the minimum total (:func:`~hieseg.inference.postprocess.empty_below_total`)
    is the cheap last step. Each setting's scores equal those of
    :func:`~hieseg.inference.postprocess.final_mask` (tested).
    """
    reference = Reference.of_case(case)
    spacing = tuple(case.adc.GetSpacing())
    zadc_map = ZadcMap(reference.zadc, reference.brain) if max(settings.zadc_boundary) > 0 else None
    scores: dict[PostProcessing, MetricTriple] = {}
    scored: dict[tuple[bytes, float] | None, MetricTriple] = {}
    redrawn: dict[tuple[bytes, float], np.ndarray] = {}
    peaks: dict[float, tuple[np.ndarray, bytes]] = {}
    cleaned: _Cleaned | None = None
    for setting in candidate_settings(settings, tta, refine):
        if cleaned is None or not cleaned.serves(setting):
            if cleaned is not None and cleaned.threshold != setting.threshold:
                redrawn = {}  # the threshold is the grid's outer axis: the masks of the last one are done with
            cleaned = _Cleaned.of(probability, spacing, setting)
        mask, digest = cleaned.mask, cleaned.digest
        fallback = setting.empty_fallback_probability
        if fallback > 0.0 and cleaned.empty:  # lesion_mask's rule: an empty mask becomes the peak's component
            if fallback not in peaks:
                peak = peak_component(probability, fallback)
                peaks[fallback] = (peak, _digest(peak))
            mask, digest = peaks[fallback]
        edges = (digest, setting.zadc_boundary)
        if edges not in redrawn:
            redrawn[edges] = redrawn_edges(mask, spacing, setting, zadc_map)
        final = empty_below_total(redrawn[edges], spacing, setting.min_total_mm3)
        key = edges if final is redrawn[edges] else None  # None: emptied by the minimum total
        if key not in scored:
            metrics = reference.score(final)
            scored[key] = (metrics.dice, metrics.masd_mm, metrics.nsd)
        scores[setting] = scored[key]
    return scores


class _Cleaned(NamedTuple):
    """One (threshold, minimum component) pair's mask in :func:`score_settings`, with what its later steps ask of
    it: its fingerprint and whether it is empty."""

    threshold: float
    min_component_mm3: float
    mask: np.ndarray
    digest: bytes
    empty: bool

    @classmethod
    def of(cls, probability: np.ndarray, spacing: tuple[float, ...], setting: PostProcessing) -> _Cleaned:
        """The mask ``setting``'s threshold and minimum component make of ``probability``."""
        mask = cleaned_mask(probability, spacing, setting.threshold, setting.min_component_mm3)
        return cls(setting.threshold, setting.min_component_mm3, mask, _digest(mask), not mask.any())

    def serves(self, setting: PostProcessing) -> bool:
        """Whether ``setting`` thresholds and cleans as this mask was made."""
        return (self.threshold, self.min_component_mm3) == (setting.threshold, setting.min_component_mm3)


def _digest(mask: np.ndarray) -> bytes:
    """A fingerprint of a mask's voxels, standing for it as a key (masks of one case share their shape)."""
    return hashlib.blake2b(np.ascontiguousarray(mask).view(np.uint8).tobytes(), digest_size=16).digest()


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


def apply_tuning(config: ExperimentConfig, model_dir: Path, result: TuningResult) -> ExperimentConfig:
    """``config`` (as training wrote it to ``model_dir``) with the chosen post-processing: written into
    ``config.json``, and the whole measurement into ``tuning.json``."""
    model_dir = Path(model_dir)
    tuned = dataclasses.replace(config, inference=config.inference.with_postprocessing(result.chosen.settings))
    write_atomic(model_dir / TUNING_JSON, lambda path: path.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"))
    if result.refiner is not None:
        save_refiner(result.refiner, model_dir)
    else:
        (model_dir / REFINEMENT_FILENAME).unlink(missing_ok=True)
    write_atomic(model_dir / CONFIG_FILENAME, tuned.save)
    chosen = result.chosen
    LOG.info(
        "post-processing tuned on %d case(s): %s (Dice %.3f, MASD %.2f mm, NSD %.3f)",
        len(result.case_ids), describe(chosen.settings), chosen.dice, chosen.masd_mm, chosen.nsd,
    )
    return tuned


def tune_trained_folder(
    config: ExperimentConfig,
    model_dir: Path,
    runs: Sequence[tuple[Path, Sequence[str]]],
    cases: Sequence[CaseImages],
    device: torch.device,
    progress: bool = True,
) -> TuningResult:
    """Tune a weights folder just trained on ``cases`` (already in memory): ``runs`` pairs each weights file
    with its held-out ids, and the files that held out the same ids are scored by their mean; ``config`` is
    the one training wrote there. The per-case empty decisions tried stay under the smallest lesion of
    ``cases`` (:func:`below_smallest_lesion`)."""
    by_id = {case.files.case_id: case for case in cases}
    shared: dict[tuple[str, ...], list[Path]] = {}
    for weights, ids in runs:
        shared.setdefault(tuple(ids), []).append(Path(weights))
    held_out = [HeldOut(tuple(weights), [by_id[case_id] for case_id in ids]) for ids, weights in shared.items()]
    bounded = dataclasses.replace(config, tuning=below_smallest_lesion(config.tuning, smallest_lesion_mm3(cases)))
    result = tune(bounded, held_out, device, progress)
    apply_tuning(config, model_dir, result)
    return result


def smallest_lesion_mm3(cases: Sequence[CaseImages]) -> float | None:
    """The smallest total lesion volume in mm³ among the cases whose label holds a lesion; ``None`` when none does."""
    totals = [mask_volume_ml(case.label) * MM3_PER_ML for case in cases if case.label is not None]
    lesioned = [total for total in totals if total > 0]
    return min(lesioned) if lesioned else None


def below_smallest_lesion(settings: TuningConfig, smallest_mm3: float | None) -> TuningConfig:
    """``settings`` keeping only the per-case empty decisions (``min_total_mm3``) under ``smallest_mm3``, the
    smallest lesion of the cases given to training; 0 (off) when none is left.

    A decision at or above a lesion total the training labels hold would empty such cases by design, yet a
    validation fold of a few cases may hold no case that small and then cannot show the cost: the tuner would
    choose it for what it saves on the lesion-free copies alone. The bound is the labels' own evidence.
    """
    if smallest_mm3 is None:
        return settings
    kept = tuple(total for total in settings.min_total_mm3 if total < smallest_mm3)
    dropped = sorted(set(settings.min_total_mm3) - set(kept))
    if dropped:
        LOG.info("per-case empty decisions not tried: %s mm3, at or above the smallest labelled lesion (%.1f mm3)",
                 ", ".join(f"{total:g}" for total in dropped), smallest_mm3)
    return dataclasses.replace(settings, min_total_mm3=kept or (0.0,))


def describe(settings: PostProcessing) -> str:
    """A post-processing setting in words, for logs and the command line."""
    return (f"threshold {settings.threshold:g}, min component {settings.min_component_mm3:g} mm3, "
            f"empty fallback {settings.empty_fallback_probability:g}, min total {settings.min_total_mm3:g} mm3, "
            f"Z_ADC boundary {settings.zadc_boundary:g}, flip TTA {'on' if settings.tta_flips else 'off'}, "
            f"refinement {'on' if settings.refine else 'off'}")


def mean_candidates(lesioned: list[dict[PostProcessing, MetricTriple]],
                    lesion_free: list[dict[PostProcessing, MetricTriple]], share: float) -> list[Candidate]:
    """Each setting's mean scores: over the lesioned cases, or, with lesion-free copies, ``1 - share`` of
    their mean and ``share`` of the copies' mean."""
    candidates = []
    for key in lesioned[0]:
        mean = np.mean(np.asarray([scores[key] for scores in lesioned], dtype=float), axis=0)
        empty = None
        if lesion_free:
            free = np.asarray([scores[key] for scores in lesion_free], dtype=float)
            mean = (1.0 - share) * mean + share * free.mean(axis=0)
            empty = float(np.mean(free[:, 0] == 1.0))
        dice, masd, nsd = (float(v) for v in mean)
        candidates.append(Candidate(settings=key, dice=dice, masd_mm=masd, nsd=nsd, lesion_free_empty=empty))
    return candidates


def _example(probability: np.ndarray, case: CaseImages) -> RefinementExample:
    assert case.label is not None
    return RefinementExample(probability=probability, adc=to_xyz_array(case.adc), zadc=to_xyz_array(case.zadc),
                             spacing=case.adc.GetSpacing(), label=to_xyz_array(case.label, np.uint8))
