"""Presets that reproduce what they name: ecg-fix's CSN / CPSC2018 records, labels and split, and MERL's released
CSN label columns. Each is checked against a re-implementation written here step by step after the reference code
(zackeberger/ecg-fix benchmark/preprocess/public/{CSN/p_CSN.py,CPSC/p_CPSC.py,format_dataset.py}; MERL-ICML2024
finetune/preprocess.ipynb), which calls none of esi's helpers, and MERL's against its released tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from challenge_fixtures import write_ecg_arrhythmia_tree
from oracles import merl_table

from esi.data import splits
from esi.data.challenge_tasks import (CSN_EXCLUDED_CODES, ECGFIX_EXCLUDED_ACRONYMS, MERL_CSN_COLUMNS,
                                      load_challenge_task, merl_released_labels)
from esi.data.snomed import TABLE_PATH
from esi.evaluate.datasets import ChallengeDataset
from esi.evaluate.workspace import Workspace

FOLD = {"train": 1, "val": 9, "test": 10}
MERL_RELEASED = Path(__file__).with_name("data") / "merl_csn_released_labels.csv.gz"

# ecg-fix p_CSN.py: ZERO_COUNT_LABELS and LESS_THAN_2_COUNT_LABELS, as it writes them.
ECGFIX_ZERO_COUNT = {"2AVB2", "AVNRT", "IDC", "LBBB", "LBBBB", "LVQRSCL", "LVQRSLL", "MI", "MIBW", "MIFW", "MILW",
                     "SAAWR", "WAVN"}
ECGFIX_LESS_THAN_2 = {"3AVB", "ABI"}

# Per-column positives of MERL's released CSN tables (chapman_train + _val + _test.csv, 16,546 + 1,860 + 4,620 rows).
MERL_COLUMN_TOTALS = {
    "AQW": 591, "UW": 58, "SR": 7129, "WPW": 53, "2AVB": 38, "AT": 172, "VB": 916, "ARS": 532, "STTC": 877,
    "SA": 2828, "STE": 418, "VPB": 237, "TWO": 1123, "STTU": 147, "ALS": 921, "APB": 685, "2AVB1": 16, "PRIE": 29,
    "CCR": 141, "CR": 216, "AF": 4753, "AVB": 913, "QTIE": 185, "LBBB": 209, "VEB": 21, "SVT": 613, "RBBB": 533,
    "1AVB": 702, "STDD": 427, "MI": 57, "AFIB": 1413, "TWC": 4645, "PWC": 87, "ERV": 266, "RVH": 29, "LVH": 113,
    "ST": 6338, "JEB": 25}


def condition_names() -> pd.DataFrame:
    """ecg-arrhythmia's ConditionNames_SNOMED-CT.csv as rows (Snomed_CT, Acronym Name) in file order, read from the
    shipped table's csn_acronym column (';'-joined in file order) with pandas alone."""
    table = pd.read_csv(TABLE_PATH, comment="#", dtype=str, keep_default_na=False)
    rows = [(code, acronym) for code, text in zip(table["code"], table["csn_acronym"]) if text
            for acronym in text.split(";")]
    return pd.DataFrame(rows, columns=["Snomed_CT", "Acronym Name"])


def test_condition_names_facts():
    names = condition_names()
    assert len(names) == 63 and names["Snomed_CT"].nunique() == 55 and names["Acronym Name"].is_unique
    lbbb = names.loc[names["Snomed_CT"] == "164909002", "Acronym Name"].tolist()
    assert lbbb == ["LBBB", "LBBBB", "LFBBB"]
    assert names.loc[names["Snomed_CT"] == "164890007", "Acronym Name"].tolist() == ["AF"]   # AF is flutter in CSN


# ------------------------------------------------------------------------------------------------------ ecg-fix

def synthetic_csn_index(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Records in shuffled name order with random #Dx sets from CSN's codes, unknown codes (not in ConditionNames),
    excluded codes, codes whose first acronyms are excluded (LBBB, MI, IDC), rare codes, empty cells, short records."""
    rng = np.random.default_rng(seed)
    codes = condition_names()["Snomed_CT"].unique().tolist()
    common = ["426783006", "164889003", "427084000", "426177001", "164934002", "59118001"]
    unknown = ["999999", "10370003", "733534002"]   # 733534002 (CLBBB) is a Challenge code, not a CSN one
    cells = []
    for _ in range(n):
        chosen = list(rng.choice(common, size=rng.integers(0, 3), replace=False))
        if rng.random() < 0.5:
            chosen.append(str(rng.choice(codes)))
        if rng.random() < 0.06:
            chosen.append(str(rng.choice(unknown)))
        if rng.random() < 0.06:
            chosen.append(str(rng.choice(sorted(CSN_EXCLUDED_CODES))))
        cells.append(",".join(dict.fromkeys(chosen)))
    names = [f"JS{k:05d}" for k in rng.permutation(np.arange(1, n + 1))]
    return pd.DataFrame({"record_id": names, "dx": cells, "source": "ecg_arrhythmia",
                         "n_samples_source": rng.choice([5000, 5000, 5000, 4000, 6000], size=n), "fs_source": 500})


def ecgfix_csn_reference(index: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """ecg-fix's CSN pipeline step by step: (record names in order, split codes, labels, vocabulary)."""
    snomed_codes = condition_names()
    vocab = sorted(set(snomed_codes["Acronym Name"].astype(str).tolist()))
    vocab = [v for v in vocab if v not in ECGFIX_ZERO_COUNT and v not in ECGFIX_LESS_THAN_2]
    class_to_index = {c: i for i, c in enumerate(vocab)}
    codes_classes = {str(code): str(name) for code, name in zip(snomed_codes["Snomed_CT"],
                                                                 snomed_codes["Acronym Name"])}
    rows = []
    for name, dx, n_samples in sorted(zip(index["record_id"], index["dx"], index["n_samples_source"])):
        codes = [c.strip() for c in str(dx).split(",") if c.strip()]
        acronyms = sorted({codes_classes[c] if c in codes_classes else str(c) for c in codes})
        y = np.zeros(len(vocab), dtype=np.uint8)
        missing_codes = []
        for lab in acronyms:
            j = class_to_index.get(lab, None)
            if j is not None:
                y[j] = 1
            else:
                missing_codes.append(lab)
        rows.append({"name": name, "y": y, "missing": len(missing_codes) > 0, "was_padded": n_samples < 5000,
                     "all_zero": int(y.sum()) == 0})
    df = [r for r in rows if not r["missing"]]
    df = [r for r in df if not r["was_padded"]]
    df = [r for r in df if not r["all_zero"]]
    n = len(df)
    perm = np.random.default_rng(seed=774635088).permutation(n)
    train_end, val_end = int(0.7 * n), int(0.8 * n)
    split = np.empty(n, dtype=object)
    split[perm[:train_end]] = "train"
    split[perm[train_end:val_end]] = "val"
    split[perm[val_end:]] = "test"
    return ([r["name"] for r in df], np.array([FOLD[s] for s in split]), np.array([r["y"] for r in df]), vocab)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ecgfix_csn_matches_a_reimplementation_of_its_code(seed):
    index = synthetic_csn_index(seed=seed)
    names, folds, y, vocab = ecgfix_csn_reference(index)
    task = load_challenge_task(index, "csn", split="ecgfix", length_policy="drop_short")
    assert task.labels == "ecgfix"
    assert task.ecg_ids.tolist() == names                 # same records, same order
    np.testing.assert_array_equal(task.folds, folds)      # same permutation, so the same folds
    assert task.class_abbreviations == vocab and len(vocab) == 48   # same label columns
    np.testing.assert_array_equal(task.y, y)
    # every vocabulary column is a code: its last acronym
    names_table = condition_names()
    last = names_table.groupby("Snomed_CT", sort=False)["Acronym Name"].last()
    assert [last[code] for code in task.classes] == vocab
    # no count threshold: min_positives does not change the task (a column with one positive stays)
    other = load_challenge_task(index, "csn", split="ecgfix", length_policy="drop_short", min_positives=50)
    assert other.ecg_ids.tolist() == names and other.classes == task.classes
    assert (task.y.sum(axis=0) < 10).any()   # columns a threshold of 10 would have dropped are kept


def test_ecgfix_csn_keeps_codes_unmerged_and_says_so_in_its_summary():
    index = pd.DataFrame({"record_id": ["JS00002", "JS00001", "JS00003", "JS00004", "JS00005"],
                          "dx": ["17338001", "426783006,27885002", "", "426783006,999999", "164909002,59118001"],
                          "n_samples_source": 5000, "fs_source": 500})
    task = load_challenge_task(index, "csn", split="ecgfix", length_policy="drop_short")
    assert task.ecg_ids.tolist() == ["JS00002", "JS00005"]   # excluded 3AVB, empty, unknown code: dropped
    column = dict(zip(task.class_abbreviations, task.classes))
    assert column["VPB"] == "17338001" and column["LFBBB"] == "164909002" and "427172004" not in task.classes
    assert task.y[0, task.classes.index("17338001")] == 1
    summary = task.summary
    records = summary[summary["kind"] == "records"].set_index("name")["count"]
    assert records["unknown or excluded code"] == 2 and records["no kept class"] == 1 and records["kept"] == 2
    labels = summary[summary["kind"] == "setting"].set_index("name")
    assert labels.loc["labels", "abbreviation"] == "ecgfix" and "no count threshold" in labels.loc["labels", "reason"]


def test_ecgfix_exclusion_lists_remove_exactly_the_excluded_codes():
    names = condition_names()
    assert ECGFIX_EXCLUDED_ACRONYMS == ECGFIX_ZERO_COUNT | ECGFIX_LESS_THAN_2
    last = names.groupby("Snomed_CT", sort=False)["Acronym Name"].last()
    assert set(last[last.isin(ECGFIX_EXCLUDED_ACRONYMS)].index) == set(CSN_EXCLUDED_CODES)


def test_ecgfix_cpsc2018_matches_a_reimplementation_of_its_code():
    # p_CPSC.py: its 9 codes exact (no Challenge merging: 713427006 is not RBBB), other codes only printed;
    # format_dataset.py: drop padded (< 5000 samples), drop all-zero, default_rng(42).permutation(N).
    valid = {"426783006": "NSR", "164889003": "AF", "270492004": "IAVB", "164909002": "LBBB", "59118001": "RBBB",
             "284470004": "PAC", "164884008": "PVC", "429622005": "STD", "164931005": "STE"}
    rng = np.random.default_rng(3)
    pool = list(valid) + ["713427006", "10370003", "999999"]
    n = 300
    cells = [",".join(dict.fromkeys(rng.choice(pool, size=rng.integers(0, 3)).tolist())) for _ in range(n)]
    names = [f"A{k:04d}" for k in rng.permutation(np.arange(1, n + 1))]
    index = pd.DataFrame({"record_id": names, "dx": cells, "source": "cpsc_2018",
                          "n_samples_source": rng.choice([3000, 5000, 7500, 30000], size=n), "fs_source": 500})
    vocab = sorted(set(valid.values()))
    kept, labels = [], []
    for name, dx, n_samples in sorted(zip(names, cells, index["n_samples_source"])):
        y = np.zeros(len(vocab), dtype=np.uint8)
        for c in [x.strip() for x in dx.split(",") if x.strip()]:
            if c in valid:
                y[vocab.index(valid[c])] = 1
        if n_samples >= 5000 and y.sum() > 0:
            kept.append(name)
            labels.append(y)
    perm = np.random.default_rng(seed=42).permutation(len(kept))
    folds = np.full(len(kept), 10)
    folds[perm[:int(0.7 * len(kept))]] = 1
    folds[perm[int(0.7 * len(kept)):int(0.8 * len(kept))]] = 9

    task = load_challenge_task(index, "cpsc2018", split="ecgfix", length_policy="drop_short")
    assert task.ecg_ids.tolist() == kept
    np.testing.assert_array_equal(task.folds, folds)
    code_of = {name: code for code, name in valid.items()}
    np.testing.assert_array_equal(task.y, np.array(labels)[:, [vocab.index(valid[c]) for c in task.classes]])
    assert {code_of[name] for name in vocab} == set(task.classes)


def test_preset_and_label_mode_errors_are_one_line():
    index = synthetic_csn_index(40)
    cases = [({"split": "ecgfix"}, "set length_policy drop_short"),
             ({"labels": "substring"}, "expected one of: exact, merl_released"),
             ({"labels": "merl_released", "split": "ecgfix", "length_policy": "drop_short"}, "choose one"),
             ({"labels": "merl_released", "unknown_codes": "drop_empty"}, "unknown_codes must be keep")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            load_challenge_task(index, "csn", **kwargs)
    with pytest.raises(ValueError, match="exact labels only"):
        load_challenge_task(index.assign(source="georgia"), "georgia", labels="merl_released")


# ------------------------------------------------------------------------------------------------ MERL's labels

def released_table() -> pd.DataFrame:
    return pd.read_csv(MERL_RELEASED, comment="#", dtype={"diagnose": str})


def test_merl_released_table_facts():
    table = released_table()
    assert tuple(table.columns[4:]) == MERL_CSN_COLUMNS and len(MERL_CSN_COLUMNS) == 38
    assert not {"SB", "LVQRSAL", "IDC", "VPE"} & set(MERL_CSN_COLUMNS)
    sizes = {split: int(table[f"n_{split}"].sum()) for split in ("train", "val", "test")}
    assert sizes == splits.merl_split_sizes("csn") == {"train": 16546, "val": 1860, "test": 4620}
    weights = table[["n_train", "n_val", "n_test"]].sum(axis=1).to_numpy()
    assert dict(zip(MERL_CSN_COLUMNS, (table[list(MERL_CSN_COLUMNS)].to_numpy() * weights[:, None]).sum(0))) == \
        MERL_COLUMN_TOTALS


def dx_from_diagnose(diagnose: str, code_of_first: dict[str, str]) -> str:
    return ",".join(code_of_first[acronym] for acronym in diagnose.split(","))


def test_merl_released_labels_reproduce_every_released_cell():
    """All 23,026 x 38 released cells: each distinct `diagnose` text of MERL's tables turned back into #Dx codes
    (every acronym in it is some code's first acronym), labelled, and compared with the released row."""
    table = released_table()
    names = condition_names()
    code_of_first = names.groupby("Snomed_CT", sort=False)["Acronym Name"].first()
    code_of_first = dict(zip(code_of_first.to_numpy(), code_of_first.index))
    dx = [dx_from_diagnose(text, code_of_first) for text in table["diagnose"]]
    y, unknown = merl_released_labels(dx)
    assert not unknown.any()
    np.testing.assert_array_equal(y, table[list(MERL_CSN_COLUMNS)].to_numpy())
    weights = table[["n_train", "n_val", "n_test"]].sum(axis=1).to_numpy()
    assert dict(zip(MERL_CSN_COLUMNS, (y * weights[:, None]).sum(0).tolist())) == MERL_COLUMN_TOTALS
    # exact matching would differ (the reference notes: 5,125 cells)
    exact = np.array([[int(c in text.split(",")) for c in MERL_CSN_COLUMNS] for text in table["diagnose"]])
    assert int(((exact != y) * weights[:, None]).sum()) == 5125


def merl_reference(index: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """MERL's preprocess.ipynb: first ConditionNames row of each code (an unlisted code raises: 'Unknown'),
    acronyms joined by ',', Unknown rows dropped, `1 if label in x` for each released column."""
    ref = condition_names()
    kept, rows = [], []
    for name, dx in zip(index["record_id"], index["dx"]):
        try:
            diagnose_str = []
            diagnose_code = str(dx).split()[0].split(",")   # the Dx line's text after "#Dx:"
            for i in range(len(diagnose_code)):
                diagnose = ref[ref["Snomed_CT"] == diagnose_code[i]]["Acronym Name"]
                diagnose_str.append(diagnose.values[0])
            diagnose_str = ",".join(diagnose_str)
        except IndexError:
            diagnose_str = "Unknown"
        if diagnose_str != "Unknown":
            kept.append(name)
            rows.append([1 if label in diagnose_str else 0 for label in MERL_CSN_COLUMNS])
    return kept, np.array(rows, dtype=np.uint8)


def test_merl_released_matches_a_reimplementation_on_substring_cases():
    names = condition_names()
    codes = names["Snomed_CT"].unique().tolist()
    rng = np.random.default_rng(7)
    # the substring cases first: AF (flutter) alone, AFIB alone, LVQRSAL (SA inside), SB (no column), STDD, 1AVB,
    # CCR, then random sets with unknown codes and empty cells
    special = ["164890007", "164889003", "251146004", "426177001", "429622005", "270492004", "251199005",
               "164890007,164889003", "999999", "426783006,10370003", ""]
    cells = special + [",".join(dict.fromkeys(rng.choice(codes + ["999999"], size=rng.integers(1, 4)).tolist()))
                       for _ in range(300)]
    index = pd.DataFrame({"record_id": [f"JS{k:05d}" for k in range(1, len(cells) + 1)], "dx": cells,
                          "source": "ecg_arrhythmia"})
    kept, expected = merl_reference(index)
    task = load_challenge_task(index, "csn", split="stratified", labels="merl_released")
    assert task.labels == "merl_released" and task.class_abbreviations == list(MERL_CSN_COLUMNS)
    assert task.ecg_ids.tolist() == kept
    np.testing.assert_array_equal(task.y, expected)
    column = {name: j for j, name in enumerate(MERL_CSN_COLUMNS)}
    rows = dict(zip(task.ecg_ids, task.y))
    assert rows["JS00001"][column["AF"]] == 1 and rows["JS00001"][column["AFIB"]] == 0      # flutter
    assert rows["JS00002"][column["AF"]] == 1 and rows["JS00002"][column["AFIB"]] == 1      # AFIB marks AF too
    assert rows["JS00003"][column["SA"]] == 1                                               # "SA" in "LVQRSAL"
    assert rows["JS00004"].sum() == 0                                                       # SB: no column, kept
    assert rows["JS00005"][column["ST"]] == 1 and rows["JS00006"][column["AVB"]] == 1
    assert rows["JS00007"][column["CR"]] == 1
    assert not {"JS00009", "JS00010", "JS00011"} & set(task.ecg_ids)                       # MERL's Unknown
    records = task.summary[task.summary["kind"] == "records"].set_index("name")["count"]
    assert records["unknown or excluded code"] == len(cells) - len(kept)


def test_merl_released_on_cpsc2018_is_its_exact_9_classes():
    index = pd.DataFrame({"record_id": [f"A{k:04d}" for k in range(1, 31)], "dx": ["426783006", "164889003"] * 15,
                          "source": "cpsc_2018"})
    released = load_challenge_task(index, "cpsc2018", split="stratified", labels="merl_released")
    exact = load_challenge_task(index, "cpsc2018", split="stratified")
    assert released.classes == exact.classes and released.labels == "exact"
    np.testing.assert_array_equal(released.y, exact.y)


def test_merl_preset_counts_classes_over_its_split_records_only():
    merl = merl_table()
    in_tables = merl.loc[merl["dataset"] == "csn", "record"].head(40).tolist()
    outside = [f"JS9{k:04d}" for k in range(30)]   # not in MERL's tables: fold 0
    index = pd.DataFrame({"record_id": in_tables + outside,
                          "dx": ["426783006"] * 40 + ["164889003"] * 30, "source": "ecg_arrhythmia"})
    task = load_challenge_task(index, "csn", split="merl", min_positives=10)
    assert task.classes == ["426783006"]   # AFIB has 30 records, none in MERL's tables: not a class
    classes = task.summary[task.summary["kind"] == "class"].set_index("code")
    assert classes.loc["164889003", "status"] == "dropped" and classes.loc["164889003", "count"] == 0
    assert classes.loc["426783006", "count_kept"] == 40
    assert (task.folds[40:] == 0).all()


# ------------------------------------------------------------------------------------------------ the workspace

def test_the_workspace_passes_the_label_mode_and_names_it_in_the_summary(ptbxl_dir, tmp_path):
    root = tmp_path / "ecg-arrhythmia"
    write_ecg_arrhythmia_tree(ptbxl_dir, root, n=40)   # real WFDB records (PTB-XL samples) in CSN's layout
    for kwargs, rule in [({"labels": "merl_released"}, "merl_released"),
                         ({"split": "ecgfix", "length_policy": "drop_short"}, "ecgfix")]:
        dataset = ChallengeDataset(root, "csn", **kwargs)
        Workspace(tmp_path / "run", dataset, workers=1, progress=False)       # the run's store and summary folders
        task = dataset.task()
        settings = {"split": "stratified", "length_policy": "crop_pad", **kwargs}
        from_headers = load_challenge_task(dataset.records().assign(n_samples_source=5000, fs_source=500), "csn",
                                           **settings)
        assert task.labels == rule and task.ecg_ids.tolist() == from_headers.ecg_ids.tolist()
        np.testing.assert_array_equal(task.y, from_headers.y)
        written = pd.read_csv(tmp_path / "run" / "evaluate" / "csn_summary.csv", dtype=str, keep_default_na=False)
        assert written.loc[written["name"] == "labels", "abbreviation"].tolist() == [rule]
    with pytest.raises(ValueError, match="expected one of: exact, merl_released"):
        ChallengeDataset(root, "csn", labels="substrings")
