"""esi.beats: QRS detection on all leads at once, median beats, per-class average beats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esi.beats import class_average_beats, detect_qrs, heart_rate, median_beat
from esi.data.demo_corpus import simulate_record
from esi.data.reader import read_ecg

# Rhythms and QRS shapes that trip single-lead detectors: irregular AF, the wide negative QRS of LBBB in V1,
# the small complexes of low voltage, fast and slow rates.
CLASSES = ["normal", "atrial_fibrillation", "left_bundle_branch_block", "right_bundle_branch_block",
           "low_qrs_voltage", "sinus_bradycardia", "sinus_tachycardia", "atrial_fibrillation_with_lbbb"]


@pytest.mark.parametrize("class_name", CLASSES)
@pytest.mark.parametrize("fs", [500, 100])
def test_detected_rate_matches_the_simulated_rate(class_name, fs):
    record = simulate_record(class_name, seed=3)
    signal = record.signal[:, ::500 // fs]
    rate = heart_rate(detect_qrs(signal, fs), fs)
    assert rate == pytest.approx(record.heart_rate, rel=0.05)


def test_detection_agrees_with_neurokit2_on_real_ptbxl_records(ptbxl_dir):
    import neurokit2 as nk

    database = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    differences = []
    for filename in database["filename_hr"].iloc[:40]:
        ecg = read_ecg(ptbxl_dir / filename)
        ours = detect_qrs(ecg.signal, ecg.fs)
        _, info = nk.ecg_peaks(nk.ecg_clean(ecg.signal[1], sampling_rate=ecg.fs), sampling_rate=ecg.fs)
        differences.append(abs(len(ours) - len(info["ECG_R_Peaks"])))
    assert max(differences) <= 1      # at most an edge beat counted by one detector only


def test_median_beat_is_aligned_on_the_qrs_and_in_millivolts():
    record = simulate_record("normal", seed=1, noise=False)
    beat, t = median_beat(record.signal, 500)
    assert beat.shape == (12, len(t)) and t[0] == pytest.approx(-0.25) and t[-1] < 0.45
    lead_ii = beat[1]
    # the R wave of lead II peaks within 40 ms of the alignment point and is a plausible amplitude
    assert abs(t[np.argmax(lead_ii)]) <= 0.04
    assert 0.3 < lead_ii.max() < 3.0


def test_a_flat_record_has_no_beat():
    flat = np.zeros((12, 5000), dtype=np.float32)
    assert len(detect_qrs(flat, 500)) == 0
    with pytest.raises(ValueError, match="no complete beat"):
        median_beat(flat, 500)


def test_too_short_a_record_is_refused():
    with pytest.raises(ValueError, match="at least 2 s"):
        detect_qrs(np.zeros((12, 500)), 500)


def test_class_average_beats_separate_wide_from_narrow_qrs():
    records = [(simulate_record(c, seed=s).signal, 500.0, [c]) for c in ("normal", "left_bundle_branch_block")
               for s in range(4)]
    beats = {b.name: b for b in class_average_beats(records, ["normal", "left_bundle_branch_block", "absent"])}
    assert set(beats) == {"normal", "left_bundle_branch_block"}      # a class without records is left out
    assert beats["normal"].n_records == 4

    def qrs_width_ms(cb):
        # time the summed absolute slope stays above a quarter of its peak, around the QRS
        energy = np.abs(np.diff(cb.beat, axis=1)).sum(axis=0)
        above = np.flatnonzero(energy > 0.25 * energy.max())
        return (above[-1] - above[0]) / 500 * 1000

    assert qrs_width_ms(beats["left_bundle_branch_block"]) > qrs_width_ms(beats["normal"]) + 20


def test_records_at_different_rates_are_refused():
    a, b = simulate_record("normal", seed=0).signal, simulate_record("normal", seed=1).signal
    with pytest.raises(ValueError, match="differ in shape or rate"):
        class_average_beats([(a, 500.0, ["x"]), (b[:, ::5], 100.0, ["x"])], ["x"])
