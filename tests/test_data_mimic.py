"""MIMIC-IV-ECG pairs table, on a small copy of the exact MIMIC-IV-ECG / MIMIC-IV file layout written in tmp_path."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import pandas as pd
import pytest

from esi.data import mimic

REPORTS = [f"report_{i}" for i in range(18)]
MEASUREMENT_HEADER = (["subject_id", "study_id", "cart_id", "ecg_time"] + REPORTS +
                      ["bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
                       "p_axis", "qrs_axis", "t_axis"])

# (subject_id, study_id, ecg_time) of each study in record_list.csv.
RECORDS = [
    (10000032, 40689238, "2180-07-23 08:44:00"),
    (10000032, 44458630, "2180-07-23 09:54:00"),
    (10000117, 45090959, "2181-03-04 17:14:00"),
    (10000560, 41271100, "2189-10-16 12:05:00"),
    (10001122, 48155050, "2151-02-01 10:00:00"),   # no machine measurements
]
# study_id -> statements in report_0, report_1, ... (None = empty cell).
MEASUREMENTS = {
    40689238: (10000032, ["Sinus rhythm", None, "Possible right atrial abnormality", "Borderline ECG"]),
    44458630: (10000032, ["  Sinus rhythm. ", "NA", "Normal ECG"]),  # padded; "NA" is a statement here
    45090959: (10000117, []),                                          # all 18 report cells empty
    41271100: (10000560, ["Atrial fibrillation", "Low QRS voltages in limb leads"]),
    47000000: (10000999, ["Sinus bradycardia"]),                       # no record
}
PATIENTS = [  # subject_id, gender, anchor_age, anchor_year, anchor_year_group, dod
    (10000032, "F", 52, 2180, "2014 - 2016", "2180-09-09"),
    (10000117, "F", 91, 2174, "2008 - 2010", ""),   # MIMIC-IV writes 91 for "older than 89"
    (10001122, "M", 40, 2150, "2017 - 2019", ""),
]                                                    # 10000560 has no patients row


def record_path(subject_id: int, study_id: int) -> str:
    return f"files/p{str(subject_id)[:4]}/p{subject_id}/s{study_id}/{study_id}"


def write_mimic_ecg(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "record_list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        for subject_id, study_id, ecg_time in RECORDS:
            writer.writerow([subject_id, study_id, study_id, ecg_time, record_path(subject_id, study_id)])
    times = {study_id: ecg_time for _, study_id, ecg_time in RECORDS}
    with open(root / "machine_measurements.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MEASUREMENT_HEADER)
        for study_id, (subject_id, statements) in MEASUREMENTS.items():
            reports = [s if s is not None else "" for s in statements] + [""] * (18 - len(statements))
            measurements = [0, 0, 800, 40, 150, 200, 290, 590, 60, 30, 45]
            writer.writerow([subject_id, study_id, 6848, times.get(study_id, "2190-01-01 00:00:00")] + reports
                            + measurements)
    return root


def write_patients(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"])
        writer.writerows(PATIENTS)
    return path


@pytest.fixture
def mimic_root(tmp_path) -> Path:
    return write_mimic_ecg(tmp_path / "mimic-iv-ecg")


@pytest.fixture
def patients_file(tmp_path) -> Path:
    return write_patients(tmp_path / "mimiciv" / "hosp" / "patients.csv.gz")


def test_pairs_join_records_and_statements_in_report_order(mimic_root):
    with pytest.warns(UserWarning, match="1 stud\\(ies\\) have a record but no machine measurements"):
        pairs, _ = mimic.load_pairs(mimic_root)
    by_study = pairs.set_index("study_id")
    assert sorted(pairs["study_id"]) == [40689238, 41271100, 44458630, 45090959]
    assert by_study.loc[40689238, "statements"] == ["Sinus rhythm", "Possible right atrial abnormality",
                                                    "Borderline ECG"]
    assert by_study.loc[44458630, "statements"] == ["Sinus rhythm.", "NA", "Normal ECG"]
    assert by_study.loc[45090959, "statements"] == []
    assert list(pairs.columns) == list(mimic.PAIR_COLUMNS)


def test_record_paths_are_absolute_wfdb_paths(mimic_root):
    with pytest.warns(UserWarning):
        pairs, _ = mimic.load_pairs(mimic_root)
    path = pairs.set_index("study_id").loc[40689238, "path"]
    assert Path(path).is_absolute()
    assert path == str(mimic_root.resolve()) + os.sep + "files/p1000/p10000032/s40689238/40689238"


def test_unmatched_studies_are_counted(mimic_root, patients_file):
    with pytest.warns(UserWarning) as caught:
        _, stats = mimic.load_pairs(mimic_root, patients=patients_file)
    assert stats.n_records == 5 and stats.n_measurements == 5 and stats.n_pairs == 4
    assert stats.n_records_without_measurements == 1      # 48155050
    assert stats.n_measurements_without_record == 1       # 47000000
    assert stats.n_pairs_without_statements == 1          # 45090959
    assert stats.n_subjects_without_patient_row == 1      # 10000560
    assert "1 pair(s) have no row in the patients table" in str(caught[0].message)


def test_age_at_the_ecg_from_anchor_age_and_year(mimic_root, patients_file):
    with pytest.warns(UserWarning):
        pairs, stats = mimic.load_pairs(mimic_root, patients=patients_file)
    by_study = pairs.set_index("study_id")
    assert by_study.loc[40689238, "age"] == 52.0            # ECG in the anchor year
    assert by_study.loc[40689238, "gender"] == "F"
    assert by_study.loc[45090959, "age"] == 91.0 + (2181 - 2174)
    assert bool(by_study.loc[45090959, "age_censored"]) is True
    assert pd.isna(by_study.loc[41271100, "age"]) and pd.isna(by_study.loc[41271100, "gender"])
    assert stats.n_age_known == 3 and stats.n_age_censored == 1


def test_patients_from_a_mimic_iv_folder_or_a_table(mimic_root, patients_file):
    with pytest.warns(UserWarning):
        from_folder, _ = mimic.load_pairs(mimic_root, patients=patients_file.parents[1])
    table = pd.DataFrame(PATIENTS, columns=["subject_id", "gender", "anchor_age", "anchor_year",
                                            "anchor_year_group", "dod"])
    with pytest.warns(UserWarning):
        from_table, _ = mimic.load_pairs(mimic_root, patients=table)
    assert from_folder["age"].tolist() == pytest.approx(from_table["age"].tolist(), nan_ok=True)


def test_without_patients_gender_and_age_are_unknown(mimic_root):
    with pytest.warns(UserWarning):
        pairs, stats = mimic.load_pairs(mimic_root)
    assert pairs["gender"].isna().all() and pairs["age"].isna().all()
    assert stats.n_age_known == 0


def test_pairs_without_missing_studies_do_not_warn(tmp_path, recwarn):
    root = tmp_path / "ecg"
    root.mkdir()
    pd.DataFrame({"subject_id": [1], "study_id": [2], "file_name": [2], "ecg_time": ["2150-01-01 10:00:00"],
                  "path": ["files/p1000/p1/s2/2"]}).to_csv(root / "record_list.csv", index=False)
    measurements = pd.DataFrame({c: [""] for c in MEASUREMENT_HEADER})
    measurements[["subject_id", "study_id", "report_0"]] = [[1, 2, "Sinus rhythm"]]
    measurements.to_csv(root / "machine_measurements.csv", index=False)
    pairs, stats = mimic.load_pairs(root)
    assert pairs["statements"].tolist() == [["Sinus rhythm"]]
    assert stats.n_pairs == 1 and not recwarn.list


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="record_list.csv"):
        mimic.load_pairs(tmp_path)


def test_a_study_filed_under_two_subjects_is_an_error(mimic_root):
    table = pd.read_csv(mimic_root / "machine_measurements.csv", dtype=str, keep_default_na=False)
    table.loc[table["study_id"] == "40689238", "subject_id"] = "10000117"
    table.to_csv(mimic_root / "machine_measurements.csv", index=False)
    with pytest.raises(ValueError, match="40689238"):
        mimic.load_pairs(mimic_root)
