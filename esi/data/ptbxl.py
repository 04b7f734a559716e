"""PTB-XL tables: the record database, the SCP statements, the official folds and the benchmark's six tasks.

Labels are derived exactly as the PTB-XL benchmark does it (Strodthoff et al., IEEE JBHI 2021):

- every task reads the keys of `scp_codes`, whatever their likelihood value;
- `all`: every key (even one missing from scp_statements.csv); `diagnostic`: keys whose statement has
  diagnostic == 1; `subdiagnostic` / `superdiagnostic`: the `diagnostic_subclass` / `diagnostic_class` of those
  diagnostic keys (a key whose subclass/class is empty adds nothing); `form`: keys with form == 1; `rhythm`: keys
  with rhythm == 1 (a statement may be both form and diagnostic, and is then a label of both tasks);
- `all`, `subdiagnostic`, `superdiagnostic`, `form`, `rhythm`: a class is kept if it occurs in more than
  `min_samples` records (counted over the whole database, before any split), and records left with no label are
  dropped from that task;
- `diagnostic`: no class-frequency filter, whatever `min_samples` says (the benchmark's `select_data` has no count
  step in that branch): every diagnostic statement that occurs is a class, and only records without any diagnostic
  key are dropped. With the benchmark's own default, min_samples=0, all six tasks are unfiltered anyway.

Folds: `strat_fold` 1-8 train, 9 validation, 10 test.

Typical use:

    task = load_task("data/ptbxl", "superdiagnostic")
    train = task.split("train")
    paths = train.paths(fs=100)      # WFDB record paths, no extension
    x_labels = train.y               # (records, classes) multi-hot uint8
"""

from __future__ import annotations

import dataclasses
import ast
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DATABASE_FILE = "ptbxl_database.csv"
STATEMENTS_FILE = "scp_statements.csv"

TASKS: tuple[str, ...] = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")

SPLIT_FOLDS: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5, 6, 7, 8),
    "val": (9,),
    "test": (10,),
}

# Sampling rate -> database column holding the record path (relative to the dataset root, no extension).
FILENAME_COLUMN: dict[int, str] = {100: "filename_lr", 500: "filename_hr"}

_DATABASE_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "report", "scp_codes", "strat_fold",
                     "filename_lr", "filename_hr")
_STATEMENT_COLUMNS = ("description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")


def _csv_path(root: str | os.PathLike, name: str) -> Path:
    path = Path(root).expanduser() / name
    if not path.is_file():
        raise FileNotFoundError(f"PTB-XL file not found: {path} (is {Path(root)} the PTB-XL root folder?)")
    return path


def _require_columns(table: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.columns and c != table.index.name]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")


def _parse_scp_codes(text: object, ecg_id: int, path: Path) -> dict[str, float]:
    # literal_eval only accepts Python literals, so a malformed cell cannot execute code.
    try:
        codes = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: ecg_id {ecg_id}: scp_codes {text!r} is not a dict literal ({err})") from err
    if not isinstance(codes, dict):
        raise ValueError(f"{path}: ecg_id {ecg_id}: scp_codes {text!r} is not a dict literal")
    return {str(code): float(likelihood) for code, likelihood in codes.items()}


def load_database(root: str | os.PathLike) -> pd.DataFrame:
    """The PTB-XL record table (`ptbxl_database.csv`), indexed by ecg_id.

    Args:
        root: the PTB-XL folder (holding ptbxl_database.csv, scp_statements.csv, records100/, records500/).

    Returns:
        One row per record, in ecg_id order, with all the file's columns; `scp_codes` parsed into a dict
        {statement code: likelihood}, `patient_id` as int64, `report` as a stripped string ("" if empty).
    """
    path = _csv_path(root, DATABASE_FILE)
    table = pd.read_csv(path)
    _require_columns(table, _DATABASE_COLUMNS, path)
    if table["ecg_id"].duplicated().any():
        duplicates = table.loc[table["ecg_id"].duplicated(), "ecg_id"].tolist()[:5]
        raise ValueError(f"{path}: duplicate ecg_id(s) {duplicates}")
    table = table.set_index("ecg_id").sort_index()
    table["scp_codes"] = [_parse_scp_codes(text, ecg_id, path)
                          for ecg_id, text in zip(table.index, table["scp_codes"])]
    if table["patient_id"].isna().any():
        raise ValueError(f"{path}: ecg_id {table.index[table['patient_id'].isna()].tolist()[:5]} without patient_id")
    table["patient_id"] = table["patient_id"].astype(np.int64)
    bad_folds = ~table["strat_fold"].isin(range(1, 11))
    if bad_folds.any():
        raise ValueError(f"{path}: strat_fold outside 1-10 for ecg_id {table.index[bad_folds].tolist()[:5]}")
    table["report"] = table["report"].fillna("").astype(str).str.strip()
    return table


def load_statements(root: str | os.PathLike) -> pd.DataFrame:
    """The SCP statement table (`scp_statements.csv`), indexed by statement code (e.g. "NORM", "IMI", "SR").

    Args:
        root: the PTB-XL folder.

    Returns:
        One row per statement code with `description` (English), the 0/1 flags `diagnostic`, `form`, `rhythm`
        (NaN in the file read as 0), `diagnostic_class`, `diagnostic_subclass` and the file's other columns.
    """
    path = _csv_path(root, STATEMENTS_FILE)
    table = pd.read_csv(path, index_col=0)
    table.index = table.index.astype(str)
    table.index.name = "code"
    _require_columns(table, _STATEMENT_COLUMNS, path)
    for flag in ("diagnostic", "form", "rhythm"):
        table[flag] = table[flag].fillna(0).astype(int)
    return table


def task_labels(database: pd.DataFrame, statements: pd.DataFrame, task: str) -> pd.Series:
    """Each record's label set for one benchmark task, before any class filtering.

    Args:
        database: `load_database` output (needs the parsed `scp_codes`).
        statements: `load_statements` output.
        task: one of `TASKS`.

    Returns:
        A Series (index ecg_id) of sorted label lists; a record with none of the task's labels gets [].
    """
    if task not in TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; expected one of: {', '.join(TASKS)}")
    if task == "all":
        # The benchmark keeps every key of scp_codes for `all`, even one missing from scp_statements.csv.
        return pd.Series([sorted(codes) for codes in database["scp_codes"]], index=database.index, dtype=object)
    if task in ("diagnostic", "subdiagnostic", "superdiagnostic"):
        selected = statements[statements["diagnostic"] == 1]
        column = {"diagnostic": None, "subdiagnostic": "diagnostic_subclass",
                  "superdiagnostic": "diagnostic_class"}[task]
    else:  # form, rhythm
        selected = statements[statements[task] == 1]
        column = None
    if column is None:
        code_to_label = {code: code for code in selected.index}
    else:
        code_to_label = {code: label for code, label in selected[column].items() if isinstance(label, str)}
    labels = [sorted({code_to_label[c] for c in codes if c in code_to_label}) for codes in database["scp_codes"]]
    return pd.Series(labels, index=database.index, dtype=object)


class FoldedTask:
    """What every benchmark task shares (a dataclass with per-record arrays ecg_ids, y, folds, patient_ids and a
    `meta` table indexed by ecg_id): its records by split, in the benchmark's fold convention `SPLIT_FOLDS`."""

    # The dataclass fields with one entry per record, cut together by `subset`.
    row_fields = ("ecg_ids", "y", "folds", "patient_ids")
    # How notes name the split that selects epochs and settings (fold code 9; see ChallengeTask for others).
    validation_name = "fold 9"

    def __len__(self) -> int:
        return len(self.ecg_ids)

    def mask(self, split: str) -> np.ndarray:
        """Boolean (n,) mask of the records in `split` ("train": folds 1-8, "val": 9, "test": 10)."""
        if split not in SPLIT_FOLDS:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLIT_FOLDS)}")
        return np.isin(self.folds, SPLIT_FOLDS[split])

    def subset(self, mask: np.ndarray):
        """The task restricted to the rows where `mask` (boolean, length n) is True; classes unchanged."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask must be boolean of shape ({len(self)},), got {mask.shape}")
        rows = {name: getattr(self, name)[mask] for name in self.row_fields}
        return dataclasses.replace(self, **rows, classes=list(self.classes), meta=self.meta.loc[self.ecg_ids[mask]])

    def split(self, split: str):
        """The records of one split: "train" (folds 1-8), "val" (fold 9) or "test" (fold 10)."""
        return self.subset(self.mask(split))


@dataclass
class PTBXLTask(FoldedTask):
    """The records, labels and folds of one PTB-XL benchmark task (rows aligned across all arrays).

    Attributes:
        task: the task name (one of `TASKS`).
        root: the PTB-XL folder the paths are relative to.
        ecg_ids: int64 (n,), the records kept in this task, ascending.
        classes: the task's class names, sorted.
        y: uint8 (n, len(classes)), multi-hot labels.
        folds: int64 (n,), `strat_fold` of each record (1-10).
        patient_ids: int64 (n,).
        reports: object (n,), the free-text report of each record (mostly German).
        meta: the database rows of the records (index ecg_id, same order).
        min_samples: the class-frequency threshold asked for (`load_task`'s argument); the `diagnostic` task
            ignores it, as the benchmark does, so there it does not describe the classes kept.
    """

    task: str
    root: Path
    ecg_ids: np.ndarray
    classes: list[str]
    y: np.ndarray
    folds: np.ndarray
    patient_ids: np.ndarray
    reports: np.ndarray
    meta: pd.DataFrame = field(repr=False)
    min_samples: int = 0

    # The results' `split` column: the benchmark's stratified, patient-disjoint folds 1-8 / 9 / 10.
    split_label = "ptbxl_folds_1-8/9/10"
    row_fields = (*FoldedTask.row_fields, "reports")

    def paths(self, fs: int = 100) -> list[str]:
        """Absolute WFDB record paths without extension (records100/... for fs=100, records500/... for fs=500).

        Args:
            fs: sampling rate of the files to point at, 100 or 500 Hz (PTB-XL holds only these two).
        """
        column = FILENAME_COLUMN.get(int(fs)) if float(fs) == int(fs) else None
        if column is None:
            raise ValueError(f"PTB-XL has records at 100 Hz and 500 Hz only, not {fs}")
        root = self.root.resolve()
        return [str(root / name) for name in self.meta[column]]


def load_task(root: str | os.PathLike, task: str, min_samples: int = 0) -> PTBXLTask:
    """Records, multi-hot labels and folds of one PTB-XL benchmark task, derived as the benchmark does.

    Args:
        root: the PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records100/, records500/).
        task: "all", "diagnostic", "subdiagnostic", "superdiagnostic", "form" or "rhythm".
        min_samples: keep a class only if it occurs in more than this many records of the whole database;
            records left without any label are then dropped. Applied to every task except `diagnostic`, which
            the benchmark never filters by count (there only records with no diagnostic statement are dropped).

    Returns:
        A `PTBXLTask` (its `min_samples` is the value passed, even for `diagnostic`); use
        `.split("train" | "val" | "test")` for the official folds.
    """
    if task not in TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; expected one of: {', '.join(TASKS)}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}")
    database = load_database(root)
    statements = load_statements(root)
    labels = task_labels(database, statements, task)

    counts = pd.Series([label for record in labels for label in record], dtype=object).value_counts()
    # The benchmark's select_data has no count filter in its `diagnostic` branch: every occurring code is a class.
    threshold = 0 if task == "diagnostic" else min_samples
    classes = sorted(counts.index[counts > threshold])
    kept_classes = set(classes)
    labels = labels.map(lambda record: [label for label in record if label in kept_classes])
    labels = labels[labels.map(len) > 0]

    column_of = {name: j for j, name in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.uint8)
    for i, record in enumerate(labels):
        y[i, [column_of[label] for label in record]] = 1

    meta = database.loc[labels.index]
    return PTBXLTask(
        task=task,
        root=Path(root).expanduser().resolve(),
        ecg_ids=meta.index.to_numpy(dtype=np.int64),
        classes=classes,
        y=y,
        folds=meta["strat_fold"].to_numpy(dtype=np.int64),
        patient_ids=meta["patient_id"].to_numpy(dtype=np.int64),
        reports=meta["report"].to_numpy(dtype=object),
        meta=meta,
        min_samples=min_samples,
    )
