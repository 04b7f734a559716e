"""SNOMED-CT ECG label codes: the shipped code table, the Challenge's equivalent codes, and exact-code labels.

The table `snomed_ct.csv` (beside this module) holds every code of the PhysioNet/CinC Challenge 2021 mapping tables
(`dx_mapping_scored.csv`, 30 rows, `scored` = 1; `dx_mapping_unscored.csv`, 103 rows; physionetchallenges/
evaluation-2021, commit e2a75fc) and the CSN acronyms of ecg-arrhythmia 1.0.0's `ConditionNames_SNOMED-CT.csv`
(`csn_acronym`, `csn_name`; four CSN codes that the Challenge does not list are added with their CSN acronym as
abbreviation). Columns: code, abbreviation, name, scored, csn_acronym, csn_name. `scripts/make_snomed_table.py`
regenerates it.

Equivalent codes. The Challenge scores four pairs of codes as one diagnosis (the `Notes` column of
dx_mapping_scored.csv and the "a|b" classes of its weights.csv). They are merged here, each into one canonical
code, and only these four pairs:

    733534002 CLBBB -> 164909002 LBBB   (CPSC2018's LBBB class)
    713427006 CRBBB -> 59118001  RBBB   (CPSC2018's RBBB class)
    63593006  SVPB  -> 284470004 PAC    (CPSC2018's PAC class)
    17338001  VPB   -> 427172004 PVC    (the first code of the Challenge's "427172004|17338001" class)

CPSC2018's own PVC class is 164884008 ("ventricular ectopics", VEB, an unscored Challenge code): the Challenge does
not merge it with 427172004 or 17338001, so neither does this module; it stays a class of its own.

Labels are built by exact code match: a `#Dx` cell is split on "," or ";" and each code compared as a whole string,
never as a substring (so "59118001" never matches "159118001").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

TABLE_PATH = Path(__file__).with_name("snomed_ct.csv")

# alias code -> canonical code, for the four pairs the Challenge scores as the same diagnosis (see module doc).
EQUIVALENT_CODES: dict[str, str] = {
    "733534002": "164909002",  # CLBBB -> LBBB
    "713427006": "59118001",   # CRBBB -> RBBB
    "63593006": "284470004",   # SVPB  -> PAC
    "17338001": "427172004",   # VPB   -> PVC
}

_SEPARATORS = re.compile(r"[;,]")


@functools.lru_cache(maxsize=1)
def _cached_table() -> pd.DataFrame:
    # comment="#" skips the header line naming the sources; every column read as text so codes stay exact.
    table = pd.read_csv(TABLE_PATH, comment="#", dtype=str, keep_default_na=False)
    table["scored"] = table["scored"].astype(int).astype(bool)
    if table["code"].duplicated().any():
        raise ValueError(f"{TABLE_PATH}: duplicate code(s) {table.loc[table['code'].duplicated(), 'code'].tolist()}")
    return table.set_index("code", drop=False)


def snomed_table() -> pd.DataFrame:
    """The shipped SNOMED-CT code table (read once, then a copy of the cached table each call).

    Returns:
        One row per code, indexed by code (str), with columns code, abbreviation, name, scored (bool: one of the
        Challenge 2021's 30 scored codes), csn_acronym and csn_name (";"-joined CSN acronyms/names, "" if none).
    """
    return _cached_table().copy()


def describe_code(code: object) -> tuple[str, str]:
    """(abbreviation, name) of a code, or ("", "") for a code missing from the table (for summaries)."""
    table = _cached_table()
    key = str(code).strip()
    if key not in table.index:
        return "", ""
    return str(table.at[key, "abbreviation"]), str(table.at[key, "name"])


def canonical_code(code: str) -> str:
    """The code a label is counted under: the canonical code of an equivalent pair, else the code itself."""
    return EQUIVALENT_CODES.get(code, code)


def _code_text(value: object) -> str:
    # pandas reads a dx column whose cells are all single codes as numbers; 59118001.0 must become "59118001".
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def parse_dx(text: object) -> list[str]:
    """The codes of one `#Dx` cell, as written.

    Args:
        text: codes separated by "," or ";" (spaces around them ignored); None, NaN or "" give [].

    Returns:
        The code strings in order of appearance, duplicates removed; no equivalents merged.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    codes = (part.strip() for part in _SEPARATORS.split(_code_text(text)))
    return list(dict.fromkeys(code for code in codes if code))


def record_codes(text: object, merge_equivalents: bool = True) -> list[str]:
    """The codes of one `#Dx` cell with equivalent codes merged (set `merge_equivalents=False` to keep them)."""
    codes = parse_dx(text)
    if merge_equivalents:
        codes = list(dict.fromkeys(canonical_code(code) for code in codes))
    return codes


def _check_classes(classes: Sequence[str], merge_equivalents: bool) -> list[str]:
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate class code(s) in {classes}")
    if merge_equivalents:
        aliases = [c for c in classes if c in EQUIVALENT_CODES]
        if aliases:
            raise ValueError(f"class code(s) {aliases} are merged into {[EQUIVALENT_CODES[c] for c in aliases]}; "
                             "use the canonical code(s)")
    return classes


def label_matrix(dx_column: Iterable[object], classes: Sequence[str], merge_equivalents: bool = True) -> np.ndarray:
    """Multi-hot labels by exact code match.

    Args:
        dx_column: one `#Dx` cell per record (see `parse_dx`).
        classes: the class codes, one column each, in this order (canonical codes when merging).
        merge_equivalents: count an alias code (e.g. 733534002) as its canonical class (164909002); default True.

    Returns:
        uint8 (records, len(classes)); codes that are not classes are ignored.
    """
    classes = _check_classes(classes, merge_equivalents)
    column_of = {code: j for j, code in enumerate(classes)}
    cells = list(dx_column)
    y = np.zeros((len(cells), len(classes)), dtype=np.uint8)
    for i, text in enumerate(cells):
        columns = [column_of[c] for c in record_codes(text, merge_equivalents) if c in column_of]
        y[i, columns] = 1
    return y


def code_counts(dx_column: Iterable[object], merge_equivalents: bool = True) -> pd.Series:
    """Records per code (a record counts once per code), codes as in `record_codes`, most frequent first.

    Args:
        dx_column: one `#Dx` cell per record.
        merge_equivalents: count alias codes under their canonical code; default True.

    Returns:
        int64 Series indexed by code (ties in ascending numeric-string order of code).
    """
    counts: dict[str, int] = {}
    for text in dx_column:
        for code in record_codes(text, merge_equivalents):
            counts[code] = counts.get(code, 0) + 1
    series = pd.Series(counts, dtype=np.int64)
    if series.empty:
        return series
    order = sorted(series.index, key=lambda code: (-series[code], code))
    return series.loc[order]
