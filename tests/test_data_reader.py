"""esi.data.reader.read_ecg on real WFDB files: PTB-XL records and records written here with wfdb.wrsamp."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from esi.data.ecg import ECGFormatError
from esi.data.leads import MIMIC_LEADS, STANDARD_LEADS
from esi.data.reader import read_digital, read_ecg, uses_fast_path


def write_record(directory: Path, name: str, sig_names, digital: np.ndarray, fs: float = 500, gain: float = 200,
                 fmt: str = "16", units: str = "mV") -> Path:
    """Write `digital` (n_samples, n_channels) as a WFDB record with wfdb itself; return the record path."""
    n_channels = digital.shape[1]
    wfdb.wrsamp(name, fs=fs, units=[units] * n_channels, sig_name=list(sig_names), d_signal=digital,
                fmt=[fmt] * n_channels, adc_gain=[gain] * n_channels, baseline=[0] * n_channels,
                write_dir=str(directory))
    return directory / name


def copy_record(header: Path, directory: Path) -> Path:
    """Copy a PTB-XL record (header + .dat) into `directory`, writable; return the record path."""
    for suffix in (".hea", ".dat"):
        shutil.copyfile(header.with_suffix(suffix), directory / (header.stem + suffix))
    return directory / header.stem


def lead_ramps(n_samples: int, n_leads: int = 12) -> np.ndarray:
    """Digital values where lead k of the standard order is 100*(k+1) plus a ramp: each lead recognisable."""
    ramp = np.arange(n_samples) % 50
    return np.stack([100 * (k + 1) + ramp for k in range(n_leads)], axis=1).astype(np.int16)


def standard_order(record: wfdb.Record) -> list[int]:
    """The channel index of each standard lead in a wfdb record (names compared case-insensitively)."""
    names = [name.upper() for name in record.sig_name]
    return [names.index(lead.upper()) for lead in STANDARD_LEADS]


@pytest.fixture(scope="module")
def ptbxl_headers(ptbxl_dir):
    return {rate: sorted((ptbxl_dir / f"records{rate}").glob("*/*.hea")) for rate in (100, 500)}


# --- the fast path is exactly wfdb ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [100, 500])
def test_fast_path_equals_wfdb_on_every_ptbxl_record(ptbxl_headers, rate):
    headers = ptbxl_headers[rate]
    assert len(headers) == 500
    for header in headers:
        assert uses_fast_path(header), header
        ecg = read_ecg(header)
        record = wfdb.rdrecord(str(header.with_suffix("")))
        order = standard_order(record)
        expected = record.p_signal[:, order].T.astype(np.float32)
        np.testing.assert_array_equal(ecg.signal, expected, err_msg=str(header))
        np.testing.assert_array_equal(ecg.adc_gain, np.asarray(record.adc_gain)[order], err_msg=str(header))
        assert ecg.fs == ecg.fs_source == record.fs == rate
        assert ecg.mask.all() and ecg.notes == () and ecg.repaired_samples == 0


def test_fast_and_wfdb_paths_give_the_same_ecg(ptbxl_headers):
    for header in ptbxl_headers[500][:10] + ptbxl_headers[100][:10]:
        fast, slow = read_ecg(header), read_ecg(header, fast=False)
        np.testing.assert_array_equal(fast.signal, slow.signal)
        np.testing.assert_array_equal(fast.adc_gain, slow.adc_gain)
        assert (fast.fs, fast.leads, fast.path, fast.n_samples_source) == (slow.fs, slow.leads, slow.path,
                                                                          slow.n_samples_source)


def test_record_fields_of_a_ptbxl_record(ptbxl_dir):
    ecg = read_ecg(ptbxl_dir / "records500" / "00000" / "00001_hr")
    assert ecg.signal.dtype == np.float32 and ecg.signal.shape == (12, 5000)
    assert ecg.signal.flags["C_CONTIGUOUS"]
    assert ecg.leads == STANDARD_LEADS
    assert ecg.n_samples_source == 5000 and ecg.n_samples / ecg.fs == 10.0
    assert ecg.path == str(ptbxl_dir / "records500" / "00000" / "00001_hr")
    np.testing.assert_array_equal(ecg.adc_gain, np.full(12, 1000.0))


@pytest.mark.parametrize("suffix", ["", ".hea", ".dat"])
def test_path_with_or_without_extension(ptbxl_dir, suffix):
    record = ptbxl_dir / "records100" / "00000" / "00001_lr"
    reference = read_ecg(record)
    for path in (str(record) + suffix, Path(str(record) + suffix)):
        ecg = read_ecg(path)
        np.testing.assert_array_equal(ecg.signal, reference.signal)
        assert ecg.path == str(record)


# --- lead names and order ---------------------------------------------------------------------------------


def test_mimic_lead_order_comes_back_in_standard_order(tmp_path):
    standard = lead_ramps(1000)
    in_file_order = standard[:, [STANDARD_LEADS.index(lead) for lead in MIMIC_LEADS]]  # aVF before aVL
    record = write_record(tmp_path, "mimic", MIMIC_LEADS, in_file_order)
    ecg = read_ecg(record)
    assert ecg.leads == STANDARD_LEADS
    np.testing.assert_array_equal(ecg.signal, (standard.T / 200.0).astype(np.float32))


def test_lead_names_match_case_insensitively(tmp_path):
    names = ["i", "II", "iii", "AVR", "avl", "AVF", "v1", "V2", "v3", "V4", "v5", "V6"]
    record = write_record(tmp_path, "cases", names, lead_ramps(500))
    ecg = read_ecg(record)
    assert ecg.mask.all()
    np.testing.assert_array_equal(ecg.signal, (lead_ramps(500).T / 200.0).astype(np.float32))


def test_extra_channels_are_ignored(tmp_path):
    frank = np.full((500, 3), -7, dtype=np.int16)  # vx, vy, vz first so every lead sits at a shifted column
    digital = np.concatenate([frank, lead_ramps(500)], axis=1)
    record = write_record(tmp_path, "frank", ["vx", "vy", "vz", *STANDARD_LEADS], digital)
    ecg = read_ecg(record)
    assert ecg.signal.shape == (12, 500)
    np.testing.assert_array_equal(ecg.signal, (lead_ramps(500).T / 200.0).astype(np.float32))


def test_a_subset_of_leads_in_the_order_asked(ptbxl_dir):
    record = ptbxl_dir / "records100" / "00000" / "00001_lr"
    full = read_ecg(record)
    ecg = read_ecg(record, leads=("v1", "II"))
    assert ecg.leads == ("V1", "II")
    np.testing.assert_array_equal(ecg.signal, full.signal[[6, 1]])


def test_unknown_lead_name_is_a_value_error(ptbxl_dir):
    with pytest.raises(ValueError, match="unknown lead name 'V7'"):
        read_ecg(ptbxl_dir / "records100" / "00000" / "00001_lr", leads=("I", "V7"))


# --- other layouts go through wfdb ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["212", "24", "32", "80"])
def test_other_formats_are_read_through_wfdb(tmp_path, fmt):
    digital = (lead_ramps(700) // 20).astype(np.int32)  # small enough for the 8-bit format 80
    record = write_record(tmp_path, f"fmt{fmt}", STANDARD_LEADS, digital, fmt=fmt)
    assert not uses_fast_path(record)
    ecg = read_ecg(record)
    expected = wfdb.rdrecord(str(record)).p_signal.T.astype(np.float32)
    np.testing.assert_array_equal(ecg.signal, expected)
    np.testing.assert_allclose(ecg.signal, digital.T / 200.0, atol=1e-6)


def test_multi_segment_record(tmp_path):
    first, second = lead_ramps(600), lead_ramps(400)[::-1].copy()
    write_record(tmp_path, "seg_a", STANDARD_LEADS, first)
    write_record(tmp_path, "seg_b", STANDARD_LEADS, second)
    (tmp_path / "multi.hea").write_text("multi/2 12 500 1000\nseg_a 600\nseg_b 400\n")
    assert not uses_fast_path(tmp_path / "multi")
    ecg = read_ecg(tmp_path / "multi")
    expected = np.concatenate([first, second]).T / 200.0
    np.testing.assert_allclose(ecg.signal, expected, atol=1e-6)


def test_challenge_style_mat_record(tmp_path):
    """PhysioNet/CinC 2020/2021: A0001.hea names A0001.mat (a MATLAB v4 'val' matrix) with format 16+24."""
    rng = np.random.default_rng(0)
    val = rng.integers(-3000, 3000, size=(12, 1500)).astype(np.int16)  # (leads, samples), as the challenge
    scipy.io.savemat(tmp_path / "A0001.mat", {"val": val}, format="4")
    lines = ["A0001 12 500 1500 05-Feb-2020 11:39:16"]
    for name, lead in zip(STANDARD_LEADS, val):
        checksum = (int(lead.astype(np.int64).sum()) + 2 ** 15) % 2 ** 16 - 2 ** 15
        lines.append(f"A0001.mat 16+24 1000/mV 16 0 {lead[0]} {checksum} 0 {name}")
    lines += ["#Age: 74", "#Sex: Male", "#Dx: 426783006"]
    (tmp_path / "A0001.hea").write_text("\n".join(lines) + "\n")

    assert uses_fast_path(tmp_path / "A0001.mat")
    fast = read_ecg(tmp_path / "A0001.mat")
    slow = read_ecg(tmp_path / "A0001", fast=False)
    np.testing.assert_array_equal(fast.signal, (val / 1000.0).astype(np.float32))
    np.testing.assert_array_equal(slow.signal, fast.signal)


def test_microvolt_units_are_converted_to_millivolts(tmp_path):
    record = write_record(tmp_path, "micro", STANDARD_LEADS, lead_ramps(500), gain=1.0, units="uV")
    ecg = read_ecg(record)
    np.testing.assert_allclose(ecg.signal, lead_ramps(500).T / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(ecg.adc_gain, np.full(12, 1000.0))  # 1 ADC unit per uV = 1000 per mV
    assert any("uV to mV" in note for note in ecg.notes)


def test_non_voltage_units_are_rejected(tmp_path):
    record = write_record(tmp_path, "pressure", STANDARD_LEADS, lead_ramps(500), units="mmHg")
    with pytest.raises(ECGFormatError, match="pressure.hea: lead I has units 'mmHg'"):
        read_ecg(record)


# --- resampling -------------------------------------------------------------------------------------------


def test_source_rate_is_a_no_op(ptbxl_dir):
    record = ptbxl_dir / "records500" / "00000" / "00001_hr"
    ecg = read_ecg(record, fs=500)
    np.testing.assert_array_equal(ecg.signal, read_ecg(record).signal)
    assert ecg.notes == ()


def test_500_to_100_hz_follows_the_ptbxl_100_hz_file(ptbxl_headers):
    # PTB-XL made its 100 Hz files with its own resampler, so only a loose agreement is expected.
    correlations = []
    for header in ptbxl_headers[500][:10]:
        ecg = read_ecg(header, fs=100)
        assert ecg.signal.shape == (12, 1000) and ecg.signal.dtype == np.float32
        assert (ecg.fs, ecg.fs_source, ecg.n_samples_source) == (100, 500, 5000)
        assert any("resampled 500 Hz -> 100 Hz" in note for note in ecg.notes)
        low = read_ecg(str(header).replace("records500", "records100").replace("_hr", "_lr"))
        correlations += [np.corrcoef(a, b)[0, 1] for a, b in zip(ecg.signal, low.signal)]
    assert np.median(correlations) > 0.97


def test_100_to_500_hz_shape(ptbxl_dir):
    ecg = read_ecg(ptbxl_dir / "records100" / "00000" / "00001_lr", fs=500)
    assert ecg.signal.shape == (12, 5000) and ecg.fs == 500 and ecg.fs_source == 100


@pytest.mark.parametrize("fs", [250, 360, 1000])
def test_polyphase_resampling_keeps_a_sine(tmp_path, fs):
    t = np.arange(5000) / 500.0
    sine = np.round(1000 * np.sin(2 * np.pi * 5 * t)).astype(np.int16)  # 5 Hz, 1 mV at 1000 ADC/mV
    record = write_record(tmp_path, "sine", STANDARD_LEADS, np.repeat(sine[:, None], 12, axis=1), gain=1000)
    ecg = read_ecg(record, fs=fs)
    assert ecg.n_samples == 10 * fs and ecg.fs == fs
    expected = np.sin(2 * np.pi * 5 * np.arange(ecg.n_samples) / fs)
    inner = slice(fs // 5, -fs // 5)  # the filter's edge transient is not the point here
    np.testing.assert_allclose(ecg.signal[:, inner], np.broadcast_to(expected[inner], (12, expected[inner].size)),
                               atol=5e-3)


# --- invalid samples --------------------------------------------------------------------------------------


def test_short_gap_is_repaired_by_interpolation(tmp_path):
    digital = lead_ramps(5000)
    digital[:, 1] = np.arange(5000)  # lead II: a straight ramp, so interpolation restores it exactly
    digital[2000:2010, 1] = -32768  # format 16's invalid sample value: a 10-sample (20 ms) gap
    ecg = read_ecg(write_record(tmp_path, "gap", STANDARD_LEADS, digital))
    assert ecg.repaired_samples == 10
    np.testing.assert_allclose(ecg.signal[1], np.arange(5000) / 200.0, atol=1e-5)
    assert any("lead II: repaired 10" in note for note in ecg.notes)


def test_nan_beyond_the_repairable_fraction_is_rejected(tmp_path):
    physical = lead_ramps(5000) / 200.0
    physical[::80, 7] = np.nan  # lead V2: 63 isolated NaNs, 1.3 % of its samples
    wfdb.wrsamp("nans", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=physical,
                fmt=["16"] * 12, adc_gain=[200] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    with pytest.raises(ECGFormatError, match=r"nans.hea: lead V2: 63 of 5000 samples are invalid"):
        read_ecg(tmp_path / "nans")


def test_gap_longer_than_max_gap_is_rejected(tmp_path):
    digital = lead_ramps(5000)
    digital[1000:1100, 0] = -32768  # 100 samples = 0.2 s at 500 Hz
    record = write_record(tmp_path, "longgap", STANDARD_LEADS, digital)
    with pytest.raises(ECGFormatError, match=r"longgap.hea: lead I: a gap of 100 invalid samples"):
        read_ecg(record, max_repair_fraction=0.05)


def test_entirely_invalid_lead_counts_as_missing(tmp_path):
    digital = lead_ramps(1000)
    digital[:, 8] = -32768  # V3
    record = write_record(tmp_path, "deadlead", STANDARD_LEADS, digital)
    with pytest.raises(ECGFormatError, match="deadlead.hea: lead.s. V3 entirely invalid"):
        read_ecg(record)
    ecg = read_ecg(record, allow_missing=True)
    assert ecg.mask.tolist() == [lead != "V3" for lead in STANDARD_LEADS]
    assert not ecg.signal[8].any() and ecg.adc_gain[8] == 0


# --- missing leads ----------------------------------------------------------------------------------------


def test_two_lead_record_is_rejected(tmp_path):
    record = write_record(tmp_path, "holter", ["II", "V5"], lead_ramps(1000, n_leads=2))
    absent = "I, III, aVR, aVL, aVF, V1, V2, V3, V4, V6"
    with pytest.raises(ECGFormatError, match=rf"holter.hea: missing lead\(s\) {absent} \(file has: II, V5\)"):
        read_ecg(record)


def test_two_lead_record_with_allow_missing_is_zero_filled(tmp_path):
    digital = lead_ramps(1000, n_leads=2)
    ecg = read_ecg(write_record(tmp_path, "holter", ["II", "V5"], digital), allow_missing=True)
    present = [STANDARD_LEADS.index("II"), STANDARD_LEADS.index("V5")]
    assert np.flatnonzero(ecg.mask).tolist() == present
    np.testing.assert_array_equal(ecg.signal[present], (digital.T / 200.0).astype(np.float32))
    assert not np.delete(ecg.signal, present, axis=0).any()
    np.testing.assert_array_equal(np.flatnonzero(ecg.adc_gain), present)


# --- broken files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_truncated_signal_file(ptbxl_dir, tmp_path, fast):
    record = copy_record(ptbxl_dir / "records500" / "00000" / "00001_hr.hea", tmp_path)
    data = record.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:50_000])
    with pytest.raises(ECGFormatError, match=r"00001_hr.dat: signal file truncated"):
        read_ecg(record, fast=fast)


@pytest.mark.parametrize("fast", [True, False])
def test_missing_signal_file(ptbxl_dir, tmp_path, fast):
    record = copy_record(ptbxl_dir / "records500" / "00000" / "00001_hr.hea", tmp_path)
    record.with_suffix(".dat").unlink()
    with pytest.raises(ECGFormatError, match=r"00001_hr.dat: signal file named by 00001_hr.hea not found"):
        read_ecg(record, fast=fast)


@pytest.mark.parametrize("rate, reason", [("0", "is not positive"), ("-500", "is not positive"),
                                          ("fast", "is not a number")])
def test_bad_sampling_rate(ptbxl_dir, tmp_path, rate, reason):
    record = copy_record(ptbxl_dir / "records100" / "00000" / "00001_lr.hea", tmp_path)
    header = record.with_suffix(".hea")
    header.write_text(header.read_text().replace("00001_lr 12 100 1000", f"00001_lr 12 {rate} 1000"))
    with pytest.raises(ECGFormatError, match=f"00001_lr.hea: sampling rate '{rate}' {reason}"):
        read_ecg(record)


def test_header_without_sampling_rate(ptbxl_dir, tmp_path):
    # WFDB would silently assume 250 Hz here.
    record = copy_record(ptbxl_dir / "records100" / "00000" / "00001_lr.hea", tmp_path)
    header = record.with_suffix(".hea")
    header.write_text(header.read_text().replace("00001_lr 12 100 1000", "00001_lr 12"))
    with pytest.raises(ECGFormatError, match="00001_lr.hea: header gives no sampling rate"):
        read_ecg(record)


def test_missing_header(tmp_path):
    with pytest.raises(ECGFormatError, match="nothere.hea: header file not found"):
        read_ecg(tmp_path / "nothere")


@pytest.mark.parametrize("content", [b"hello world, this is not a header\n", bytes(range(256)) * 3, b"# only\n",
                                     b"garbage 12 500 5000\nnot a signal line\n",
                                     b"garbage 1 500 5000\nnot a signal line\n"])
def test_garbage_header(tmp_path, content):
    (tmp_path / "garbage.hea").write_bytes(content)
    with pytest.raises(ECGFormatError, match="garbage.hea: "):
        read_ecg(tmp_path / "garbage")


def test_record_with_zero_samples(tmp_path):
    lines = ["empty 12 500 0"] + [f"empty.dat 16 200(0)/mV 16 0 0 0 0 {lead}" for lead in STANDARD_LEADS]
    (tmp_path / "empty.hea").write_text("\n".join(lines) + "\n")
    (tmp_path / "empty.dat").write_bytes(b"")
    with pytest.raises(ECGFormatError, match="empty.dat: record has zero samples"):
        read_ecg(tmp_path / "empty")


# --- read_digital: the ADC values themselves, for the converter's lossless shortcut ------------------------


@pytest.mark.parametrize("rate", [100, 500])
def test_read_digital_gives_exactly_read_ecg_on_every_ptbxl_record(ptbxl_headers, rate):
    for header in ptbxl_headers[rate]:
        digital = read_digital(header)
        assert digital.digital.dtype == np.int16 and digital.digital.flags["C_CONTIGUOUS"], header
        ecg, expected = digital.to_ecg(), read_ecg(header)
        np.testing.assert_array_equal(ecg.signal, expected.signal, err_msg=str(header))
        np.testing.assert_array_equal(ecg.adc_gain, expected.adc_gain, err_msg=str(header))
        np.testing.assert_array_equal(ecg.mask, expected.mask)
        assert (ecg.fs, ecg.leads, ecg.path, ecg.fs_source, ecg.n_samples_source, ecg.notes) == \
            (expected.fs, expected.leads, expected.path, expected.fs_source, expected.n_samples_source, ())


def test_read_digital_returns_the_adc_values_in_standard_order(tmp_path):
    standard = lead_ramps(1000)
    in_file_order = standard[:, [STANDARD_LEADS.index(lead) for lead in MIMIC_LEADS]]  # aVF before aVL
    digital = read_digital(write_record(tmp_path, "mimic", MIMIC_LEADS, in_file_order))
    assert digital.leads == STANDARD_LEADS and digital.gain == 200 and digital.fs == 500
    np.testing.assert_array_equal(digital.digital, standard.T)


def test_read_digital_subtracts_the_baseline(tmp_path):
    values = lead_ramps(1000)
    wfdb.wrsamp("offset", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), d_signal=values,
                fmt=["16"] * 12, adc_gain=[200] * 12, baseline=[-40] * 12, write_dir=str(tmp_path))
    digital = read_digital(tmp_path / "offset")
    np.testing.assert_array_equal(digital.digital, values.T + 40)
    np.testing.assert_array_equal(digital.to_ecg().signal, read_ecg(tmp_path / "offset").signal)


def _write_unusual(tmp_path: Path, case: str) -> Path:
    """A record that read_ecg reads (or repairs) but read_digital leaves to it; returns its path."""
    values = lead_ramps(1000)
    options = dict(fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), fmt=["16"] * 12, adc_gain=[200] * 12,
                   baseline=[0] * 12, write_dir=str(tmp_path))
    if case == "missing lead":
        options.update(sig_name=list(STANDARD_LEADS[:11]), units=["mV"] * 11, fmt=["16"] * 11,
                       adc_gain=[200] * 11, baseline=[0] * 11)
        values = values[:, :11]
    elif case == "invalid sample":
        values[10, 4] = -32768
    elif case == "two gains":
        options["adc_gain"] = [200] * 6 + [400] * 6
    elif case == "microvolts":
        options.update(units=["uV"] * 12, adc_gain=[0.2] * 12)
    elif case == "format 212":
        options["fmt"] = ["212"] * 12
    elif case == "baseline beyond int16":
        values[:, 0] = 32000
        options["baseline"] = [-1000] * 12
    wfdb.wrsamp(case.replace(" ", "_"), d_signal=values, **options)
    return tmp_path / case.replace(" ", "_")


@pytest.mark.parametrize("case", ["missing lead", "invalid sample", "two gains", "microvolts", "format 212",
                                  "baseline beyond int16"])
def test_read_digital_leaves_other_records_to_read_ecg(tmp_path, case):
    record = _write_unusual(tmp_path, case)
    assert read_digital(record) is None
    assert read_ecg(record, allow_missing=True).n_samples == 1000  # read_ecg still takes them


def test_read_digital_raises_the_errors_of_read_ecg(ptbxl_dir, tmp_path):
    record = copy_record(ptbxl_dir / "records500" / "00000" / "00001_hr.hea", tmp_path)
    data = record.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:50_000])
    with pytest.raises(ECGFormatError, match=r"00001_hr.dat: signal file truncated"):
        read_digital(record)
    with pytest.raises(ECGFormatError, match="nothere.hea: header file not found"):
        read_digital(tmp_path / "nothere")
    with pytest.raises(ValueError, match="unknown lead name 'V7'"):
        read_digital(record, leads=("I", "V7"))
