"""Read one WFDB record into an `ECG`: millivolts, standard lead order, validated.

    ecg = read_ecg("records500/00000/00001_hr")             # any WFDB record, with or without extension
    ecg = read_ecg("training/A0001.mat", fs=500)            # CinC 2020/2021 style (.hea naming a .mat)
    ecg.signal  # float32 (12, n_samples), mV, leads I, II, III, aVR, aVL, aVF, V1..V6

Two decoders give the same result:
- a fast path for the common layout (format 16, one segment, every channel interleaved in one signal file,
  no skew, one frame per sample; a byte offset is allowed, which covers the challenge `.mat` files): it parses
  the header itself and decodes with numpy, many times faster than `wfdb.rdrecord`;
- `wfdb.rdrecord` for everything else (other formats, multi-segment records, several signal files, ...).

After decoding, both paths share the same checks: leads are matched by name (case-insensitive, with aliases)
and reordered; invalid samples (NaN, or the WFDB "invalid" value such as -32768 in format 16) are repaired when
they are few and short, otherwise the record is rejected; missing leads are an error unless allowed; units are
converted to millivolts; the signal is resampled with a polyphase filter if `fs` asks for another rate.

`read_digital` is the converter's shortcut for the common lossless case: it returns the ADC values themselves
(int16, standard lead order, baseline removed) and the one gain they share, or None when the record needs the
full treatment of `read_ecg` (missing leads, invalid samples, mixed gains or units, other formats).
`read_digital(path).to_ecg()` equals `read_ecg(path)` bit for bit.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from esi.data.ecg import ECG, ECGFormatError
from esi.data.leads import STANDARD_LEADS, canonical_lead, lead_indices

# Extensions a caller may put on the record path; they are stripped to get the record name.
RECORD_SUFFIXES = (".hea", ".dat", ".mat")

# Physical units accepted for an ECG lead, as millivolts per unit. WFDB's default unit is mV.
_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "nv": 1e-6, "v": 1e3}

# The digital value format 16 reserves for "no sample here" (WFDB's invalid sample value).
_FORMAT16_INVALID = -(2 ** 15)

_FS_FIELD = re.compile(r"^(?P<fs>[^/()]+)(?:/[^()]*(?:\([^)]*\))?)?$")
# The gain field of a signal line, "gain[(baseline)][/units]"; groups: gain, baseline, units.
_GAIN_FIELD = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?(?:/(\S*))?$")
# Bits per sample of the byte-addressed WFDB formats, to check that a signal file holds what the header
# promises. Packed (310/311) and FLAC (508/516/524) formats are left to wfdb's own checks.
_BITS_PER_SAMPLE = {"8": 8, "16": 16, "61": 16, "80": 8, "160": 16, "212": 12, "24": 24, "32": 32}


def read_ecg(
    path: str | os.PathLike,
    fs: float | None = None,
    leads: Sequence[str] = STANDARD_LEADS,
    allow_missing: bool = False,
    *,
    max_repair_fraction: float = 0.01,
    max_gap_s: float = 0.1,
    fast: bool = True,
) -> ECG:
    """Read a WFDB record as an `ECG` in millivolts with its leads in the order of `leads`.

    Args:
        path: the record, as a path to its header with or without extension (`.hea`, `.dat` and `.mat` are
            stripped); str or Path. Signal files are found beside the header, as WFDB does.
        fs: sampling rate to return (Hz). None or the source rate keeps the source samples untouched; any other
            rate resamples with a polyphase filter (`scipy.signal.resample_poly`) and says so in `notes`.
        leads: the leads to return, in this order. Names are matched case-insensitively with the aliases of
            `esi.data.leads` ('AVR', 'avr', 'DI', ...); channels the file has beyond these are ignored.
        allow_missing: if True, a lead the file lacks (or that is entirely invalid) is returned as zeros with
            `mask` False; if False such a record raises `ECGFormatError`.
        max_repair_fraction: at most this fraction of a lead's samples may be invalid (NaN, inf, or the WFDB
            invalid value) and still be repaired by linear interpolation; more raises `ECGFormatError`.
        max_gap_s: the longest run of invalid samples (seconds) that may be repaired; longer raises.
        fast: use the numpy fast path when the record's layout allows it; False always reads with
            `wfdb.rdrecord` (same result, slower; useful to check the fast path).

    Returns:
        ECG with float32 `signal` (len(leads), n_samples), `fs`, `leads` (canonical names), per-lead `mask` and
        `adc_gain` (ADC units per mV, 0 where missing), plus `path` (the record path without extension),
        `fs_source`, `n_samples_source`, `repaired_samples` and `notes`.

    Raises:
        ECGFormatError: the record cannot serve; the message names the file and the reason (missing or
            unreadable header, truncated signal file, missing or bad sampling rate, zero samples, missing leads,
            too many invalid samples, units that are not a voltage).
        ValueError: bad arguments (unknown lead name, non-positive `fs`).
    """
    if fs is not None and not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a positive number of Hz, got {fs!r}")
    wanted = _wanted_leads(leads)
    record = _record_path(path)
    header = _read_header(record)

    layout = _fast_layout(header) if fast else None
    if layout is not None:
        raw = _decode_fast(header, layout, wanted)
    else:
        raw = _decode_wfdb(header, wanted)

    if raw.n_samples == 0:
        raise ECGFormatError(header.path, "record has zero samples")
    notes: list[str] = []
    signal, adc_gain = raw.signal, raw.adc_gain
    _convert_to_millivolts(signal, adc_gain, raw.units, raw.mask, wanted, header, notes)

    in_file = raw.mask.copy()
    mask = raw.mask
    repaired = 0
    if raw.may_have_invalid:
        repaired = _repair_invalid(signal, mask, adc_gain, wanted, header, max_repair_fraction, max_gap_s, notes)

    if not mask.all():
        absent = [name for name, present in zip(wanted, in_file) if not present]
        invalid = [name for name, present, there in zip(wanted, mask, in_file) if there and not present]
        if not allow_missing:
            reasons = []
            if absent:
                reasons.append(f"missing lead(s) {', '.join(absent)} (file has: "
                               f"{', '.join(raw.file_leads) or 'no signals'})")
            if invalid:
                reasons.append(f"lead(s) {', '.join(invalid)} entirely invalid (NaN or WFDB invalid value)")
            raise ECGFormatError(header.path, "; ".join(reasons))
        notes.append(f"missing lead(s) {', '.join(absent + invalid)} zero-filled")

    fs_out = header.fs
    if fs is not None and fs != header.fs:
        signal = _resample(signal, header.fs, float(fs), notes)
        fs_out = float(fs)

    return ECG(
        signal=signal,
        fs=fs_out,
        leads=wanted,
        mask=mask,
        path=str(record),
        fs_source=header.fs,
        n_samples_source=raw.n_samples,
        adc_gain=adc_gain,
        repaired_samples=repaired,
        notes=tuple(notes),
    )


def uses_fast_path(path: str | os.PathLike) -> bool:
    """True when `read_ecg(path)` decodes this record with the numpy fast path rather than `wfdb.rdrecord`.

    Args:
        path: the record, with or without extension, as for `read_ecg`.

    Raises:
        ECGFormatError: the header is missing or broken.
    """
    return _fast_layout(_read_header(_record_path(path))) is not None


@dataclass
class DigitalECG:
    """A record exactly as its ADC wrote it: integer samples and the one gain that turns them into millivolts.

    digital: int16 (n_leads, n_samples), each sample's digital value minus its lead's baseline, C-contiguous,
        leads in the order of `leads`.
    gain: ADC units per mV, shared by every lead, as the header gives it.
    fs: sampling rate (Hz), the file's own.
    leads: canonical lead names.
    path: the record path without extension.

    Millivolts are digital / gain, computed in float32 as WFDB does ((d - baseline) / gain).
    """

    digital: np.ndarray
    gain: float
    fs: float
    leads: tuple[str, ...]
    path: str

    @property
    def n_samples(self) -> int:
        return int(self.digital.shape[-1])

    def to_ecg(self) -> ECG:
        """The `ECG` that `read_ecg` returns for this record (same float32 values, bit for bit)."""
        n_leads = self.digital.shape[0]
        signal = self.digital.astype(np.float32)
        signal /= np.float32(self.gain)
        return ECG(signal=signal, fs=self.fs, leads=self.leads, mask=np.ones(n_leads, dtype=bool), path=self.path,
                   fs_source=self.fs, n_samples_source=self.n_samples, adc_gain=np.full(n_leads, float(self.gain)))


def read_digital(path: str | os.PathLike, leads: Sequence[str] = STANDARD_LEADS) -> DigitalECG | None:
    """The record's ADC values in the order of `leads` if it is of the simple kind, else None.

    The simple kind is what the numpy fast path of `read_ecg` decodes (format 16, interleaved, one file) with,
    in addition: every wanted lead present, one ADC gain and millivolt units for all of them, no invalid sample,
    and baselines that leave the values within int16. That covers PTB-XL and MIMIC-IV-ECG. For such a record,
    `read_digital(path, leads).to_ecg()` equals `read_ecg(path, leads=leads)`, and a store can keep the values
    as they are, skipping the int16 -> float32 -> int16 round trip. None means "use read_ecg", which handles
    (or rejects, with a reason) everything else.

    Args:
        path: the record, with or without extension, as for `read_ecg`.
        leads: the leads to return, in this order (names matched as in `read_ecg`).

    Raises:
        ECGFormatError: the header or signal file is missing, broken or truncated (the same errors, with the
            same messages, that `read_ecg` raises for them).
        ValueError: an unknown lead name.
    """
    wanted = _wanted_leads(leads)
    record = _record_path(path)
    header = _read_header(record)
    layout = _fast_layout(header)
    if layout is None or not header.sig_len:
        return None
    columns = _columns(tuple(layout.names), wanted)
    if None in columns:
        return None
    cols = list(columns)
    gains = layout.gains[cols]
    if (gains != gains[0]).any():
        return None
    if any(layout.units[c].strip().lower() != "mv" for c in cols):
        return None

    frames = _read_frames(header, layout)
    # The one copy: interleaved frames -> lead-major rows (a plain transpose when the file is in wanted order).
    if cols == list(range(header.n_sig)):
        digital = np.ascontiguousarray(frames.T)
    else:
        digital = np.ascontiguousarray(frames.T[cols])
    if digital.min() == _FORMAT16_INVALID:
        return None  # invalid samples need read_ecg's repair (or rejection)
    baselines = layout.baselines[cols]
    if baselines.any():
        shifted = digital.astype(np.int32) - baselines.astype(np.int32)[:, None]
        if shifted.min() < -(2 ** 15) or shifted.max() >= 2 ** 15:
            return None
        digital = shifted.astype(np.int16)
    return DigitalECG(digital=digital, gain=float(gains[0]), fs=header.fs, leads=wanted, path=str(record))


# --- the header ---------------------------------------------------------------------------------------------


@dataclass
class _Header:
    """What this module reads from a header itself: the record line, and the signal lines as text."""

    path: Path  # the .hea file
    n_seg: int | None  # None for a single-segment record
    n_sig: int
    fs: float
    sig_len: int | None  # None when the header leaves it to the signal file's size
    signal_lines: list[str]


def _record_path(path: str | os.PathLike) -> Path:
    """The record path without a known extension ('x/A0001.mat' -> 'x/A0001')."""
    record = Path(path)
    if record.suffix.lower() in RECORD_SUFFIXES:
        record = record.with_suffix("")
    return record


def _read_bytes(path: Path, offset: int = 0, size: int = -1) -> bytes:
    """`size` bytes of a file from `offset` (to the end when -1), or fewer if the file ends first.

    Plain os calls: a record is two small files, and io.open's buffered layers add a third to reading one.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        pieces = []
        remaining = size
        while remaining:  # read() may return less than asked; loop until done or at the end of the file
            piece = os.read(fd, remaining if remaining > 0 else 1 << 16)
            if not piece:
                break
            pieces.append(piece)
            if remaining > 0:
                remaining -= len(piece)
    finally:
        os.close(fd)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _read_header(record: Path) -> _Header:
    """Parse the record line of `record`.hea, checking what every reader needs (a positive sampling rate)."""
    header_path = record.with_name(record.name + ".hea")
    try:
        data = _read_bytes(header_path)
    except FileNotFoundError:
        raise ECGFormatError(header_path, "header file not found") from None
    except OSError as error:
        raise ECGFormatError(header_path, f"cannot read header ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # old carts write unit/lead names in latin-1 ('µV')

    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ECGFormatError(header_path, "header is empty (no record line)")
    record_line, signal_lines = lines[0], lines[1:]

    fields = record_line.split()
    if len(fields) < 2 or "\x00" in record_line:
        raise ECGFormatError(header_path, f"not a WFDB header: bad record line {record_line[:80]!r}")
    _record_name, _, n_seg_text = fields[0].partition("/")
    if not fields[1].isdigit() or (n_seg_text and not n_seg_text.isdigit()):
        raise ECGFormatError(header_path, f"not a WFDB header: bad record line {record_line[:80]!r}")
    n_sig = int(fields[1])
    n_seg = int(n_seg_text) if n_seg_text else None

    # WFDB would assume 250 Hz when the rate is absent; no ECG source we know of relies on that, so a
    # header without one is treated as broken rather than silently read at the wrong rate.
    if len(fields) < 3:
        raise ECGFormatError(header_path, "header gives no sampling rate")
    match = _FS_FIELD.match(fields[2])
    try:
        fs = float(match.group("fs")) if match else float("nan")
    except ValueError:
        fs = float("nan")
    if not math.isfinite(fs):
        raise ECGFormatError(header_path, f"sampling rate {fields[2]!r} is not a number")
    if fs <= 0:
        raise ECGFormatError(header_path, f"sampling rate {fields[2]!r} is not positive")

    sig_len = None
    if len(fields) >= 4:
        if not fields[3].isdigit():
            raise ECGFormatError(header_path, f"number of samples {fields[3]!r} is not an integer")
        sig_len = int(fields[3]) or None  # WFDB: 0 means "not given"

    if n_seg is None and n_sig == 0:
        raise ECGFormatError(header_path, "header declares no signals")
    if n_seg is None and len(signal_lines) < n_sig:
        raise ECGFormatError(header_path, f"header declares {n_sig} signals but describes {len(signal_lines)}")
    return _Header(header_path, n_seg, n_sig, fs, sig_len, signal_lines[:n_sig] if n_seg is None else signal_lines)


def _wanted_leads(leads: Sequence[str]) -> tuple[str, ...]:
    """The canonical names of `leads`; memoised when hashable, since every record of a dataset asks the same."""
    if isinstance(leads, tuple):
        return _canonical_wanted_cached(leads)
    return tuple(_canonical_wanted(leads))


@functools.lru_cache(maxsize=64)
def _canonical_wanted_cached(leads: tuple) -> tuple[str, ...]:
    return tuple(_canonical_wanted(leads))


def _canonical_wanted(leads: Sequence[str]) -> list[str]:
    if isinstance(leads, str):
        raise ValueError(f"leads must be a sequence of lead names, got the string {leads!r}")
    wanted = []
    for name in leads:
        canon = canonical_lead(name)
        if canon is None:
            raise ValueError(f"unknown lead name {name!r}; expected one of {', '.join(STANDARD_LEADS)}")
        wanted.append(canon)
    if not wanted:
        raise ValueError("leads is empty")
    return wanted


# --- decoding -----------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    """A decoded record restricted to the wanted leads, in their order, before any checks."""

    signal: np.ndarray  # float32 (n_wanted, n_samples) physical units, NaN at invalid samples, 0 where missing
    mask: np.ndarray  # bool (n_wanted,)
    adc_gain: np.ndarray  # float64 (n_wanted,) ADC units per physical unit, 0 where missing
    units: list[str | None]  # per wanted lead, None where missing
    file_leads: list[str]  # every channel name in the file, for error messages
    n_samples: int
    may_have_invalid: bool  # False only when the decoder has proved every sample valid


@dataclass
class _FastLayout:
    file: Path
    byte_offset: int
    names: list[str]
    gains: np.ndarray  # float64 (n_sig,)
    baselines: np.ndarray  # float64 (n_sig,)
    units: list[str]


def _fast_layout(header: _Header) -> _FastLayout | None:
    """The fast-path layout if the header is the plain format-16 interleaved kind; None sends it to wfdb.

    A signal line qualifies when it reads "file 16[+offset] gain[(baseline)][/units] adc_res adc_zero
    init_value checksum block_size [description]" with integer fields where WFDB has them. Anything else
    (other formats, 'x' frames, ':' skew, missing fields) is left to wfdb, which knows every corner of the format.
    """
    if header.n_seg is not None or header.n_sig == 0 or header.sig_len is None:
        return None
    # str.split and str tests per line, and one regex per distinct gain field (a header usually repeats one
    # gain field on every line): a full-line regex per line cost about as much as decoding the samples.
    rows = [line.split(None, 8) for line in header.signal_lines]
    if len(rows[0]) < 8:
        return None
    file_name, fmt = rows[0][0], rows[0][1]
    for fields in rows:
        # Every channel in the same file with the same format field (so the same byte offset).
        if (len(fields) < 8 or fields[0] != file_name or fields[1] != fmt or not fields[3].isdecimal()
                or not fields[7].isdecimal() or not (_is_integer(fields[4]) and _is_integer(fields[5])
                                                     and _is_integer(fields[6]))):
            return None
    if not (fmt == "16" or (fmt[:3] == "16+" and fmt[3:].isdecimal())):
        return None
    if file_name == "-" or "/" in file_name or "\\" in file_name:
        return None
    specs = {}
    for spec in {fields[2] for fields in rows}:
        match = _GAIN_FIELD.match(spec)
        if match is None:
            return None
        gain_text, baseline_text, unit = match.groups()
        gain = float(gain_text)
        if gain < 0:
            return None  # let wfdb decide what it makes of it
        # WFDB: a gain of 0 means the default, 200 per unit; units default to mV.
        specs[spec] = (gain if gain != 0 else 200.0, baseline_text, unit or "mV")
    gains, baselines, units = [], [], []
    for fields in rows:
        gain, baseline_text, unit = specs[fields[2]]
        gains.append(gain)
        # WFDB: without an explicit baseline, the baseline is the ADC zero.
        baselines.append(int(baseline_text if baseline_text is not None else fields[4]))
        units.append(unit)
    names = [fields[8] if len(fields) > 8 else "" for fields in rows]
    byte_offset = int(fmt[3:]) if "+" in fmt else 0
    return _FastLayout(header.path.with_name(file_name), byte_offset, names,
                       np.asarray(gains), np.asarray(baselines, dtype=np.float64), units)


def _is_integer(text: str) -> bool:
    """An optionally negative decimal integer (what the regex -?\\d+ accepts)."""
    return text.isdecimal() or (text[:1] == "-" and text[1:].isdecimal())


@functools.lru_cache(maxsize=1024)
def _columns(file_leads: tuple[str, ...], wanted: tuple[str, ...]) -> tuple[int | None, ...]:
    """`lead_indices`, memoised: a dataset repeats the same few channel lists millions of times."""
    return tuple(lead_indices(file_leads, wanted))


def _read_frames(header: _Header, layout: _FastLayout) -> np.ndarray:
    """The record's interleaved int16 frames, (n_samples, n_sig), read in one call (a read-only view of the bytes)."""
    n_sig, n_samples = header.n_sig, header.sig_len
    n_bytes = 2 * n_sig * n_samples
    try:
        buffer = _read_bytes(layout.file, layout.byte_offset, n_bytes)
    except FileNotFoundError:
        raise ECGFormatError(layout.file, f"signal file named by {header.path.name} not found") from None
    except OSError as error:
        raise ECGFormatError(layout.file, f"cannot read signal file ({error.strerror or error})") from None
    if len(buffer) < n_bytes:
        raise ECGFormatError(layout.file, f"signal file truncated: header promises {n_samples} samples x "
                                          f"{n_sig} signals ({n_bytes} bytes after offset {layout.byte_offset}), "
                                          f"file holds {len(buffer)}")
    return np.frombuffer(buffer, dtype="<i2").reshape(n_samples, n_sig)


def _decode_fast(header: _Header, layout: _FastLayout, wanted: Sequence[str]) -> _Raw:
    """Decode interleaved little-endian int16 frames with numpy: (digital - baseline) / gain."""
    n_samples = header.sig_len
    frames = _read_frames(header, layout)

    columns = _columns(tuple(layout.names), tuple(wanted))
    rows = [i for i, c in enumerate(columns) if c is not None]
    present_cols = [columns[i] for i in rows]
    mask = np.array([c is not None for c in columns])

    # Same formula as wfdb's dac(): float conversion first, then subtract the baseline, then divide by the
    # gain. In float32 the subtraction is exact and the division is correctly rounded, so the result equals
    # wfdb's float64 p_signal rounded to float32 (for gains that float32 represents exactly, like 1000 or 200).
    digital = frames[:, present_cols].T
    physical = np.ascontiguousarray(digital, dtype=np.float32)
    physical -= layout.baselines[present_cols, None].astype(np.float32)
    physical /= layout.gains[present_cols, None].astype(np.float32)
    # min() is a cheap test for the rare invalid value; only then build the boolean mask.
    has_invalid = digital.size > 0 and digital.min() == _FORMAT16_INVALID
    if has_invalid:
        physical[digital == _FORMAT16_INVALID] = np.nan

    if len(rows) == len(wanted):
        signal = physical
    else:
        signal = np.zeros((len(wanted), n_samples), dtype=np.float32)
        signal[rows] = physical
    adc_gain = np.zeros(len(wanted))
    adc_gain[rows] = layout.gains[present_cols]
    units = [layout.units[c] if c is not None else None for c in columns]
    return _Raw(signal, mask, adc_gain, units, layout.names, n_samples, has_invalid)


def _decode_wfdb(header: _Header, wanted: Sequence[str]) -> _Raw:
    """Decode any record wfdb can read (every format, multi-segment, several files) via `wfdb.rdrecord`."""
    import wfdb  # imported here: the fast path never needs it, and it is slow to import

    if header.n_seg is None:
        _check_signal_file_sizes(header)
    record_name = str(header.path.with_suffix(""))
    try:
        record = wfdb.rdrecord(record_name, physical=True)
    except Exception as error:  # wfdb raises many kinds (ValueError, IndexError, HeaderSyntaxError, ...)
        raise ECGFormatError(header.path, f"wfdb cannot read the record: {type(error).__name__}: {error}") from None

    p_signal = record.p_signal
    if p_signal is None:
        p_signal = np.zeros((0, 0))
    n_samples = int(p_signal.shape[0]) if p_signal.ndim == 2 else 0
    if header.sig_len is not None and n_samples < header.sig_len:
        raise ECGFormatError(header.path, f"signal truncated: header promises {header.sig_len} samples, "
                                          f"wfdb read {n_samples}")
    names = [str(name) for name in (record.sig_name or [])]
    columns = _columns(tuple(names), tuple(wanted))
    mask = np.array([c is not None for c in columns])
    signal = np.zeros((len(wanted), n_samples), dtype=np.float32)
    adc_gain = np.zeros(len(wanted))
    units: list[str | None] = [None] * len(wanted)
    # Multi-segment records merged by wfdb may carry no per-channel gain; 0 then means "unknown".
    gains = record.adc_gain if record.adc_gain is not None else [0.0] * len(names)
    record_units = record.units if record.units is not None else ["mV"] * len(names)
    for i, c in enumerate(columns):
        if c is None:
            continue
        signal[i] = p_signal[:, c]
        adc_gain[i] = float(gains[c] or 0.0)
        units[i] = record_units[c] or "mV"
    return _Raw(signal, mask, adc_gain, units, names, n_samples, may_have_invalid=True)


def _check_signal_file_sizes(header: _Header) -> None:
    """Raise if a signal file is shorter than the header's sample count demands (byte-addressed formats).

    wfdb itself fails on such files with a bare numpy reshape error, or pads them silently.
    """
    bits_per_frame: dict[str, float] = {}
    offsets: dict[str, int] = {}
    for line in header.signal_lines:
        fields = line.split()
        if len(fields) < 2:
            return  # malformed; wfdb's parser will say why
        match = re.match(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$", fields[1])
        if match is None or match.group(1) not in _BITS_PER_SAMPLE:
            return
        file_name = fields[0]
        per_frame = int(match.group(2) or 1)
        bits_per_frame[file_name] = bits_per_frame.get(file_name, 0) + _BITS_PER_SAMPLE[match.group(1)] * per_frame
        offsets[file_name] = int(match.group(4) or 0)
    for file_name, bits in bits_per_frame.items():
        file_path = header.path.with_name(file_name)
        try:
            size = file_path.stat().st_size
        except OSError:
            raise ECGFormatError(file_path, f"signal file named by {header.path.name} not found") from None
        if header.sig_len is None:
            # No length in the header: WFDB takes it from the file size, so an empty file is an empty record.
            if size <= offsets[file_name]:
                raise ECGFormatError(file_path, "record has zero samples (empty signal file)")
            continue
        needed = offsets[file_name] + (header.sig_len * bits) // 8
        if size < needed:
            raise ECGFormatError(file_path, f"signal file truncated: header promises {header.sig_len} samples "
                                            f"({needed} bytes), file holds {size}")


# --- shared checks and repairs ------------------------------------------------------------------------------


def _convert_to_millivolts(signal, adc_gain, units, mask, wanted, header: _Header, notes: list[str]) -> None:
    """Scale leads recorded in uV, V, ... to mV in place; `adc_gain` becomes ADC units per mV."""
    converted = {}
    for i, unit in enumerate(units):
        if not mask[i] or unit is None:
            continue
        mv_per_unit = _MV_PER_UNIT.get(unit.strip().lower())
        if mv_per_unit is None:
            raise ECGFormatError(header.path, f"lead {wanted[i]} has units {unit!r}, not a voltage")
        if mv_per_unit != 1.0:
            signal[i] *= np.float32(mv_per_unit)
            adc_gain[i] /= mv_per_unit
            converted[unit] = converted.get(unit, 0) + 1
    for unit, count in converted.items():
        notes.append(f"converted {count} lead(s) from {unit} to mV")


def _repair_invalid(signal, mask, adc_gain, wanted, header: _Header, max_fraction: float, max_gap_s: float,
                    notes: list[str]) -> int:
    """Fill short runs of invalid samples by linear interpolation, in place; return how many were filled.

    A lead with no valid sample at all is treated as missing (zeroed, mask False). A lead with more than
    `max_fraction` invalid samples, or a run longer than `max_gap_s`, rejects the record.
    """
    n_samples = signal.shape[1]
    if n_samples == 0:
        return 0
    max_gap = max_gap_s * header.fs
    repaired = 0
    for i in range(signal.shape[0]):
        if not mask[i]:
            continue
        bad = ~np.isfinite(signal[i])
        n_bad = int(bad.sum())
        if n_bad == 0:
            continue
        if n_bad == n_samples:
            mask[i] = False
            adc_gain[i] = 0.0
            signal[i] = 0.0
            notes.append(f"lead {wanted[i]} has no valid sample; treated as missing")
            continue
        longest = _longest_run(bad)
        if n_bad > max_fraction * n_samples:
            raise ECGFormatError(header.path, f"lead {wanted[i]}: {n_bad} of {n_samples} samples are invalid "
                                              f"(NaN/inf or WFDB invalid value), more than the repairable "
                                              f"{max_fraction:g}")
        if longest > max_gap:
            raise ECGFormatError(header.path, f"lead {wanted[i]}: a gap of {longest} invalid samples "
                                              f"({longest / header.fs:.3f} s) is longer than the repairable "
                                              f"{max_gap_s:g} s")
        positions = np.arange(n_samples)
        signal[i, bad] = np.interp(positions[bad], positions[~bad], signal[i, ~bad])
        repaired += n_bad
        notes.append(f"lead {wanted[i]}: repaired {n_bad} invalid sample(s) by linear interpolation "
                     f"(longest gap {longest})")
    return repaired


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    padded = np.concatenate(([0], flags.view(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def rate_ratio(fs_source: float, fs_target: float) -> tuple[int, int]:
    """(up, down) with fs_target / fs_source = up / down, reduced; rates are taken to 1e-6 Hz.

    Args:
        fs_source: the rate of the samples (Hz).
        fs_target: the rate wanted (Hz).
    """
    ratio = Fraction(fs_target).limit_denominator(10 ** 6) / Fraction(fs_source).limit_denominator(10 ** 6)
    return ratio.numerator, ratio.denominator


def resample_signal(signal: np.ndarray, fs_source: float, fs_target: float) -> tuple[np.ndarray, str]:
    """Resample (n_leads, n_samples) to another rate with a polyphase filter, as `read_ecg(..., fs=)` does.

    Args:
        signal: float32 (n_leads, n_samples), finite (repair invalid samples first).
        fs_source: the rate of `signal` (Hz).
        fs_target: the rate wanted (Hz).

    Returns:
        (float32 C-contiguous (n_leads, ceil(n_samples * up / down)), the note `read_ecg` records).
    """
    from scipy.signal import resample_poly

    up, down = rate_ratio(fs_source, fs_target)
    # padtype="line" extends each lead by its end-to-end trend instead of zeros, so a lead sitting at
    # an offset does not ring at both ends.
    resampled = resample_poly(signal, up, down, axis=1, padtype="line").astype(np.float32, copy=False)
    note = f"resampled {fs_source:g} Hz -> {fs_target:g} Hz (polyphase, up={up}, down={down})"
    return np.ascontiguousarray(resampled), note


def _resample(signal: np.ndarray, fs_source: float, fs_target: float, notes: list[str]) -> np.ndarray:
    resampled, note = resample_signal(signal, fs_source, fs_target)
    notes.append(note)
    return resampled
