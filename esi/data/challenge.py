"""Record lists of the PhysioNet Challenge layouts: the CinC 2020/2021 training tree and ecg-arrhythmia 1.0.0.

Both ship one WFDB header (`.hea`) and one MATLAB signal file (`.mat`, a single int16 array `val`, leads x
samples in ADC units) per record. The header names the `.mat` with format `16+24`: the 24 bytes skipped are the
MATLAB v4 header and the array name, so the samples are plain interleaved int16 that `esi.data.reader.read_ecg`
decodes on its fast path. Labels and demographics live in the header's comment lines:

    A0001 12 500 7500 05-Feb-2020 11:39:16
    A0001.mat 16+24 1000/mV 16 0 28 -1716 0 I
    ...
    #Age: 74
    #Sex: Male
    #Dx: 59118001,164884008

Layouts read here:
- `challenge_records`: `<root>/training/<source>/gN/<record>.hea` (cpsc_2018, georgia, chapman_shaoxing, ningbo,
  ptb-xl, ... any source folder), or `<root>` pointing at `training/` or at one source folder;
- `ecg_arrhythmia_records`: `<root>/WFDBRecords/<NN>/<NNN>/JSxxxxx.hea` plus `<root>/ConditionNames_SNOMED-CT.csv`
  (`read_condition_names` reads the latter).

Neither source publishes patient ids, so subject_id and study_id are <NA>: splits of these datasets are
record-level, never patient-disjoint. Converted into a store, the index keeps dx and source as text (an empty
dx stays ""); an unknown sex is written as an empty field and reads back as missing.

    table = challenge_records("data/challenge-2021/training")
    table[["record_id", "source", "dx", "age", "sex"]]    # A0001, cpsc_2018, "59118001;164884008", 74.0, "M"
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

from esi.data.sources import check_unique

ECG_ARRHYTHMIA_SOURCE = "ecg_arrhythmia"
ECG_ARRHYTHMIA_FOLDER = "WFDBRecords"
CONDITION_NAMES_FILE = "ConditionNames_SNOMED-CT.csv"
CONDITION_NAMES_COLUMNS = ("Acronym Name", "Full Name", "Snomed_CT")

# "#Age: 74", "# age :74", "#AGE:  NaN": a key of letters, a colon, then the value.
_COMMENT = re.compile(r"^#\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
# The 2021 challenge groups about 1,000 records per folder g1, g2, ...
_GROUP_FOLDER = re.compile(r"^g\d+$")
_SEX = {"male": "M", "m": "M", "female": "F", "f": "F"}


def parse_header_comments(path: str | os.PathLike) -> dict:
    """Age, sex and diagnosis codes from the comment lines of a challenge-style WFDB header.

    Keys are matched case-insensitively and spacing around '#' and ':' is ignored. Anything unreadable
    (a missing value, 'Unknown', 'NaN') becomes the empty value rather than an error, so that a record with
    broken comments still gets a row; its signal is judged later by the converter.

    Args:
        path: the `.hea` file (or the record path without extension).

    Returns:
        {"age": float (NaN if absent or not a number), "sex": "M", "F" or "" (unknown),
         "dx": the #Dx codes as written, in order, joined by ";" ("" if none)}.

    Raises:
        FileNotFoundError: the header does not exist.
    """
    path = Path(path)
    if path.suffix.lower() != ".hea":
        path = path.with_name(path.name + ".hea")
    # latin-1 never fails to decode; comment keys and SNOMED codes are ASCII anyway.
    text = path.read_bytes().decode("latin-1")
    values: dict[str, str] = {}
    codes: list[str] = []
    for line in text.splitlines():
        match = _COMMENT.match(line.strip())
        if match is None:
            continue
        key, value = match.group(1).lower().replace(" ", ""), match.group(2)
        if key == "dx":  # every #Dx line counts (the challenge writes one)
            codes.extend(code for code in re.split(r"[,;\s]+", value) if code)
        else:
            values.setdefault(key, value)
    return {"age": _age(values.get("age", "")), "sex": _SEX.get(values.get("sex", "").lower(), ""),
            "dx": ";".join(codes)}


def _age(text: str) -> float:
    """An age in years as a float; NaN for 'NaN', 'Unknown', empty or anything else that is not a number."""
    try:
        age = float(text)
    except ValueError:
        return math.nan
    return age if math.isfinite(age) else math.nan


def _comments_or_blank(header: Path) -> dict:
    """parse_header_comments, or blank values when the header cannot be read (the converter rejects it later)."""
    try:
        return parse_header_comments(header)
    except OSError:
        return {"age": math.nan, "sex": "", "dx": ""}


def challenge_source(header: Path, root: Path) -> str:
    """The challenge source (cpsc_2018, georgia, ...) a header belongs to, from its folders.

    The folder right below `training/` if the path from `root` (root's own name included) passes through one;
    else the folder holding the `gN` folder; else the name of `root` itself.

    Args:
        header: a `.hea` file below `root`.
        root: the folder the search started from (resolved).
    """
    chain = [root.name, *header.parent.relative_to(root).parts]
    below_training = [i + 1 for i, name in enumerate(chain[:-1]) if name == "training"]
    if below_training:
        return chain[below_training[-1]]
    if _GROUP_FOLDER.match(header.parent.name):
        return chain[-2] if len(chain) >= 2 else root.parent.name
    return root.name


def _record_table(headers: list[Path], sources: list[str], where: Path) -> pd.DataFrame:
    """The uniform record table (plus source, dx, age, sex) of the given headers, sorted by record name.

    Raises:
        ValueError: two headers share a record name (naming both files).
    """
    rows = []
    for header, source in zip(headers, sources):
        comments = _comments_or_blank(header)
        rows.append({"record_id": header.stem, "path": str(header.with_suffix("")), "source": source,
                     "dx": comments["dx"], "age": comments["age"], "sex": comments["sex"]})
    table = pd.DataFrame(rows, columns=["record_id", "path", "source", "dx", "age", "sex"])
    table = table.sort_values(["record_id", "path"], kind="stable").reset_index(drop=True)
    table = check_unique(table, where)
    n = len(table)
    table.insert(2, "subject_id", pd.array([pd.NA] * n, dtype="Int64"))
    table.insert(3, "study_id", pd.array([pd.NA] * n, dtype="Int64"))
    table["age"] = table["age"].astype(float)
    for column in ("record_id", "path", "source", "dx", "sex"):
        table[column] = table[column].astype(str)
    return table


def _headers(root: Path, what: str) -> list[Path]:
    """Every `.hea` below `root`, in sorted path order (FileNotFoundError if there is none)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    headers = sorted(root.rglob("*.hea"))
    if not headers:
        raise FileNotFoundError(f"{root}: no *.hea header below it; point --input at the {what} folder")
    return headers


def challenge_records(root: str | os.PathLike) -> pd.DataFrame:
    """The records of a PhysioNet/CinC Challenge 2020/2021 download (every `.hea` below `root`).

    Args:
        root: the download (holding `training/`), `training/` itself, or one source folder such as
            `training/cpsc_2018`.

    Returns:
        The uniform record table of `esi.data.sources`, sorted by record name: record_id the record name
        (A0001, E00001, JS00001, ...), path the absolute record path without extension, subject_id and study_id
        <NA> (the challenge publishes no patient ids: splits are record-level, not patient-disjoint), plus
        source (the folder below `training/`, see `challenge_source`), dx (the #Dx SNOMED codes as written,
        ";"-joined), age (float, NaN if unknown) and sex ("M", "F" or "").

    Raises:
        FileNotFoundError: `root` is missing or holds no header.
        ValueError: two headers share a record name.
    """
    root = Path(root).resolve()
    headers = _headers(root, "challenge training")
    return _record_table(headers, [challenge_source(h, root) for h in headers], root)


def ecg_arrhythmia_records(root: str | os.PathLike) -> pd.DataFrame:
    """The records of PhysioNet ecg-arrhythmia 1.0.0 (the Chapman-Shaoxing-Ningbo "CSN" database).

    Args:
        root: the download, holding `WFDBRecords/` (and `ConditionNames_SNOMED-CT.csv`); `WFDBRecords/`
            itself, or any folder below it, works too.

    Returns:
        The uniform record table, as `challenge_records` describes it (record_id JS00001, ..., subject_id and
        study_id <NA>: record-level splits only), with source "ecg_arrhythmia".

    Raises:
        FileNotFoundError: `root` is missing or holds no header.
        ValueError: two headers share a record name.
    """
    root = Path(root).resolve()
    folder = root / ECG_ARRHYTHMIA_FOLDER if (root / ECG_ARRHYTHMIA_FOLDER).is_dir() else root
    headers = _headers(folder, "ecg-arrhythmia")
    return _record_table(headers, [ECG_ARRHYTHMIA_SOURCE] * len(headers), folder)


def read_condition_names(root: str | os.PathLike) -> pd.DataFrame:
    """The acronym table of ecg-arrhythmia 1.0.0 (`ConditionNames_SNOMED-CT.csv`).

    Args:
        root: the download folder holding the CSV, or the CSV itself.

    Returns:
        DataFrame with columns acronym, name, snomed (all strings; codes kept as written, never numbers).

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: it lacks one of the columns Acronym Name, Full Name, Snomed_CT.
    """
    path = Path(root)
    if path.is_dir():
        path = path / CONDITION_NAMES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; it ships with ecg-arrhythmia 1.0.0 beside WFDBRecords/")
    # utf-8-sig: the file may start with a byte-order mark, which would otherwise glue onto the first name.
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in CONDITION_NAMES_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(raw.columns)}); "
                         f"expected the ecg-arrhythmia 1.0.0 file")
    return pd.DataFrame({"acronym": raw["Acronym Name"].str.strip(), "name": raw["Full Name"].str.strip(),
                         "snomed": raw["Snomed_CT"].str.strip()})
