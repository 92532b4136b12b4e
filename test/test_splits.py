import pytest

from hieseg.data.burden import burden_group
from hieseg.data.splits import stratified_folds, train_validation_split

IDS = [f"C{i:02d}" for i in range(20)]
BURDENS = [0.001] * 10 + [0.02] * 5 + [0.2] * 5


def test_folds_partition_the_cases_and_balance_burden_groups() -> None:
    folds = stratified_folds(IDS, BURDENS, folds=5, seed=1)
    assert sorted(sum(folds, [])) == sorted(IDS)
    burden_of = dict(zip(IDS, BURDENS))
    for fold in folds:
        groups = [burden_group(burden_of[c]) for c in fold]
        assert groups.count("<1%") == 2 and groups.count("1-5%") == 1 and groups.count(">5%") == 1


def test_same_seed_same_folds_other_seed_other_folds() -> None:
    assert stratified_folds(IDS, BURDENS, 5, seed=7) == stratified_folds(IDS, BURDENS, 5, seed=7)
    assert stratified_folds(IDS, BURDENS, 5, seed=7) != stratified_folds(IDS, BURDENS, 5, seed=8)


def test_explicit_validation_list() -> None:
    training, validation = train_validation_split(IDS, BURDENS, folds=5, fold=0, seed=0, validation_ids=["C03", "C04"])
    assert validation == ["C03", "C04"]
    assert set(training) == set(IDS) - {"C03", "C04"}
    with pytest.raises(ValueError, match="C99"):
        train_validation_split(IDS, BURDENS, folds=5, fold=0, seed=0, validation_ids=["C99"])


def test_bad_fold_numbers() -> None:
    with pytest.raises(ValueError, match="fold must be in"):
        train_validation_split(IDS, BURDENS, folds=5, fold=5, seed=0)
    with pytest.raises(ValueError, match=r"cannot split 3 cases into 5 folds \(--folds 5\); give --folds 3 or fewer"):
        stratified_folds(IDS[:3], BURDENS[:3], folds=5, seed=0)
    with pytest.raises(ValueError, match="cannot split 1 cases into 2 folds .*; at least 2 cases are needed"):
        stratified_folds(IDS[:1], BURDENS[:1], folds=2, seed=0)


def test_lesion_free_cases_are_spread_over_the_folds() -> None:
    ids = [f"F{i:02d}" for i in range(25)]
    burdens = [0.0] * 5 + [0.001] * 20
    for seed in range(20):
        folds = stratified_folds(ids, burdens, folds=5, seed=seed)
        assert [sum(1 for c in fold if c < "F05") for fold in folds] == [1] * 5
