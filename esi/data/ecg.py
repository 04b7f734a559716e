"""The in-memory ECG record every reader returns, and the error every reader raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ECGFormatError(ValueError):
    """A record that cannot serve. The message always names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class ECG:
    """One 12-lead ECG in millivolts, leads always in the order of `leads`.

    signal: float32 (n_leads, n_samples), millivolts; zeros in leads the file did not have.
    fs: sampling rate of `signal` (Hz); equals `fs_source` unless the reader resampled.
    mask: bool (n_leads,), True where the lead was present in the file.
    adc_gain: float64 (n_leads,), the source's ADC units per mV (0 where missing or unknown); the
        store uses it to keep digital values exactly.
    repaired_samples: how many non-finite samples were filled by interpolation.
    notes: anything the reader did to the data that a user should know about.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    mask: np.ndarray
    path: str
    fs_source: float
    n_samples_source: int
    adc_gain: np.ndarray
    repaired_samples: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[-1])

