"""ECGStore on real PTB-XL records: exact round trip, index columns, resampling, crop/pad, float16, record lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import wfdb

from esi.data.convert import convert
from esi.data.leads import MIMIC_LEADS, STANDARD_LEADS
from esi.data.quality import digital_quality_flags, quality_flags
from esi.data.reader import read_digital, read_ecg
from esi.data.sources import folder_records, load_records, mimic_records, ptbxl_records
from esi.data.store import (ChunkWriter, ECGStore, ShardFile, StoreSettings, decode, encode, part_paths,
                            prepare_store, shard_path)

N_SUBSET = 48


@pytest.fixture(scope="module")
def store100(ptbxl_dir, tmp_path_factory) -> ECGStore:
    """The first 48 PTB-XL records at their native 100 Hz, in 3 chunks, converted in this process."""
    out = tmp_path_factory.mktemp("store100")
    convert("ptbxl", ptbxl_dir, out, fs=100, seconds=10, workers=1, limit=N_SUBSET, chunk_size=16, progress=False)
    return ECGStore(out)


def test_store_returns_exactly_what_the_reader_returns_at_the_native_rate(store100):
    for i in range(len(store100)):
        expected = read_ecg(store100.index.path[i]).signal
        assert store100[i].dtype == np.float32
        np.testing.assert_array_equal(store100[i], expected)


def test_vectorised_read_follows_the_order_asked(store100):
    order = [7, 2, 40, 2, 15]
    batch = store100.read(order)
    assert batch.shape == (5, 12, 1000)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(batch[k], store100[i])


def test_index_has_ids_rates_mask_scale_and_ptbxl_columns(store100, ptbxl_dir):
    index = store100.index
    database = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").head(N_SUBSET)
    assert len(store100) == N_SUBSET
    assert list(index.record_id) == [str(e) for e in database.ecg_id]
    assert list(index.ecg_id) == list(database.ecg_id)
    assert list(index.strat_fold) == list(database.strat_fold)
    assert list(index.subject_id) == list(database.patient_id.round().astype(int))
    assert index.path[0].endswith("records100/00000/00001_lr")
    assert (index.fs == 100).all() and (index.fs_source == 100).all()
    assert (index.n_samples_source == 1000).all() and not index.cropped.any()
    assert (index.lead_mask == "1" * 12).all()
    assert index.lossless.all()
    assert (index.gain == 1000).all() and np.allclose(index.scale, 0.001)
    assert {"quality_flat_lead", "quality_saturated", "quality_missing_leads"} <= set(index.columns)


def test_store_settings_are_exposed(store100):
    assert store100.fs == 100 and store100.length == 1000
    assert store100.leads == STANDARD_LEADS
    assert store100.dtype == np.int16
    assert store100.masks.shape == (N_SUBSET, 12) and store100.masks.all()


def test_raw_gives_the_stored_integers_and_their_scale(store100):
    values, scale = store100.raw(3)
    assert values.dtype == np.int16 and scale == pytest.approx(0.001)
    np.testing.assert_allclose(values * scale, store100[3], atol=1e-6)


def test_records_are_found_by_id(store100):
    assert store100.locate("7") == 6
    assert store100.locate(7) == 6
    np.testing.assert_array_equal(store100.locate(["3", "1"]), [2, 0])
    np.testing.assert_array_equal(store100[store100.locate("7")], read_ecg(store100.index.path[6]).signal)
    with pytest.raises(KeyError, match="99999"):
        store100.locate("99999")


def test_out_of_range_index_is_an_index_error(store100):
    with pytest.raises(IndexError, match="out of range"):
        store100.read([0, N_SUBSET])


def test_resampled_store_is_within_half_a_step_of_the_resampling_reader(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=250, seconds=10, workers=1, limit=6, progress=False)
    store = ECGStore(tmp_path)
    assert store.length == 2500
    assert store.index.path[0].endswith("records500/00000/00001_hr")  # 500 Hz files when the store is > 100 Hz
    for i in range(len(store)):
        expected = read_ecg(store.index.path[i], fs=250).signal
        step = 1.0 / store.index.gain[i]
        np.testing.assert_allclose(store[i], expected, rtol=0, atol=0.5 * step + 1e-7)
    assert not store.index.lossless.any()
    assert store.index.quality_resampled.all()
    assert store.index.notes.str.contains("resampled 500 Hz -> 250 Hz").all()


def test_longer_records_are_cropped_and_flagged(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=100, seconds=8, workers=1, limit=4, progress=False)
    store = ECGStore(tmp_path)
    assert store.length == 800
    assert store.index.cropped.all() and (store.index.n_samples == 1000).all()
    np.testing.assert_array_equal(store[0], read_ecg(store.index.path[0]).signal[:, :800])


def test_shorter_records_are_zero_padded_and_keep_their_length(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=100, seconds=12.5, workers=1, limit=4, progress=False)
    store = ECGStore(tmp_path)
    assert store.length == 1250
    assert not store.index.cropped.any() and (store.index.n_samples == 1000).all()
    assert (store.n_valid == 1000).all()
    x = store[1]
    np.testing.assert_array_equal(x[:, :1000], read_ecg(store.index.path[1]).signal)
    assert not x[:, 1000:].any()


def test_float16_store_is_close_to_the_reader(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=100, dtype="float16", workers=1, limit=4, progress=False)
    store = ECGStore(tmp_path)
    assert store.dtype == np.float16
    for i in range(len(store)):
        expected = read_ecg(store.index.path[i]).signal
        np.testing.assert_allclose(store[i], expected, rtol=1e-3, atol=1e-3)


def test_int16_encoding_widens_the_step_when_the_peak_does_not_fit():
    signal = np.array([[0.0, 40.0, -40.0, 1.234]], dtype=np.float32)  # 40 mV does not fit at 1000 units/mV
    stored, gain, lossless, note = encode(signal, np.array([1000.0]), np.array([True]), "int16", native_rate=True)
    assert gain < 1000 and not lossless and "widened" in note
    assert np.abs(stored).max() <= 32767
    np.testing.assert_allclose(decode(stored, gain), signal, atol=0.5 / gain + 1e-6)


def test_all_500_ptbxl_records_at_100_hz_with_two_workers(ptbxl_dir, tmp_path):
    summary = convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=2, progress=False)
    assert (summary.converted, summary.rejected, summary.records_in_store) == (500, 0, 500)
    store = ECGStore(tmp_path)
    database = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    assert list(store.index.strat_fold) == list(database.strat_fold)
    assert store.index.record_id.is_unique and list(store.index.ecg_id) == list(range(1, 501))
    for i in (0, 123, 499):
        np.testing.assert_array_equal(store[i], read_ecg(store.index.path[i]).signal)


@pytest.mark.parametrize("seconds", [8, 10, 12])  # cropped, exact, zero-padded
def test_add_digital_writes_what_add_writes(ptbxl_dir, tmp_path, seconds):
    """The converter's shortcut (ADC values straight to the shard) and the millivolt path give the same chunk."""
    settings = StoreSettings(fs=500, length=500 * seconds, source="ptbxl")
    prepare_store(tmp_path, settings)
    headers = sorted((ptbxl_dir / "records500" / "00000").glob("*.hea"))[:6]
    by_millivolts = ChunkWriter(tmp_path, settings, chunk=0, start=0, stop=6)
    by_digital = ChunkWriter(tmp_path, settings, chunk=1, start=0, stop=6)
    for k, header in enumerate(headers):
        record = {"record_id": str(k), "path": str(header.with_suffix(""))}
        ecg, digital = read_ecg(header), read_digital(header)
        by_millivolts.add(record, ecg, quality_flags(ecg))
        by_digital.add_digital(record, digital, digital_quality_flags(digital))
    by_millivolts.commit()
    by_digital.commit()
    assert shard_path(tmp_path, 0).read_bytes() == shard_path(tmp_path, 1).read_bytes()
    index = [pd.read_csv(part_paths(tmp_path, chunk)["index"]).drop(columns="shard") for chunk in (0, 1)]
    pd.testing.assert_frame_equal(index[0], index[1])
    assert index[1].lossless.all() and (index[1].cropped == (seconds < 10)).all()


@pytest.mark.parametrize("direct", [True, False])
def test_shard_file_holds_the_records_back_to_back(tmp_path, direct):
    # 24,000-byte records: not a multiple of the 4 KB blocks, and 200 of them span several 2 MB writes.
    records = np.random.default_rng(0).integers(-3000, 3000, size=(200, 12, 1000)).astype(np.int16)
    shard = ShardFile(tmp_path / "shard.bin", (12, 1000), np.int16, direct=direct)
    for values in records:
        shard.next_record()[...] = values
    shard.close()
    np.testing.assert_array_equal(np.fromfile(tmp_path / "shard.bin", dtype=np.int16).reshape(200, 12, 1000),
                                  records)


def test_shard_file_without_records_is_empty(tmp_path):
    ShardFile(tmp_path / "empty.bin", (12, 5000), np.int16).close()
    assert (tmp_path / "empty.bin").stat().st_size == 0


# --- record lists -------------------------------------------------------------------------------------------


def test_ptbxl_record_list_chooses_the_files_of_the_store_rate(ptbxl_dir):
    low = ptbxl_records(ptbxl_dir, fs=100)
    high = ptbxl_records(ptbxl_dir, fs=500)
    assert list(low.columns[:4]) == ["record_id", "path", "subject_id", "study_id"]
    assert low.path[0].endswith("records100/00000/00001_lr") and high.path[0].endswith("records500/00000/00001_hr")
    assert {"ecg_id", "strat_fold"} <= set(low.columns) and len(low) == 500


def test_folder_record_list_finds_headers_recursively(ptbxl_dir):
    table = folder_records(ptbxl_dir / "records100")
    assert len(table) == 500
    assert table.record_id[0] == "00000/00001_lr"
    assert table.subject_id.isna().all()


def test_limit_keeps_the_first_records(ptbxl_dir):
    assert list(load_records("ptbxl", ptbxl_dir, fs=100, limit=3).record_id) == ["1", "2", "3"]


def test_unknown_source_and_bad_record_list_are_clear_errors(ptbxl_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        load_records("holter", ptbxl_dir)
    bad = tmp_path / "record_list.csv"
    bad.write_text("subject_id,path\n1,files/x\n")
    with pytest.raises(ValueError, match="missing column.*study_id"):
        mimic_records(tmp_path, bad)


def test_mimic_record_list_converts_with_its_ids(ptbxl_dir, tmp_path):
    """A MIMIC-IV-ECG layout (files/pNNNN/pSUBJECT/sSTUDY/STUDY, leads in MIMIC order) made of real signals."""
    root = tmp_path / "mimic"
    rows = []
    for k, (subject, study) in enumerate([(10000032, 40689238), (10000032, 44458630), (10000117, 45090959)]):
        source = wfdb.rdrecord(str(ptbxl_dir / "records500" / "00000" / f"0000{k + 1}_hr"), physical=False)
        order = [list(STANDARD_LEADS).index(lead) for lead in MIMIC_LEADS]
        folder = root / "files" / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True)
        wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=list(MIMIC_LEADS),
                    d_signal=source.d_signal[:, order], fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12,
                    write_dir=str(folder))
        rows.append({"subject_id": subject, "study_id": study, "file_name": study, "ecg_time": "2180-07-23 08:44:00",
                     "path": f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"})
    pd.DataFrame(rows).to_csv(root / "record_list.csv", index=False)

    summary = convert("mimic", root, tmp_path / "store", fs=500, workers=1, progress=False)
    store = ECGStore(tmp_path / "store")
    assert summary.converted == 3
    assert list(store.index.record_id) == ["40689238", "44458630", "45090959"]
    assert list(store.index.subject_id) == [10000032, 10000032, 10000117]
    assert list(store.index.study_id) == [40689238, 44458630, 45090959]
    assert "ecg_time" in store.index.columns and store.index.lossless.all() and (store.index.gain == 200).all()
    for i in range(3):
        np.testing.assert_array_equal(store[i], read_ecg(store.index.path[i]).signal)
