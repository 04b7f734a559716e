"""Transforms for batches of ECGs (numpy float32 arrays shaped (..., n_leads, n_samples)).

Every function here works on a whole batch at once (vectorised over the leading axes); `ECGDataset` calls them
on small blocks of records so that the data stays in the CPU cache between steps.

- normalisation: `normalize(x, "global" | "per_lead" | "scaler")`, with `fit_scaler` to fit the scaler on a
  training split by streaming over a store;
- crops and windows: `random_crop_offsets`, `window_starts`, `record_window_starts`;
- augmentation: `Augment` (amplitude scaling, Gaussian noise, baseline wander), seeded through a numpy Generator;
- lead subsets: `lead_positions`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from esi.data.leads import canonical_lead

NORMALIZATIONS = ("global", "per_lead", "scaler")
# A lead (or record) whose standard deviation is below this (in its own units) is flat: it normalises to
# zeros instead of amplifying noise by 1/std.
FLAT_STD = 1e-6


# --- lead subsets -------------------------------------------------------------------------------------------


def lead_positions(wanted: Sequence[str], available: Sequence[str]) -> list[int]:
    """Positions of the `wanted` leads in `available` (names matched with aliases: 'avr' -> 'aVR').

    Raises:
        ValueError: a wanted lead that is not available, naming it.
    """
    canon = [canonical_lead(name) for name in available]
    positions = []
    for name in wanted:
        c = canonical_lead(name)
        if c is None or c not in canon:
            raise ValueError(f"lead {name!r} is not among the available leads {', '.join(available)}")
        positions.append(canon.index(c))
    return positions


# --- normalisation ------------------------------------------------------------------------------------------


@dataclass
class Scaler:
    """Per-lead mean and standard deviation (mV) fitted on a training split; see `fit_scaler`.

    mean, std: float64 (n_leads,). leads: the lead names they belong to. n_values: samples seen per lead.
    """

    mean: np.ndarray
    std: np.ndarray
    leads: tuple[str, ...]
    n_values: np.ndarray | None = None

    def select(self, leads: Sequence[str]) -> "Scaler":
        """The scaler restricted (and reordered) to `leads`."""
        pos = lead_positions(leads, self.leads)
        counts = None if self.n_values is None else np.asarray(self.n_values)[pos]
        return Scaler(np.asarray(self.mean)[pos], np.asarray(self.std)[pos], tuple(self.leads[p] for p in pos), counts)

    def to_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "leads": list(self.leads),
                "n_values": None if self.n_values is None else [int(v) for v in self.n_values]}

    @classmethod
    def from_dict(cls, data: dict) -> "Scaler":
        counts = data.get("n_values")
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64),
                   tuple(data["leads"]), None if counts is None else np.asarray(counts, dtype=np.int64))

    def save(self, path: str | os.PathLike) -> None:
        """Write the scaler as JSON (kept next to a run's outputs so evaluation applies the same one)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Scaler":
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit_scaler(store, indices=None, per_lead: bool = True, batch_size: int = 256, progress: bool = True) -> Scaler:
    """Mean and standard deviation of the millivolt samples of some store records, streaming over them.

    Only real samples count: the zero padding after a short record and leads missing from a record are left out.

    Args:
        store: an `ECGStore`.
        indices: the store rows to fit on (the training split); None means all.
        per_lead: True fits one mean/std per lead; False one mean/std over all leads (the PTB-XL benchmark's
            single StandardScaler), repeated for each lead.
        batch_size: records read at a time (memory: batch_size x n_leads x length float32).
        progress: show a tqdm progress bar.

    Returns:
        A `Scaler` over the store's leads.
    """
    from tqdm.auto import tqdm

    rows = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        raise ValueError("fit_scaler needs at least one record")
    n_leads = len(store.leads)
    total = np.zeros(n_leads)
    total_sq = np.zeros(n_leads)
    count = np.zeros(n_leads, dtype=np.int64)
    for start in tqdm(range(0, len(rows), batch_size), desc="fitting scaler", unit="batch", disable=not progress):
        batch = rows[start:start + batch_size]
        x = store.read(batch)
        mask = store.masks[batch]  # (b, n_leads) leads present
        # Padded samples and missing leads are zeros: they add nothing to the sums, only the counts need care.
        total += np.where(mask, x.sum(axis=-1, dtype=np.float64), 0).sum(axis=0)
        total_sq += np.where(mask, np.einsum("bcl,bcl->bc", x, x, dtype=np.float64), 0).sum(axis=0)
        count += (mask * np.minimum(store.n_valid[batch], store.length)[:, None]).sum(axis=0)
    if not per_lead:
        total, total_sq, count = (np.full(n_leads, v.sum()) for v in (total, total_sq, count))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    if (count == 0).any():
        missing = [lead for lead, c in zip(store.leads, count) if c == 0]
        raise ValueError(f"no sample of lead(s) {', '.join(missing)} in the records given: cannot fit a scaler")
    return Scaler(mean, std, tuple(store.leads), count)


def normalize(x: np.ndarray, mode: str | None, scaler: Scaler | None = None, n_valid=None, mask=None,
              out: np.ndarray | None = None) -> np.ndarray:
    """Normalise each record of a batch.

    Args:
        x: float32 (..., n_leads, n_samples), millivolts.
        mode: "global" (one mean/std over all leads and samples of the record, as the original ESI),
            "per_lead" (z-score each lead of the record), "scaler" (subtract/divide by `scaler`'s per-lead
            mean/std), or None (unchanged).
        scaler: required for "scaler"; its leads must match x's lead axis (see `Scaler.select`).
        n_valid: int (...,) samples before zero padding, per record; statistics then ignore the padding, which
            stays zero. None: every sample counts.
        mask: bool (..., n_leads), leads present; missing leads are left out of the statistics and stay zero.
        out: contiguous float32 array shaped like x to write into (may be `x` itself); default a new array.

    Returns:
        The normalised float32 array. Flat records/leads (std < FLAT_STD) become zeros; a record ("global")
        or lead ("per_lead") holding NaN/inf becomes all NaN (with "scaler", only those samples are NaN).
    """
    if mode is not None and mode not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)} or None, got {mode!r}")
    out = np.empty(x.shape, dtype=np.float32) if out is None else out
    if mode is None:
        if out is not x:
            out[...] = x
        return out
    n_leads, n_samples = x.shape[-2], x.shape[-1]
    # Work on (records, leads, samples) views; the leading axes are only a batch shape.
    x3 = x.reshape(-1, n_leads, n_samples)
    out3 = out.reshape(-1, n_leads, n_samples)
    n_records = x3.shape[0]
    valid = (np.full(n_records, n_samples) if n_valid is None
             else np.minimum(np.broadcast_to(np.asarray(n_valid), x.shape[:-2]).reshape(-1), n_samples))
    present = (np.ones((n_records, n_leads), dtype=bool) if mask is None
               else np.broadcast_to(np.asarray(mask, dtype=bool), x.shape[:-1]).reshape(-1, n_leads))

    if mode == "scaler":
        if scaler is None:
            raise ValueError('normalize="scaler" needs a scaler (see esi.data.transforms.fit_scaler)')
        if len(scaler.mean) != n_leads:
            raise ValueError(f"scaler has {len(scaler.mean)} leads, data has {n_leads}; use scaler.select(leads)")
        mean = np.broadcast_to(np.asarray(scaler.mean, dtype=np.float64), (n_records, n_leads))
        std = np.broadcast_to(np.asarray(scaler.std, dtype=np.float64), (n_records, n_leads))
    else:
        # Sums over samples: padded zeros and missing (zero) leads add nothing, so dividing by the count of
        # real samples gives exact statistics of the data alone. Dot products are numpy's fastest float32
        # reductions (several times faster than sum/einsum); float32 accumulation over one record is ample.
        ones = np.ones(n_samples, dtype=np.float32)
        sums = np.where(present, np.vecdot(x3, ones), 0.0)
        squares = np.where(present, np.vecdot(x3, x3), 0.0)
        if mode == "global":
            count = valid * present.sum(axis=-1)
            sums, squares = sums.sum(axis=-1), squares.sum(axis=-1)
        else:
            count = valid[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / count
            std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        # A NaN/inf in the data makes its statistics NaN: the whole record ("global") or lead ("per_lead")
        # then becomes NaN rather than zeros, so the check downstream names it instead of training on it.
        poisoned = (count > 0) & ~np.isfinite(std)
        if mode == "global":
            mean, std, poisoned = mean[:, None], std[:, None], poisoned[:, None]
    flat = ~(std >= FLAT_STD)  # also catches NaN from an empty count
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(flat, 0.0, 1.0 / std).astype(np.float32)
        shift = np.where(flat, 0.0, -mean / std).astype(np.float32)
    if mode != "scaler":
        scale[poisoned] = np.nan
    np.multiply(x3, scale[..., None], out=out3)
    out3 += shift[..., None]
    # What is zero because it is not data (missing leads, padding) stays zero.
    if not present.all():
        out3[~present] = 0.0
    for k in np.flatnonzero(valid < n_samples):
        out3[k, :, valid[k]:] = 0.0
    return out


# --- crops and windows --------------------------------------------------------------------------------------


def random_crop_offsets(n_valid, length: int, rng: np.random.Generator) -> np.ndarray:
    """Start of a random crop of `length` samples per record, inside its valid (unpadded) part when possible.

    Args:
        n_valid: int array (n,) of valid samples per record.
        length: crop length in samples.
        rng: numpy Generator.
    """
    room = np.maximum(np.asarray(n_valid, dtype=np.int64) - length, 0)
    return rng.integers(0, room + 1)


def window_starts(n_samples: int, length: int, stride: int) -> np.ndarray:
    """Starts of the sliding windows over a record: 0, stride, 2*stride, ... while the window fits.

    This is the PTB-XL benchmark's evaluation windowing (e.g. 2.5 s windows every 1.25 s over 10 s: 7 windows).
    """
    if length <= 0 or stride <= 0:
        raise ValueError(f"window length and stride must be positive, got {length}, {stride}")
    if length > n_samples:
        raise ValueError(f"window of {length} samples is longer than the record ({n_samples})")
    return np.arange(0, n_samples - length + 1, stride)


def record_window_starts(n_valid, length: int, stride: int, n_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Window starts inside each record's signal, for records zero-padded to a common frame.

    A record with n_valid samples of signal gets the windows `window_starts(n_valid, ...)` (one at 0 if it is
    shorter than a window), never a window over its padding: a window of zeros would put the model's output on
    silence into every record's max-aggregated score. Rows are filled up to `n_windows` by repeating the
    record's last window, which changes neither a maximum nor anything that masks by the counts.

    Args:
        n_valid: (records,) samples of signal at the start of each record.
        length, stride: window length and step in samples.
        n_windows: windows per row (those of the whole frame).

    Returns:
        (starts (records, n_windows), counts (records,)): counts[i] windows of record i are its own.
    """
    n_valid = np.asarray(n_valid, dtype=np.int64).reshape(-1)
    counts = np.clip((n_valid - length) // stride + 1, 1, n_windows)
    starts = np.minimum(np.arange(n_windows)[None, :], counts[:, None] - 1) * stride
    return starts, counts


# --- augmentation -------------------------------------------------------------------------------------------


@dataclass
class Augment:
    """Light, seedable augmentation of a batch (in the batch's own units, mV or normalised).

    scale: (low, high) range of a random amplitude factor per record, or None.
    noise_std: standard deviation of added Gaussian noise (0 = none).
    wander_amplitude: largest amplitude of added baseline wander per lead (0 = none).
    wander_hz: (low, high) range of the wander's frequency (Hz); breathing and movement are 0.05-0.5 Hz.
    """

    scale: tuple[float, float] | None = (0.9, 1.1)
    noise_std: float = 0.01
    wander_amplitude: float = 0.05
    wander_hz: tuple[float, float] = (0.05, 0.5)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, fs: float) -> np.ndarray:
        """Augment x (n, n_leads, n_samples) in place and return it.

        Args:
            x: float32 batch.
            rng: numpy Generator (the only source of randomness: same state, same result).
            fs: sampling rate of x (Hz), for the wander frequency.
        """
        if self.scale is not None:
            amplitude_scale(x, rng, *self.scale)
        if self.wander_amplitude > 0:
            baseline_wander(x, rng, fs, self.wander_amplitude, self.wander_hz)
        if self.noise_std > 0:
            gaussian_noise(x, rng, self.noise_std)
        return x


def amplitude_scale(x: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Multiply each record by a factor drawn uniformly from [low, high], in place."""
    factors = rng.uniform(low, high, size=x.shape[:-2]).astype(np.float32)
    x *= factors[..., None, None]
    return x


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Add white Gaussian noise of standard deviation `std`, in place."""
    noise = rng.standard_normal(size=x.shape, dtype=np.float32)
    noise *= np.float32(std)
    x += noise
    return x


def baseline_wander(x: np.ndarray, rng: np.random.Generator, fs: float, amplitude: float,
                    hz: tuple[float, float] = (0.05, 0.5)) -> np.ndarray:
    """Add a slow sinusoidal drift, in place: one frequency and phase per record, an amplitude per lead.

    Args:
        x: (n, n_leads, n_samples).
        rng: numpy Generator.
        fs: sampling rate (Hz).
        amplitude: each lead's drift amplitude is drawn uniformly from [0, amplitude].
        hz: range of the drift frequency (Hz).
    """
    n, n_leads, n_samples = x.shape[0], x.shape[-2], x.shape[-1]
    freq = rng.uniform(hz[0], hz[1], size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    wave = np.sin(2 * np.pi * freq * (np.arange(n_samples) / fs) + phase).astype(np.float32)  # (n, samples)
    lead_amp = rng.uniform(0, amplitude, size=(n, n_leads)).astype(np.float32)
    x += lead_amp[:, :, None] * wave[:, None, :]
    return x
