"""Record lists: which WFDB records make up a dataset, as one uniform table.

Every source function returns a pandas DataFrame with one row per record and at least these columns:

    record_id   str, unique within the table (the store looks records up by it)
    path        str, absolute WFDB record path without extension (what `read_ecg` takes)
    subject_id  nullable Int64, the patient, where the source knows it
    study_id    nullable Int64, the recording/study, where the source knows it

plus source-specific passthrough columns (PTB-XL: ecg_id, strat_fold, age, sex; MIMIC-IV-ECG: file_name,
ecg_time; the PhysioNet Challenge layouts of `esi.data.challenge`: source, dx, age, sex) so that a store's index
can be joined with labels and splits without going back to the CSV.
Rows keep the order of the record list, which makes chunking (and therefore resuming) deterministic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

RECORD_COLUMNS = ("record_id", "path", "subject_id", "study_id")
SOURCES = ("mimic", "ptbxl", "folder", "challenge", "ecg_arrhythmia")

PTBXL_PASSTHROUGH = ("ecg_id", "strat_fold", "age", "sex")
MIMIC_PASSTHROUGH = ("file_name", "ecg_time")


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """A CSV with a clear error when it is missing or lacks a required column."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    table = pd.read_csv(path)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a {what}: missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, table.columns))})")
    return table


def _absolute(root: Path, relative: pd.Series) -> pd.Series:
    """Absolute record paths: root joined with each relative WFDB path (a trailing .hea/.dat is dropped)."""
    rel = relative.astype(str).str.strip().str.replace(r"\.(hea|dat)$", "", regex=True)
    prefix = str(root.resolve()) + os.sep
    return prefix + rel.str.lstrip("/")


def check_unique(table: pd.DataFrame, where: Path) -> pd.DataFrame:
    """The table with a fresh index; ValueError if a record id occurs twice (naming the first one's two files
    when the table has a `path` column: a record in two source folders of one download)."""
    duplicated = table["record_id"][table["record_id"].duplicated()]
    if len(duplicated):
        examples = ", ".join(duplicated.astype(str).head(5))
        files = ""
        if "path" in table.columns:
            first = table.loc[table["record_id"] == duplicated.iloc[0], "path"].astype(str).head(2).tolist()
            files = f"; {duplicated.iloc[0]} is both {first[0]} and {first[1]}"
        raise ValueError(f"{where}: {len(duplicated)} duplicate record id(s), e.g. {examples}{files}; "
                         "every record must appear once (remove a copy, or convert the sources separately)")
    return table.reset_index(drop=True)


def _ids(values: pd.Series) -> pd.Series:
    """Patient/study ids as nullable integers (PTB-XL writes patient_id as 15709.0)."""
    return pd.to_numeric(values, errors="coerce").round().astype("Int64")


def mimic_records(root: str | os.PathLike, record_list: str | os.PathLike | None = None) -> pd.DataFrame:
    """The records of a MIMIC-IV-ECG download, from its `record_list.csv`.

    Args:
        root: the dataset folder that holds `files/` (record paths in the list are relative to it).
        record_list: the record list CSV (columns subject_id, study_id, file_name, ecg_time, path);
            default `<root>/record_list.csv`.

    Returns:
        The uniform record table; record_id is the study id (unique per ECG in MIMIC-IV-ECG).
    """
    root = Path(root)
    list_path = Path(record_list) if record_list else root / "record_list.csv"
    raw = _read_csv(list_path, ("subject_id", "study_id", "path"), "MIMIC-IV-ECG record list")
    table = pd.DataFrame({
        "record_id": raw["study_id"].astype(str),
        "path": _absolute(root, raw["path"]),
        "subject_id": _ids(raw["subject_id"]),
        "study_id": _ids(raw["study_id"]),
    })
    for column in MIMIC_PASSTHROUGH:
        if column in raw.columns:
            table[column] = raw[column].to_numpy()
    return check_unique(table, list_path)


def ptbxl_records(root: str | os.PathLike, record_list: str | os.PathLike | None = None,
                  fs: float | None = 500) -> pd.DataFrame:
    """The records of a PTB-XL download, from its `ptbxl_database.csv`.

    Args:
        root: the dataset folder that holds `records100/` and `records500/`.
        record_list: the database CSV (columns ecg_id, patient_id, filename_lr, filename_hr, strat_fold, ...);
            default `<root>/ptbxl_database.csv`.
        fs: the sampling rate the store will hold. At 100 Hz or below the 100 Hz files (`filename_lr`) are
            read, otherwise the 500 Hz files (`filename_hr`), so that a 100 Hz store is the official 100 Hz
            data rather than our own downsampling of it. None means 500 Hz files.

    Returns:
        The uniform record table; record_id is the ecg_id, subject_id the patient_id, study_id the ecg_id,
        with ecg_id, strat_fold, age and sex passed through.
    """
    root = Path(root)
    list_path = Path(record_list) if record_list else root / "ptbxl_database.csv"
    raw = _read_csv(list_path, ("ecg_id", "patient_id", "filename_lr", "filename_hr"), "PTB-XL database")
    file_column = "filename_lr" if fs is not None and float(fs) <= 100 else "filename_hr"
    ecg_id = _ids(raw["ecg_id"])
    table = pd.DataFrame({
        "record_id": ecg_id.astype(str),
        "path": _absolute(root, raw[file_column]),
        "subject_id": _ids(raw["patient_id"]),
        "study_id": ecg_id,
    })
    for column in PTBXL_PASSTHROUGH:
        if column in raw.columns:
            table[column] = ecg_id if column == "ecg_id" else raw[column].to_numpy()
    return check_unique(table, list_path)


def folder_records(root: str | os.PathLike) -> pd.DataFrame:
    """Every WFDB record below a folder (each `*.hea`, recursively, in sorted path order).

    Args:
        root: the folder to search.

    Returns:
        The uniform record table; record_id is the record's path relative to `root` without extension
        (e.g. "records500/00000/00001_hr"); subject_id and study_id are unknown (<NA>).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    root = root.resolve()
    headers = sorted(root.rglob("*.hea"))
    relative = [h.relative_to(root).with_suffix("").as_posix() for h in headers]
    table = pd.DataFrame({
        "record_id": pd.Series(relative, dtype=str),
        "path": pd.Series([str(h.with_suffix("")) for h in headers], dtype=str),
        "subject_id": pd.array([pd.NA] * len(headers), dtype="Int64"),
        "study_id": pd.array([pd.NA] * len(headers), dtype="Int64"),
    })
    return check_unique(table, root)


def _header_records(source: str, root: str | os.PathLike) -> pd.DataFrame:
    """The record table of a source listed by its headers alone ("folder", "challenge", "ecg_arrhythmia")."""
    if source == "folder":
        return folder_records(root)
    from esi.data.challenge import challenge_records, ecg_arrhythmia_records

    return challenge_records(root) if source == "challenge" else ecg_arrhythmia_records(root)


def load_records(source: str, root: str | os.PathLike, record_list: str | os.PathLike | None = None,
                 fs: float | None = None, limit: int | None = None) -> pd.DataFrame:
    """The record table of any supported source (what `python -m esi.data.convert` reads).

    Args:
        source: "mimic", "ptbxl", "folder", "challenge" (a CinC 2020/2021 training tree) or "ecg_arrhythmia"
            (PhysioNet ecg-arrhythmia 1.0.0); see `esi.data.challenge` for the last two.
        root: the dataset folder.
        record_list: the source's record list CSV (default: the standard file inside `root`); only for
            "mimic" and "ptbxl" (the others list every *.hea below `root`).
        fs: the sampling rate the store will hold (PTB-XL uses it to choose its 100 or 500 Hz files).
        limit: keep only the first `limit` records (a quick trial run); None keeps all.

    Returns:
        The uniform record table (see the module docstring).
    """
    if source == "mimic":
        table = mimic_records(root, record_list)
    elif source == "ptbxl":
        table = ptbxl_records(root, record_list, fs=fs)
    elif source in ("folder", "challenge", "ecg_arrhythmia"):
        if record_list:
            raise ValueError(f"--record-list does not apply to --source {source} (every *.hea below the "
                             "input folder is converted)")
        table = _header_records(source, root)
    else:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        table = table.iloc[:limit].reset_index(drop=True)
    return table
