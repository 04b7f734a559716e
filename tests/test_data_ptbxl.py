"""PTB-XL tables and benchmark tasks, checked on the real records 1-500 in ../shared/data/ptbxl."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import ast

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import MultiLabelBinarizer

from esi.data import ptbxl

SIX_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


def reference_labels(root: Path, task: str) -> dict[int, set[str]]:
    """An independent, plain-Python reading of the benchmark's label rules: ecg_id -> label set."""
    with open(root / "scp_statements.csv", newline="") as f:
        statements = {row[""]: row for row in csv.DictReader(f)}

    def flagged(code: str, flag: str) -> bool:
        return code in statements and statements[code][flag] not in ("", "0", "0.0")

    labels = {}
    with open(root / "ptbxl_database.csv", newline="") as f:
        for row in csv.DictReader(f):
            codes = json.loads(row["scp_codes"].replace("'", '"')).keys()
            if task == "all":
                found = set(codes)
            elif task == "diagnostic":
                found = {c for c in codes if flagged(c, "diagnostic")}
            elif task == "subdiagnostic":
                found = {statements[c]["diagnostic_subclass"] for c in codes if flagged(c, "diagnostic")}
            elif task == "superdiagnostic":
                found = {statements[c]["diagnostic_class"] for c in codes if flagged(c, "diagnostic")}
            else:
                found = {c for c in codes if flagged(c, task)}
            labels[int(row["ecg_id"])] = found
    return labels


def reference_task(root: Path, task: str, min_samples: int) -> tuple[list[int], dict[str, int]]:
    """(kept ecg_ids, class -> record count) after the benchmark's min_samples filtering (none for diagnostic)."""
    labels = reference_labels(root, task)
    counts = Counter(label for found in labels.values() for label in found)
    threshold = 0 if task == "diagnostic" else min_samples
    kept = {label for label, n in counts.items() if n > threshold}
    records = sorted(ecg_id for ecg_id, found in labels.items() if found & kept)
    return records, {label: counts[label] for label in kept}


def test_official_folds_split_the_500_records(ptbxl_dir):
    task = ptbxl.load_task(ptbxl_dir, "all")
    assert len(task) == 500
    assert (len(task.split("train")), len(task.split("val")), len(task.split("test"))) == (353, 81, 66)
    assert set(task.split("train").folds) == set(range(1, 9))
    assert set(task.split("test").folds) == {10}


@pytest.mark.parametrize("task_name", SIX_TASKS)
def test_task_classes_and_counts_match_the_benchmark_rules(ptbxl_dir, task_name):
    task = ptbxl.load_task(ptbxl_dir, task_name)
    expected_ids, expected_counts = reference_task(ptbxl_dir, task_name, min_samples=0)

    assert task.classes == sorted(expected_counts)
    assert dict(zip(task.classes, task.y.sum(axis=0).tolist())) == expected_counts
    assert task.ecg_ids.tolist() == expected_ids
    assert task.y.dtype == np.uint8 and task.y.shape == (len(expected_ids), len(expected_counts))


def test_record_1_has_the_labels_of_norm_lvolt_sr(ptbxl_dir):
    def labels_of(task_name: str, ecg_id: int) -> list[str]:
        task = ptbxl.load_task(ptbxl_dir, task_name)
        row = task.y[task.ecg_ids.tolist().index(ecg_id)]
        return [name for name, on in zip(task.classes, row) if on]

    assert labels_of("all", 1) == ["LVOLT", "NORM", "SR"]
    assert labels_of("diagnostic", 1) == ["NORM"]
    assert labels_of("superdiagnostic", 1) == ["NORM"]
    assert labels_of("form", 1) == ["LVOLT"]
    assert labels_of("rhythm", 1) == ["SR"]


def test_min_samples_drops_rare_classes_then_unlabelled_records(ptbxl_dir):
    full = ptbxl.load_task(ptbxl_dir, "form", min_samples=0)
    filtered = ptbxl.load_task(ptbxl_dir, "form", min_samples=10)
    expected_ids, expected_counts = reference_task(ptbxl_dir, "form", min_samples=10)

    assert filtered.classes == sorted(expected_counts)
    assert filtered.ecg_ids.tolist() == expected_ids
    assert len(filtered.classes) < len(full.classes) and len(filtered) < len(full)
    assert filtered.y.sum(axis=1).min() >= 1


def test_split_keeps_the_class_columns(ptbxl_dir):
    task = ptbxl.load_task(ptbxl_dir, "superdiagnostic")
    test = task.split("test")
    assert test.classes == task.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert test.y.shape == (int(task.mask("test").sum()), 5)
    assert test.meta.index.tolist() == test.ecg_ids.tolist()


@pytest.mark.parametrize("fs, suffix", [(100, "_lr"), (500, "_hr")])
def test_record_paths_exist_for_both_rates(ptbxl_dir, fs, suffix):
    paths = ptbxl.load_task(ptbxl_dir, "all").paths(fs)
    assert len(paths) == 500
    assert all(Path(p).is_absolute() and p.endswith(suffix) for p in paths)
    assert all(Path(p + ".hea").is_file() and Path(p + ".dat").is_file() for p in paths)


def test_paths_reject_other_sampling_rates(ptbxl_dir):
    with pytest.raises(ValueError, match="100 Hz and 500 Hz"):
        ptbxl.load_task(ptbxl_dir, "rhythm").paths(fs=250)


def test_reports_are_the_free_text_of_each_record(ptbxl_dir):
    task = ptbxl.load_task(ptbxl_dir, "all")
    assert task.reports[0] == "sinusrhythmus periphere niederspannung"
    # Record 443 is the only one of the 500 whose report is blank in the database.
    assert [int(i) for i, r in zip(task.ecg_ids, task.reports) if not r] == [443]


def test_database_parses_scp_codes_and_patient_ids(ptbxl_dir):
    database = ptbxl.load_database(ptbxl_dir)
    assert database.loc[1, "scp_codes"] == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert database.loc[1, "patient_id"] == 15709
    statements = ptbxl.load_statements(ptbxl_dir)
    assert statements.loc["IMI", "diagnostic_class"] == "MI"


def test_unknown_task_lists_the_six(ptbxl_dir):
    with pytest.raises(ValueError, match="all, diagnostic, subdiagnostic, superdiagnostic, form, rhythm"):
        ptbxl.load_task(ptbxl_dir, "superclass")


def test_missing_database_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "ptbxl_database.csv")):
        ptbxl.load_database(tmp_path)


def test_malformed_scp_codes_name_the_record(tmp_path):
    (tmp_path / "ptbxl_database.csv").write_text(
        "ecg_id,patient_id,age,sex,report,scp_codes,strat_fold,filename_lr,filename_hr\n"
        "7,1.0,50.0,0,ok,\"{'NORM': 100.0\",1,records100/00000/00007_lr,records500/00000/00007_hr\n")
    with pytest.raises(ValueError, match="ecg_id 7: scp_codes"):
        ptbxl.load_database(tmp_path)


def benchmark_select(root: Path, task: str, min_samples: int) -> tuple[list[int], list[str], np.ndarray]:
    """The benchmark's compute_label_aggregations + select_data (helme/ecg_ptbxl_benchmarking, code/utils/utils.py)
    rewritten with pandas and MultiLabelBinarizer from their semantics: (ecg_ids, classes, multi-hot y)."""
    database = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    database["scp_codes"] = database["scp_codes"].apply(ast.literal_eval)
    statements = pd.read_csv(root / "scp_statements.csv", index_col=0)

    # compute_label_aggregations: one label list per record; flags compared to 1.0 as the benchmark does.
    diagnostic = statements[statements["diagnostic"] == 1.0]
    if task == "all":
        labels = database["scp_codes"].apply(lambda codes: list(set(codes.keys())))
    elif task == "diagnostic":
        labels = database["scp_codes"].apply(lambda codes: list({c for c in codes if c in diagnostic.index}))
    elif task in ("subdiagnostic", "superdiagnostic"):
        column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
        labels = database["scp_codes"].apply(lambda codes: list({
            diagnostic.loc[c, column] for c in codes
            if c in diagnostic.index and str(diagnostic.loc[c, column]) != "nan"}))
    else:
        flagged = statements[statements[task] == 1.0]
        labels = database["scp_codes"].apply(lambda codes: list({c for c in codes if c in flagged.index}))

    # select_data: the count filter over the whole table, except in the diagnostic branch which has none.
    if task != "diagnostic":
        counts = pd.Series(np.concatenate(labels.values)).value_counts()
        kept = set(counts[counts > min_samples].index.values)
        labels = labels.apply(lambda found: list(set(found).intersection(kept)))
    labels = labels[labels.apply(len) > 0]
    mlb = MultiLabelBinarizer()
    mlb.fit(labels.values)
    return labels.index.tolist(), list(mlb.classes_), mlb.transform(labels.values)


@pytest.mark.parametrize("min_samples", [0, 5])
@pytest.mark.parametrize("task_name", SIX_TASKS)
def test_load_task_equals_the_benchmarks_select_data(ptbxl_dir, task_name, min_samples):
    ecg_ids, classes, y = benchmark_select(ptbxl_dir, task_name, min_samples)
    task = ptbxl.load_task(ptbxl_dir, task_name, min_samples=min_samples)

    assert task.ecg_ids.tolist() == ecg_ids
    assert task.classes == classes
    np.testing.assert_array_equal(task.y, y)
    assert task.min_samples == min_samples


def test_diagnostic_ignores_min_samples_as_the_benchmark_does(ptbxl_dir):
    unfiltered = ptbxl.load_task(ptbxl_dir, "diagnostic", min_samples=0)
    asked = ptbxl.load_task(ptbxl_dir, "diagnostic", min_samples=5)
    # Records 1-500: 12 records carry no diagnostic statement; 36 diagnostic statements occur.
    assert (len(asked), len(asked.classes)) == (len(unfiltered), len(unfiltered.classes)) == (488, 36)
    np.testing.assert_array_equal(asked.y, unfiltered.y)
    # Classes seen in at most 5 records stay (the filter would have left 15 classes).
    assert int((asked.y.sum(axis=0) <= 5).sum()) == 36 - 15
    # The other tasks do filter: subdiagnostic loses classes at min_samples=5.
    assert len(ptbxl.load_task(ptbxl_dir, "subdiagnostic", min_samples=5).classes) == 15
