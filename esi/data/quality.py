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
        ecg: the record, as returned by `esi.data.read_ecg`.
        flat_ptp_mv: a present lead with a smaller peak-to-peak amplitude (mV) is flat.
        saturation_min_s: a lead at its maximum or minimum value for at least this long in total is saturated.
        short_s: a recording shorter than this (seconds, at the source rate) is short.

    Returns:
        dict mapping each name of QUALITY_FLAGS, in that order, to a bool.
    """
    flags = {
        "missing_leads": not bool(np.all(ecg.mask)),
        "flat_lead": bool(flat_leads(ecg, flat_ptp_mv)),
        "repaired_nan": ecg.repaired_samples > 0,
        "saturated": bool(saturated_leads(ecg, saturation_min_s, flat_ptp_mv)),
        "resampled": ecg.fs != ecg.fs_source,
        "short": ecg.n_samples_source < round(short_s * ecg.fs_source),
    }
    return {name: bool(flags[name]) for name in QUALITY_FLAGS}


def flat_leads(ecg: ECG, flat_ptp_mv: float = FLAT_PTP_MV) -> tuple[str, ...]:
    """Names of the present leads whose peak-to-peak amplitude is below `flat_ptp_mv`.

    Args:
        ecg: the record.
        flat_ptp_mv: the amplitude (mV) below which a lead counts as flat.
    """
    if ecg.n_samples == 0:
        return ()
    ptp = np.ptp(ecg.signal, axis=1)
    return tuple(name for name, present, swing in zip(ecg.leads, ecg.mask, ptp) if present and swing < flat_ptp_mv)


def saturated_leads(ecg: ECG, min_s: float = SATURATION_MIN_S, flat_ptp_mv: float = FLAT_PTP_MV) -> tuple[str, ...]:
    """Names of the present, non-flat leads that sit at their maximum or minimum for `min_s` seconds in total.

    "At" means within half an ADC step (0.5 / adc_gain mV), or SATURATION_TOLERANCE_MV when the gain is unknown.

    Args:
        ecg: the record.
        min_s: the time (seconds, summed over the record) at one extreme that makes a lead saturated.
        flat_ptp_mv: leads flatter than this are left to the flat flag (a constant lead is at its extremes
            throughout).
    """
    if ecg.n_samples == 0:
        return ()
    min_samples = min_s * ecg.fs
    flat = set(flat_leads(ecg, flat_ptp_mv))
    saturated = []
    for name, present, lead, gain in zip(ecg.leads, ecg.mask, ecg.signal, ecg.adc_gain):
        if not present or name in flat:
            continue
        tolerance = 0.5 / gain if gain > 0 else SATURATION_TOLERANCE_MV
        at_max = np.count_nonzero(lead >= lead.max() - tolerance)
        at_min = np.count_nonzero(lead <= lead.min() + tolerance)
        if max(at_max, at_min) >= min_samples:
            saturated.append(name)
    return tuple(saturated)
