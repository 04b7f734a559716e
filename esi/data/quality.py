"""Per-record quality flags: a few yes/no facts about an `ECG` that a store index can hold and filter on.

    flags = quality_flags(read_ecg(path))   # {'missing_leads': False, 'flat_lead': False, ...}

Each flag has one definition, with its threshold a module constant (and a keyword of `quality_flags`):

- missing_leads: some lead was absent from the file, or entirely invalid (`ecg.mask` has a False).
- flat_lead:     a present lead's peak-to-peak amplitude is below FLAT_PTP_MV (0.01 mV = 10 uV) over the whole
                 record: a disconnected or dead electrode. A real lead swings by tenths of a mV at least.
- repaired_nan:  the reader filled invalid samples by interpolation (`ecg.repaired_samples` > 0).
- saturated:     a present, non-flat lead spends at least SATURATION_MIN_S (0.2 s) in total at its own maximum
                 or minimum value (within half an ADC step): the trace is clipped at the amplifier's or ADC's
                 limit. On the 1000 PTB-XL records of ../shared an unclipped lead stays below 0.13 s.
- resampled:     the signal is not at the file's own rate (`ecg.fs != ecg.fs_source`).
- short:         the recording lasts less than SHORT_S (10 s, the standard 12-lead length), judged on the
                 source samples so that resampling cannot round it either way.

Flags describe the samples as given. Compute them on the record read at its own rate where possible: a
polyphase filter overshoots at the edges of a clipped plateau, which hides saturation.

`digital_quality_flags(read_digital(path))` gives the same flags as `quality_flags(read_ecg(path))` from the
integer ADC values, without a float copy: on the ADC grid "within half a step of the maximum" is "equal to the
maximum", and float32 division by a positive gain keeps the order of values, so both see the same extremes.
"""

from __future__ import annotations

import numpy as np

from esi.data.ecg import ECG

QUALITY_FLAGS: tuple[str, ...] = ("missing_leads", "flat_lead", "repaired_nan", "saturated", "resampled", "short")

FLAT_PTP_MV = 0.01
SATURATION_MIN_S = 0.2
# Tolerance for "at the extreme value" when the ADC gain is unknown (0): 1 uV.
SATURATION_TOLERANCE_MV = 1e-3
SHORT_S = 10.0


def quality_flags(ecg: ECG, *, flat_ptp_mv: float = FLAT_PTP_MV, saturation_min_s: float = SATURATION_MIN_S,
                  short_s: float = SHORT_S) -> dict[str, bool]:
    """The flags of QUALITY_FLAGS for one record, each True when the problem is present.

    Args:
        ecg: the record, as returned by `esi.data.reader.read_ecg`.
        flat_ptp_mv: a present lead with a smaller peak-to-peak amplitude (mV) is flat.
        saturation_min_s: a lead at its maximum or minimum value for at least this long in total is saturated.
        short_s: a recording shorter than this (seconds, at the source rate) is short.

    Returns:
        dict mapping each name of QUALITY_FLAGS, in that order, to a bool.
    """
    flat = _flat(ecg, flat_ptp_mv)
    return {
        "missing_leads": not bool(np.all(ecg.mask)),
        "flat_lead": bool(flat.any()),
        "repaired_nan": ecg.repaired_samples > 0,
        "saturated": bool(_saturated(ecg, saturation_min_s, flat).any()),
        "resampled": ecg.fs != ecg.fs_source,
        "short": ecg.n_samples_source < round(short_s * ecg.fs_source),
    }


def digital_quality_flags(record, *, flat_ptp_mv: float = FLAT_PTP_MV, saturation_min_s: float = SATURATION_MIN_S,
                          short_s: float = SHORT_S) -> dict[str, bool]:
    """The flags of QUALITY_FLAGS for a record read by `esi.data.reader.read_digital`, from its integer samples.

    Equal to `quality_flags(record.to_ecg(), ...)` (same definitions and thresholds), in one vectorised pass
    over the int16 values. Such a record has every lead, no invalid sample and its own rate, so
    missing_leads, repaired_nan and resampled are False by construction.

    Args:
        record: a `DigitalECG` (int16 `digital` (n_leads, n_samples) minus baseline, one positive `gain`, `fs`).
        flat_ptp_mv: a lead with a smaller peak-to-peak amplitude (mV) is flat.
        saturation_min_s: a lead at its maximum or minimum value for at least this long in total is saturated.
        short_s: a recording shorter than this (seconds) is short.

    Returns:
        dict mapping each name of QUALITY_FLAGS, in that order, to a bool.
    """
    digital = record.digital
    n_samples = digital.shape[1]
    flat_any = saturated_any = False
    if n_samples:
        top, bottom = digital.max(axis=1), digital.min(axis=1)
        # The same float32 arithmetic as the millivolt path: max and min in mV, then their difference.
        gain = np.float32(record.gain)
        ptp = np.divide(top, gain, dtype=np.float32) - np.divide(bottom, gain, dtype=np.float32)
        flat = ptp < flat_ptp_mv
        min_samples = saturation_min_s * record.fs
        saturated = ~flat & (_rows_with_at_least(digital == top[:, None], min_samples)
                             | _rows_with_at_least(digital == bottom[:, None], min_samples))
        flat_any, saturated_any = bool(flat.any()), bool(saturated.any())
    return {
        "missing_leads": False,
        "flat_lead": flat_any,
        "repaired_nan": False,
        "saturated": saturated_any,
        "resampled": False,
        "short": n_samples < round(short_s * record.fs),
    }


# --- per-lead tests, all leads at once ----------------------------------------------------------------------


def _flat(ecg: ECG, flat_ptp_mv: float) -> np.ndarray:
    """bool (n_leads,): present leads with a peak-to-peak amplitude below `flat_ptp_mv`."""
    mask = np.asarray(ecg.mask, dtype=bool)
    if ecg.n_samples == 0:
        return np.zeros_like(mask)
    return mask & (np.ptp(ecg.signal, axis=1) < flat_ptp_mv)


def _saturated(ecg: ECG, min_s: float, flat: np.ndarray) -> np.ndarray:
    """bool (n_leads,): present, non-flat leads at one extreme (within tolerance) for `min_s` seconds or more."""
    mask = np.asarray(ecg.mask, dtype=bool)
    if ecg.n_samples == 0:
        return np.zeros_like(mask)
    signal = ecg.signal
    gain = np.asarray(ecg.adc_gain, dtype=np.float64)
    known = gain > 0
    # Thresholds in float64 (half a step of a float64 gain); without a gain, 1 uV below the float32 extreme.
    half_step = 0.5 / np.where(known, gain, 1.0)
    top, bottom = signal.max(axis=1), signal.min(axis=1)
    top_limit = np.where(known, top.astype(np.float64) - half_step, top - np.float32(SATURATION_TOLERANCE_MV))
    bottom_limit = np.where(known, bottom.astype(np.float64) + half_step,
                            bottom + np.float32(SATURATION_TOLERANCE_MV))
    min_samples = min_s * ecg.fs
    return mask & ~flat & (_rows_with_at_least(signal >= top_limit[:, None], min_samples)
                           | _rows_with_at_least(signal <= bottom_limit[:, None], min_samples))


def _rows_with_at_least(flags: np.ndarray, count: float) -> np.ndarray:
    """bool (n_rows,): the rows of a 2-D bool array that hold at least `count` True values."""
    # An extreme value usually occurs a handful of times per lead, so the whole array holds fewer than `count`
    # and no row can: one fast whole-array count decides, and rows are counted only when it cannot.
    if np.count_nonzero(flags) < count:
        return np.zeros(flags.shape[0], dtype=bool)
    # Summing the bools as bytes into int32 is several times faster than count_nonzero(axis=1).
    return np.add.reduce(flags.view(np.uint8), axis=1, dtype=np.int32) >= count
