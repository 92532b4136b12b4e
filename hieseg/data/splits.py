"""Seeded k-fold splits stratified by lesion burden, or an explicit validation list."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hieseg.data.burden import BURDEN_GROUPS, burden_group
from hieseg.errors import ConfigError, DatasetError

LESION_FREE = "lesion-free"
"""Stratum of cases with an empty label, dealt apart from the "<1%" group they would otherwise join."""


def stratum(burden: float) -> str:
    """The stratum a case is dealt from: lesion-free, or its burden group."""
    return LESION_FREE if burden == 0 else burden_group(burden)


def stratified_folds(case_ids: Sequence[str], burdens: Sequence[float], folds: int, seed: int) -> list[list[str]]:
    """Deal each stratum's cases (lesion-free, then the challenge's <1%, 1-5%, >5% groups), shuffled with ``seed``, round-robin into ``folds`` folds.

    Every fold thus receives a near-equal share of small, medium and large lesion cases, and
    of lesion-free ones: a validation fold without any would let post-processing tuning
    reward marking a lesion in every brain (the empty-mask fallback) at no cost.
    The same seed always yields the same folds.
    """
    if folds < 2:
        raise ConfigError(f"need at least 2 folds, got {folds}")
    if len(case_ids) < folds:
        fewer = f"give --folds {len(case_ids)} or fewer" if len(case_ids) >= 2 else "at least 2 cases are needed"
        raise DatasetError(f"cannot split {len(case_ids)} cases into {folds} folds (--folds {folds}); {fewer}")
    rng = random.Random(seed)
    assignment: list[list[str]] = [[] for _ in range(folds)]
    offset = 0
    for group in (LESION_FREE, *BURDEN_GROUPS):
        members = sorted(cid for cid, burden in zip(case_ids, burdens) if stratum(burden) == group)
        rng.shuffle(members)
        for index, case_id in enumerate(members):
            assignment[(offset + index) % folds].append(case_id)
        offset += len(members)
    return [sorted(fold) for fold in assignment]


def train_validation_split(
    case_ids: Sequence[str],
    burdens: Sequence[float],
    *,
    folds: int,
    fold: int,
    seed: int,
    validation_ids: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Training and validation case ids: fold ``fold`` of a stratified split, or the given list."""
    if validation_ids:
        unknown = sorted(set(validation_ids) - set(case_ids))
        if unknown:
            raise DatasetError(f"validation case(s) not in the data folder: {', '.join(unknown)}")
        validation = sorted(set(validation_ids))
    else:
        if not 0 <= fold < folds:
            raise ConfigError(f"fold must be in [0, {folds - 1}], got {fold}")
        validation = stratified_folds(case_ids, burdens, folds, seed)[fold]
    training = sorted(set(case_ids) - set(validation))
    if not training:
        raise DatasetError("no training cases left after removing the validation cases")
    return training, validation
