"""Multi-label tasks on CPSC2018, CSN and other PhysioNet/CinC Challenge sources, with the PTB-XL task's interface.

A task is built from a record table (`index`, e.g. a converted store's index.csv: record_id, dx and optionally
source, n_samples_source, fs_source) in this order:

1. records of the dataset: rows whose `source` is one of `DATASET_SOURCES[dataset]` (a source name selects
   itself); without a `source` column every row is taken;
2. length policy (`length_mask`): `drop_short` removes records shorter than 10 s; `crop_pad` and `merl` keep all;
3. classes, by one of three label rules (`label_rule`):
   - "exact" (the default; `labels="exact"`): exact SNOMED-CT codes, Challenge equivalents merged (see
     `esi.data.snomed`). `cpsc2018`: the 9 classes of the original CPSC2018 challenge, `CPSC2018_CLASSES`, in that
     order; `csn` and any other source: every code with at least `min_positives` positive records, minus
     `EXCLUDED_CODES[dataset]` (for CSN: ecg-fix's exclusion list), in descending positives order (ties: code).
     Positives are counted over the records left by steps 1-2 that the split preset splits (under `merl`: the
     records in MERL's tables, not the whole dataset);
   - "ecgfix" (split preset `ecgfix` on cpsc2018 or csn): ecg-fix's own rule (zackeberger/ecg-fix,
     benchmark/preprocess/public/{CPSC/p_CPSC.py,CSN/p_CSN.py}, format_dataset.py). CSN: one column per
     ConditionNames acronym in sorted order, minus its two exclusion lists (`ECGFIX_EXCLUDED_ACRONYMS`), no count
     threshold; each code counts as the *last* acronym listed for it; codes are not merged (ecg-fix has no
     Challenge equivalents: CSN's 17338001 stays VPB). CPSC2018: its 9 codes, exact, unmerged. `min_positives`
     and `unknown_codes` are not applied: the rule fixes step 4;
   - "merl_released" (`labels="merl_released"` on csn; on cpsc2018 it is "exact", whose 9 classes are MERL's
     CPSC2018 labels): MERL's 38 released columns (`MERL_CSN_COLUMNS`, in its
     order), made as MERL's preprocess.ipynb made them: each code becomes its *first* ConditionNames acronym, the
     acronyms are joined by ",", and a column is 1 when its name is a substring of that text (`label in x`: AF
     also marks AFIB, SA marks LVQRSAL, ST marks STE/STDD/STTC/STTU, AVB marks 1AVB/2AVB, VB marks AVB, CR marks
     CCR). SB, LVQRSAL, IDC and VPE have no column, as in MERL's release;
4. records and unknown codes:
   - "exact" rule, by `unknown_codes`: "keep" (default): every record is kept; codes that are not classes are
     ignored, so a record none of whose codes is a class has an all-zero label row (counted in the summary);
     "drop_empty": records none of whose codes is a class are dropped; "drop_unknown": records carrying any
     unknown code are dropped, unknown meaning not in the dataset's code list (`known_codes`: for CSN the codes of
     ecg-arrhythmia's ConditionNames_SNOMED-CT.csv, otherwise the codes of the Challenge tables) or on the
     exclusion list, compared as written (before merging); then records left with no class are dropped too;
   - "ecgfix": CSN records carrying a code outside the vocabulary (not in ConditionNames, or excluded) are dropped
     (its `missing_codes`), then, on both datasets, all-zero rows (its `all_zero`);
   - "merl_released": a record with a code ConditionNames does not list, or with no code, is MERL's "Unknown" and
     dropped (23,026 of CSN's 45,152 records remain); all-zero rows are kept, as in MERL's tables
     (`unknown_codes` must be "keep");
5. folds: the split preset (`esi.data.splits`) over the records kept, PTB-XL fold codes. Records are in name
   order (under `ecgfix` sorted by name: ecg-fix sorts record paths, and in ecg-arrhythmia's WFDBRecords/NN/NNN/
   and the Challenge's cpsc_2018/g1-g7 folders path order is name order), except under `merl`: MERL's table row order
   (`merl_order`), so that `label_fraction_subset`'s `merl` draw picks the records MERL's 1 % and 10 % runs used
   (when every record of its training table is here).

`ChallengeTask.summary` lists every class seen (kept, dropped and why, merged alias codes) and the record counts
(total, dropped and why, kept, all-zero, per split, in no split); `write_summary` writes it as CSV.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from esi.data.ptbxl import SPLIT_FOLDS, FoldedTask
from esi.data.snomed import (EQUIVALENT_CODES, code_counts, describe_code, label_matrix, parse_dx,
                             snomed_table)
from esi.data.splits import (NO_FOLD, PRESETS, SPLIT_LABELS, make_folds, merl_folds, merl_order,
                             merl_split_sizes, split_description)

DATASETS: tuple[str, ...] = ("cpsc2018", "csn")

# The 9 classes of the China Physiological Signal Challenge 2018, as SNOMED codes of the Challenge's cpsc_2018 folder.
CPSC2018_CLASSES: tuple[str, ...] = (
    "426783006",  # NSR, normal
    "164889003",  # AF
    "270492004",  # I-AVB
    "164909002",  # LBBB
    "59118001",   # RBBB
    "284470004",  # PAC
    "164884008",  # PVC (the Challenge's VEB "ventricular ectopics"; not merged with 427172004/17338001)
    "429622005",  # STD
    "164931005",  # STE
)

# Source names (as in the Challenge's training/<source>/ folders) that make up each dataset. CSN is the
# Challenge's chapman_shaoxing + ningbo, or PhysioNet ecg-arrhythmia 1.0.0 converted as one source.
DATASET_SOURCES: dict[str, tuple[str, ...]] = {
    "cpsc2018": ("cpsc_2018",),
    "csn": ("chapman_shaoxing", "ningbo", "ecg_arrhythmia", "ecg-arrhythmia"),
}

# ecg-fix (zackeberger/ecg-fix, benchmark/preprocess/public/CSN/p_CSN.py) removes 15 CSN acronyms from its vocabulary
# (ZERO_COUNT_LABELS, LESS_THAN_2_COUNT_LABELS). It maps each code to the *last* acronym listed for it in
# ConditionNames_SNOMED-CT.csv, so an excluded acronym removes its code only when every acronym of that code is
# excluded (LBBB/LBBBB leave 164909002 as LFBBB, IDC leaves 698252002 as IVB, MI/MIBW/MIFW/MILW leave 164865005 as
# MISW). These are the codes it removes:
CSN_EXCLUDED_CODES: dict[str, str] = {
    "28189009": "ecg-fix exclusion: 2AVB2, no positives in CSN",
    "233896004": "ecg-fix exclusion: AVNRT, no positives in CSN",
    "251148003": "ecg-fix exclusion: LVQRSCL, no positives in CSN",
    "251147008": "ecg-fix exclusion: LVQRSLL, no positives in CSN",
    "195101003": "ecg-fix exclusion: WAVN and SAAWR, no positives in CSN",
    "27885002": "ecg-fix exclusion: 3AVB, fewer than 2 positives in CSN",
    "251173003": "ecg-fix exclusion: ABI, fewer than 2 positives in CSN",
}
EXCLUDED_CODES: dict[str, dict[str, str]] = {"csn": CSN_EXCLUDED_CODES}
# ecg-fix's two exclusion lists as it writes them (p_CSN.py ZERO_COUNT_LABELS | LESS_THAN_2_COUNT_LABELS): the
# acronyms left out of its CSN vocabulary under the `ecgfix` preset. CSN_EXCLUDED_CODES are the codes they remove.
ECGFIX_EXCLUDED_ACRONYMS: frozenset[str] = frozenset({
    "2AVB2", "AVNRT", "IDC", "LBBB", "LBBBB", "LVQRSCL", "LVQRSLL", "MI", "MIBW", "MIFW", "MILW", "SAAWR", "WAVN",
    "3AVB", "ABI"})

# MERL's released CSN label columns, in the order of its tables (MERL-ICML2024 finetune/data_split/chapman/*.csv,
# after ecg_path, age, diagnose): first ConditionNames acronyms, matched as substrings (see the module doc).
MERL_CSN_COLUMNS: tuple[str, ...] = (
    "AQW", "UW", "SR", "WPW", "2AVB", "AT", "VB", "ARS", "STTC", "SA", "STE", "VPB", "TWO", "STTU", "ALS", "APB",
    "2AVB1", "PRIE", "CCR", "CR", "AF", "AVB", "QTIE", "LBBB", "VEB", "SVT", "RBBB", "1AVB", "STDD", "MI", "AFIB",
    "TWC", "PWC", "ERV", "RVH", "LVH", "ST", "JEB")

LABEL_MODES: tuple[str, ...] = ("exact", "merl_released")

UNKNOWN_CODE_POLICIES: tuple[str, ...] = ("keep", "drop_empty", "drop_unknown")
LENGTH_POLICIES: tuple[str, ...] = ("crop_pad", "drop_short", "merl")
# The store crop each length policy reads: centre-crop long records, or keep their start (MERL reads the first
# samples); `length_mask` then drops what `drop_short` drops.
POLICY_CROP: dict[str, str] = {"crop_pad": "centre", "drop_short": "centre", "merl": "start"}

MERL_CPSC_SECONDS = 5.0  # MERL keeps the first 2,500 samples (5 s at 500 Hz) of CPSC2018 records.
SUMMARY_COLUMNS = ("kind", "code", "abbreviation", "name", "count", "count_kept", "status", "reason")


# ----------------------------------------------------------------------------------------------- length policies

def _check_length_policy(policy: str) -> None:
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"unknown length policy {policy!r}; expected one of: {', '.join(LENGTH_POLICIES)}")


def length_mask(index: pd.DataFrame, policy: str, seconds: float = 10.0) -> np.ndarray:
    """Which records a length policy keeps.

    Policies: `crop_pad` (keep all; long records are centre-cropped to `seconds`, short ones zero-padded at the
    end), `drop_short` (ecg-fix, Reality Check: drop records shorter than `seconds`, centre-crop long ones),
    `merl` (keep all; MERL's finetune_dataset.py reads CPSC2018's first 2,500 samples = 5 s at 500 Hz, zero-padded
    to 5,000, and the first 5,000 samples = 10 s of the other datasets).

    Args:
        index: record table; `drop_short` needs `n_samples_source` and `fs_source` (the source record's length).
        policy: "crop_pad", "drop_short" or "merl".
        seconds: the frame length in seconds; default 10.0.

    Returns:
        Boolean (records,) mask.
    """
    _check_length_policy(policy)
    if policy != "drop_short":
        return np.ones(len(index), dtype=bool)
    missing = [c for c in ("n_samples_source", "fs_source") if c not in index.columns]
    if missing:
        raise ValueError(f"length policy drop_short needs index column(s) {', '.join(missing)}")
    samples = index["n_samples_source"].to_numpy(dtype=float)
    fs = index["fs_source"].to_numpy(dtype=float)
    # Compare in samples with a small tolerance so 5000 samples at 500 Hz count as exactly 10 s.
    return samples >= seconds * fs - 1e-6


def valid_seconds(policy: str, dataset: str) -> float | None:
    """Seconds of each record a length policy feeds as signal, the rest of the frame being zeros: MERL's 5 s of
    CPSC2018 records under `merl`; None (the whole frame) otherwise."""
    _check_length_policy(policy)
    return MERL_CPSC_SECONDS if policy == "merl" and dataset == "cpsc2018" else None


# -------------------------------------------------------------------------------------------------- vocabularies

def known_codes(dataset: str) -> set[str]:
    """Codes `drop_unknown` accepts, as written (unmerged): CSN's ConditionNames codes for "csn", else the codes of
    the shipped table (the Challenge's mapping tables), minus the dataset's exclusion list."""
    table = snomed_table()
    if dataset == "csn":
        codes = set(table.loc[table["csn_acronym"] != "", "code"])
    else:
        codes = set(table["code"])
    return codes - set(EXCLUDED_CODES.get(dataset, {}))


def csn_acronyms() -> dict[str, list[str]]:
    """code -> its acronyms in ecg-arrhythmia's ConditionNames_SNOMED-CT.csv, in file order (63 acronyms, 55 codes)."""
    table = snomed_table()
    return {code: text.split(";") for code, text in zip(table["code"], table["csn_acronym"]) if text}


def label_rule(dataset: str, split: str, labels: str = "exact") -> str:
    """Which label rule builds a task (module doc, step 3): "ecgfix", "merl_released" or "exact"; a label mode that
    cannot apply is a one-line error."""
    if labels not in LABEL_MODES:
        raise ValueError(f"unknown labels {labels!r}; expected one of: {', '.join(LABEL_MODES)}")
    if labels == "merl_released" and dataset != "cpsc2018":   # MERL's CPSC2018 labels are the 9 exact classes
        if dataset != "csn":
            raise ValueError(f"labels merl_released are MERL's CSN columns; {dataset} has exact labels only")
        if split == "ecgfix":
            raise ValueError("labels merl_released and split ecgfix disagree (ecgfix brings ecg-fix's own labels); "
                             "choose one")
        return "merl_released"
    return "ecgfix" if split == "ecgfix" and dataset in ("cpsc2018", "csn") else "exact"


def ecgfix_classes(dataset: str) -> tuple[list[str], list[str]]:
    """ecg-fix's label columns under the `ecgfix` preset: (class codes, column names).

    CSN: the ConditionNames acronyms in sorted order minus `ECGFIX_EXCLUDED_ACRONYMS`, each with the code whose
    last acronym it is (every acronym left is one: the acronyms shadowed by a later one are all excluded). CPSC2018:
    `CPSC2018_CLASSES` (the same 9 codes as ecg-fix's; it orders its columns by name, we keep ours).
    """
    if dataset == "cpsc2018":
        return list(CPSC2018_CLASSES), [describe_code(code)[0] for code in CPSC2018_CLASSES]
    if dataset != "csn":
        raise ValueError(f"ecg-fix's label rule covers cpsc2018 and csn, not {dataset!r}")
    acronyms = csn_acronyms()
    code_of_last = {names[-1]: code for code, names in acronyms.items()}
    vocabulary = sorted({name for names in acronyms.values() for name in names} - ECGFIX_EXCLUDED_ACRONYMS)
    unreachable = [name for name in vocabulary if name not in code_of_last]
    if unreachable:
        raise ValueError(f"ecg-fix columns {unreachable} are no code's last acronym (always zero); check snomed_ct.csv")
    return [code_of_last[name] for name in vocabulary], vocabulary


def merl_released_classes() -> tuple[list[str], list[str]]:
    """MERL's released CSN columns: (the code whose first acronym names each column, `MERL_CSN_COLUMNS`)."""
    code_of_first = {names[0]: code for code, names in csn_acronyms().items()}
    return [code_of_first[name] for name in MERL_CSN_COLUMNS], list(MERL_CSN_COLUMNS)


def merl_released_labels(dx_column: Iterable[object]) -> tuple[np.ndarray, np.ndarray]:
    """MERL's CSN label cells (module doc, step 3 "merl_released") and which records MERL tags Unknown.

    Args:
        dx_column: one `#Dx` cell per record.

    Returns:
        (y, unknown): uint8 (records, 38) in `MERL_CSN_COLUMNS` order, and a boolean (records,) mask of records
        with a code ConditionNames does not list or with no code (MERL drops them).
    """
    first = {code: names[0] for code, names in csn_acronyms().items()}
    cells = list(dx_column)
    y = np.zeros((len(cells), len(MERL_CSN_COLUMNS)), dtype=np.uint8)
    unknown = np.zeros(len(cells), dtype=bool)
    for i, text in enumerate(cells):
        codes = parse_dx(text)
        if not codes or any(code not in first for code in codes):
            unknown[i] = True
            continue
        diagnose = ",".join(first[code] for code in codes)
        y[i] = [name in diagnose for name in MERL_CSN_COLUMNS]   # substring test, as MERL's `label in x`
    return y, unknown


def select_classes(dx_column: Iterable[object], dataset: str, min_positives: int = 10) -> list[str]:
    """The class codes of a dataset (see the module doc, step 3).

    Args:
        dx_column: the `#Dx` cells of the dataset's records.
        dataset: "cpsc2018" (fixed 9 classes), "csn" or a source name.
        min_positives: least positive records for a class (not used for cpsc2018); default 10.

    Returns:
        Canonical class codes.
    """
    if dataset == "cpsc2018":
        return list(CPSC2018_CLASSES)
    excluded = EXCLUDED_CODES.get(dataset, {})
    counts = code_counts(dx_column)
    return [code for code, count in counts.items() if count >= min_positives and code not in excluded]


# ------------------------------------------------------------------------------------------------------ summary

def _class_reason(code: str, count: int, dataset: str, classes: set[str], min_positives: int) -> tuple[str, str]:
    if code in classes:
        return "kept", ""
    if code in EQUIVALENT_CODES:
        return "merged", f"scored as {EQUIVALENT_CODES[code]} by the Challenge; counted under it"
    if dataset == "cpsc2018":
        return "dropped", "not one of the 9 CPSC2018 classes"
    if code in EXCLUDED_CODES.get(dataset, {}):
        return "dropped", EXCLUDED_CODES[dataset][code]
    return "dropped", f"fewer than {min_positives} positives ({count})"


def _class_rows(dx_seen: pd.Series, dx_all: pd.Series, dx_kept: pd.Series, dataset: str, classes: list[str],
                min_positives: int) -> list[dict]:
    # Every code of `dx_seen` gets a row; `count` is over `dx_all` (the records classes are counted on).
    merged_all, merged_kept = code_counts(dx_all), code_counts(dx_kept)
    raw_all, raw_kept = code_counts(dx_all, merge_equivalents=False), code_counts(dx_kept, merge_equivalents=False)
    merged_seen, raw_seen = code_counts(dx_seen), code_counts(dx_seen, merge_equivalents=False)
    codes = list(classes) + sorted(set(merged_seen.index) - set(classes),
                                   key=lambda c: (-merged_all.get(c, 0), -merged_seen[c], c))
    codes += sorted(c for c in raw_seen.index if c in EQUIVALENT_CODES)
    rows = []
    for code in codes:
        alias = code in EQUIVALENT_CODES
        count = int((raw_all if alias else merged_all).get(code, 0))
        kept = int((raw_kept if alias else merged_kept).get(code, 0))
        status, reason = _class_reason(code, count, dataset, set(classes), min_positives)
        abbreviation, name = describe_code(code)
        rows.append({"kind": "class", "code": code, "abbreviation": abbreviation, "name": name, "count": count,
                     "count_kept": kept, "status": status, "reason": reason})
    return rows


def _record_row(item: str, count: int, status: str = "", reason: str = "") -> dict:
    return {"kind": "records", "code": "", "abbreviation": "", "name": item, "count": int(count), "count_kept": None,
            "status": status, "reason": reason}


# What each label rule is, for the summary's "labels" row.
LABEL_RULES: dict[str, str] = {
    "exact": "exact SNOMED-CT codes, Challenge equivalents merged",
    "ecgfix": "ecg-fix's: ConditionNames acronyms (a code's last) minus its exclusion lists, no count threshold, "
              "codes unmerged; records with a code outside it or no class dropped (CPSC2018: its 9 codes)",
    "merl_released": "MERL's released 38 CSN columns: first ConditionNames acronyms matched as substrings; records "
                     "with an unlisted code dropped (MERL's Unknown)",
}


def _column_rows(dx_all: pd.Series, dx_split: pd.Series, classes: list[str], columns: list[str],
                 rule: str) -> list[dict]:
    # Columns of a fixed vocabulary (ecgfix, merl_released): counts of their own labels; then every other code seen.
    if rule == "merl_released":
        y_all, y_split = merl_released_labels(dx_all)[0], merl_released_labels(dx_split)[0]
        other = "not one of MERL's released columns (its acronym may still mark a column as a substring)"
    else:
        y_all, y_split = label_matrix(dx_all, classes, False), label_matrix(dx_split, classes, False)
        other = "not in ecg-fix's vocabulary (unlisted or excluded): its records are dropped on csn"
    rows = []
    for j, (code, column) in enumerate(zip(classes, columns)):
        rows.append({"kind": "class", "code": code, "abbreviation": column, "name": describe_code(code)[1],
                     "count": int(y_all[:, j].sum()), "count_kept": int(y_split[:, j].sum()), "status": "kept",
                     "reason": f"{rule} column"})
    raw_all, raw_split = code_counts(dx_all, False), code_counts(dx_split, False)
    for code in [c for c in raw_all.index if c not in set(classes)]:
        abbreviation, name = describe_code(code)
        rows.append({"kind": "class", "code": code, "abbreviation": abbreviation, "name": name,
                     "count": int(raw_all[code]), "count_kept": int(raw_split.get(code, 0)), "status": "dropped",
                     "reason": other})
    return rows


def _setting_row(item: str, value: str, reason: str) -> dict:
    return {"kind": "setting", "code": "", "abbreviation": value, "name": item, "count": None, "count_kept": None,
            "status": "", "reason": reason}


def write_summary(summary: pd.DataFrame, path: str | Path) -> Path:
    """Write a task summary (`ChallengeTask.summary`) as CSV; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------------------------------------- task

@dataclass
class ChallengeTask(FoldedTask):
    """The records, labels and folds of one CPSC2018 / CSN / Challenge-source task (rows aligned across arrays).

    Same interface as `esi.data.ptbxl.PTBXLTask` (task, ecg_ids, classes, y, folds, patient_ids, meta; len, mask,
    subset and split from their shared `FoldedTask`), so the evaluation protocols can take either. A subset keeps
    the whole task's summary.

    Attributes:
        task: the task name, equal to `dataset`.
        dataset: "cpsc2018", "csn" or a source name.
        split_preset: the split preset of `folds` (see `esi.data.splits`).
        ecg_ids: object (n,), record names ("A0001", "JS00001"), the store's record_id.
        classes: canonical SNOMED-CT class codes (str).
        class_abbreviations: the column names: the Challenge abbreviation of each class ("" if the code is not in
            the table), or ecg-fix's / MERL's acronym under their label rules.
        y: uint8 (n, len(classes)), multi-hot labels (exact code match, equivalents merged, under the default rule).
        folds: int64 (n,), PTB-XL fold codes (1-8 train, 9 val, 10 test; 0: in no split, `merl` preset only).
        patient_ids: object (n,), the record names again: these datasets have no patient ids, so every record is
            its own group (splits are record-level, not patient-disjoint).
        meta: the index rows of the records (index record_id, same order).
        summary: every class seen and the record counts (see the module doc); describes the whole task, also in
            subsets.
        min_positives, unknown_codes, length_policy, seed: the settings the task was built with.
        labels: the label rule applied ("exact", "ecgfix" or "merl_released"; see the module doc, step 3).
    """

    task: str
    dataset: str
    split_preset: str
    ecg_ids: np.ndarray
    classes: list[str]
    class_abbreviations: list[str]
    y: np.ndarray
    folds: np.ndarray
    patient_ids: np.ndarray
    meta: pd.DataFrame = field(repr=False)
    summary: pd.DataFrame = field(repr=False)
    min_positives: int = 10
    unknown_codes: str = "keep"
    length_policy: str = "crop_pad"
    seed: int | None = None
    labels: str = "exact"

    @property
    def split_label(self) -> str:
        """The results' `split` column for this task, e.g. "stratified_70/10/20_records"."""
        return SPLIT_LABELS[self.split_preset]

    @property
    def validation_name(self) -> str:
        """How notes name the split that selects epochs and settings: "the validation split (merl_tables_records)"."""
        return f"the validation split ({self.split_label})"

    @property
    def split_description(self) -> str:
        """How `folds` were made, and that they are record-level (see `esi.data.splits.split_description`)."""
        return split_description(self.split_preset)



def _dataset_records(index: pd.DataFrame, dataset: str) -> pd.DataFrame:
    missing = [c for c in ("record_id", "dx") if c not in index.columns]
    if missing:
        raise ValueError(f"index lacks column(s) {', '.join(missing)}")
    if "source" not in index.columns:
        records = index
    else:
        sources = DATASET_SOURCES.get(dataset, (dataset,))
        records = index[index["source"].astype(str).isin(sources)]
        if records.empty:
            present = sorted(index["source"].astype(str).unique())[:10]
            raise ValueError(f"index has no records of {dataset} (sources {', '.join(sources)}); it has {present}")
    records = records.copy()
    records["record_id"] = records["record_id"].astype(str)
    duplicated = records["record_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"duplicate record_id(s) {records.loc[duplicated, 'record_id'].tolist()[:5]}")
    return records.set_index("record_id", drop=False)


def _has_unknown(dx: pd.Series, known: set[str]) -> np.ndarray:
    return np.array([any(code not in known for code in parse_dx(text)) for text in dx], dtype=bool)


def _check_settings(dataset: str, split: str, min_positives: int, unknown_codes: str, length_policy: str) -> None:
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty name, got {dataset!r}")
    if split not in PRESETS:
        raise ValueError(f"unknown split preset {split!r}; expected one of: {', '.join(PRESETS)}")
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}")
    if unknown_codes not in UNKNOWN_CODE_POLICIES:
        raise ValueError(f"unknown unknown_codes policy {unknown_codes!r}; expected one of: "
                         f"{', '.join(UNKNOWN_CODE_POLICIES)}")
    _check_length_policy(length_policy)


def load_challenge_task(index: pd.DataFrame, dataset: str, split: str = "stratified", min_positives: int = 10,
                        unknown_codes: str = "keep", seed: int | None = None, length_policy: str = "crop_pad",
                        labels: str = "exact") -> ChallengeTask:
    """Records, multi-hot labels and folds of one dataset (steps in the module doc).

    Args:
        index: record table with at least record_id and dx (`#Dx` codes joined by ";" or ","); a `source` column
            selects the dataset's records; `drop_short` needs n_samples_source and fs_source.
        dataset: "cpsc2018", "csn" or a source name (e.g. "georgia").
        split: split preset, "stratified" (default), "folds10", "ecgfix" or "merl". `ecgfix` on cpsc2018 / csn
            also brings ecg-fix's label rule and needs `length_policy="drop_short"` (its records).
        min_positives: least positive records for a class of csn / a source under exact labels; default 10.
        unknown_codes: "keep" (default), "drop_empty" or "drop_unknown" (exact labels; see the module doc, step 4).
        seed: seed of the random split presets; None: 42, or ecg-fix's own for `ecgfix` (see `make_folds`).
        length_policy: "crop_pad" (default, keeps all), "drop_short" (drops records < 10 s) or "merl" (keeps all).
        labels: "exact" (default: exact SNOMED codes) or "merl_released" (MERL's 38 released CSN columns).

    Returns:
        A `ChallengeTask`; use `.split("train" | "val" | "test")`.
    """
    _check_settings(dataset, split, min_positives, unknown_codes, length_policy)
    rule = label_rule(dataset, split, labels)
    if rule == "ecgfix" and length_policy != "drop_short":
        raise ValueError(f"split ecgfix on {dataset} follows ecg-fix, which drops records under 10 s: set "
                         f"length_policy drop_short (got {length_policy})")
    if rule == "merl_released" and unknown_codes != "keep":
        raise ValueError(f"labels merl_released drop MERL's Unknown records themselves; unknown_codes must be keep "
                         f"(got {unknown_codes})")
    records = _dataset_records(index, dataset)
    total = len(records)
    long_enough = length_mask(records, length_policy)
    records = records[long_enough]
    if rule == "ecgfix":
        # ecg-fix's order: sorted record paths, which is name order in its folders
        records = records.iloc[np.argsort(records["record_id"].to_numpy(dtype=str), kind="stable")]
        classes, columns = ecgfix_classes(dataset)
        y = label_matrix(records["dx"], classes, merge_equivalents=False)
        # CSN: a code outside the vocabulary is in ecg-fix's missing_codes; CPSC2018 only prints other codes.
        unknown = (_has_unknown(records["dx"], set(classes)) if dataset == "csn"
                   else np.zeros(len(records), dtype=bool))
        empty = y.sum(axis=1) == 0
        keep = ~unknown & ~empty
    elif rule == "merl_released":
        classes, columns = merl_released_classes()
        y, unknown = merl_released_labels(records["dx"])
        empty = y.sum(axis=1) == 0
        keep = ~unknown
    else:
        counted = records
        if split == "merl":   # classes are counted over the records the preset splits: those in MERL's tables
            counted = records[merl_folds(dataset, records["record_id"].to_numpy()) != NO_FOLD]
        classes = select_classes(counted["dx"], dataset, min_positives)
        columns = [describe_code(c)[0] for c in classes]
        y = label_matrix(records["dx"], classes)
        keep = np.ones(len(records), dtype=bool)
        unknown = np.zeros(len(records), dtype=bool)
        if unknown_codes == "drop_unknown":
            unknown = _has_unknown(records["dx"], known_codes(dataset))
            keep &= ~unknown
        empty = y.sum(axis=1) == 0
        if unknown_codes in ("drop_empty", "drop_unknown"):
            keep &= ~empty

    kept_records, y = records[keep], y[keep]
    names = kept_records["record_id"].to_numpy(dtype=object)
    folds = make_folds(split, y, names, dataset, seed=seed)
    if split == "merl":  # MERL's row order, so that a `merl` label-fraction draw picks MERL's records
        order = merl_order(dataset, names)
        kept_records, y, names, folds = kept_records.iloc[order], y[order], names[order], folds[order]

    if rule == "exact":
        rows = _class_rows(records["dx"], counted["dx"], kept_records["dx"][folds != NO_FOLD], dataset, classes,
                           min_positives)
    else:
        rows = _column_rows(records["dx"], kept_records["dx"][folds != NO_FOLD], classes, columns, rule)
    rows += _record_summary(total, int((~long_enough).sum()), unknown, empty & ~unknown, keep, rule,
                            unknown_codes, y, folds, split, dataset)
    rows.append(_setting_row("labels", rule, LABEL_RULES[rule] + (f"; classes with >= {min_positives} positives"
                                                                  if rule == "exact" and dataset != "cpsc2018"
                                                                  else "")))
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    # Record and setting rows have no count_kept, setting rows no count; nullable ints keep the counts integral.
    summary["count"] = summary["count"].astype("Int64")
    summary["count_kept"] = summary["count_kept"].astype("Int64")
    return ChallengeTask(task=dataset, dataset=dataset, split_preset=split, ecg_ids=names, classes=classes,
                         class_abbreviations=columns, y=y, folds=folds, patient_ids=names.copy(), meta=kept_records,
                         summary=summary, min_positives=min_positives, unknown_codes=unknown_codes,
                         length_policy=length_policy, seed=seed, labels=rule)


def _record_summary(total: int, short: int, unknown: np.ndarray, empty: np.ndarray, keep: np.ndarray, rule: str,
                    unknown_codes: str, y: np.ndarray, folds: np.ndarray, split: str, dataset: str) -> list[dict]:
    if rule == "ecgfix":
        dropping_empty, unknown_reason = True, "ecg-fix: a code outside its vocabulary (missing_codes)"
        empty_reason = "ecg-fix drops all-zero rows"
    elif rule == "merl_released":
        dropping_empty, unknown_reason = False, "MERL's Unknown: a code ConditionNames does not list, or no code"
        empty_reason = "labels merl_released: all-zero label rows, kept as in MERL's tables"
    else:
        dropping_empty, unknown_reason = unknown_codes in ("drop_empty", "drop_unknown"), "unknown_codes=drop_unknown"
        empty_reason = f"unknown_codes={unknown_codes}" + ("" if dropping_empty else ": all-zero label rows")
    rows = [_record_row("total", total, reason="records of the dataset in the index"),
            _record_row("shorter than 10 s", short, "dropped" if short else "",
                        "length policy drop_short" if short else "")]
    rows.append(_record_row("unknown or excluded code", int(unknown.sum()), "dropped" if unknown.any() else "",
                            unknown_reason if unknown.any() else ""))
    rows.append(_record_row("no kept class", int(empty.sum()), "dropped" if dropping_empty else "kept", empty_reason))
    rows.append(_record_row("kept", int(keep.sum()), "kept"))
    per_split = {name: int(np.isin(folds, codes).sum()) for name, codes in SPLIT_FOLDS.items()}
    for name, count in per_split.items():
        rows.append(_record_row(name, count, "kept", f"split preset {split}"))
    no_split = int((folds == NO_FOLD).sum())
    rows.append(_record_row("in no split", no_split, "kept" if no_split else "",
                            "not in MERL's split tables: report them" if no_split else ""))
    if split == "merl":
        n_train, n_merl = per_split["train"], merl_split_sizes(dataset)["train"]
        same = n_train == n_merl  # our training records are a subset of MERL's: equal counts, the same records
        rows.append(_record_row("of MERL's training table", n_train, "kept",
                                f"{n_train} of its {n_merl} records, in its row order: " +
                                ("1 % and 10 % draws (probe_subset_draw merl) pick MERL's own records" if same else
                                 "records are missing, so 1 % and 10 % draws pick other records than MERL's")))
    return rows
