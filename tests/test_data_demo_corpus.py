"""The offline demo corpus: exact MIMIC-IV-ECG / PTB-XL layouts, reproducible, and classes that really differ."""

from __future__ import annotations

import ast
import filecmp
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy import signal as sps

from esi.data import demo_corpus
from esi.data.leads import MIMIC_LEADS, STANDARD_LEADS, lead_indices

N_MIMIC, N_PTBXL = 120, 45


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> demo_corpus.DemoPaths:
    return demo_corpus.generate_demo(tmp_path_factory.mktemp("demo") / "out", n_mimic=N_MIMIC, n_ptbxl=N_PTBXL,
                                     seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def labels(corpus) -> pd.DataFrame:
    return pd.read_csv(corpus.labels_csv, keep_default_na=False)


@pytest.fixture(scope="module")
def clean_mimic(corpus, labels) -> pd.DataFrame:
    """MIMIC-layout records without reported wander or artifact, each with its measured waveform features."""
    rows = labels[(labels.dataset == "mimic") & (labels.wander_leads == "") & (labels.artifact_leads == "")]
    features = [_features(*_read_standard(corpus.mimic_root / path)) for path in rows.path]
    return pd.concat([rows.reset_index(drop=True), pd.DataFrame(features)], axis=1)


# -- small, independent measurements on the written files (what a reader of the files would see) -------------------

def _read_standard(stem: Path) -> tuple[np.ndarray, float]:
    record = wfdb.rdrecord(str(stem))
    return record.p_signal[:, lead_indices(record.sig_name)].T, float(record.fs)


def _r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """QRS detection on the 12-lead energy of the 5-30 Hz band."""
    band = sps.sosfiltfilt(sps.butter(2, [5, 30], btype="band", fs=fs, output="sos"), x, axis=1)
    energy = np.convolve((np.diff(band, axis=1) ** 2).sum(0), np.ones(int(0.05 * fs)), "same")
    peaks, _ = sps.find_peaks(energy, distance=int(0.25 * fs), height=0.3 * np.percentile(energy, 99))
    return peaks


def _features(x: np.ndarray, fs: float) -> dict:
    peaks = _r_peaks(x, fs)
    rr = np.diff(peaks) / fs
    pre, post = int(0.3 * fs), int(0.5 * fs)
    beat = np.median([x[:, p - pre:p + post] for p in peaks if pre <= p <= x.shape[1] - post], axis=0)
    # QRS width: where the spatial velocity of the (40 Hz low-passed) median beat exceeds 10% of its peak.
    smooth = sps.sosfiltfilt(sps.butter(2, 40, fs=fs, output="sos"), beat, axis=1)
    velocity = np.sqrt((np.diff(smooth, axis=1) ** 2).sum(0))[pre - int(0.12 * fs):pre + int(0.15 * fs)]
    above = np.flatnonzero(velocity > 0.1 * velocity.max())
    # ST level 80 ms after the R peak against the PR segment; QRS voltages within -60..+100 ms.
    baseline = beat[:, pre - int(0.08 * fs):pre - int(0.06 * fs)].mean(axis=1)
    st = beat[:, pre + int(0.08 * fs)] - baseline
    qrs = beat[:, pre - int(0.06 * fs):pre + int(0.1 * fs)]
    p2p = qrs.max(axis=1) - qrs.min(axis=1)
    lead = STANDARD_LEADS.index
    return {
        "measured_hr": 60.0 / rr.mean(), "measured_rr_cv": rr.std() / rr.mean(),
        "qrs_width_ms": (above[-1] - above[0]) / fs * 1000,
        **{f"st_{name}": st[lead(name)] for name in STANDARD_LEADS},
        "limb_p2p": p2p[:6].max(), "precordial_p2p": p2p[6:].max(),
        "sokolow_mv": -qrs[lead("V1")].min() + max(qrs[lead("V5")].max(), qrs[lead("V6")].max()),
    }


def _by_class(clean: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = clean[clean["class"] == name]
    assert len(rows) > 0, f"no clean record of class {name} in the test corpus"
    return rows


# -- layouts -------------------------------------------------------------------------------------------------------

def test_mimic_tables_have_mimic_iv_ecg_columns_and_paths(corpus):
    records = pd.read_csv(corpus.mimic_root / "record_list.csv")
    measurements = pd.read_csv(corpus.mimic_root / "machine_measurements.csv", keep_default_na=False)
    assert list(records.columns) == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    assert list(measurements.columns) == (["subject_id", "study_id", "cart_id", "ecg_time"]
                                          + [f"report_{i}" for i in range(18)]
                                          + ["bandwidth", "filtering", "rr_interval", "p_onset", "p_end",
                                             "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis"])
    assert len(records) == N_MIMIC and records.study_id.is_unique
    assert (records.file_name == records.study_id).all()
    for row in records.itertuples():
        sid = str(row.subject_id)
        assert row.path == f"files/p{sid[:4]}/p{sid}/s{row.study_id}/{row.study_id}"
        assert (corpus.mimic_root / f"{row.path}.hea").exists() and (corpus.mimic_root / f"{row.path}.dat").exists()
    assert (measurements.study_id.values == records.study_id.values).all()
    assert (measurements.report_0 != "").all() and (measurements.report_17 == "").all()


def test_mimic_headers_are_mimic_format(corpus):
    records = pd.read_csv(corpus.mimic_root / "record_list.csv")
    for row in records.head(5).itertuples():
        header = wfdb.rdheader(str(corpus.mimic_root / row.path))
        assert (header.fs, header.n_sig, header.sig_len) == (500, 12, 5000)
        assert tuple(header.sig_name) == MIMIC_LEADS                   # aVF before aVL, as on PhysioNet
        assert header.fmt == ["16"] * 12 and header.adc_gain == [200.0] * 12 and header.baseline == [0] * 12
        assert header.units == ["mV"] * 12
        assert str(header.base_datetime) == row.ecg_time


def test_demo_files_are_byte_identical_to_wfdb_wrsamp(corpus, tmp_path):
    stem = corpus.mimic_root / pd.read_csv(corpus.mimic_root / "record_list.csv").path[0]
    record = wfdb.rdrecord(str(stem), physical=False)
    wfdb.wrsamp(stem.name, fs=record.fs, units=record.units, sig_name=record.sig_name, d_signal=record.d_signal,
                fmt=record.fmt, adc_gain=record.adc_gain, baseline=record.baseline, base_time=record.base_time,
                base_date=record.base_date, write_dir=str(tmp_path))
    for ext in (".hea", ".dat"):
        assert filecmp.cmp(f"{stem}{ext}", tmp_path / f"{stem.name}{ext}", shallow=False), ext


def test_patients_join_every_mimic_subject(corpus):
    with gzip.open(corpus.patients_csv, "rt") as f:
        patients = pd.read_csv(f)
    records = pd.read_csv(corpus.mimic_root / "record_list.csv")
    assert list(patients.columns) == ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
    assert set(records.subject_id) == set(patients.subject_id) and patients.subject_id.is_unique
    assert set(patients.gender) <= {"M", "F"} and patients.anchor_age.between(18, 91).all()
    assert records.subject_id.value_counts().max() > 1, "some subjects should have several studies"


def test_ptbxl_tables_have_the_official_columns_and_facts(corpus, ptbxl_dir):
    database = pd.read_csv(corpus.ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    official = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id", nrows=1)
    assert list(database.columns) == list(official.columns)
    statements = pd.read_csv(corpus.ptbxl_root / "scp_statements.csv", index_col=0)
    official_statements = pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0)
    assert list(statements.columns) == list(official_statements.columns)
    assert set(statements.index) <= set(official_statements.index)
    pd.testing.assert_frame_equal(statements, official_statements.loc[statements.index])
    for codes in database.scp_codes:
        parsed = ast.literal_eval(codes)
        assert parsed and set(parsed) <= set(statements.index), codes
    assert list(database.index) == list(range(1, N_PTBXL + 1))
    assert database.recording_date.is_monotonic_increasing


def test_ptbxl_records_match_the_real_headers_and_lr_is_resampled_hr(corpus, ptbxl_dir):
    database = pd.read_csv(corpus.ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    real = wfdb.rdheader(str(ptbxl_dir / "records500/00000/00001_hr"))
    row = database.loc[1]
    assert row.filename_hr == "records500/00000/00001_hr" and row.filename_lr == "records100/00000/00001_lr"
    high = wfdb.rdrecord(str(corpus.ptbxl_root / row.filename_hr))
    low = wfdb.rdrecord(str(corpus.ptbxl_root / row.filename_lr))
    assert high.sig_name == real.sig_name == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert (high.fs, high.sig_len, low.fs, low.sig_len) == (500, 5000, 100, 1000)
    assert high.fmt == low.fmt == real.fmt and high.adc_gain == low.adc_gain == real.adc_gain
    decimated = sps.resample_poly(high.p_signal, 1, 5, axis=0)
    assert np.abs(decimated - low.p_signal).max() < 0.005                   # a few quantisation steps (mV)


def test_ptbxl_folds_split_patients_and_some_patients_repeat(corpus):
    database = pd.read_csv(corpus.ptbxl_root / "ptbxl_database.csv")
    assert database.groupby("patient_id").strat_fold.nunique().max() == 1
    assert set(database.strat_fold) <= set(range(1, 11)) and database.strat_fold.nunique() == 10
    assert database.patient_id.value_counts().max() > 1


# -- reproducibility and reruns ------------------------------------------------------------------------------------

def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    first = demo_corpus.generate_demo(tmp_path / "a", n_mimic=6, n_ptbxl=6, seed=3, progress=False)
    again = demo_corpus.generate_demo(tmp_path / "b", n_mimic=6, n_ptbxl=6, seed=3, workers=2, progress=False)
    other = demo_corpus.generate_demo(tmp_path / "c", n_mimic=6, n_ptbxl=6, seed=4, progress=False)
    assert _tree(first.root) == _tree(again.root)
    assert _tree(first.root) != _tree(other.root)


def test_rerun_on_a_complete_demo_does_nothing(tmp_path):
    paths = demo_corpus.generate_demo(tmp_path / "d", n_mimic=4, n_ptbxl=4, seed=0, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in paths.root.rglob("*") if p.is_file()}
    demo_corpus.generate_demo(tmp_path / "d", n_mimic=4, n_ptbxl=4, seed=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in paths.root.rglob("*") if p.is_file()} == stamps


def test_incomplete_or_different_demo_is_regenerated(tmp_path):
    paths = demo_corpus.generate_demo(tmp_path / "d", n_mimic=4, n_ptbxl=4, seed=0, progress=False)
    manifest = json.loads((paths.root / "demo_manifest.json").read_text())
    (paths.root / "demo_manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    (paths.ptbxl_root / "ptbxl_database.csv").unlink()                      # as if interrupted
    demo_corpus.generate_demo(tmp_path / "d", n_mimic=4, n_ptbxl=4, seed=0, progress=False)
    assert len(pd.read_csv(paths.ptbxl_root / "ptbxl_database.csv")) == 4
    demo_corpus.generate_demo(tmp_path / "d", n_mimic=7, n_ptbxl=4, seed=0, progress=False)
    assert len(pd.read_csv(paths.mimic_root / "record_list.csv")) == 7
    assert json.loads((paths.root / "demo_manifest.json").read_text())["complete"] is True


def test_folder_with_foreign_data_is_refused(tmp_path):
    (tmp_path / "ptb-xl").mkdir()
    (tmp_path / "ptb-xl" / "ptbxl_database.csv").write_text("real data\n")
    with pytest.raises(FileExistsError, match="not made by esi.data.demo_corpus"):
        demo_corpus.generate_demo(tmp_path, n_mimic=2, n_ptbxl=2, progress=False)
    assert (tmp_path / "ptb-xl" / "ptbxl_database.csv").read_text() == "real data\n"


def test_command_line_writes_a_demo(tmp_path, capsys):
    assert demo_corpus.main(["--out", str(tmp_path / "cli"), "--n-mimic", "3", "--n-ptbxl", "2", "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "cli" / "mimic-iv-ecg" / "record_list.csv")) == 3
    assert "mimic-iv-ecg" in capsys.readouterr().out


# -- the classes differ the way real ECGs do ----------------------------------------------------------------------

def test_every_class_is_present(labels):
    assert set(labels["class"]) == {c.name for c in demo_corpus.CLASSES}


def test_heart_rate_from_r_peaks_matches_labels_and_rhythm(clean_mimic):
    assert np.allclose(clean_mimic.measured_hr, clean_mimic.heart_rate, atol=3)
    by_rhythm = clean_mimic.groupby("rhythm").measured_hr
    assert by_rhythm.max()["sinus_bradycardia"] < 60 <= by_rhythm.min()["sinus_rhythm"]
    assert by_rhythm.max()["sinus_rhythm"] <= 100 < by_rhythm.min()["sinus_tachycardia"]


def test_atrial_fibrillation_is_irregular(clean_mimic):
    afib = clean_mimic[clean_mimic.rhythm == "atrial_fibrillation"].measured_rr_cv
    sinus = clean_mimic[clean_mimic.rhythm != "atrial_fibrillation"].measured_rr_cv
    assert afib.min() > 0.08 > sinus.max()


def test_bundle_branch_blocks_widen_the_qrs(clean_mimic):
    assert _by_class(clean_mimic, "normal").qrs_width_ms.max() < 110
    for name in ("left_bundle_branch_block", "right_bundle_branch_block", "atrial_fibrillation_with_lbbb"):
        assert _by_class(clean_mimic, name).qrs_width_ms.min() >= 120, name       # complete block: QRS >= 120 ms


def test_st_shifts_appear_in_the_territory_of_the_finding(clean_mimic):
    inferior = _by_class(clean_mimic, "inferior_st_elevation")
    assert (inferior[["st_II", "st_III", "st_aVF"]] > 0.1).all().all() and (inferior.st_aVL < 0).all()
    anterior = _by_class(clean_mimic, "anterior_st_elevation")
    assert (anterior[["st_V2", "st_V3"]] > 0.15).all().all()
    ischemia = _by_class(clean_mimic, "ischemic_st_depression")
    assert (ischemia[["st_II", "st_V5", "st_V6"]] < -0.05).all().all()
    normal = _by_class(clean_mimic, "normal")
    assert (normal[[f"st_{name}" for name in STANDARD_LEADS]].abs() < 0.08).all().all()


def test_voltage_criteria_of_hypertrophy_and_low_voltage(clean_mimic):
    assert (_by_class(clean_mimic, "left_ventricular_hypertrophy").sokolow_mv > 3.5).all()
    low = _by_class(clean_mimic, "low_qrs_voltage")
    assert (low.limb_p2p < 0.5).all() and (low.precordial_p2p < 1.0).all()
    assert (_by_class(clean_mimic, "normal").sokolow_mv < 3.5).all()


def test_limb_leads_obey_einthoven(corpus):
    x, _ = _read_standard(corpus.ptbxl_root / "records500/00000/00001_hr")
    lead = STANDARD_LEADS.index
    assert np.abs(x[lead("II")] - x[lead("I")] - x[lead("III")]).max() <= 0.002      # two quantisation steps
    assert np.abs(x[lead("aVR")] + x[lead("aVL")] + x[lead("aVF")]).max() <= 0.003


# -- the text agrees with the waveform -----------------------------------------------------------------------------

def test_statements_are_verbatim_mimic_statements(corpus, esi_dict_path):
    vocabulary = set(json.loads(Path(esi_dict_path).read_text()))
    measurements = pd.read_csv(corpus.mimic_root / "machine_measurements.csv", keep_default_na=False)
    reports = measurements[[f"report_{i}" for i in range(18)]].to_numpy().ravel()
    noise = re.compile(r"^(Artifact in lead\(s\) [IVaRLF0-9,]+( and baseline wander in lead\(s\) [IVaRLF0-9,]+)?"
                       r"|Baseline wander in lead\(s\) [IVaRLF0-9,]+)$")
    for text in set(reports) - {""}:
        assert text in vocabulary or noise.match(text), text


def test_statements_and_codes_follow_the_labels(corpus, labels):
    mimic = labels[labels.dataset == "mimic"]
    for row in mimic.itertuples():
        statements = row.statements.split(" | ")
        first = statements[0]
        if row.rhythm == "atrial_fibrillation":
            assert first.startswith("Atrial fibrillation")
            assert ("rapid ventricular response" in first) == (row.heart_rate > 100)
        else:
            expected = {"sinus_rhythm": "Sinus rhythm", "sinus_bradycardia": "Sinus bradycardia",
                        "sinus_tachycardia": "Sinus tachycardia"}[row.rhythm]
            assert first.startswith(expected)
            assert ("1st degree A-V block" in first) == (row.finding == "first_degree_av_block")
        finding_text = " ".join(statements[1:])
        if row.finding == "left_bundle_branch_block":
            assert "Left bundle branch block" in finding_text
        if row.finding == "" and row.rhythm == "sinus_rhythm":
            assert statements[1] == "Normal ECG"
        if row.finding not in ("", "first_degree_av_block", "low_qrs_voltage"):
            assert "Abnormal ECG" in statements
    database = pd.read_csv(corpus.ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    truth = labels[labels.dataset == "ptbxl"].set_index("record_id")
    rhythm_code = {"sinus_rhythm": "SR", "sinus_bradycardia": "SBRAD", "sinus_tachycardia": "STACH",
                   "atrial_fibrillation": "AFIB"}
    for ecg_id, row in database.iterrows():
        codes = ast.literal_eval(row.scp_codes)
        assert rhythm_code[truth.loc[ecg_id, "rhythm"]] in codes
        assert ("CLBBB" in codes) == (truth.loc[ecg_id, "finding"] == "left_bundle_branch_block")
        assert ("NORM" in codes) == (truth.loc[ecg_id, "finding"] in ("", "low_qrs_voltage")
                                     and truth.loc[ecg_id, "rhythm"] != "atrial_fibrillation")


def test_noise_statements_name_the_noisy_leads(corpus, labels):
    noisy = labels[(labels.dataset == "mimic") & (labels.wander_leads != "") & (labels.artifact_leads == "")]
    assert len(noisy) > 0
    for row in noisy.itertuples():
        x, fs = _read_standard(corpus.mimic_root / row.path)
        slow = sps.sosfiltfilt(sps.butter(2, 0.7, fs=fs, output="sos"), x, axis=1).std(axis=1)
        named = [STANDARD_LEADS.index(name) for name in row.wander_leads.split(",")]
        others = [i for i in range(12) if i not in named]
        assert slow[named].min() > np.median(slow[others]) if others else slow.min() > 0.1


def test_simulate_record_explains_bad_arguments():
    with pytest.raises(ValueError, match="unknown demo class 'hyperkalemia'"):
        demo_corpus.simulate_record("hyperkalemia")
    with pytest.raises(ValueError, match="fits none of the rhythms"):
        demo_corpus.simulate_record("sinus_bradycardia", heart_rate=120)
    ecg = demo_corpus.simulate_record("atrial_fibrillation_with_lbbb", seed=1, noise=False)
    assert ecg.signal.shape == (12, 5000) and ecg.rhythm == "atrial_fibrillation"
    assert "Left bundle branch block" in ecg.statements and ecg.codes["CLBBB"] == 100.0
