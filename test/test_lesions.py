"""Lesion-wise scores on hand-made masks: found and missed lesions, 6-connectivity, conspicuous lesions, pooling."""

import numpy as np
import pytest

from hieseg.evaluation.lesions import LesionCounts, lesion_counts, pooled
from hieseg.evaluation.metrics import LESION_WISE, score_case, summarize

SPACING = (1.0, 1.0, 2.0)  # a voxel is 2 mm^3


def masks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth: a 2x2x2 cube (16 mm^3, Z -4), a single voxel (2 mm^3, Z -5) and a 4-voxel bar (8 mm^3, Z -2.5).
    Prediction: one voxel of the cube and a separate 3-voxel false positive."""
    truth = np.zeros((20, 20, 10), dtype=bool)
    pred = np.zeros_like(truth)
    zadc = np.zeros(truth.shape, dtype=np.float32)
    truth[2:4, 2:4, 2:4], zadc[2:4, 2:4, 2:4] = True, -4.0
    truth[10, 10, 5], zadc[10, 10, 5] = True, -5.0
    truth[15, 2:6, 1], zadc[15, 2:6, 1] = True, -2.5
    pred[3, 3, 3] = True
    pred[17, 17, 7:10] = True
    return pred, truth, zadc


def test_found_and_missed_lesions_are_counted_by_component() -> None:
    pred, truth, zadc = masks()
    counts = lesion_counts(pred, truth, SPACING, zadc)
    assert counts == LesionCounts(
        truth_lesions=3, found_lesions=1, pred_lesions=2, true_pred_lesions=1,
        missed_lt10_mm3=2, missed_10_100_mm3=0, missed_100_1000_mm3=0, missed_ge1000_mm3=0,
        conspicuous_lesions=1, conspicuous_found=1,  # the cube only: the single voxel is too small, the bar too light
    )
    assert lesion_counts(pred, truth, SPACING).conspicuous_lesions is None  # no Z_ADC, no conspicuous lesions


def test_voxels_touching_by_an_edge_are_two_lesions() -> None:
    truth = np.zeros((6, 6, 6), dtype=bool)
    truth[1, 1, 1] = truth[2, 2, 1] = True  # share an edge, not a face
    pred = np.zeros_like(truth)
    pred[1, 1, 1] = True
    counts = lesion_counts(pred, truth, (1.0, 1.0, 1.0))
    assert (counts.truth_lesions, counts.found_lesions, counts.missed_lt10_mm3) == (2, 1, 1)


def test_missed_lesions_fall_in_their_volume_bins() -> None:
    truth = np.zeros((40, 40, 40), dtype=bool)
    truth[0:2, 0:2, 0:1] = True  # 4 voxels = 4 mm^3
    truth[10:13, 10:13, 10:12] = True  # 18 mm^3
    truth[20:25, 20:25, 20:25] = True  # 125 mm^3
    truth[28:39, 28:39, 28:39] = True  # 1331 mm^3
    counts = lesion_counts(np.zeros_like(truth), truth, (1.0, 1.0, 1.0))
    assert (counts.missed_lt10_mm3, counts.missed_10_100_mm3, counts.missed_100_1000_mm3,
            counts.missed_ge1000_mm3) == (1, 1, 1, 1)
    assert counts.pred_lesions == 0


def test_pooled_rates_add_the_counts_of_every_case_first() -> None:
    pred, truth, zadc = masks()
    first = vars(lesion_counts(pred, truth, SPACING, zadc))
    second = vars(lesion_counts(truth, truth, SPACING, zadc))  # every lesion found, no false positive
    total = pooled([first, second])
    assert (total["truth_lesions"], total["found_lesions"], total["pred_lesions"], total["true_pred_lesions"]) == (
        6, 4, 5, 4)
    assert total["lesion_sensitivity"] == pytest.approx(4 / 6) and total["lesion_precision"] == pytest.approx(4 / 5)
    assert total["lesion_f1"] == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert total["conspicuous_recall"] == 1.0 and total["missed_lt10_mm3"] == 2
    without_z = pooled([first, vars(lesion_counts(pred, truth, SPACING))])
    assert without_z["conspicuous_lesions"] is None and without_z["conspicuous_recall"] is None
    nothing = pooled([vars(lesion_counts(np.zeros_like(truth), np.zeros_like(truth), SPACING, zadc))])
    assert nothing["lesion_sensitivity"] is None and nothing["lesion_precision"] is None and nothing["lesion_f1"] is None


def test_case_scores_carry_the_counts_and_the_summary_pools_them() -> None:
    pred, truth, zadc = masks()
    brain = np.ones(truth.shape, dtype=bool)
    row = score_case(pred, truth, SPACING, brain=brain, case_id="hand", zadc=zadc)
    assert (row.truth_lesions, row.found_lesions, row.conspicuous_lesions, row.conspicuous_found) == (3, 1, 1, 1)
    summary = summarize([row, score_case(truth, truth, SPACING, brain=brain, case_id="perfect", zadc=zadc)])
    assert summary["overall"][LESION_WISE]["lesion_sensitivity"] == pytest.approx(4 / 6)
    group = summary["by_burden"][row.burden_group]
    assert group[LESION_WISE]["truth_lesions"] == 6
