"""MIMIC-IV-ECG tables joined into one table of ECG-text pairs.

MIMIC-IV-ECG (PhysioNet, v1.0) ships
- `record_list.csv`: subject_id, study_id, file_name, ecg_time, path (WFDB record path relative to the root,
  e.g. files/p1000/p10000032/s40689238/40689238);
- `machine_measurements.csv`: subject_id, study_id, cart_id, ecg_time, report_0 ... report_17 (the cart's
  statements, in report order, mostly empty), bandwidth, filtering and interval/axis measurements.
Demographics come from the MIMIC-IV `hosp/patients` table (subject_id, gender, anchor_age, anchor_year, ...).
MIMIC-IV shifts every date of a patient by one offset, so the age at an ECG is
anchor_age + (year of ecg_time - anchor_year). Patients older than 89 at anchor_year have anchor_age 91.

    pairs, stats = load_pairs("data/mimic-iv-ecg", patients="data/mimiciv/hosp/patients.csv.gz")
    pairs.loc[0, "statements"]   # ['Sinus rhythm', 'Normal ECG']
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RECORD_LIST_FILE = "record_list.csv"
MEASUREMENTS_FILE = "machine_measurements.csv"
REPORT_COLUMNS: tuple[str, ...] = tuple(f"report_{i}" for i in range(18))

# MIMIC-IV writes anchor_age = 91 for every patient older than 89 at anchor_year.
CENSORED_ANCHOR_AGE = 91

_RECORD_COLUMNS = ("subject_id", "study_id", "ecg_time", "path")
_PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year")
PAIR_COLUMNS = ("subject_id", "study_id", "ecg_time", "path", "statements", "gender", "age", "age_censored")


@dataclass(frozen=True)
class PairStats:
    """What `load_pairs` joined, and what it could not.

    Attributes:
        n_records: rows of record_list.csv.
        n_measurements: rows of machine_measurements.csv.
        n_pairs: studies with both a record and measurements (rows of the pairs table).
        n_records_without_measurements: studies in record_list.csv missing from machine_measurements.csv.
        n_measurements_without_record: studies in machine_measurements.csv missing from record_list.csv.
        n_pairs_without_statements: pairs whose report_0..report_17 are all empty (kept, with []).
        n_subjects_without_patient_row: pairs whose subject is not in the patients table (0 without one).
        n_age_known: pairs with a computed age.
        n_age_censored: pairs of patients MIMIC-IV lists as older than 89 (anchor_age 91).
    """

    n_records: int
    n_measurements: int
    n_pairs: int
    n_records_without_measurements: int
    n_measurements_without_record: int
    n_pairs_without_statements: int
    n_subjects_without_patient_row: int
    n_age_known: int
    n_age_censored: int


def _read_csv(path: Path, columns: tuple[str, ...], dtypes: dict, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"MIMIC file not found: {path}")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        return pd.read_csv(path, usecols=list(columns), dtype={c: t for c, t in dtypes.items() if c in columns},
                           **kwargs)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _unique_ids(table: pd.DataFrame, column: str, path: Path) -> None:
    duplicated = table[column].duplicated()
    if duplicated.any():
        raise ValueError(f"{path}: {column} must be unique; repeated: {table.loc[duplicated, column].head(5).tolist()}")


def _parse_times(values: pd.Series, path: Path) -> pd.Series:
    try:
        return pd.to_datetime(values, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: ecg_time is not a date-time: {err}") from err


def load_record_list(root: str | os.PathLike) -> pd.DataFrame:
    """`record_list.csv`: subject_id, study_id, ecg_time (datetime) and `path` made absolute.

    Args:
        root: the MIMIC-IV-ECG folder (holding record_list.csv, machine_measurements.csv and files/).
    """
    root = Path(root).expanduser().resolve()
    path = root / RECORD_LIST_FILE
    table = _read_csv(path, _RECORD_COLUMNS, {"subject_id": "int64", "study_id": "int64", "path": "str",
                                              "ecg_time": "str"})
    _unique_ids(table, "study_id", path)
    table["ecg_time"] = _parse_times(table["ecg_time"], path)
    # Vectorised join of root and relative record path (no extension, as WFDB expects).
    table["path"] = str(root) + os.sep + table["path"].str.lstrip("/")
    return table


def load_measurements(root: str | os.PathLike) -> pd.DataFrame:
    """`machine_measurements.csv` reduced to subject_id, study_id and `statements`.

    `statements` is the list of non-empty report_0 ... report_17 of each study, in report order, each stripped
    of surrounding whitespace (otherwise verbatim).

    Args:
        root: the MIMIC-IV-ECG folder.
    """
    path = Path(root).expanduser().resolve() / MEASUREMENTS_FILE
    columns = ("subject_id", "study_id") + REPORT_COLUMNS
    dtypes = {"subject_id": "int64", "study_id": "int64", **{c: object for c in REPORT_COLUMNS}}
    # Only an empty cell is missing: a statement that reads "NA" or "None" stays a statement.
    table = _read_csv(path, columns, dtypes, keep_default_na=False, na_values=[""])
    _unique_ids(table, "study_id", path)

    # Long form: the non-empty statements of all studies, row after row, each row's in report order
    # (np.nonzero walks row-major). Slicing it by per-row counts is far faster than groupby(...).agg(list).
    reports = table[list(REPORT_COLUMNS)].to_numpy(dtype=object)
    row, position = np.nonzero(pd.notna(reports))
    text = pd.Series(reports[row, position], dtype=object).str.strip()
    filled = (text != "").to_numpy()
    row, text = row[filled], text.to_numpy()[filled]
    per_study = np.bincount(row, minlength=len(table))
    ends = np.cumsum(per_study)
    starts = ends - per_study
    statements = pd.Series([text[a:b].tolist() for a, b in zip(starts.tolist(), ends.tolist())], dtype=object)
    return pd.DataFrame({"subject_id": table["subject_id"], "study_id": table["study_id"],
                         "statements": statements})


def load_patients(patients: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """The MIMIC-IV `patients` table: subject_id, gender, anchor_age, anchor_year.

    Args:
        patients: the table itself, a patients.csv / patients.csv.gz file, or a MIMIC-IV folder holding
            hosp/patients.csv(.gz) (or patients.csv(.gz) directly).
    """
    if isinstance(patients, pd.DataFrame):
        table, source = patients, "<patients table>"
        missing = [c for c in _PATIENT_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{source}: missing column(s) {', '.join(missing)}")
        table = table[list(_PATIENT_COLUMNS)].copy()
    else:
        path = Path(patients).expanduser()
        if path.is_dir():
            candidates = [path / sub / name for sub in ("hosp", ".") for name in ("patients.csv.gz", "patients.csv")]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise FileNotFoundError(f"no patients.csv(.gz) under {path} (looked in hosp/ and the folder itself)")
            path = found[0]
        table = _read_csv(path, _PATIENT_COLUMNS, {"subject_id": "int64", "gender": "str"})
        source = str(path)
    _unique_ids(table, "subject_id", Path(source))
    for column in ("anchor_age", "anchor_year"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def load_pairs(root: str | os.PathLike,
               patients: str | os.PathLike | pd.DataFrame | None = None) -> tuple[pd.DataFrame, PairStats]:
    """One table of MIMIC-IV-ECG ECG-text pairs: one row per study with a record and machine statements.

    Joins record_list.csv and machine_measurements.csv on study_id. Studies found in only one of them are
    counted in the returned stats and reported in a warning. With `patients`, adds gender and the age at the
    ECG (anchor_age + ecg year - anchor_year).

    Args:
        root: the MIMIC-IV-ECG folder (record_list.csv, machine_measurements.csv, files/).
        patients: optional MIMIC-IV patients table, file or folder (see `load_patients`).

    Returns:
        (pairs, stats). `pairs` has the columns subject_id, study_id, ecg_time, path (absolute WFDB record
        path, no extension), statements (list of str, possibly empty), gender ("M"/"F", NaN if unknown), age
        (float years, NaN if unknown), age_censored (True where MIMIC-IV lists the patient as older than 89, so
        that age is a floor), ordered by subject_id, ecg_time, study_id.
    """
    records = load_record_list(root)
    measurements = load_measurements(root)
    root = Path(root).expanduser().resolve()

    pairs = records.merge(measurements, on="study_id", how="inner", suffixes=("", "_measurements"))
    conflicting = pairs["subject_id"] != pairs["subject_id_measurements"]
    if conflicting.any():
        raise ValueError(f"{root}: study_id(s) {pairs.loc[conflicting, 'study_id'].head(5).tolist()} belong to "
                         f"different subject_ids in {RECORD_LIST_FILE} and {MEASUREMENTS_FILE}")
    pairs = pairs.drop(columns="subject_id_measurements")
    n_records_only = int((~records["study_id"].isin(measurements["study_id"])).sum())
    n_measurements_only = int((~measurements["study_id"].isin(records["study_id"])).sum())

    n_without_patient = 0
    if patients is None:
        pairs["gender"] = pd.Series(np.nan, index=pairs.index, dtype=object)
        pairs["age"] = np.nan
        pairs["age_censored"] = False
    else:
        table = load_patients(patients)
        pairs = pairs.merge(table, on="subject_id", how="left", indicator=True)
        n_without_patient = int((pairs["_merge"] == "left_only").sum())
        age = pairs["anchor_age"] + (pairs["ecg_time"].dt.year - pairs["anchor_year"])
        # An age below zero can only come from inconsistent tables; leave it unknown rather than invent one.
        pairs["age"] = age.where(age >= 0).astype(float)
        pairs["age_censored"] = (pairs["anchor_age"] >= CENSORED_ANCHOR_AGE).fillna(False).astype(bool)
        pairs = pairs.drop(columns=["anchor_age", "anchor_year", "_merge"])

    pairs = pairs.sort_values(["subject_id", "ecg_time", "study_id"], kind="stable").reset_index(drop=True)
    pairs = pairs[list(PAIR_COLUMNS)]
    stats = PairStats(
        n_records=len(records),
        n_measurements=len(measurements),
        n_pairs=len(pairs),
        n_records_without_measurements=n_records_only,
        n_measurements_without_record=n_measurements_only,
        n_pairs_without_statements=int((pairs["statements"].map(len) == 0).sum()),
        n_subjects_without_patient_row=n_without_patient,
        n_age_known=int(pairs["age"].notna().sum()),
        n_age_censored=int(pairs["age_censored"].sum()),
    )
    if n_records_only or n_measurements_only or n_without_patient:
        warnings.warn(
            f"{root}: {n_records_only} stud(ies) have a record but no machine measurements and "
            f"{n_measurements_only} have measurements but no record; neither is in the pairs table. "
            f"{n_without_patient} pair(s) have no row in the patients table (gender and age unknown).",
            stacklevel=2)
    return pairs, stats
