"""PhysioNet Challenge layouts (CinC 2020/2021 training tree, ecg-arrhythmia 1.0.0): headers, record tables,
the MATLAB v4 signal files through both decoders, and conversion into a store (dx/age/sex/source, crops)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb

from challenge_fixtures import (CHALLENGE_LEADS, CPSC_CODES, CSN_UNKNOWN_CODE_RECORD, FS, LONG_RECORD,
                                LOWER_CASE_RECORD, NO_DX_RECORD, SHORT_RECORD, UNKNOWN_CODE, UNKNOWN_CODE_RECORD,
                                mat_v4_bytes, write_challenge_record, write_challenge_tree, write_ecg_arrhythmia_tree)
from esi.data.challenge import (challenge_records, challenge_source, ecg_arrhythmia_records, parse_header_comments,
                                read_condition_names)
from esi.data.convert import convert, main
from esi.data.leads import STANDARD_LEADS
from esi.data.reader import read_digital, read_ecg, uses_fast_path
from esi.data.sources import RECORD_COLUMNS, load_records
from esi.data.store import ECGStore, StoreSettings, StoreSettingsError, fit_length, prepare_store

TABLE_COLUMNS = ["record_id", "path", "source", "dx", "age", "sex"]


@pytest.fixture(scope="session")
def challenge_tree(ptbxl_dir, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """(root holding training/, truth table) of the cpsc_2018 + chapman_shaoxing fixture tree."""
    root = tmp_path_factory.mktemp("challenge")
    return root, write_challenge_tree(ptbxl_dir, root)


@pytest.fixture(scope="session")
def csn_tree(ptbxl_dir, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """(root holding WFDBRecords/, truth table) of the ecg-arrhythmia fixture tree."""
    root = tmp_path_factory.mktemp("ecg-arrhythmia")
    return root, write_ecg_arrhythmia_tree(ptbxl_dir, root)


def convert_quietly(source: str, root: Path, out: Path, **options):
    return convert(source, root, out, fs=FS, seconds=10, workers=1, progress=False, **options)


@pytest.fixture(scope="module")
def challenge_stores(challenge_tree, tmp_path_factory) -> dict[str, ECGStore]:
    """The challenge tree converted at 500 Hz x 10 s, once per crop."""
    root, _ = challenge_tree
    stores = {}
    for crop in ("start", "centre"):
        out = tmp_path_factory.mktemp(f"store-{crop}")
        summary = convert_quietly("challenge", root, out, crop=crop)
        assert (summary.converted, summary.rejected) == (70, 0)
        stores[crop] = ECGStore(out)
    return stores


def row_of(truth: pd.DataFrame, record_id: str) -> pd.Series:
    return truth.set_index("record_id").loc[record_id]


# --- header comments ----------------------------------------------------------------------------------------


def write_header(path: Path, comments: str) -> Path:
    path.write_text("A0001 1 500 10\nA0001.mat 16+24 1000/mV 16 0 0 0 0 I\n" + comments)
    return path


@pytest.mark.parametrize("comments, expected", [
    ("#Age: 74\n#Sex: Male\n#Dx: 59118001,164884008\n#Rx: Unknown\n",
     {"age": 74.0, "sex": "M", "dx": "59118001;164884008"}),
    ("# age :  61.5 \n#SEX:female\n#  DX :426783006 , 164889003\n",
     {"age": 61.5, "sex": "F", "dx": "426783006;164889003"}),
    ("#Age: NaN\n#Sex: Unknown\n#Dx: 426783006\n", {"age": float("nan"), "sex": "", "dx": "426783006"}),
    ("#Age: Unknown\n#Sex: M\n", {"age": float("nan"), "sex": "M", "dx": ""}),
    ("#Age:\n#Sex: F\n#Dx:\n", {"age": float("nan"), "sex": "F", "dx": ""}),
    ("", {"age": float("nan"), "sex": "", "dx": ""}),
    ("#Age: old\n#Sex: 1\n#garbage without a colon\n#Dx: 164889003\n",
     {"age": float("nan"), "sex": "", "dx": "164889003"}),
])
def test_header_comments_are_parsed_tolerantly(tmp_path, comments, expected):
    parsed = parse_header_comments(write_header(tmp_path / "A0001.hea", comments))
    assert parsed["sex"] == expected["sex"] and parsed["dx"] == expected["dx"]
    np.testing.assert_equal(parsed["age"], expected["age"])


def test_header_comments_accept_the_record_path_without_extension(tmp_path):
    write_header(tmp_path / "A0001.hea", "#Dx: 270492004\n")
    assert parse_header_comments(tmp_path / "A0001")["dx"] == "270492004"
    with pytest.raises(FileNotFoundError):
        parse_header_comments(tmp_path / "A0002")


# --- record tables ------------------------------------------------------------------------------------------


def assert_table_matches(table: pd.DataFrame, truth: pd.DataFrame) -> None:
    assert list(table.columns[:4]) == list(RECORD_COLUMNS)
    assert table.subject_id.isna().all() and table.study_id.isna().all()
    assert table.subject_id.dtype == "Int64" and table.study_id.dtype == "Int64"
    assert list(table.record_id) == sorted(table.record_id)
    pd.testing.assert_frame_equal(table[TABLE_COLUMNS].reset_index(drop=True),
                                  truth[TABLE_COLUMNS].reset_index(drop=True), check_dtype=False)


def test_challenge_record_table_equals_the_truth(challenge_tree):
    root, truth = challenge_tree
    assert_table_matches(challenge_records(root), truth)
    assert_table_matches(challenge_records(root / "training"), truth)
    assert_table_matches(load_records("challenge", root), truth)


def test_challenge_record_table_of_one_source_folder(challenge_tree):
    root, truth = challenge_tree
    cpsc = truth[truth.source == "cpsc_2018"]
    assert_table_matches(challenge_records(root / "training" / "cpsc_2018"), cpsc)
    # A single gN folder still knows its source.
    g2 = challenge_records(root / "training" / "cpsc_2018" / "g2")
    assert len(g2) == 20 and (g2.source == "cpsc_2018").all()


def test_challenge_sources_from_folders(tmp_path):
    root = tmp_path / "download"
    cases = {"training/georgia/g3/E00001.hea": "georgia", "training/ptb-xl/g1/HR00001.hea": "ptb-xl",
             "ningbo/g1/JS10647.hea": "ningbo", "A0001.hea": "download", "flat/A0002.hea": "download"}
    for relative, source in cases.items():
        assert challenge_source(root / relative, root) == source, relative
    # Pointing at training/ itself, or at a flat source folder of the 2020 challenge.
    assert challenge_source(root / "training" / "cpsc_2018" / "g1" / "A0001.hea", root / "training") == "cpsc_2018"
    assert challenge_source(tmp_path / "Training_WFDB" / "A0001.hea", tmp_path / "Training_WFDB") == "Training_WFDB"


def test_ecg_arrhythmia_record_table_equals_the_truth(csn_tree):
    root, truth = csn_tree
    assert_table_matches(ecg_arrhythmia_records(root), truth)
    assert_table_matches(ecg_arrhythmia_records(root / "WFDBRecords"), truth)
    assert_table_matches(load_records("ecg_arrhythmia", root), truth)
    assert (truth.source == "ecg_arrhythmia").all()


def test_condition_names_keep_codes_as_text(csn_tree):
    root, truth = csn_tree
    names = read_condition_names(root)
    assert list(names.columns) == ["acronym", "name", "snomed"]
    used = {code for dx in truth.dx for code in dx.split(";")} - {UNKNOWN_CODE}
    assert set(names.snomed) == used
    assert names.set_index("acronym").loc["AFIB", "snomed"] == "164889003"
    assert UNKNOWN_CODE in row_of(truth, CSN_UNKNOWN_CODE_RECORD).dx.split(";")


def test_duplicate_record_names_are_refused_naming_both_files(challenge_tree, tmp_path):
    root, _ = challenge_tree
    for source in ("cpsc_2018", "cpsc_2018_extra"):
        folder = tmp_path / "training" / source / "g1"
        folder.mkdir(parents=True)
        for suffix in (".hea", ".mat"):
            shutil.copy(root / "training" / "cpsc_2018" / "g1" / f"A0001{suffix}", folder)
    both = r"duplicate record id.*A0001 is both .*cpsc_2018/g1/A0001 and .*cpsc_2018_extra"
    with pytest.raises(ValueError, match=both):
        challenge_records(tmp_path)


def test_missing_or_empty_inputs_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        challenge_records(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no \*\.hea"):
        ecg_arrhythmia_records(tmp_path)
    with pytest.raises(ValueError, match="--record-list does not apply to --source challenge"):
        load_records("challenge", tmp_path, record_list=tmp_path / "x.csv")


def test_unparseable_comments_still_give_a_row(challenge_tree, tmp_path):
    root, _ = challenge_tree
    folder = tmp_path / "training" / "georgia" / "g1"
    folder.mkdir(parents=True)
    source = root / "training" / "cpsc_2018" / "g1"
    shutil.copy(source / "A0001.mat", folder / "E00001.mat")
    text = (source / "A0001.hea").read_text().replace("A0001", "E00001").split("#")[0]
    (folder / "E00001.hea").write_text(text + "#Age 74\n#Sex=Male\n#Dx\n")
    table = challenge_records(tmp_path)
    assert table.record_id.tolist() == ["E00001"]
    assert (table.dx[0], table.sex[0], table.source[0]) == ("", "", "georgia") and np.isnan(table.age[0])


# --- the signal files ---------------------------------------------------------------------------------------


def test_mat_files_are_what_matlab_v4_writes():
    val = np.array([[1, -2, 3], [400, -500, 32767], [-32768, 0, 7]], dtype=np.int16)
    ours = mat_v4_bytes(val)
    reference = io.BytesIO()
    scipy.io.savemat(reference, {"val": val}, format="4")
    assert ours == reference.getvalue()
    assert len(ours) == 24 + val.size * 2 and ours[20:24] == b"val\x00"
    # Column-major: the samples are interleaved by sample, which is WFDB format 16.
    np.testing.assert_array_equal(np.frombuffer(ours[24:], "<i2").reshape(3, 3), val.T)
    np.testing.assert_array_equal(scipy.io.loadmat(io.BytesIO(ours))["val"], val)


def test_fixture_files_are_matlab_v4_of_the_header_shape(challenge_tree):
    root, truth = challenge_tree
    row = row_of(truth, LONG_RECORD)
    mat = Path(row.path + ".mat")
    assert mat.stat().st_size == 24 + 12 * row.n_samples * 2
    val = scipy.io.loadmat(mat)["val"]
    assert val.dtype == np.int16 and val.shape == (12, row.n_samples)
    header = wfdb.rdheader(row.path)
    assert header.sig_len == row.n_samples and header.fs == FS and header.fmt == ["16"] * 12
    assert header.byte_offset == [24] * 12 and header.sig_name == list(CHALLENGE_LEADS)


@pytest.mark.parametrize("record_id", ["A0001", "A0002", SHORT_RECORD, LONG_RECORD, LOWER_CASE_RECORD,
                                       "JS00001", NO_DX_RECORD])
def test_read_ecg_reads_the_ptbxl_signal_on_both_paths(challenge_tree, record_id):
    _, truth = challenge_tree
    row = row_of(truth, record_id)
    assert uses_fast_path(row.path)
    source = read_ecg(row.origin).signal
    if record_id == SHORT_RECORD:
        source = source[:, :row.n_samples]
    elif record_id == LONG_RECORD:
        source = np.tile(source, (1, 6))
    fast, slow = read_ecg(row.path), read_ecg(row.path + ".mat", fast=False)
    # Same ADC values at the same gain: equal to the PTB-XL record bit for bit, on both paths.
    np.testing.assert_array_equal(fast.signal, source)
    np.testing.assert_array_equal(slow.signal, source)
    assert fast.leads == STANDARD_LEADS and fast.fs == FS and fast.n_samples == row.n_samples
    assert (fast.adc_gain == 1000).all() and fast.mask.all()
    # And wfdb's own reading of the file agrees (float64 millivolts, file order).
    samples, fields = wfdb.rdsamp(row.path)
    assert [name.lower() for name in fields["sig_name"]] == [lead.lower() for lead in CHALLENGE_LEADS]
    np.testing.assert_allclose(fast.signal, samples.T, rtol=0, atol=1e-6)
    digital = read_digital(row.path)
    assert digital is not None and np.array_equal(digital.to_ecg().signal, fast.signal)


def test_lower_case_leads_come_back_in_standard_order(challenge_tree, tmp_path):
    root, truth = challenge_tree
    row = row_of(truth, LOWER_CASE_RECORD)
    assert "avr" in Path(row.path + ".hea").read_text().split()
    # The same record with its channels shuffled and oddly cased: still read in standard order.
    val = read_digital(row.origin).digital
    order = [6, 0, 11, 3, 1, 7, 2, 9, 5, 10, 4, 8]
    names = [("AvR" if STANDARD_LEADS[i] == "aVR" else STANDARD_LEADS[i].lower()) for i in order]
    path = write_challenge_record(tmp_path, "A9999", np.ascontiguousarray(val[order]), {"Dx": "426783006"}, names)
    expected = read_ecg(row.origin).signal
    for fast in (True, False):
        ecg = read_ecg(path, fast=fast)
        assert ecg.leads == STANDARD_LEADS
        np.testing.assert_array_equal(ecg.signal, expected)


# --- conversion ---------------------------------------------------------------------------------------------


def raw_index(store: ECGStore) -> list[dict]:
    """index.csv as the strings written."""
    with open(store.path / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_index_carries_the_headers(store: ECGStore, truth: pd.DataFrame) -> None:
    written = {row["record_id"]: row for row in raw_index(store)}
    assert sorted(written) == sorted(truth.record_id)
    for row in truth.itertuples():
        got = written[row.record_id]
        assert (got["dx"], got["sex"], got["source"]) == (row.dx, row.sex, row.source), row.record_id
        assert got["age"] == ("" if np.isnan(row.age) else repr(float(row.age)))
    index = store.index.set_index("record_id")
    # dx stays text, also where it reads as a number ("426783006"), and an empty dx stays "".
    assert pd.api.types.is_string_dtype(index.dx) and pd.api.types.is_string_dtype(index.source)
    assert index.dx.tolist() == truth.set_index("record_id").loc[index.index, "dx"].tolist()
    np.testing.assert_array_equal(index.age.to_numpy(float), truth.set_index("record_id").loc[index.index, "age"])


def test_challenge_tree_converts_with_its_labels(challenge_stores, challenge_tree):
    _, truth = challenge_tree
    store = challenge_stores["start"]
    assert_index_carries_the_headers(store, truth)
    index = store.index.set_index("record_id")
    assert index.loc["A0001", "dx"] == CPSC_CODES[0] and index.loc[NO_DX_RECORD, "dx"] == ""
    assert UNKNOWN_CODE in index.loc[UNKNOWN_CODE_RECORD, "dx"]
    assert store.manifest["settings"]["source"] == "challenge" and store.manifest["settings"]["crop"] == "start"
    assert index.lossless.all() and (index.lead_mask == "1" * 12).all()
    for record_id in ("A0001", LOWER_CASE_RECORD, "JS00001"):
        np.testing.assert_array_equal(store[store.locate(record_id)], read_ecg(row_of(truth, record_id).path).signal)


def test_ecg_arrhythmia_tree_converts_with_its_labels(csn_tree, tmp_path):
    root, truth = csn_tree
    summary = convert_quietly("ecg_arrhythmia", root, tmp_path / "store")
    assert (summary.converted, summary.rejected) == (40, 0)
    store = ECGStore(tmp_path / "store")
    assert_index_carries_the_headers(store, truth)
    assert store.index.record_id.tolist() == sorted(truth.record_id)


def test_short_record_is_zero_padded_and_recognisable(challenge_stores, challenge_tree):
    _, truth = challenge_tree
    raw = read_ecg(row_of(truth, SHORT_RECORD).path).signal
    for store in challenge_stores.values():
        i = store.locate(SHORT_RECORD)
        row = store.index.iloc[i]
        assert (row.n_samples, row.n_samples_source, bool(row.cropped)) == (3000, 3000, False)
        assert row.n_samples < store.length and store.n_valid[i] == 3000
        assert "zero-padded from 3000 to 5000 samples" in row.notes
        x = store[i]
        np.testing.assert_array_equal(x[:, :3000], raw)
        assert not x[:, 3000:].any()
    full = challenge_stores["start"].index
    assert (full.n_samples < 5000).sum() == 1  # the padded record is the only one below the length


def test_long_record_is_cropped_at_the_start_or_the_centre(challenge_stores, challenge_tree):
    _, truth = challenge_tree
    raw = read_ecg(row_of(truth, LONG_RECORD).path).signal
    assert raw.shape == (12, 30000)
    offsets = {"start": 0, "centre": 12500}
    for crop, store in challenge_stores.items():
        i = store.locate(LONG_RECORD)
        row = store.index.iloc[i]
        assert bool(row.cropped) and (row.n_samples, row.n_samples_source) == (30000, 30000)
        assert "cropped from 30000 to 5000 samples" in row.notes
        assert ("(centre)" in row.notes) == (crop == "centre")
        np.testing.assert_array_equal(store[i], raw[:, offsets[crop]:offsets[crop] + 5000])
    # Records of exactly the store's length are the same under both crops.
    start, centre = challenge_stores["start"], challenge_stores["centre"]
    np.testing.assert_array_equal(start[start.locate("A0001")], centre[centre.locate("A0001")])
    assert not np.array_equal(start[start.locate(LONG_RECORD)], centre[centre.locate(LONG_RECORD)])


def test_centre_crop_through_the_millivolt_path_matches(challenge_tree, tmp_path):
    """float16 stores go through ChunkWriter.add (not the int16 shortcut): same crop offsets."""
    root, truth = challenge_tree
    convert_quietly("challenge", root / "training" / "cpsc_2018", tmp_path / "store", crop="centre", dtype="float16",
                    limit=10)
    store = ECGStore(tmp_path / "store")
    raw = read_ecg(row_of(truth, LONG_RECORD).path).signal
    np.testing.assert_allclose(store[store.locate(LONG_RECORD)], raw[:, 12500:17500], atol=2e-3)


def test_fit_length_crops_and_pads():
    x = np.arange(10)[None, :]
    assert fit_length(x, 4)[0].tolist() == [[0, 1, 2, 3]] and fit_length(x, 4)[1]
    assert fit_length(x, 4, crop="centre")[0].tolist() == [[3, 4, 5, 6]]
    assert fit_length(x, 7, crop="centre")[0].tolist() == [[1, 2, 3, 4, 5, 6, 7]]  # odd surplus: start rounds down
    padded, cropped = fit_length(x, 12, crop="centre")
    assert padded.tolist() == [list(range(10)) + [0, 0]] and not cropped
    with pytest.raises(ValueError, match="crop must be one of start, centre"):
        fit_length(x, 4, crop="middle")
    with pytest.raises(ValueError, match="crop must be one of"):
        StoreSettings(fs=500, length=5000, crop="end")


def test_truncated_and_missing_mat_files_are_rejected_with_a_reason(challenge_tree, tmp_path):
    root, _ = challenge_tree
    tree = tmp_path / "training" / "cpsc_2018" / "g1"
    tree.mkdir(parents=True)
    for name in ("A0001", "A0002", "A0003"):
        for suffix in (".hea", ".mat"):
            shutil.copy(root / "training" / "cpsc_2018" / "g1" / f"{name}{suffix}", tree)
    mat = tree / "A0002.mat"
    mat.write_bytes(mat.read_bytes()[:5000])
    (tree / "A0003.mat").unlink()
    summary = convert_quietly("challenge", tmp_path, tmp_path / "store")
    assert (summary.converted, summary.rejected) == (1, 2)
    store = ECGStore(tmp_path / "store")
    assert store.index.record_id.tolist() == ["A0001"]
    reasons = store.rejected.set_index("record_id").reason
    assert "signal file truncated" in reasons["A0002"] and "not found" in reasons["A0003"]


def test_cli_refuses_to_resume_with_the_other_crop(challenge_tree, tmp_path, capsys):
    root, _ = challenge_tree
    args = ["--source", "challenge", "--input", str(root / "training" / "cpsc_2018" / "g1"), "--out",
            str(tmp_path / "store"), "--fs", "500", "--workers", "1", "--no-progress", "--limit", "8"]
    summary = main(args + ["--crop", "centre"])
    assert summary.converted == 8
    assert json.loads((tmp_path / "store" / "manifest.json").read_text())["settings"]["crop"] == "centre"
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--crop", "start"])
    assert exit_info.value.code == 2
    assert "crop: store has 'centre', requested 'start'" in capsys.readouterr().err
    assert main(args + ["--crop", "centre"]).skipped == 8  # the same crop resumes


def test_stores_written_before_the_crop_setting_resume_as_start(tmp_path):
    settings = StoreSettings(fs=500, length=5000, source="challenge")
    prepare_store(tmp_path, settings)
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["settings"]["crop"]  # as an older version wrote it
    manifest_path.write_text(json.dumps(manifest))
    assert prepare_store(tmp_path, settings) == settings
    with pytest.raises(StoreSettingsError, match="crop: store has 'start', requested 'centre'"):
        prepare_store(tmp_path, StoreSettings(fs=500, length=5000, source="challenge", crop="centre"))
