"""Split presets (stratified, folds10, ecgfix, merl) and ChallengeTask's parity with PTBXLTask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit
from oracles import merl_table

from esi.data import splits
from esi.data.challenge_tasks import ChallengeTask, load_challenge_task
from esi.data.ptbxl import SPLIT_FOLDS, PTBXLTask

# Hand-copied from MERL-ICML2024 (commit 38799b7), finetune/data_split/{icbeb,chapman}/*_{train,val,test}.csv.
MERL_EXCERPT = {
    "cpsc2018": {"train": ["A4898", "A6279", "A2974", "A1670", "A1421"],
                 "val": ["A2600", "A1103", "A1535", "A6135", "A5514"],
                 "test": ["A6729", "A0493", "A5813", "A2588", "A2010"]},
    "csn": {"train": ["JS08246", "JS10387", "JS39951", "JS41783", "JS18088"],
            "val": ["JS44279", "JS05865", "JS35086", "JS42469", "JS17546"],
            "test": ["JS18048", "JS24831", "JS30521", "JS36026", "JS07788"]},
}
FOLD = {"train": 1, "val": 9, "test": 10}


def random_labels(n: int = 600, classes: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.01, 0.4, classes)
    y = (rng.random((n, classes)) < prevalence).astype(np.uint8)
    y[:, 0] = 0
    y[rng.choice(n, 3, replace=False), 0] = 1  # a class with exactly 3 positives
    return y


def reference_stratified(y: np.ndarray, seed: int = 42) -> np.ndarray:
    """iterstrat called directly: test 0.2 over all records, then val 0.125 of the rest, same random_state."""
    x = np.zeros((len(y), 1))
    rest, test = next(MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed).split(x, y))
    train, val = next(MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.125, random_state=seed)
                      .split(x[rest], y[rest]))
    folds = np.zeros(len(y), dtype=np.int64)
    folds[rest[train]], folds[rest[val]], folds[test] = 1, 9, 10
    return folds


def every_class_in_every_split(folds: np.ndarray, y: np.ndarray, min_total: int = 3) -> bool:
    guarded = y.sum(axis=0) >= min_total
    return all((y[folds == code][:, guarded].sum(axis=0) > 0).all() for code in (1, 9, 10))


def test_stratified_matches_direct_iterstrat_before_repair():
    y = random_labels()
    np.testing.assert_array_equal(splits.stratified_folds(y, seed=42, repair=False), reference_stratified(y))


def test_stratified_proportions_and_coverage():
    y = random_labels()
    folds = splits.stratified_folds(y)
    shares = np.array([(folds == code).mean() for code in (1, 9, 10)])
    np.testing.assert_allclose(shares, [0.7, 0.1, 0.2], atol=0.02)
    assert every_class_in_every_split(folds, y)
    # the repair only moves what it must
    assert (folds != reference_stratified(y)).sum() <= 3 * y.shape[1]


def test_repair_fills_empty_splits_deterministically():
    y = np.zeros((20, 3), dtype=np.uint8)
    y[[0, 1, 2, 3], 0] = 1           # class 0: 4 positives, all in train
    y[[4, 5], 1] = 1                 # class 1: 2 positives: not guarded
    y[[0, 6, 7, 8, 9], 2] = 1        # class 2: 5 positives, all in train
    folds = np.array([1] * 14 + [9] * 2 + [10] * 4, dtype=np.int64)
    repaired = splits.repair_splits(folds, y)
    assert every_class_in_every_split(repaired, y)
    np.testing.assert_array_equal(repaired, splits.repair_splits(folds, y))
    assert set(repaired[[4, 5]]) == {1}            # unguarded class untouched
    moved = np.flatnonzero(repaired != folds)
    assert len(moved) == 4                          # one record per (class, split) gap
    # class 0 (rarest guarded) first: fewest labels, lowest row -> records 1 then 2
    assert repaired[1] == 9 and repaired[2] == 10


def test_folds10_matches_direct_iterstrat():
    y = random_labels(seed=3)
    expected = np.zeros(len(y), dtype=np.int64)
    kfold = MultilabelStratifiedKFold(n_splits=10, shuffle=True, random_state=42)
    for k, (_, test) in enumerate(kfold.split(np.zeros((len(y), 1)), y)):
        expected[test] = k + 1
    folds = splits.kfold_folds(y)
    np.testing.assert_array_equal(folds, expected)
    assert set(folds) == set(range(1, 11))
    assert abs(np.bincount(folds)[1:] - len(y) / 10).max() <= 2
    # not repaired: a class needs ~10 positives (one per fold) to reach every fold, as with Reality Check's >= 10
    guarded = y.sum(axis=0) >= 10
    assert all((y[folds == k][:, guarded].sum(axis=0) > 0).all() for k in range(1, 11))


def test_ecgfix_permutation():
    n = 1003
    perm = np.random.default_rng(774635088).permutation(n)
    folds = splits.ecgfix_folds(n, seed=774635088)
    assert set(folds[perm[:702]]) == {1} and set(folds[perm[702:802]]) == {9} and set(folds[perm[802:]]) == {10}


@pytest.mark.parametrize("preset", ["stratified", "folds10", "ecgfix"])
def test_same_seed_same_split(preset):
    y = random_labels(seed=5)
    names = [f"JS{i:05d}" for i in range(len(y))]
    first = splits.make_folds(preset, y, names, "csn", seed=7)
    np.testing.assert_array_equal(first, splits.make_folds(preset, y, names, "csn", seed=7))
    assert (first != splits.make_folds(preset, y, names, "csn", seed=8)).any()


def test_merl_matches_excerpt():
    for dataset, by_split in MERL_EXCERPT.items():
        names = [name for split in ("train", "val", "test") for name in by_split[split]]
        expected = [FOLD[split] for split in ("train", "val", "test") for _ in by_split[split]]
        assert splits.merl_folds(dataset, names).tolist() == expected
    assert splits.merl_folds("csn", ["JS00002", "A4898"]).tolist()[1] == 0  # CPSC name is not a CSN record
    table = merl_table()
    sizes = table.groupby(["dataset", "split"]).size().to_dict()
    assert sizes == {("cpsc2018", "test"): 1376, ("cpsc2018", "train"): 4950, ("cpsc2018", "val"): 551,
                     ("csn", "test"): 4620, ("csn", "train"): 16546, ("csn", "val"): 1860}
    with pytest.raises(ValueError, match="MERL released splits"):
        splits.merl_folds("georgia", ["E00001"])


def test_merl_order_is_the_tables_row_order_with_absent_records_last():
    rows = [name for split in ("train", "val", "test") for name in MERL_EXCERPT["csn"][split]]  # the CSVs' order
    given = ["JS99999", *reversed(rows), "JS00000"]
    order = splits.merl_order("csn", given)
    assert [given[i] for i in order] == [*rows, "JS99999", "JS00000"]
    assert splits.merl_split_sizes("cpsc2018") == {"train": 4950, "val": 551, "test": 1376}


def cpsc_index(names) -> pd.DataFrame:
    codes = ["426783006", "164889003", "59118001", "270492004", "284470004", "164884008"]
    dx = [codes[i % len(codes)] + (";164909002" if i % 7 == 0 else "") for i in range(len(names))]
    return pd.DataFrame({"record_id": list(names), "dx": dx, "source": "cpsc_2018"})


def test_merl_fraction_draw_picks_merls_own_records():
    """MERL's 1 % / 10 % runs: train_test_split(<its train CSV>, train_size=f, random_state=42), rows in file order."""
    from sklearn.model_selection import train_test_split

    from esi.evaluate.linear_probe import label_fraction_subset

    table = merl_table()
    table = table[table["dataset"] == "cpsc2018"]
    merl_train = table[table["split"] == "train"].reset_index(drop=True)
    names = sorted(table["record"], reverse=True)  # any order in: the task puts MERL's order back
    task = load_challenge_task(cpsc_index(names), "cpsc2018", split="merl", length_policy="merl")
    train = task.split("train")
    assert train.ecg_ids.tolist() == merl_train["record"].tolist()
    for fraction in (0.01, 0.1):
        theirs, _ = train_test_split(merl_train, train_size=fraction, random_state=42)
        ours = train.ecg_ids[label_fraction_subset(train.y, fraction, seed=42, draw="merl")]
        assert ours.tolist() == theirs["record"].tolist()
    row = task.summary.set_index("name").loc["of MERL's training table"]
    assert row["count"] == 4950 and "pick MERL's own records" in row["reason"]

    # One training record missing: the same draw picks other records, and the summary says so.
    fewer = load_challenge_task(cpsc_index([n for n in names if n != merl_train["record"][0]]), "cpsc2018",
                                split="merl", length_policy="merl")
    row = fewer.summary.set_index("name").loc["of MERL's training table"]
    assert row["count"] == 4949 and "other records than MERL's" in row["reason"]


def test_descriptions_say_record_level():
    for preset in splits.PRESETS:
        assert "not patient-disjoint" in splits.split_description(preset)
    with pytest.raises(ValueError, match="unknown split preset"):
        splits.split_description("random")


def task_index(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pool = ["426783006", "164889003", "59118001", "270492004", "284470004"]
    cells = [";".join(c for c, p in zip(pool, [0.4, 0.2, 0.15, 0.1, 0.05]) if rng.random() < p) for _ in range(n)]
    # Real MERL CSN names first, so the merl preset finds some of them.
    names = [name for split in MERL_EXCERPT["csn"].values() for name in split]
    names += [f"JS9{i:04d}" for i in range(n - len(names))]
    return pd.DataFrame({"record_id": names, "dx": cells, "source": "chapman_shaoxing", "age": 50, "sex": "Male"})


def test_challenge_task_merl_preset_reports_unsplit_records():
    task = load_challenge_task(task_index(), "csn", split="merl", min_positives=5)
    assert task.folds[:15].tolist() == [1] * 5 + [9] * 5 + [10] * 5
    assert (task.folds[15:] == 0).all()
    records = task.summary[task.summary["kind"] == "records"].set_index("name")["count"]
    assert records["in no split"] == len(task) - 15
    assert len(task.split("train")) + len(task.split("val")) + len(task.split("test")) == 15


def test_challenge_task_interface_parity_with_ptbxl():
    task = load_challenge_task(task_index(), "csn", split="stratified", min_positives=5)
    assert task.task == "csn" and task.dataset == "csn" and task.split_preset == "stratified"
    assert task.ecg_ids.dtype == object
    ptbxl = PTBXLTask(task="x", root=Path("."), ecg_ids=np.arange(len(task), dtype=np.int64),
                      classes=list(task.classes), y=task.y.copy(), folds=task.folds.copy(),
                      patient_ids=np.arange(len(task), dtype=np.int64),
                      reports=np.array([""] * len(task), dtype=object),
                      meta=pd.DataFrame(index=np.arange(len(task), dtype=np.int64)))
    shared = ("task", "ecg_ids", "classes", "y", "folds", "patient_ids", "meta", "mask", "subset", "split")
    assert all(hasattr(task, name) for name in shared)
    for name in SPLIT_FOLDS:
        np.testing.assert_array_equal(task.mask(name), ptbxl.mask(name))
        ours, theirs = task.split(name), ptbxl.split(name)
        assert isinstance(ours, ChallengeTask) and len(ours) == len(theirs)
        np.testing.assert_array_equal(ours.y, theirs.y)
        np.testing.assert_array_equal(ours.folds, theirs.folds)
        assert ours.classes == theirs.classes
        assert ours.meta.index.tolist() == ours.ecg_ids.tolist()
    mask = np.arange(len(task)) % 3 == 0
    sub = task.subset(mask)
    np.testing.assert_array_equal(sub.y, ptbxl.subset(mask).y)
    assert sub.summary is task.summary and sub.split_preset == task.split_preset
    for bad in (lambda: task.mask("dev"), lambda: ptbxl.mask("dev")):
        with pytest.raises(ValueError, match="unknown split"):
            bad()
    with pytest.raises(ValueError, match="mask must be boolean"):
        task.subset(mask[:-1])


def test_the_ecgfix_preset_uses_ecgfix_seed_per_dataset_unless_given_one():
    from esi.data.splits import ECGFIX_SEEDS, ecgfix_folds, make_folds

    y = np.zeros((50, 1), dtype=np.uint8)
    names = [f"JS{k:05d}" for k in range(50)]
    assert ECGFIX_SEEDS["csn"] == 774635088
    np.testing.assert_array_equal(make_folds("ecgfix", y, names, "csn"), ecgfix_folds(50, 774635088))
    np.testing.assert_array_equal(make_folds("ecgfix", y, names, "cpsc2018"), ecgfix_folds(50, 42))
    np.testing.assert_array_equal(make_folds("ecgfix", y, names, "csn", seed=3), ecgfix_folds(50, 3))
