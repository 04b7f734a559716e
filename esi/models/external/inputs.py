"""The input an external encoder was trained on, as data (`InputSpec`), and `prepare_input`, which makes it.

Every released encoder was trained on one rate, window, lead order, filter and normalisation; feeding it
anything else (a 100 Hz model at 500 Hz, aVL and aVF swapped) degrades it silently. Each family declares its
`InputSpec` once, beside its architecture; `prepare_input` applies it to ECGs in the toolkit's convention:
(n, 12, T) millivolts in the standard lead order (esi.data.leads.STANDARD_LEADS).

Order of operations, each as the reference loaders do it: resample to `fs` -> ECGFounder's, HuBERT-ECG's or
HeartLang's filter (on the whole record) -> normalise the record (normalize_scope "record") -> take the first `window_s`
seconds (zero-padding a shorter record at its end) -> cut `crops` equally spaced crops of `crop_s` (ST-MEM's
evaluation) -> ST-MEM's filter (on each crop) -> normalise each window or crop (padding included; the default
scope) -> order the leads -> concatenate the leads into one sequence and decimate it (HuBERT-ECG).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esi.data.leads import STANDARD_LEADS

NORMALIZATIONS = ("minmax_record", "zscore_record", "minmax_lead_pm1", "zscore_lead", "none")
FILTERS = ("none", "ecgfounder", "stmem", "hubert_ecg", "heartlang")
RESAMPLERS = ("polyphase", "fourier", "linear")
# The reference loaders add this to the denominator of their min-max and z-score.
NORMALIZE_EPS = 1e-8


@dataclass(frozen=True)
class InputSpec:
    """How an encoder must be fed.

    fs: the sampling rate it was trained at (Hz).
    window_s: the seconds it sees; a longer record is cut to its first `window_s`, a shorter one zero-padded.
        None: the whole record (then `crop_s` must be set).
    leads: the channel order it takes (names of esi.data.leads.STANDARD_LEADS).
    normalize: "minmax_record" (one min-max over all leads and samples of the window), "zscore_record" (one
        mean/std over all leads and samples), "minmax_lead_pm1" (each lead min-maxed onto [-1, 1]), or "none".
    normalize_scope: "window" (what the encoder sees: the window or each crop) or "record" (the whole record,
        before the window is taken).
    filter: "none"; "ecgfounder" (on the record: 50 Hz notch Q=30, 4th-order Butterworth band-pass 0.67-40 Hz,
        both zero-phase, then minus a 0.4 s running median: ECGFounder's `filter_bandpass`); "stmem" (on each
        crop: 5th-order Butterworth high-pass 0.67 Hz then low-pass 40 Hz, zero-phase second-order sections);
        "hubert_ecg" (on the record: FIR band-pass 0.05-47 Hz, int(0.3 fs) taps made odd, zero-phase: biosppy's
        filter_signal as HuBERT-ECG's utils.apply_filter calls it); "heartlang" (on the record: 5th-order
        Butterworth band-pass 0.67-40 Hz as (b, a), filtfilt: HeartLang's bandpass_filter).
    resample: "polyphase" (the toolkit's reader), "fourier" (scipy.signal.resample, to int(T * fs / fs_in)) or
        "linear" (linear interpolation onto int(T * fs / fs_in) samples spanning the record: fairseq-signals').
    crop_s, crops: the encoder sees `crops` equally spaced crops of `crop_s` seconds (first at the start, last at
        the end) and its features are their mean; crops=1: the window itself.
    flatten_decimate: if set, the leads of the window are concatenated (lead after lead) into one sequence that
        is decimated by this factor (scipy.signal.decimate: order-8 Chebyshev I, zero-phase): the input is then
        (n, leads * samples / factor).
    source: where these facts were read (the reference repository's file).
    pretrained_on: the datasets the encoder was pretrained on (to flag overlap with a downstream test set).
    """

    fs: float
    window_s: float | None
    leads: tuple[str, ...]
    normalize: str
    normalize_scope: str = "window"
    filter: str = "none"
    resample: str = "polyphase"
    crop_s: float | None = None
    crops: int = 1
    flatten_decimate: int | None = None
    source: str = ""
    pretrained_on: tuple[str, ...] = ()

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"InputSpec normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.filter not in FILTERS:
            raise ValueError(f"InputSpec filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        if self.normalize_scope not in ("window", "record"):
            raise ValueError(f"InputSpec normalize_scope must be window or record, got {self.normalize_scope!r}")
        if self.resample not in RESAMPLERS:
            raise ValueError(f"InputSpec resample must be one of {', '.join(RESAMPLERS)}, got {self.resample!r}")
        if (self.window_s is None and self.crop_s is None) or (self.crops > 1 and self.crop_s is None):
            raise ValueError("InputSpec: set window_s, or crop_s and crops")
        unknown = [lead for lead in self.leads if lead not in STANDARD_LEADS]
        if unknown:
            raise ValueError(f"InputSpec leads: unknown lead(s) {', '.join(unknown)}; use {', '.join(STANDARD_LEADS)}")

    @property
    def n_samples(self) -> int:
        """Samples of one input: a crop if the encoder sees crops, else the window."""
        return int(round(self.fs * (self.crop_s if self.crop_s is not None else self.window_s)))


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


def stmem_filter(x: np.ndarray, fs: float) -> np.ndarray:
    """ST-MEM's filtering of (..., T) at `fs`: 5th-order Butterworth high-pass 0.67 Hz, then low-pass 40 Hz."""
    from scipy.signal import butter, sosfiltfilt

    x = sosfiltfilt(butter(5, 0.67, btype="highpass", fs=fs, output="sos"), x, axis=-1)
    return sosfiltfilt(butter(5, 40, btype="lowpass", fs=fs, output="sos"), x, axis=-1)


def hubert_ecg_filter(x: np.ndarray, fs: float) -> np.ndarray:
    """HuBERT-ECG's band-pass of (..., T) at `fs`: FIR 0.05-47 Hz with int(0.3 fs) taps (made odd), zero-phase."""
    from scipy.signal import filtfilt, firwin

    taps = int(0.3 * fs)
    taps += 1 - taps % 2
    b = firwin(numtaps=taps, cutoff=[0.05 / (fs / 2), 47 / (fs / 2)], pass_zero=False)
    return filtfilt(b, np.array([1.0]), x, axis=-1)


def linear_resample(x: np.ndarray, samples: int) -> np.ndarray:
    """(..., T) linearly interpolated onto `samples` points, the first and last kept (fairseq-signals' resample)."""
    from scipy.interpolate import interp1d

    return interp1d(np.linspace(0, samples - 1, x.shape[-1]), x, kind="linear", axis=-1)(np.arange(samples))


def heartlang_filter(x: np.ndarray, fs: float) -> np.ndarray:
    """HeartLang's band-pass of (..., T) at `fs`: 5th-order Butterworth 0.67-40 Hz as (b, a), zero-phase."""
    from scipy.signal import butter, filtfilt

    b, a = butter(5, [0.67 / (fs / 2), 40 / (fs / 2)], btype="band")
    return filtfilt(b, a, x, axis=-1)


def normalize(x: np.ndarray, mode: str) -> np.ndarray:
    """Normalise (..., leads, samples) per record (the last two axes) as `mode` says (see InputSpec)."""
    if mode == "minmax_record":
        low, high = x.min(axis=(-2, -1), keepdims=True), x.max(axis=(-2, -1), keepdims=True)
        return (x - low) / (high - low + NORMALIZE_EPS)
    if mode == "zscore_record":
        mean, std = x.mean(axis=(-2, -1), keepdims=True), x.std(axis=(-2, -1), keepdims=True)
        return (x - mean) / (std + NORMALIZE_EPS)
    if mode == "zscore_lead":
        mean, std = x.mean(axis=-1, keepdims=True), x.std(axis=-1, keepdims=True)
        return (x - mean) / (std + NORMALIZE_EPS)
    if mode == "minmax_lead_pm1":
        low, high = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
        return 2 * (x - low) / (high - low + NORMALIZE_EPS) - 1
    return x


def crop_starts(length: int, crop: int, crops: int) -> np.ndarray:
    """Starts of `crops` crops of `crop` samples spread over `length`: the first at 0, the last at the end
    (ST-MEM's NCrop)."""
    if crops == 1:
        return np.zeros(1, dtype=int)
    step = (length - crop) // (crops - 1)
    return np.arange(crops) * step


def prepare_input(x: np.ndarray, fs: float, spec: InputSpec) -> np.ndarray:
    """ECGs as the encoder of `spec` was trained on them.

    Args:
        x: (n, 12, T) or (12, T) millivolts in the standard lead order, sampled at `fs`.
        fs: the rate of `x` (Hz).
        spec: the encoder's declared input.

    Returns:
        float32 (n, len(spec.leads), spec.n_samples), or (n, spec.crops, len(spec.leads), spec.n_samples) when
        the encoder sees several crops, or (n, len(spec.leads) * spec.n_samples / spec.flatten_decimate) for a
        flattened input (no batch axis if `x` had none).

    Raises:
        ValueError: `x` is not 12-lead, or holds NaN/inf (naming the record).
    """
    from scipy.signal import resample

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
    if float(fs) != float(spec.fs) and spec.resample == "fourier":
        x = resample(x, int(length * spec.fs / fs), axis=-1)
    elif float(fs) != float(spec.fs) and spec.resample == "linear":
        x = linear_resample(x, int(length * spec.fs / fs))
    elif float(fs) != float(spec.fs):
        x = resample_signal(x.reshape(n * leads, length).astype(np.float32), fs, spec.fs)[0]
        x = x.astype(np.float64).reshape(n, leads, -1)
    if spec.filter == "ecgfounder":
        x = ecgfounder_filter(x, spec.fs)
    elif spec.filter == "hubert_ecg":
        x = hubert_ecg_filter(x, spec.fs)
    elif spec.filter == "heartlang":
        x = heartlang_filter(x, spec.fs)
    if spec.normalize_scope == "record":
        x = normalize(x, spec.normalize)
    window = x.shape[-1] if spec.window_s is None else int(round(spec.fs * spec.window_s))
    window = max(window, spec.n_samples)  # a record shorter than one crop is padded to it
    padded = np.zeros((n, leads, window))
    kept = min(window, x.shape[-1])
    padded[..., :kept] = x[..., :kept]
    # (n, crops, leads, samples)
    x = np.stack([padded[..., s:s + spec.n_samples] for s in crop_starts(window, spec.n_samples, spec.crops)], 1)
    if spec.filter == "stmem":
        x = stmem_filter(x, spec.fs)
    if spec.normalize_scope == "window":
        x = normalize(x, spec.normalize)
    x = x[:, :, [STANDARD_LEADS.index(lead) for lead in spec.leads]]
    if spec.flatten_decimate:
        from scipy.signal import decimate

        x = decimate(x.reshape(n, spec.crops, -1), spec.flatten_decimate, axis=-1)
    x = (x[:, 0] if spec.crops == 1 else x).astype(np.float32)
    return x[0] if single else x
