"""esi.data.quality.quality_flags on real PTB-XL records and on records written here with wfdb.wrsamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from esi.data.leads import STANDARD_LEADS
from esi.data.quality import QUALITY_FLAGS, digital_quality_flags, quality_flags
from esi.data.reader import read_digital, read_ecg


def write_record(directory: Path, name: str, digital: np.ndarray, sig_names=STANDARD_LEADS, fs: float = 500,
                 gain: float = 1000) -> Path:
    """Write `digital` (n_samples, n_channels) as a format-16 WFDB record; return the record path."""
    n_channels = digital.shape[1]
    wfdb.wrsamp(name, fs=fs, units=["mV"] * n_channels, sig_name=list(sig_names), d_signal=digital.astype(np.int16),
                fmt=["16"] * n_channels, adc_gain=[gain] * n_channels, baseline=[0] * n_channels,
                write_dir=str(directory))
    return directory / name


@pytest.fixture(scope="module")
def ptbxl_record(ptbxl_dir) -> Path:
    return ptbxl_dir / "records500" / "00000" / "00001_hr"


@pytest.fixture(scope="module")
def ptbxl_digital(ptbxl_record) -> np.ndarray:
    """The digital samples (n_samples, 12) of a real PTB-XL record, leads already in the standard order."""
    return wfdb.rdrecord(str(ptbxl_record), physical=False).d_signal


def test_flags_come_in_the_documented_order(ptbxl_record):
    flags = quality_flags(read_ecg(ptbxl_record))
    assert tuple(flags) == QUALITY_FLAGS
    assert all(isinstance(value, bool) for value in flags.values())


@pytest.mark.parametrize("rate", [100, 500])
def test_every_ptbxl_record_is_clean(ptbxl_dir, rate):
    for header in sorted((ptbxl_dir / f"records{rate}").glob("*/*.hea")):
        flags = quality_flags(read_ecg(header))
        assert not any(flags.values()), (header, flags)


def test_missing_leads(tmp_path, ptbxl_digital):
    ecg = read_ecg(write_record(tmp_path, "two", ptbxl_digital[:, :2], sig_names=["I", "II"]), allow_missing=True)
    assert quality_flags(ecg)["missing_leads"]


def test_flat_lead(tmp_path, ptbxl_digital):
    digital = ptbxl_digital.copy()
    digital[:, 8] = 300 + np.arange(len(digital)) % 3  # V3: 0.3 mV wobbling by 2 uV, an unplugged electrode
    ecg = read_ecg(write_record(tmp_path, "flat", digital))
    flags = quality_flags(ecg)
    assert flags["flat_lead"] and not flags["saturated"]  # a constant lead is flat, not clipped


def test_repaired_nan(tmp_path, ptbxl_digital):
    digital = ptbxl_digital.copy()
    digital[100:105, 0] = -32768  # a 10 ms gap of format 16's invalid value
    ecg = read_ecg(write_record(tmp_path, "gap", digital))
    assert ecg.repaired_samples == 5
    assert quality_flags(ecg)["repaired_nan"]


def test_clipped_lead_is_saturated(tmp_path, ptbxl_digital):
    digital = ptbxl_digital.copy()
    ceiling = np.percentile(digital[:, 1], 97)  # 3 % of 10 s = 0.3 s of lead II pressed against a ceiling
    digital[:, 1] = np.minimum(digital[:, 1], ceiling)
    ecg = read_ecg(write_record(tmp_path, "clipped", digital))
    assert quality_flags(ecg)["saturated"]


def test_clipping_shorter_than_the_threshold_is_not_saturation(tmp_path, ptbxl_digital):
    digital = ptbxl_digital.copy()
    ceiling = np.percentile(digital[:, 1], 99.5)  # 0.05 s at the ceiling
    digital[:, 1] = np.minimum(digital[:, 1], ceiling)
    ecg = read_ecg(write_record(tmp_path, "clipped", digital))
    assert not quality_flags(ecg)["saturated"]
    assert quality_flags(ecg, saturation_min_s=0.02)["saturated"]


def test_resampled(ptbxl_record):
    assert quality_flags(read_ecg(ptbxl_record, fs=100))["resampled"]
    assert not quality_flags(read_ecg(ptbxl_record, fs=500))["resampled"]


def test_short_recording(tmp_path, ptbxl_digital):
    ecg = read_ecg(write_record(tmp_path, "half", ptbxl_digital[:2500]))  # 5 s at 500 Hz
    assert ecg.n_samples == 2500 and ecg.fs == 500
    assert quality_flags(ecg)["short"]
    assert not quality_flags(ecg, short_s=5.0)["short"]


# --- the same flags from the integer samples ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [100, 500])
def test_digital_flags_equal_the_millivolt_flags_on_every_ptbxl_record(ptbxl_dir, rate):
    # Besides the defaults, thresholds at which some real records are flagged, so both answers are compared.
    thresholds = [{}, {"saturation_min_s": 0.01}, {"flat_ptp_mv": 0.4}, {"short_s": 10.5}]
    flagged = set()
    for header in sorted((ptbxl_dir / f"records{rate}").glob("*/*.hea")):
        digital, ecg = read_digital(header), read_ecg(header)
        for k, kwargs in enumerate(thresholds):
            flags = digital_quality_flags(digital, **kwargs)
            assert flags == quality_flags(ecg, **kwargs), (header, kwargs)
            flagged.update((k, name) for name, value in flags.items() if value)
    assert {(1, "saturated"), (2, "flat_lead"), (3, "short")} <= flagged


@pytest.mark.parametrize("case, flag, present", [("flat", "flat_lead", True), ("clipped", "saturated", True),
                                                  ("barely clipped", "saturated", False), ("short", "short", True)])
def test_digital_flags_equal_the_millivolt_flags_on_damaged_records(tmp_path, ptbxl_digital, case, flag, present):
    digital = ptbxl_digital.copy()
    if case == "flat":
        digital[:, 8] = 300 + np.arange(len(digital)) % 3
    elif case == "clipped":  # 0.3 s at the ceiling
        digital[:, 1] = np.minimum(digital[:, 1], np.percentile(digital[:, 1], 97))
    elif case == "barely clipped":  # 0.05 s at the ceiling: below the threshold
        digital[:, 1] = np.minimum(digital[:, 1], np.percentile(digital[:, 1], 99.5))
    else:
        digital = digital[:2500]
    record = write_record(tmp_path, case.replace(" ", "_"), digital)
    flags = digital_quality_flags(read_digital(record))
    assert flags == quality_flags(read_ecg(record))
    assert flags[flag] is present
