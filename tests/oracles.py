"""Second, plain implementations that tests check the package against (nothing in esi/ needs them).

Not a test file: tests import it.

    windows = sliding_windows(records, 250, 125)             # every window, to compare with ECGDataset(windows=...)
    frame = apply_length_policy(signal, 500, "merl", "cpsc2018")  # a length policy, written out in numpy
    table = merl_table()                                      # MERL's released splits, read straight from the CSV
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esi.data.splits import MERL_TABLE_PATH

MERL_CPSC_SECONDS = 5.0  # MERL reads the first 2,500 samples (5 s at 500 Hz) of CPSC2018 records


def sliding_windows(x, length: int, stride: int):
    """All windows of each record: (..., n_leads, n_samples) -> (..., n_windows, n_leads, length).

    Works on numpy arrays (returns a contiguous copy) and torch tensors (returns a view via `unfold`).

    Args:
        x: the records.
        length: window length in samples.
        stride: step between window starts in samples.
    """
    n_windows = (x.shape[-1] - length) // stride + 1
    if hasattr(x, "unfold"):  # torch.Tensor
        return x.unfold(-1, length, stride).movedim(-2, -3)
    view = np.lib.stride_tricks.sliding_window_view(x, length, axis=-1)[..., ::stride, :][..., :n_windows, :]
    return np.ascontiguousarray(np.moveaxis(view, -2, -3))


def apply_length_policy(signal: np.ndarray, fs: float, policy: str, dataset: str, seconds: float = 10.0) -> np.ndarray:
    """One record brought to the `seconds` frame as a length policy of `esi.data.challenge_tasks` says (a copy).

    Args:
        signal: (..., n) samples, time last.
        fs: sampling rate in Hz.
        policy: `crop_pad`: centre-crop (start (n - T) // 2) if longer, zero-pad at the end if shorter;
            `drop_short`: centre-crop, and a record shorter than the frame is an error (the policy drops it);
            `merl`: the first T samples, zero-padded at the end if shorter; for cpsc2018 zeros after 5 s.
        dataset: "cpsc2018", "csn" or a source name (only `merl` looks at it).
        seconds: frame length (T = round(seconds * fs) samples).
    """
    signal = np.asarray(signal)
    length, n = int(round(seconds * fs)), signal.shape[-1]
    if policy == "drop_short" and n < length:
        raise ValueError(f"record of {n} samples is shorter than {seconds} s at {fs} Hz (drop_short removes it)")
    start = (n - length) // 2 if policy in ("crop_pad", "drop_short") and n > length else 0
    kept = signal[..., start:start + length]
    out = np.zeros(signal.shape[:-1] + (length,), dtype=signal.dtype)
    out[..., :kept.shape[-1]] = kept
    if policy == "merl" and dataset == "cpsc2018":
        out[..., int(round(MERL_CPSC_SECONDS * fs)):] = 0
    return out


def merl_table() -> pd.DataFrame:
    """MERL's released splits: columns dataset ("cpsc2018" | "csn"), record (e.g. "A0001", "JS00001"), split."""
    return pd.read_csv(MERL_TABLE_PATH, comment="#", dtype=str)
