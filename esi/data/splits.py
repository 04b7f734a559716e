"""Split presets for datasets without official folds (CPSC2018, CSN, other Challenge sources).

Every preset returns one int fold code per record in the PTB-XL convention, so `esi.data.ptbxl.SPLIT_FOLDS`
(train = folds 1-8, validation = 9, test = 10) selects the splits of any task:

- `stratified`: multilabel-stratified 70/10/20 by record (iterstrat). Order of operations: one
  `MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)` over all records gives test vs
  the rest; a second one with `test_size=0.125` (= 0.1 / 0.8) and the same `random_state` over the rest gives
  validation vs train. Then `repair_splits` makes every class with >= 3 positives have a positive in each split.
  Train records get fold 1, validation 9, test 10. (ecg-fix's paper calls its split multilabel-stratified, but its
  public code, benchmark/preprocess/format_dataset.py of zackeberger/ecg-fix, draws a seeded permutation instead:
  that is the `ecgfix` preset below.)
- `folds10`: `MultilabelStratifiedKFold(n_splits=10, shuffle=True, random_state=seed)`; the k-th test fold
  (k = 0..9) becomes fold k + 1, so the Reality Check benchmark's folds 0-7 / 8 / 9 are our 1-8 / 9 / 10. Not
  repaired: in practice stratification spreads a class with >= 10 positives (Reality Check's threshold) over
  all ten folds.
- `ecgfix`: ecg-fix's code: `np.random.default_rng(seed).permutation(n)`, the first int(0.7 n) positions train,
  the next up to int(0.8 n) validation, the rest test, over the records in the order given. It reproduces ecg-fix
  only for the same records in the same order (ecg-fix: sorted record paths, after its filters) and its seeds:
  42 for CPSC2018, 774635088 for CSN (a seed it found by search so that every label has a positive in every split).
  `esi.data.challenge_tasks.load_challenge_task` applies ecg-fix's filters and vocabulary under this preset, so
  that n and the order are its own.
- `merl`: MERL's released assignment (cheliu-computation/MERL-ICML2024, finetune/data_split/{icbeb,chapman}),
  shipped as `merl_splits.csv.gz` (in the tables' row order), looked up by record name; records absent from MERL's
  tables get fold 0 (in no split) and the caller must report them (`ChallengeTask.summary` counts them).
  `merl_order` puts records in the tables' row order: MERL draws its 1 % and 10 % training subsets with
  `train_test_split(train_table, train_size=f, random_state=42)`, so the same draw over the same rows in the
  same order picks the same records.

None of these splits is patient-disjoint: CPSC2018 and the Challenge/CSN records carry no patient id, so records of
one patient may fall into different splits (record-level splits).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

PRESETS: tuple[str, ...] = ("stratified", "folds10", "ecgfix", "merl")
TRAIN_FOLD, VAL_FOLD, TEST_FOLD, NO_FOLD = 1, 9, 10, 0
MERL_TABLE_PATH = Path(__file__).with_name("merl_splits.csv.gz")
MERL_DATASETS: tuple[str, ...] = ("cpsc2018", "csn")
_SPLIT_FOLD = {"train": TRAIN_FOLD, "val": VAL_FOLD, "test": TEST_FOLD}

_DESCRIPTIONS = {
    "stratified": "multilabel-stratified 70/10/20 by record (iterstrat MultilabelStratifiedShuffleSplit: test 0.2, "
                  "then val 0.125 of the rest, random_state=seed), repaired so that every class with >= 3 positives "
                  "has a positive in each split; record-level, not patient-disjoint (no patient ids)",
    "folds10": "10 multilabel-stratified folds by record (iterstrat MultilabelStratifiedKFold, shuffle=True, "
               "random_state=seed): folds 1-8 train, 9 val, 10 test (Reality Check's 0-7/8/9); record-level, not "
               "patient-disjoint (no patient ids)",
    "ecgfix": "ecg-fix's seeded permutation 70/10/20 of the records in the given order (numpy default_rng(seed)); "
              "not stratified; record-level, not patient-disjoint (no patient ids)",
    "merl": "MERL's released record -> split tables (MERL-ICML2024 finetune/data_split: train_test_split 0.2 then "
            "0.1, random_state=42, not stratified); records absent from them are in no split; record-level, not "
            "patient-disjoint (no patient ids)",
}


# The results' `split` column: the preset, its proportions, and that it is record-level.
SPLIT_LABELS = {"stratified": "stratified_70/10/20_records", "folds10": "folds10_1-8/9/10_records",
                "ecgfix": "ecgfix_70/10/20_records", "merl": "merl_tables_records"}


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown split preset {preset!r}; expected one of: {', '.join(PRESETS)}")


def split_description(preset: str) -> str:
    """One sentence saying how `preset` splits and that it is record-level, not patient-disjoint."""
    _check_preset(preset)
    return _DESCRIPTIONS[preset]


def _labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"labels must be a 2-d (records, classes) array, got shape {y.shape}")
    return (y > 0).astype(np.uint8)


def _split_counts(folds: np.ndarray, y: np.ndarray) -> dict[int, np.ndarray]:
    return {code: y[folds == code].sum(axis=0) for code in (TRAIN_FOLD, VAL_FOLD, TEST_FOLD)}


def _movable(record: int, donor: int, folds: np.ndarray, y: np.ndarray, guarded: np.ndarray) -> bool:
    # A record may leave its split only if every guarded class it carries keeps a positive there.
    carried = guarded & (y[record] == 1)
    remaining = y[folds == donor][:, carried].sum(axis=0) - 1
    return bool((remaining >= 1).all())


def _pick_record(cls: int, donor: int, folds: np.ndarray, y: np.ndarray, guarded: np.ndarray) -> int | None:
    # Fewest labels first (moving it disturbs the other classes least), then lowest row: deterministic.
    candidates = np.flatnonzero((folds == donor) & (y[:, cls] == 1))
    order = sorted(candidates, key=lambda row: (int(y[row].sum()), int(row)))
    for row in order:
        if _movable(int(row), donor, folds, y, guarded):
            return int(row)
    return None


def repair_splits(folds: np.ndarray, y: np.ndarray, min_total: int = 3) -> np.ndarray:
    """Move records so that every class with >= `min_total` positives has a positive in train, val and test.

    Classes are visited from the rarest up (ties: column order); for each split (train, val, test) lacking a
    positive of the class, one record carrying it moves there from the split holding most of its positives (ties:
    train, val, test); the record chosen is the one with the fewest labels (ties: lowest row) whose move leaves
    every guarded class a positive in the split it leaves. A class no record can be moved for is left as it is.

    Args:
        folds: fold codes (1 train, 9 val, 10 test; other codes are left alone), one per record.
        y: (records, classes) multi-hot labels.
        min_total: classes with at least this many positives are guarded; default 3 (one per split).

    Returns:
        A repaired copy of `folds`.
    """
    y = _labels(y)
    folds = np.asarray(folds, dtype=np.int64).copy()
    guarded = y.sum(axis=0) >= min_total
    for cls in sorted(np.flatnonzero(guarded), key=lambda j: (int(y[:, j].sum()), int(j))):
        for target in (TRAIN_FOLD, VAL_FOLD, TEST_FOLD):
            counts = _split_counts(folds, y)
            if counts[target][cls] > 0:
                continue
            donor = max((TRAIN_FOLD, VAL_FOLD, TEST_FOLD), key=lambda code: (counts[code][cls], -code))
            record = _pick_record(int(cls), donor, folds, y, guarded)
            if record is not None:
                folds[record] = target
    return folds


def stratified_folds(y: np.ndarray, seed: int = 42, repair: bool = True) -> np.ndarray:
    """The `stratified` preset: iterstrat 70/10/20 (test first, then validation), then `repair_splits`.

    Args:
        y: (records, classes) multi-hot labels.
        seed: random_state of both shuffle splits; default 42.
        repair: apply `repair_splits` (min_total 3); default True.

    Returns:
        int64 fold codes: 1 train, 9 validation, 10 test.
    """
    y = _labels(y)
    n = len(y)
    if n < 10:
        raise ValueError(f"a 70/10/20 split needs at least 10 records, got {n}")
    placeholder = np.zeros((n, 1))
    first = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    rest, test = next(first.split(placeholder, y))
    # 0.125 of the remaining 80 % is 10 % of all records.
    second = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.125, random_state=seed)
    train_in_rest, val_in_rest = next(second.split(placeholder[rest], y[rest]))
    folds = np.full(n, TRAIN_FOLD, dtype=np.int64)
    folds[rest[val_in_rest]] = VAL_FOLD
    folds[test] = TEST_FOLD
    return repair_splits(folds, y) if repair else folds


def kfold_folds(y: np.ndarray, seed: int = 42, n_splits: int = 10) -> np.ndarray:
    """The `folds10` preset: MultilabelStratifiedKFold(n_splits, shuffle=True, random_state=seed) test folds.

    Args:
        y: (records, classes) multi-hot labels.
        seed: random_state; default 42.
        n_splits: number of folds; default 10 (then folds 1-8 train, 9 val, 10 test).

    Returns:
        int64 fold codes 1..n_splits (the k-th test fold of the splitter is fold k + 1).
    """
    y = _labels(y)
    if len(y) < n_splits:
        raise ValueError(f"{n_splits} folds need at least {n_splits} records, got {len(y)}")
    folds = np.zeros(len(y), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
        folds[test] = k + 1
    return folds


# The seeds ecg-fix's format_dataset.py splits with (the CSN one found by a search for a split with a positive of
# every label in every part); the `ecgfix` preset's default for these datasets.
ECGFIX_SEEDS = {"cpsc2018": 42, "csn": 774635088}


def ecgfix_folds(n: int, seed: int = 42) -> np.ndarray:
    """The `ecgfix` preset: ecg-fix's seeded permutation, first int(0.7 n) train, up to int(0.8 n) val, rest test.

    Args:
        n: number of records (in the order they are given).
        seed: numpy `default_rng` seed; default 42 (ecg-fix: 42 for CPSC2018, 774635088 for CSN).

    Returns:
        int64 fold codes: 1 train, 9 validation, 10 test.
    """
    permutation = np.random.default_rng(seed).permutation(n)
    train_end, val_end = int(0.7 * n), int(0.8 * n)
    folds = np.full(n, TEST_FOLD, dtype=np.int64)
    folds[permutation[:train_end]] = TRAIN_FOLD
    folds[permutation[train_end:val_end]] = VAL_FOLD
    return folds


@functools.lru_cache(maxsize=1)
def _merl_table() -> pd.DataFrame:
    return pd.read_csv(MERL_TABLE_PATH, comment="#", dtype=str)


def _merl_rows(dataset: str) -> pd.DataFrame:
    """The rows of MERL's table for `dataset`, in the tables' order (index 0, 1, ...)."""
    if dataset not in MERL_DATASETS:
        raise ValueError(f"MERL released splits for {', '.join(MERL_DATASETS)} only, not {dataset!r}")
    table = _merl_table()
    return table[table["dataset"] == dataset].reset_index(drop=True)


def merl_folds(dataset: str, record_names: Sequence[str]) -> np.ndarray:
    """The `merl` preset: MERL's split of each record, looked up by record name.

    Args:
        dataset: "cpsc2018" (MERL's icbeb tables) or "csn" (its chapman tables).
        record_names: record names as MERL's tables spell them ("A0001", "JS00001").

    Returns:
        int64 fold codes: 1 train, 9 validation, 10 test, 0 for a record MERL's tables do not hold.
    """
    table = _merl_rows(dataset)
    fold_of = dict(zip(table["record"], table["split"].map(_SPLIT_FOLD)))
    return np.array([fold_of.get(str(name), NO_FOLD) for name in record_names], dtype=np.int64)


def merl_order(dataset: str, record_names: Sequence[str]) -> np.ndarray:
    """Indices that put `record_names` in the row order of MERL's tables (train, then val, then test, each as
    MERL's CSV lists it); records the tables do not hold go last, in the order given.

    Args:
        dataset: "cpsc2018" or "csn".
        record_names: record names as MERL's tables spell them.
    """
    table = _merl_rows(dataset)
    row_of = dict(zip(table["record"], table.index))
    positions = np.array([row_of.get(str(name), len(table)) for name in record_names], dtype=np.int64)
    return np.argsort(positions, kind="stable")


def merl_split_sizes(dataset: str) -> dict[str, int]:
    """{"train", "val", "test"} -> number of records in MERL's table of `dataset`."""
    counts = _merl_rows(dataset)["split"].value_counts()
    return {split: int(counts.get(split, 0)) for split in _SPLIT_FOLD}


def make_folds(preset: str, y: np.ndarray, record_names: Sequence[str], dataset: str,
               seed: int | None = None) -> np.ndarray:
    """Fold codes of one preset (see the module doc), one per record.

    Args:
        preset: "stratified", "folds10", "ecgfix" or "merl".
        y: (records, classes) multi-hot labels (not used by `ecgfix` and `merl`).
        record_names: the record names, same order as `y` (used by `merl`).
        dataset: "cpsc2018", "csn" or a source name (used by `merl`).
        seed: seed of the random presets; None: 42, or for `ecgfix` the seed ecg-fix used for the dataset
            (`ECGFIX_SEEDS`: 774635088 for CSN).

    Returns:
        int64 fold codes in the PTB-XL convention (0: in no split, `merl` only).
    """
    _check_preset(preset)
    if seed is None:
        seed = ECGFIX_SEEDS.get(dataset, 42) if preset == "ecgfix" else 42
    if len(record_names) != len(y):
        raise ValueError(f"{len(record_names)} record names for {len(y)} label rows")
    if preset == "stratified":
        return stratified_folds(y, seed=seed)
    if preset == "folds10":
        return kfold_folds(y, seed=seed)
    if preset == "ecgfix":
        return ecgfix_folds(len(y), seed=seed)
    return merl_folds(dataset, record_names)
