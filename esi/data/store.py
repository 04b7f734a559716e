"""The ECG store: fixed-length 12-lead records in memory-mapped int16 (or float16) shards plus an index table.

Layout of a store folder:

    manifest.json         format version and settings (fs, length, dtype, leads, source, ...), completeness
    index.csv             one row per stored record: ids, source path, rates, lengths, lead mask, quality
                          flags, scale, where its samples live (shard, row), notes
                          (n_samples: the record's length at the store's rate before fitting it to `length`;
                          n_samples < length means zero-padded at the end, `cropped` True means cut to length
                          as the manifest's `crop` setting says)
    rejected.csv          record_id, path, reason for every record that could not be converted
    layout.npz            the index columns reading needs (shard, row, gain, lead mask, valid length) as arrays,
                          so that opening a store (in every DataLoader worker) does not parse the CSV
    shards/shard-000000.bin   raw C-order array (rows, n_leads, length) of the store dtype
    parts/                the per-chunk pieces a conversion writes; `assemble` concatenates them

A stored value q decodes to millivolts as q / gain (gain = stored units per mV, scale = 1 / gain). With int16
and a record whose leads share one ADC gain at its native rate, gain is that ADC gain and q is the original
digital value minus its baseline, so decoding gives exactly the float32 signal `read_ecg` returns (WFDB computes
(d - baseline) / gain; dividing by a float32-exact gain reproduces it bit for bit). The converter writes such
records straight from their ADC values (`ChunkWriter.add_digital`), without a float32 round trip.
Otherwise (resampled, leads with different gains, float16) the record is stored as closely as the dtype allows,
with `lossless` False and a note saying why.

Writing happens one chunk at a time (`ChunkWriter`): samples stream to a temporary shard file (`ShardFile`:
blocks of a few MB, bypassing the page cache where the filesystem allows) and the chunk's index rows are kept
until `commit()`, which renames the shard, index part, rejected part and finally a small JSON marker into
place. A chunk is done if and only if its marker exists, so a conversion killed at any point restarts cleanly:
unfinished chunks are rewritten, finished ones skipped.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from esi.data.ecg import ECG, ECGFormatError
from esi.data.leads import STANDARD_LEADS

FORMAT_NAME = "esi-ecg-store"
FORMAT_VERSION = 1
DTYPES = ("int16", "float16")
# How a record longer than the store's length is cut: its first samples, or the middle ones.
CROPS = ("start", "centre")

MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.csv"
REJECTED_FILE = "rejected.csv"
LAYOUT_FILE = "layout.npz"
SHARD_DIR = "shards"
PARTS_DIR = "parts"

# Columns the store adds to each record's row (after the record-table columns, before the quality flags).
STORE_COLUMNS = ("shard", "row", "fs", "fs_source", "n_samples_source", "n_samples", "cropped", "lead_mask",
                 "gain", "scale", "lossless", "repaired_samples")
QUALITY_PREFIX = "quality_"
# The index columns that layout.npz mirrors as arrays.
_LAYOUT_COLUMNS = ("shard", "row", "gain", "n_samples", "lead_mask")
REJECTED_COLUMNS = ("record_id", "path", "reason")

_INT16_MAX = 32767
# When no ADC gain is known (or it is lost by resampling), 1 unit = 1 microvolt keeps +-32.7 mV in range.
_DEFAULT_GAIN = 1000.0
# A shard is written in blocks of about this many bytes (see ShardFile).
WRITE_BATCH_BYTES = 2 << 20
# Write shards with O_DIRECT where the OS and filesystem allow it (else, silently, through the page cache).
# ESI_STORE_DIRECT_IO=0 in the environment (which worker processes inherit) turns it off.
DIRECT_WRITES = os.environ.get("ESI_STORE_DIRECT_IO", "1") != "0"
# Alignment of O_DIRECT buffers, sizes and offsets: the largest logical block size of common disks.
_IO_ALIGN = 4096


class StoreSettingsError(ValueError):
    """A store folder that cannot be used with the requested settings (the message says which differ)."""


@dataclass(frozen=True)
class StoreSettings:
    """What defines a store's content; resuming into a store requires the same settings.

    fs: sampling rate of the stored samples (Hz).
    length: samples per record (shorter records are zero-padded at the end, longer ones cropped).
    dtype: "int16" (lossless where possible) or "float16".
    leads: lead names, in stored order.
    source: where the record list came from ("mimic", "ptbxl", "folder", or anything a caller names).
    input: the dataset folder (absolute path as a string).
    allow_missing: whether records lacking leads were accepted (zero-filled, mask False).
    chunk_size: records per chunk (one shard per chunk).
    crop: which `length` samples of a longer record are kept: "start" (the first ones) or "centre" (the middle
        ones, as ecg-fix and the Reality Check benchmark centre-crop long CPSC records). Stores written before
        this setting existed have no entry in their manifest and read as "start".
    """

    fs: float
    length: int
    dtype: str = "int16"
    leads: tuple[str, ...] = STANDARD_LEADS
    source: str = "folder"
    input: str = ""
    allow_missing: bool = False
    chunk_size: int = 1000
    crop: str = "start"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if not (self.fs > 0 and self.length > 0 and self.chunk_size > 0):
            raise ValueError(f"fs, length and chunk_size must be positive, got fs={self.fs}, "
                             f"length={self.length}, chunk_size={self.chunk_size}")
        object.__setattr__(self, "leads", tuple(self.leads))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["leads"] = list(self.leads)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "StoreSettings":
        return cls(**{**data, "leads": tuple(data["leads"])})


# Settings that a manifest written before they existed lacks, with the value such a store was made with.
_SETTING_DEFAULTS = {"crop": "start"}


# --- files --------------------------------------------------------------------------------------------------


def shard_path(root: Path, chunk: int) -> Path:
    return Path(root) / SHARD_DIR / f"shard-{chunk:06d}.bin"


def part_paths(root: Path, chunk: int) -> dict[str, Path]:
    """The files a committed chunk leaves in parts/: its marker, index part and rejected part."""
    base = Path(root) / PARTS_DIR / f"part-{chunk:06d}"
    return {"marker": base.with_suffix(".json"), "index": Path(f"{base}.index.csv"),
            "rejected": Path(f"{base}.rejected.csv")}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a store folder (FileNotFoundError / StoreSettingsError with the reason otherwise)."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{root}: not an ECG store (no {MANIFEST_FILE})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME:
        raise StoreSettingsError(f"{path}: not an {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreSettingsError(f"{path}: store format version {manifest.get('format_version')} is not the "
                                 f"supported version {FORMAT_VERSION}; convert the data again")
    return manifest


def write_manifest(root: str | os.PathLike, settings: StoreSettings, **extra) -> dict:
    """Write (atomically) the manifest of a store folder and return it."""
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "settings": settings.to_dict(),
                "complete": False, **extra}
    _atomic_write_text(Path(root) / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest


def prepare_store(root: str | os.PathLike, settings: StoreSettings) -> StoreSettings:
    """Create a store folder for `settings`, or check that an existing one was made with the same settings.

    Args:
        root: the store folder (created if missing).
        settings: the settings of the conversion about to run.

    Returns:
        The settings to use (those given; an existing store must match them).

    Raises:
        StoreSettingsError: the folder holds a store made with other settings, or is a non-empty folder
            that is not a store.
    """
    root = Path(root)
    if (root / MANIFEST_FILE).is_file():
        # A setting added after a store was written (crop) takes its default, the behaviour the store was made with.
        existing = {**_SETTING_DEFAULTS, **read_manifest(root)["settings"]}
        wanted = settings.to_dict()
        diffs = [f"{key}: store has {existing.get(key)!r}, requested {wanted[key]!r}"
                 for key in wanted if existing.get(key) != wanted[key]]
        if diffs:
            raise StoreSettingsError(f"{root} holds a store made with different settings; resume with the "
                                     f"same settings or use a new --out folder. Differences: " + "; ".join(diffs))
        return settings
    if root.exists() and any(p.name != ".lock" for p in root.iterdir()):
        raise StoreSettingsError(f"{root} exists, is not empty and is not an ECG store; "
                                 "choose a new or empty --out folder")
    # The manifest first: a folder holding only it is a store, resumable whenever the run is killed.
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, settings)
    (root / SHARD_DIR).mkdir(exist_ok=True)
    (root / PARTS_DIR).mkdir(exist_ok=True)
    return settings


def fingerprint(record_ids: Iterable[str], paths: Iterable[str]) -> str:
    """A short hash of a chunk's records, so that a resumed run never reuses a chunk of a different list."""
    digest = hashlib.sha1()
    for record_id, path in zip(record_ids, paths):
        digest.update(f"{record_id}\t{path}\n".encode())
    return digest.hexdigest()


def committed_chunk(root: str | os.PathLike, chunk: int) -> dict | None:
    """The marker of a committed chunk (start, stop, fingerprint, counts), or None if not committed."""
    marker = part_paths(Path(root), chunk)["marker"]
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None  # cannot happen with atomic renames, but a damaged marker only means "redo"


# --- encoding one record ------------------------------------------------------------------------------------


def crop_start(n_samples: int, length: int, crop: str = "start") -> int:
    """The first sample kept when a record of `n_samples` is cut to `length` (0 when it is not longer).

    Args:
        n_samples: the record's length.
        length: the length wanted.
        crop: "start" keeps the first `length` samples; "centre" the middle ones (the extra sample of an odd
            surplus goes to the end, i.e. the start is rounded down).
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if n_samples <= length or crop == "start":
        return 0
    return (n_samples - length) // 2


def fit_length(signal: np.ndarray, length: int, crop: str = "start") -> tuple[np.ndarray, bool]:
    """A signal fitted to `length` samples along its last axis.

    Args:
        signal: (..., n_samples).
        length: samples wanted.
        crop: which samples of a longer signal to keep: "start" (the first `length`) or "centre" (the middle
            ones, see `crop_start`). A shorter signal is zero-padded at the end either way.

    Returns:
        (the fitted signal (a view when cropped), whether it was cropped).
    """
    n = signal.shape[-1]
    if n == length:
        return signal, False
    if n > length:
        start = crop_start(n, length, crop)
        return signal[..., start:start + length], True
    padded = np.zeros(signal.shape[:-1] + (length,), dtype=signal.dtype)
    padded[..., :n] = signal
    return padded, False


def decode(stored: np.ndarray, gain) -> np.ndarray:
    """Millivolts (float32) from stored values: stored / gain (gain broadcast against `stored`)."""
    return np.divide(stored, np.asarray(gain, dtype=np.float32), dtype=np.float32)


def encode(signal: np.ndarray, adc_gain: np.ndarray, mask: np.ndarray, dtype: str,
           native_rate: bool) -> tuple[np.ndarray, float, bool, str | None]:
    """Stored values for one record's float32 millivolt signal.

    Args:
        signal: float32 (n_leads, length) millivolts (already cropped or padded).
        adc_gain: float (n_leads,) the source's ADC units per mV, 0 where missing or unknown.
        mask: bool (n_leads,) leads present in the source.
        dtype: "int16" or "float16".
        native_rate: True when the samples are the source's own (no resampling), so that they lie on the
            source's ADC grid.

    Returns:
        (stored array of `dtype`, gain (stored units per mV), lossless, a note explaining a lossy choice or None).
        Lossless means decode(stored, gain) == signal exactly.

    Raises:
        ValueError: the signal holds NaN or infinite values.
    """
    if dtype == "float16":
        if not np.isfinite(signal).all():
            raise ValueError("non-finite samples (NaN/inf)")
        stored = signal.astype(np.float16)
        lossless = bool(np.array_equal(stored.astype(np.float32), signal))
        return stored, 1.0, lossless, None if lossless else "float16 store: values rounded to float16"

    gains = adc_gain[mask & (adc_gain > 0)]
    note = None
    if gains.size and native_rate:
        # The finest ADC step of the leads: with one shared gain this is the source's exact grid.
        gain = float(gains.max())
        if (gains != gains[0]).any():
            note = "leads have different ADC gains: stored at the finest"
    elif gains.size:
        gain = float(gains.max())
        note = "resampled: stored at the source's ADC resolution"
    else:
        gain = _DEFAULT_GAIN
        note = "ADC gain unknown: stored at 1 uV resolution"
    # float32 is enough: signal * gain lands within far less than half a step of the integer it came from.
    scaled = np.multiply(signal, np.float32(gain), dtype=np.float32)
    np.rint(scaled, out=scaled)
    if native_rate and note is None:
        # Fast path for the common case (one ADC grid, in range): cast, decode, compare. An out-of-range or
        # NaN sample cannot decode back to itself, so any surprise falls through to the careful path below.
        with np.errstate(invalid="ignore", over="ignore"):
            stored = scaled.astype(np.int16)
        if np.array_equal(np.divide(stored, np.float32(gain), out=scaled), signal):
            return stored, gain, True, None
        np.multiply(signal, np.float32(gain), out=scaled)
        np.rint(scaled, out=scaled)
    low, high = (float(scaled.min()), float(scaled.max())) if scaled.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("non-finite samples (NaN/inf)")
    if high > _INT16_MAX or low < -_INT16_MAX - 1:
        # Widen the step just enough to fit the record's peak (float32-exact so decoding is reproducible).
        peak = max(high, -low) / gain
        gain = float(np.float32(_INT16_MAX / peak * (1 - 1e-6)))
        np.multiply(signal, np.float32(gain), out=scaled)
        np.rint(scaled, out=scaled)
        np.clip(scaled, -_INT16_MAX - 1, _INT16_MAX, out=scaled)
        note = (note + "; " if note else "") + f"peak {peak:.2f} mV exceeds int16 at the ADC gain: step widened"
    gain = float(np.float32(gain))
    stored = scaled.astype(np.int16)
    # Exactness is checked, not assumed: it also needs the reader to have computed (d - baseline) / gain.
    lossless = native_rate and bool(np.array_equal(decode(stored, gain), signal))
    if not lossless and note is None:
        note = "values not on the ADC grid: rounded to it"
    return stored, gain, lossless, note


# --- writing one chunk --------------------------------------------------------------------------------------


def _csv_value(value) -> object:
    """A value as the index CSV writes it: missing (None, NaN, pd.NA) as an empty field, bools as True/False."""
    if value is None or isinstance(value, (str, int)):  # the common case first (bool is an int: "True")
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    try:
        if value != value:  # NaN
            return None
    except TypeError:  # pd.NA refuses to be compared
        return None
    return value


class ShardFile:
    """An append-only shard file filled record by record, written in large aligned blocks.

        shard = ShardFile(path, (12, 5000), np.int16)
        shard.next_record()[...] = values     # a (12, 5000) view into the staging buffer: fill it
        shard.close()                          # writes what is left; the file holds the records, back to back

    Records are staged in a buffer of about WRITE_BATCH_BYTES and written with one call per block rather than
    one per record. Where the OS offers O_DIRECT (Linux) and the filesystem accepts it, the blocks bypass the
    page cache: a conversion writes tens of GB exactly once, and pushing them through the cache costs CPU for
    every fresh 4 KB page (on the machine where this was measured, more than all the rest of the conversion
    once the cache held a few hundred MB of new pages) while evicting data that is worth caching. Every block
    but the last is a multiple of 4 KB from a 4 KB-aligned buffer, as O_DIRECT requires; the last is padded
    and the file truncated to its exact length. A filesystem that refuses O_DIRECT (tmpfs on older kernels,
    some network filesystems) gets ordinary buffered writes of the same bytes; so does every filesystem when
    DIRECT_WRITES is off (ESI_STORE_DIRECT_IO=0).
    """

    _fd = -1  # no file open (also while __init__ has not opened one yet)

    def __init__(self, path: str | os.PathLike, record_shape: tuple[int, ...], dtype, direct: bool | None = None):
        """
        Args:
            path: the file to create (truncated if it exists).
            record_shape: the shape of one record's array.
            dtype: the stored dtype.
            direct: try O_DIRECT (default: DIRECT_WRITES).
        """
        self.path = Path(path)
        self.record_shape = tuple(record_shape)
        self.dtype = np.dtype(dtype)
        self.record_bytes = int(np.prod(self.record_shape)) * self.dtype.itemsize
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        direct_flag = getattr(os, "O_DIRECT", 0) if (DIRECT_WRITES if direct is None else direct) else 0
        if direct_flag:
            try:
                self._fd = os.open(self.path, flags | direct_flag)
            except OSError:  # EINVAL: the filesystem does not do O_DIRECT
                self._fd = -1
        self.direct = self._fd >= 0
        if self._fd < 0:
            self._fd = os.open(self.path, flags)
        capacity = _round_up(max(WRITE_BATCH_BYTES, self.record_bytes) + self.record_bytes + _IO_ALIGN, _IO_ALIGN)
        raw = np.empty(capacity + _IO_ALIGN, dtype=np.uint8)
        start = -raw.ctypes.data % _IO_ALIGN
        self._buffer = raw[start:start + capacity]  # 4 KB-aligned in memory
        self._staged = 0  # bytes in the buffer not yet written
        self.size = 0  # bytes of records added so far

    def next_record(self) -> np.ndarray:
        """A writable view (record_shape, dtype) for the next record; fill it before the next call."""
        if self._staged + self.record_bytes > len(self._buffer):
            self._write_aligned()
        start = self._staged
        self._staged += self.record_bytes
        self.size += self.record_bytes
        return self._buffer[start:self._staged].view(self.dtype).reshape(self.record_shape)

    def close(self) -> None:
        """Write what is staged and close; the file then holds exactly the records added."""
        if self._fd < 0:
            return  # closed already
        staged = self._staged
        # O_DIRECT writes whole blocks: pad the last one, then cut the file back to the records' length.
        padded = _round_up(staged, _IO_ALIGN) if self.direct else staged
        self._buffer[staged:padded] = 0
        self._write(self._buffer[:padded])
        self._staged = 0
        if padded != staged:
            os.ftruncate(self._fd, self.size)
        os.close(self._fd)
        self._fd = -1

    def discard(self) -> None:
        """Close without writing what is staged (the caller removes the file)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.discard()

    def _write_aligned(self) -> None:
        """Write the staged whole 4 KB blocks; the remainder moves to the front of the buffer."""
        whole = self._staged // _IO_ALIGN * _IO_ALIGN
        if whole:
            self._write(self._buffer[:whole])
            rest = self._staged - whole
            self._buffer[:rest] = self._buffer[whole:self._staged]  # rest < 4 KB <= whole: no overlap
            self._staged = rest

    def _write(self, block: np.ndarray) -> None:
        view = memoryview(block)
        while len(view):
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                if not (self.direct and error.errno == errno.EINVAL):
                    raise
                self._stop_direct()  # accepted at open, refused on write: go on through the page cache
                continue
            view = view[written:]

    def _stop_direct(self) -> None:
        import fcntl

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        self.direct = False


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class ChunkWriter:
    """Writes one chunk of a store; nothing of it counts until `commit()` succeeds.

    Usage:
        writer = ChunkWriter(root, settings, chunk=3, start=3000, stop=4000, fingerprint=fp)
        for record in records:             # dicts with at least record_id and path
            try:
                ecg = read_ecg(record["path"], fs=settings.fs, leads=settings.leads)
            except ECGFormatError as error:
                writer.reject(record, error.reason)
            else:
                writer.add(record, ecg, quality_flags(ecg))
        writer.commit()
    """

    def __init__(self, root: str | os.PathLike, settings: StoreSettings, chunk: int, start: int, stop: int,
                 fingerprint: str = ""):
        """
        Args:
            root: the store folder (made by `prepare_store`).
            settings: the store's settings.
            chunk: chunk number (names the shard and parts files).
            start, stop: the chunk's slice of the record list (kept in the marker to validate resumes).
            fingerprint: `fingerprint()` of the chunk's records.
        """
        self.root = Path(root)
        self.settings = settings
        self.chunk, self.start, self.stop, self.fingerprint = chunk, start, stop, fingerprint
        self.rows: list[dict] = []
        self.rejected: list[dict] = []
        self._shard_tmp = shard_path(self.root, chunk).with_suffix(".bin.tmp")
        self._shard_tmp.parent.mkdir(parents=True, exist_ok=True)
        self._dtype = np.dtype(settings.dtype)
        self._shard = ShardFile(self._shard_tmp, (len(settings.leads), settings.length), self._dtype)

    def add(self, record: Mapping, ecg: ECG, flags: Mapping[str, bool] | None = None) -> None:
        """Append one record's samples to the shard and its row to the chunk's index part.

        Args:
            record: the record's row of the record table (record_id, path, ids, passthrough columns).
            ecg: the record as read at the store's rate with the store's leads.
            flags: quality flags (name -> bool), stored as quality_<name> columns.

        Raises:
            ECGFormatError: the record does not fit the store (wrong rate or leads, non-finite samples).
        """
        if ecg.signal.shape[0] != len(self.settings.leads) or tuple(ecg.leads) != self.settings.leads:
            raise ECGFormatError(ecg.path, f"leads {ecg.leads} do not match the store's {self.settings.leads}")
        if abs(ecg.fs - self.settings.fs) > 1e-6:
            raise ECGFormatError(ecg.path, f"sampling rate {ecg.fs} Hz is not the store's {self.settings.fs} Hz")
        signal, cropped = fit_length(ecg.signal, self.settings.length, self.settings.crop)
        native = abs(ecg.fs - ecg.fs_source) < 1e-6
        try:
            stored, gain, lossless, note = encode(signal, ecg.adc_gain, ecg.mask, self.settings.dtype, native)
        except ValueError as error:
            raise ECGFormatError(ecg.path, str(error)) from None
        self._shard.next_record()[...] = stored

        notes = list(ecg.notes) + ([note] if note else []) + self._length_notes(ecg.n_samples)
        self._add_row(record, fs_source=ecg.fs_source, n_samples_source=ecg.n_samples_source,
                      n_samples=ecg.n_samples, cropped=cropped,
                      lead_mask="".join("1" if m else "0" for m in ecg.mask), gain=gain, lossless=lossless,
                      repaired_samples=ecg.repaired_samples, flags=flags, notes=notes)

    def add_digital(self, record: Mapping, digital, flags: Mapping[str, bool] | None = None) -> None:
        """Append a record read by `esi.data.reader.read_digital`: its int16 values go to the shard as they are.

        The row is the one `add(record, digital.to_ecg(), flags)` would write for such a record (lossless,
        gain = the ADC gain), reached without converting to float32 and back.

        Args:
            record: the record's row of the record table (record_id, path, ids, passthrough columns).
            digital: a `DigitalECG` at the store's rate with the store's leads.
            flags: quality flags (name -> bool), stored as quality_<name> columns.

        Raises:
            ECGFormatError: the record does not fit the store (wrong rate or leads).
            ValueError: the store is not an int16 store (float16 stores go through `add`).
        """
        if self._dtype != np.int16:
            raise ValueError(f"add_digital writes int16 values; this store holds {self.settings.dtype}")
        if tuple(digital.leads) != self.settings.leads:
            raise ECGFormatError(digital.path, f"leads {digital.leads} do not match the store's "
                                               f"{self.settings.leads}")
        if abs(digital.fs - self.settings.fs) > 1e-6:
            raise ECGFormatError(digital.path, f"sampling rate {digital.fs} Hz is not the store's "
                                               f"{self.settings.fs} Hz")
        n_samples, length = digital.n_samples, self.settings.length
        slot = self._shard.next_record()
        cropped = n_samples > length
        kept = min(n_samples, length)
        start = crop_start(n_samples, length, self.settings.crop)
        slot[:, :kept] = digital.digital[:, start:start + kept]
        slot[:, kept:] = 0  # zero padding of a short record
        notes = self._length_notes(n_samples)
        self._add_row(record, fs_source=digital.fs, n_samples_source=n_samples, n_samples=n_samples,
                      cropped=cropped, lead_mask="1" * len(self.settings.leads), gain=float(digital.gain),
                      lossless=True, repaired_samples=0, flags=flags, notes=notes)

    def _length_notes(self, n_samples: int) -> list[str]:
        """The note saying how a record of `n_samples` was fitted to the store's length (none if it fits)."""
        length = self.settings.length
        if n_samples > length:
            where = " (centre)" if self.settings.crop == "centre" else ""
            return [f"cropped from {n_samples} to {length} samples{where}"]
        if n_samples < length:
            return [f"zero-padded from {n_samples} to {length} samples"]
        return []

    def _add_row(self, record: Mapping, *, fs_source: float, n_samples_source: int, n_samples: int, cropped: bool,
                 lead_mask: str, gain: float, lossless: bool, repaired_samples: int,
                 flags: Mapping[str, bool] | None, notes: list[str]) -> None:
        row = {key: _csv_value(value) for key, value in record.items()}
        row.update({
            "shard": self.chunk, "row": len(self.rows), "fs": self.settings.fs, "fs_source": fs_source,
            "n_samples_source": n_samples_source, "n_samples": n_samples, "cropped": bool(cropped),
            "lead_mask": lead_mask, "gain": gain, "scale": 1.0 / gain, "lossless": bool(lossless),
            "repaired_samples": repaired_samples,
        })
        for name, value in (flags or {}).items():
            row[QUALITY_PREFIX + name] = bool(value)
        row["notes"] = "; ".join(notes)
        self.rows.append(row)

    def reject(self, record: Mapping, reason: str) -> None:
        """Record that `record` could not be converted, and why."""
        self.rejected.append({"record_id": record["record_id"], "path": record["path"], "reason": reason})

    def commit(self) -> dict:
        """Make the chunk visible: shard, index part, rejected part, then the marker, each renamed atomically.

        Returns:
            The marker written (chunk, start, stop, fingerprint, converted, rejected).
        """
        self._shard.close()
        os.replace(self._shard_tmp, shard_path(self.root, self.chunk))
        paths = part_paths(self.root, self.chunk)
        paths["index"].parent.mkdir(parents=True, exist_ok=True)
        # Union of the rows' keys in first-seen order (quality flags may differ between records).
        columns = list(dict.fromkeys(itertools.chain.from_iterable(self.rows))) if self.rows else \
            ["record_id", "path", *STORE_COLUMNS, "notes"]
        if "notes" in columns:  # keep notes last
            columns.remove("notes")
            columns.append("notes")
        self._write_csv(paths["index"], columns, self.rows)
        self._write_csv(paths["rejected"], list(REJECTED_COLUMNS), self.rejected)
        marker = {"chunk": self.chunk, "start": self.start, "stop": self.stop, "fingerprint": self.fingerprint,
                  "converted": len(self.rows), "rejected": len(self.rejected)}
        _atomic_write_text(paths["marker"], json.dumps(marker) + "\n")
        return marker

    def abort(self) -> None:
        """Drop what was written (the temporary shard)."""
        self._shard.discard()
        self._shard_tmp.unlink(missing_ok=True)

    @staticmethod
    def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            # A plain writer over value lists: csv.DictWriter re-checks every row's keys, which costs more.
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([row.get(column, "") for column in columns] for row in rows)
        os.replace(tmp, path)


# --- assembling the chunks into the final index -------------------------------------------------------------


def _index_dtypes(columns: Sequence[str]) -> dict:
    """How to parse the index CSV so that ids stay ids (not floats) and the mask stays a string."""
    known = {"record_id": str, "path": str, "lead_mask": str, "notes": str, "subject_id": "Int64",
             "study_id": "Int64", "ecg_id": "Int64", "shard": "int64", "row": "int64",
             # Challenge passthrough: SNOMED code lists ("426783006" alone must not become a number).
             "dx": str, "source": str}
    return {c: t for c, t in known.items() if c in columns}


# Index columns read as text with "" kept as "" (not missing): an empty dx means "no code", not unknown.
_TEXT_COLUMNS = ("record_id", "path", "lead_mask", "notes", "dx")


def _read_part(path: Path):
    import pandas as pd

    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    table = pd.read_csv(path, dtype=_index_dtypes(header), keep_default_na=False,
                        na_values={c: [""] for c in header if c not in _TEXT_COLUMNS})
    return table


def assemble(root: str | os.PathLike, chunks: Sequence[int], source_info: Mapping | None = None,
             progress: bool = False) -> dict:
    """Concatenate committed chunks into index.csv, rejected.csv and layout.npz, and mark the store complete.

    Streams one part at a time, so memory stays bounded by the largest part (plus a few bytes per record).

    Args:
        root: the store folder.
        chunks: the chunk numbers that make up the store, in order.
        source_info: extra facts to record in the manifest (e.g. the record list used).
        progress: show a tqdm bar over the parts.

    Returns:
        The final manifest.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    root = Path(root)
    manifest = read_manifest(root)
    settings = StoreSettings.from_dict(manifest["settings"])
    index_tmp = root / (INDEX_FILE + ".tmp")
    rejected_tmp = root / (REJECTED_FILE + ".tmp")
    shard, row, gain, n_valid, masks = [], [], [], [], []
    header: str | None = None
    n_records = n_rejected = 0
    with open(index_tmp, "w", newline="") as index_out, open(rejected_tmp, "w", newline="") as rejected_out:
        rejected_out.write(",".join(REJECTED_COLUMNS) + "\n")
        for chunk in tqdm(chunks, desc="assembling index", unit="chunk", disable=not progress):
            paths = part_paths(root, chunk)
            marker = committed_chunk(root, chunk)
            if marker is None:
                raise RuntimeError(f"{root}: chunk {chunk} is not committed; run the conversion again")
            n_rejected += int(marker["rejected"])
            # The parts' text is copied as it is (no re-parsing that could turn "007" into 7); pandas only
            # reads the few columns the layout arrays need.
            with open(paths["index"], newline="") as f:
                part_header, body = f.readline(), f.read()
            if body:
                if header is None:
                    header = part_header
                    index_out.write(header)
                elif part_header != header:
                    raise RuntimeError(f"{paths['index']}: columns differ from those of the first chunk "
                                       f"({part_header.strip()!r} vs {header.strip()!r})")
                index_out.write(body)
                part = pd.read_csv(io.StringIO(part_header + body), usecols=list(_LAYOUT_COLUMNS),
                                   dtype={"lead_mask": str}, keep_default_na=False)
                shard.append(part["shard"].to_numpy(np.int32))
                row.append(part["row"].to_numpy(np.int32))
                gain.append(part["gain"].to_numpy(np.float32))
                n_valid.append(np.minimum(part["n_samples"].to_numpy(np.int64), settings.length).astype(np.int32))
                mask_text = "".join(part["lead_mask"])
                masks.append((np.frombuffer(mask_text.encode(), dtype=np.uint8) == ord("1"))
                             .reshape(len(part), len(settings.leads)))
                n_records += len(part)
            with open(paths["rejected"], newline="") as f:
                f.readline()
                rejected_out.write(f.read())
        if header is None:  # nothing converted: still a valid (empty) index
            index_out.write(",".join(("record_id", "path") + STORE_COLUMNS + ("notes",)) + "\n")

    def concat(parts, dtype, shape=(0,)):
        return np.concatenate(parts) if parts else np.zeros(shape, dtype=dtype)

    # Mark the store incomplete while its three files are replaced one after the other.
    manifest["complete"] = False
    _atomic_write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    layout_tmp = root / "layout.tmp.npz"
    np.savez(layout_tmp, shard=concat(shard, np.int32), row=concat(row, np.int32),
             gain=concat(gain, np.float32), n_valid=concat(n_valid, np.int32),
             mask=concat(masks, bool, (0, len(settings.leads))))
    os.replace(layout_tmp, root / LAYOUT_FILE)
    os.replace(index_tmp, root / INDEX_FILE)
    os.replace(rejected_tmp, root / REJECTED_FILE)
    manifest.update(source_info or {})
    manifest.update({"complete": True, "n_records": n_records, "n_rejected": n_rejected, "n_chunks": len(chunks)})
    _atomic_write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- reading ------------------------------------------------------------------------------------------------


class ECGStore:
    """A converted store, opened for reading. Cheap to open and to pickle (DataLoader workers reopen it).

        store = ECGStore("outputs/stores/ptbxl500")
        len(store), store.fs, store.length, store.leads
        x = store[0]                        # float32 (12, length) mV
        batch = store.read([5, 1, 3])       # float32 (3, 12, length), in the order asked
        q, scale = store.raw(0)             # stored values and mV per unit
        store.index                         # pandas DataFrame, one row per record
        store.locate("1")                   # row of record id "1" (array for a list of ids)
    """

    def __init__(self, path: str | os.PathLike):
        """
        Args:
            path: the store folder written by `python -m esi.data.convert` (or `esi.data.convert.convert`).
        """
        self.path = Path(path).resolve()
        self.manifest = read_manifest(self.path)
        if not self.manifest.get("complete"):
            raise StoreSettingsError(f"{self.path}: the conversion into this store has not finished; run the "
                                     "same convert command again to complete it")
        self.settings = StoreSettings.from_dict(self.manifest["settings"])
        with np.load(self.path / LAYOUT_FILE) as layout:
            self.shards = layout["shard"]
            self.rows = layout["row"]
            self.gains = layout["gain"]  # float32 stored units per mV
            self.n_valid = layout["n_valid"]  # samples before zero padding
            self.masks = layout["mask"]  # bool (n, n_leads) leads present in the source
        self._shard_rows = np.bincount(self.shards, minlength=int(self.shards.max()) + 1 if len(self.shards) else 0)
        self._dtype = np.dtype(self.settings.dtype)
        self._memmaps: dict[int, np.ndarray] = {}
        self._index = None
        self._positions = None

    # Pickle only the path: each process maps the shards itself (and lazily).
    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return (f"ECGStore({str(self.path)!r}: {len(self)} records, {self.fs:g} Hz x {self.length} samples, "
                f"{self.settings.dtype}, {len(self.leads)} leads)")

    @property
    def fs(self) -> float:
        return float(self.settings.fs)

    @property
    def length(self) -> int:
        return int(self.settings.length)

    @property
    def leads(self) -> tuple[str, ...]:
        return self.settings.leads

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __len__(self) -> int:
        return int(len(self.shards))

    @property
    def index(self):
        """The index table (pandas DataFrame), row i describing store[i]; loaded on first use."""
        if self._index is None:
            self._index = _read_part(self.path / INDEX_FILE)
        return self._index

    @property
    def rejected(self):
        """The records the conversion rejected (record_id, path, reason) as a DataFrame."""
        import pandas as pd

        return pd.read_csv(self.path / REJECTED_FILE, dtype=str, keep_default_na=False)

    def _shard(self, shard: int) -> np.ndarray:
        mm = self._memmaps.get(shard)
        if mm is None:
            path = shard_path(self.path, shard)
            shape = (int(self._shard_rows[shard]), len(self.leads), self.length)
            expected = int(np.prod(shape)) * self._dtype.itemsize
            size = path.stat().st_size if path.exists() else -1
            if size != expected:
                raise StoreSettingsError(f"{path}: expected {expected} bytes for {shape[0]} records, found "
                                         f"{'no file' if size < 0 else size}; the store is damaged")
            # A plain ndarray view of the map: indexing it skips np.memmap's per-call overhead.
            mm = np.memmap(path, dtype=self._dtype, mode="r", shape=shape).view(np.ndarray)
            self._memmaps[shard] = mm
        return mm

    def _positions_of(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"record {bad} out of range for a store of {n} records")
        return np.where(idx < 0, idx + n, idx)

    def _view(self, i: int) -> np.ndarray:
        # The hot path of every read: no bounds checks (callers check once per batch).
        return self._shard(int(self.shards[i]))[self.rows[i]]

    def raw(self, i: int) -> tuple[np.ndarray, float]:
        """(stored values (n_leads, length) as a copy, scale in mV per stored unit); mV = values * scale.

        For bit-exact millivolts use `store[i]`, which divides by the gain (1 / scale) as WFDB does.
        """
        i = int(self._positions_of([i])[0])
        return np.array(self._view(i)), 1.0 / float(self.gains[i])

    def __getitem__(self, i) -> np.ndarray:
        if isinstance(i, (slice, list, np.ndarray)):
            return self.read(np.arange(len(self))[i] if isinstance(i, slice) else i)
        i = int(self._positions_of([i])[0])
        return decode(self._view(i), self.gains[i])

    def read_raw(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(stored values (n, n_leads, length), gains (n,)) for `indices`, in the order asked."""
        idx = self._positions_of(indices)
        out = np.empty((len(idx), len(self.leads), self.length), dtype=self._dtype)
        for k in np.argsort(idx, kind="stable"):  # sorted: sequential access within each shard
            out[k] = self._view(idx[k])
        return out, self.gains[idx]

    def read(self, indices, out: np.ndarray | None = None) -> np.ndarray:
        """Millivolts for several records: float32 (n, n_leads, length), in the order of `indices`.

        Args:
            indices: store rows (ints; negative counts from the end).
            out: optional float32 array of that shape to fill (avoids an allocation per batch).
        """
        idx = self._positions_of(indices)
        if out is None:
            out = np.empty((len(idx), len(self.leads), self.length), dtype=np.float32)
        # One divide per record straight from the map into `out`: no int16 temporary, and the
        # sorted order reads each shard front to back.
        for k in np.argsort(idx, kind="stable"):
            np.divide(self._view(idx[k]), self.gains[idx[k]], out=out[k])
        return out

    def locate(self, record_ids):
        """Store row(s) of record id(s): an int for one id, an int array for a list.

        Raises:
            KeyError: an id that is not in the store (rejected or never listed), naming it.
        """
        if self._positions is None:
            import pandas as pd

            self._positions = pd.Index(self.index["record_id"].astype(str))
        single = np.isscalar(record_ids) or isinstance(record_ids, str)
        wanted = [str(r) for r in ([record_ids] if single else record_ids)]
        found = self._positions.get_indexer(wanted)
        if (found < 0).any():
            missing = [w for w, f in zip(wanted, found) if f < 0]
            raise KeyError(f"record id(s) not in {self.path}: {', '.join(missing[:5])}"
                           + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))
        return int(found[0]) if single else found.astype(np.int64)
