"""Beats: QRS detection and R-peak-aligned average beats of 12-lead ECGs.

    peaks = detect_qrs(signal, fs)                     # sample index of every QRS complex
    beat, t = median_beat(signal, fs, peaks)           # (n_leads, window) median beat, t in s from the QRS
    averages = class_average_beats(records, labels)    # one average beat per class, over many records
    averages = class_beats(ptbxl_root, "superdiagnostic", max_records=40)   # the same, read from PTB-XL

The detector looks at all leads at once: the summed squared slope of the band-passed leads peaks at every QRS
whatever its polarity in a given lead (an LBBB's negative QRS in V1, a right axis in I), so no lead has to be
chosen and no sign guessed. Beats are aligned on that peak, i.e. on the steepest part of the QRS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import signal as sps

from esi.paths import resolve

QRS_BAND_HZ = (5.0, 25.0)        # where most QRS energy lies; P and T waves and baseline wander are weaker here
SMOOTHING_S = 0.08               # moving-average window over the slope energy (about one QRS)
MIN_RR_S = 0.25                  # two QRS complexes are at least this far apart (240 bpm)
HEIGHT_FRACTION = 0.3            # a QRS peak reaches this share of the record's typical QRS energy
BASELINE_HIGHPASS_HZ = 0.5       # removes baseline wander before beats are averaged


def _as_leads(signal: np.ndarray) -> np.ndarray:
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected a signal of shape (n_leads, n_samples), got shape {x.shape}")
    return np.nan_to_num(x)


def detect_qrs(signal: np.ndarray, fs: float, min_rr_s: float = MIN_RR_S,
               height_fraction: float = HEIGHT_FRACTION) -> np.ndarray:
    """Sample indices of the QRS complexes of one ECG (all leads considered together).

    Args:
        signal: (n_leads, n_samples) or (n_samples,) in millivolts.
        fs: sampling rate in Hz (at least 50).
        min_rr_s: shortest RR interval allowed, in seconds.
        height_fraction: a peak of the slope energy counts as a QRS when it reaches this fraction of the
            record's 99th percentile energy.

    Returns:
        int64 array of sample indices, increasing. Empty for a flat record.
    """
    if fs < 50:
        raise ValueError(f"QRS detection needs at least 50 Hz, got {fs:g} Hz")
    x = _as_leads(signal)
    if x.shape[1] < int(2 * fs):
        raise ValueError(f"QRS detection needs at least 2 s of signal, got {x.shape[1] / fs:.2f} s")
    high = min(QRS_BAND_HZ[1], 0.45 * fs)
    sos = sps.butter(2, [QRS_BAND_HZ[0], high], btype="bandpass", fs=fs, output="sos")
    band = sps.sosfiltfilt(sos, x, axis=1)
    energy = (np.diff(band, axis=1, prepend=band[:, :1]) ** 2).sum(axis=0)
    width = max(1, int(round(SMOOTHING_S * fs)))
    energy = np.convolve(energy, np.ones(width) / width, mode="same")
    reference = np.percentile(energy, 99)
    if reference <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = sps.find_peaks(energy, height=height_fraction * reference, distance=max(1, int(min_rr_s * fs)))
    return peaks.astype(np.int64)


def heart_rate(peaks: np.ndarray, fs: float) -> float:
    """Mean ventricular rate in beats per minute from QRS positions (NaN with fewer than two beats)."""
    if len(peaks) < 2:
        return float("nan")
    return float(60.0 / (np.diff(peaks).mean() / fs))


def median_beat(signal: np.ndarray, fs: float, peaks: np.ndarray | None = None, before_s: float = 0.25,
                after_s: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """The median beat of one ECG: every beat cut around its QRS, baseline-corrected, median per sample.

    Args:
        signal: (n_leads, n_samples) in millivolts.
        fs: sampling rate in Hz.
        peaks: QRS sample indices (default: `detect_qrs(signal, fs)`).
        before_s, after_s: the window around each QRS, in seconds.

    Returns:
        (beat, t): beat (n_leads, window) in mV, t (window,) seconds relative to the QRS.

    Raises:
        ValueError: no beat fits the window completely (too short a record, or no QRS found).
    """
    x = _as_leads(signal)
    if peaks is None:
        peaks = detect_qrs(x, fs)
    sos = sps.butter(2, BASELINE_HIGHPASS_HZ, btype="highpass", fs=fs, output="sos")
    x = sps.sosfiltfilt(sos, x, axis=1)
    before, after = int(round(before_s * fs)), int(round(after_s * fs))
    inside = [p for p in peaks if p - before >= 0 and p + after <= x.shape[1]]
    if not inside:
        raise ValueError(f"no complete beat in the record ({len(peaks)} QRS found, window -{before_s:g} s to "
                         f"+{after_s:g} s)")
    beats = np.stack([x[:, p - before:p + after] for p in inside])
    t = np.arange(-before, after) / fs
    return np.median(beats, axis=0), t


@dataclass
class ClassBeats:
    """The average beat of one class.

    name: the class. beat: (n_leads, window) median over the records' median beats, in mV.
    low, high: the 25th and 75th percentiles over records (the spread between patients).
    t: seconds relative to the QRS. n_records: records averaged. rate_bpm: median heart rate of those records.
    """

    name: str
    beat: np.ndarray
    low: np.ndarray
    high: np.ndarray
    t: np.ndarray
    n_records: int
    rate_bpm: float


def class_average_beats(records: Iterable[tuple[np.ndarray, float, Sequence[str]]], classes: Sequence[str],
                        before_s: float = 0.25, after_s: float = 0.45) -> list[ClassBeats]:
    """Average beats per class: each record's median beat, then the median over the records of a class.

    Args:
        records: (signal (n_leads, n_samples) mV, fs Hz, the record's class labels) for every record; a record
            with several labels counts for each of them. All records must share fs and the number of leads.
        classes: the classes to report, in this order (a class without any record is left out).
        before_s, after_s: the beat window around the QRS, in seconds.

    Returns:
        One ClassBeats per class that had at least one record with a complete beat.

    Raises:
        ValueError: records with different sampling rates or lead counts.
    """
    beats: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    rates: dict[str, list[float]] = {c: [] for c in classes}
    t = None
    shape = None
    for signal, fs, labels in records:
        wanted = [c for c in labels if c in beats]
        if not wanted:
            continue
        peaks = detect_qrs(signal, fs)
        try:
            beat, t_record = median_beat(signal, fs, peaks, before_s, after_s)
        except ValueError:
            continue    # no complete beat (e.g. a flat record): nothing to average for it
        if shape is not None and (beat.shape, fs) != shape:
            raise ValueError(f"records differ in shape or rate: {beat.shape} at {fs:g} Hz vs {shape[0]} at "
                             f"{shape[1]:g} Hz; resample them to one rate first")
        shape, t = (beat.shape, fs), t_record
        for c in wanted:
            beats[c].append(beat)
            rates[c].append(heart_rate(peaks, fs))
    out = []
    for c in classes:
        if not beats[c]:
            continue
        stack = np.stack(beats[c])
        out.append(ClassBeats(name=c, beat=np.median(stack, axis=0), low=np.percentile(stack, 25, axis=0),
                              high=np.percentile(stack, 75, axis=0), t=t, n_records=len(stack),
                              rate_bpm=float(np.nanmedian(rates[c]))))
    return out


def class_beats(ptbxl_root: str, task: str, max_records: int, seed: int = 0, fs: int = 500):
    """Average beats of the classes of a PTB-XL task (esi.beats), from the records' WFDB files.

    Args:
        ptbxl_root: the PTB-XL folder (or the demo's PTB-XL layout).
        task: a PTB-XL task, e.g. "superdiagnostic".
        max_records: records per class at most (drawn at random, seeded).
        seed: seed of the draw.
        fs: read the 500 Hz (or 100 Hz) files.

    Returns:
        list of `esi.beats.ClassBeats`, one per class that had a complete beat.
    """
    from tqdm.auto import tqdm

    from esi.data.ptbxl import load_task
    from esi.data.reader import read_ecg

    root = resolve(ptbxl_root)
    if root is None or not (root / "ptbxl_database.csv").is_file():
        raise FileNotFoundError(f"evaluate_ptbxl_root: {root} holds no ptbxl_database.csv")
    labels = load_task(root, task)
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for j in range(len(labels.classes)):
        rows = np.flatnonzero(labels.y[:, j])
        chosen.update(rng.choice(rows, size=min(max_records, len(rows)), replace=False).tolist())
    order = sorted(chosen)
    paths = labels.paths(fs)

    def records():
        for i in tqdm(order, desc="average beats", unit="record"):
            ecg = read_ecg(paths[i])
            yield ecg.signal, ecg.fs, [c for c, on in zip(labels.classes, labels.y[i]) if on]

    return class_average_beats(records(), labels.classes)
