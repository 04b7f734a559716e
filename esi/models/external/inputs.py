"""The input an external encoder was trained on, as data (`InputSpec`), and `prepare_input`, which makes it.

Every released encoder was trained on one rate, window, lead order, filter and normalisation; feeding it
anything else (a 100 Hz model at 500 Hz, aVL and aVF swapped) degrades it silently. Each family declares its
`InputSpec` once, beside its architecture; `prepare_input` applies it to ECGs in the toolkit's convention:
(n, 12, T) millivolts in the standard lead order (esi.data.leads.STANDARD_LEADS).

Order of operations: resample to `fs` -> filter the whole record -> take the first `window_s` seconds
(zero-padding a shorter record at its end) -> normalise the window (padding included, as the reference
loaders do) -> order the leads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esi.data.leads import STANDARD_LEADS

NORMALIZATIONS = ("minmax_record", "zscore_record", "none")
FILTERS = ("none", "ecgfounder")
# The reference loaders add this to the denominator of their min-max and z-score.
NORMALIZE_EPS = 1e-8


@dataclass(frozen=True)
class InputSpec:
    """How an encoder must be fed.

    fs: the sampling rate it was trained at (Hz).
    window_s: the seconds it sees; a longer record is cut to its first `window_s`, a shorter one zero-padded.
    leads: the channel order it takes (names of esi.data.leads.STANDARD_LEADS).
    normalize: "minmax_record" (one min-max over all leads and samples of the window), "zscore_record" (one
        mean/std over all leads and samples), or "none".
    filter: "none", or "ecgfounder" (50 Hz notch Q=30, 4th-order Butterworth band-pass 0.67-40 Hz, both
        zero-phase, then minus a 0.4 s running median: ECGFounder's `filter_bandpass`).
    source: where these facts were read (the reference repository's file).
    pretrained_on: the datasets the encoder was pretrained on (to flag overlap with a downstream test set).
    """

    fs: float
    window_s: float
    leads: tuple[str, ...]
    normalize: str
    filter: str = "none"
    source: str = ""
    pretrained_on: tuple[str, ...] = ()

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"InputSpec normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.filter not in FILTERS:
            raise ValueError(f"InputSpec filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        unknown = [lead for lead in self.leads if lead not in STANDARD_LEADS]
        if unknown:
            raise ValueError(f"InputSpec leads: unknown lead(s) {', '.join(unknown)}; use {', '.join(STANDARD_LEADS)}")

    @property
    def n_samples(self) -> int:
        return int(round(self.fs * self.window_s))


def ecgfounder_filter(x: np.ndarray, fs: float) -> np.ndarray:
    """ECGFounder's filtering of (..., T) at `fs`: 50 Hz notch, 0.67-40 Hz band-pass, minus a median baseline."""
    from scipy.signal import butter, filtfilt, iirnotch, medfilt

    b, a = iirnotch(50, 30, fs)
    x = filtfilt(b, a, x, axis=-1)
    b, a = butter(N=4, Wn=[0.67, 40], btype="bandpass", fs=fs)
    x = filtfilt(b, a, x, axis=-1)
    kernel = int(0.4 * fs) + 1
    kernel += 1 - kernel % 2  # medfilt needs an odd kernel
    flat = x.reshape(-1, x.shape[-1])
    baseline = np.stack([medfilt(lead, kernel_size=kernel) for lead in flat]).reshape(x.shape)
    return x - baseline


def prepare_input(x: np.ndarray, fs: float, spec: InputSpec) -> np.ndarray:
    """ECGs as the encoder of `spec` was trained on them.

    Args:
        x: (n, 12, T) or (12, T) millivolts in the standard lead order, sampled at `fs`.
        fs: the rate of `x` (Hz).
        spec: the encoder's declared input.

    Returns:
        float32 (n, len(spec.leads), spec.n_samples) (no batch axis if `x` had none).

    Raises:
        ValueError: `x` is not 12-lead, or holds NaN/inf (naming the record).
    """
    from esi.data.reader import resample_signal

    x = np.asarray(x)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.ndim != 3 or x.shape[1] != len(STANDARD_LEADS):
        raise ValueError(f"prepare_input: expected (n, 12, T) in the standard lead order, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(f"prepare_input: record(s) {', '.join(map(str, bad[:5]))} hold NaN or inf; repair or "
                         "drop them first")
    x = x.astype(np.float64)
    n, leads, length = x.shape
    if float(fs) != float(spec.fs):
        x = resample_signal(x.reshape(n * leads, length).astype(np.float32), fs, spec.fs)[0]
        x = x.astype(np.float64).reshape(n, leads, -1)
    if spec.filter == "ecgfounder":
        x = ecgfounder_filter(x, spec.fs)
    window = np.zeros((n, leads, spec.n_samples))
    kept = min(spec.n_samples, x.shape[-1])
    window[..., :kept] = x[..., :kept]
    if spec.normalize == "minmax_record":
        low, high = window.min(axis=(1, 2), keepdims=True), window.max(axis=(1, 2), keepdims=True)
        window = (window - low) / (high - low + NORMALIZE_EPS)
    elif spec.normalize == "zscore_record":
        mean, std = window.mean(axis=(1, 2), keepdims=True), window.std(axis=(1, 2), keepdims=True)
        window = (window - mean) / (std + NORMALIZE_EPS)
    window = window[:, [STANDARD_LEADS.index(lead) for lead in spec.leads]].astype(np.float32)
    return window[0] if single else window
