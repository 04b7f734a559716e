"""Convert a list of WFDB records into an ECG store, in parallel, in bounded memory, resumably.

    python -m esi.data.convert --source ptbxl --input data/ptbxl --out outputs/stores/ptbxl100 --fs 100
    python -m esi.data.convert --source mimic --input data/mimic-iv-ecg --out outputs/stores/mimic500 --workers 16
    python -m esi.data.convert --source challenge --input data/challenge-2021/training/cpsc_2018 \
        --out outputs/stores/cpsc500 --fs 500 --crop centre
    python -m esi.data.convert --source ecg_arrhythmia --input data/ecg-arrhythmia/1.0.0 --out outputs/stores/csn500 \
        --fs 500

The challenge sources (`challenge`: a CinC 2020/2021 training tree or one of its source folders;
`ecg_arrhythmia`: PhysioNet ecg-arrhythmia 1.0.0) carry source, dx (the header's SNOMED codes, ";"-joined),
age and sex into the store's index (see `esi.data.challenge`).

How it stays bounded and resumable:
- the record list is split deterministically into fixed chunks (`chunk_size` records, in list order);
- each worker process converts one chunk at a time, streaming samples into that chunk's shard file; no process
  ever holds more than one record's samples plus one chunk's index rows;
- a chunk becomes visible only when its files are renamed into place and its marker written (see
  `esi.data.store.ChunkWriter`); a run killed at any moment (even SIGKILL mid-chunk) leaves at most unfinished
  temporary files, which the next run overwrites;
- running the same command again skips every committed chunk whose records are unchanged, converts the rest,
  and rebuilds the index by concatenating the chunks' parts: every record ends up in the store exactly once.

Workers are fresh processes (forkserver, or spawn where there is none), so a script that calls `convert` with
more than one worker needs the usual `if __name__ == "__main__":` guard; notebooks need nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from esi.data.ecg import ECGFormatError
from esi.data.leads import STANDARD_LEADS
from esi.data.store import (CROPS, STORE_COLUMNS, ChunkWriter, StoreSettings, StoreSettingsError, assemble,
                            committed_chunk, fingerprint, prepare_store, read_manifest)

# As esi.data.sources.SOURCES (not imported: workers need no pandas).
SOURCES = ("mimic", "ptbxl", "folder", "challenge", "ecg_arrhythmia")
LOCK_FILE = ".lock"


@dataclass
class ConvertSummary:
    """What a conversion run did. `converted`/`rejected` count this run; `skipped` counts records in chunks
    that an earlier run had already finished."""

    out: str
    listed: int
    converted: int
    rejected: int
    skipped: int
    records_in_store: int
    rejected_in_store: int
    seconds: float

    def __str__(self) -> str:
        rate = self.converted + self.rejected
        speed = f" ({rate / self.seconds:.0f} records/s)" if self.seconds > 0 and rate else ""
        return (f"converted {self.converted}, rejected {self.rejected}, skipped as already done {self.skipped} "
                f"in {self.seconds:.1f} s{speed}\n"
                f"store {self.out}: {self.records_in_store} records, {self.rejected_in_store} rejected "
                f"(see rejected.csv), {self.listed} listed")


def default_chunk_size(n_records: int, workers: int) -> int:
    """Records per chunk: about 4 chunks per worker (for balance and a live progress bar), 16 to 1000."""
    return int(min(1000, max(16, math.ceil(n_records / max(1, 4 * workers)))))


def plan_chunks(n_records: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """[(chunk number, start, stop)] covering rows 0..n_records-1 of the record list in order."""
    return [(k, start, min(start + chunk_size, n_records))
            for k, start in enumerate(range(0, n_records, chunk_size))]


def resample_ecg(ecg, fs: float):
    """The ECG at another sampling rate, resampled exactly as `read_ecg(path, fs=fs)` does it.

    Args:
        ecg: an ECG as read at its source rate.
        fs: the rate wanted (Hz).
    """
    from esi.data.reader import resample_signal

    signal, note = resample_signal(ecg.signal, ecg.fs, fs)
    return replace(ecg, signal=signal, fs=float(fs), notes=tuple(ecg.notes) + (note,))


# --- the worker side ----------------------------------------------------------------------------------------

_counter = None  # multiprocessing.Value shared by the workers: records done in this run


def _init_worker(counter) -> None:
    global _counter
    _counter = counter
    # Ctrl-C goes to the whole process group: let the main process decide, workers just stop with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _count_record() -> None:
    with _counter.get_lock():
        _counter.value += 1


def _convert_record(record: dict, settings: StoreSettings, writer: ChunkWriter) -> None:
    """Read one record, judge its quality, and append it to the chunk (ECGFormatError if it cannot serve)."""
    # Imported here so that worker processes pay for them once, and only when converting.
    from esi.data.quality import digital_quality_flags, quality_flags
    from esi.data.reader import read_digital, read_ecg

    # The common case (PTB-XL, MIMIC-IV-ECG at their own rate, int16 store): the ADC values go to the store
    # as they are, with the flags computed on them. read_digital says None for every other kind of record.
    digital = read_digital(record["path"], leads=settings.leads) if settings.dtype == "int16" else None
    if digital is not None and abs(digital.fs - settings.fs) <= 1e-9:
        writer.add_digital(record, digital, digital_quality_flags(digital))
        return
    # Read at the source rate: quality flags judge the source samples (a resampling filter overshoots at
    # clipped plateaus and would hide saturation); then resample for the store.
    if digital is not None:
        ecg = digital.to_ecg()  # what read_ecg returns, without reading the files again
    else:
        ecg = read_ecg(record["path"], leads=settings.leads, allow_missing=settings.allow_missing)
    flags = quality_flags(ecg)
    if abs(ecg.fs - settings.fs) > 1e-9:
        ecg = resample_ecg(ecg, settings.fs)
        flags["resampled"] = True
    writer.add(record, ecg, flags)


def convert_chunk(task: dict, on_record: Callable[[], None] | None = None) -> dict:
    """Convert one chunk of records into its shard and parts; returns the chunk's marker.

    Args:
        task: {"root", "settings" (dict), "chunk", "start", "stop", "fingerprint", "columns", "rows"} where rows
            are tuples of the record table's values in `columns` order.
        on_record: called after each record (progress counting); default counts into the shared counter.
    """
    settings = StoreSettings.from_dict(task["settings"])
    on_record = on_record or _count_record
    writer = ChunkWriter(task["root"], settings, task["chunk"], task["start"], task["stop"], task["fingerprint"])
    columns = task["columns"]
    try:
        for values in task["rows"]:
            record = dict(zip(columns, values))
            try:
                _convert_record(record, settings, writer)
            except ECGFormatError as error:
                writer.reject(record, error.reason)
            except Exception as error:  # a bug, not a bad record: stop, but say which record triggered it
                raise RuntimeError(f"{record['path']}: unexpected {type(error).__name__} while converting "
                                   f"record {record['record_id']}: {error}") from error
            on_record()
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


# --- the main side ------------------------------------------------------------------------------------------


@contextmanager
def _store_lock(root: Path):
    """An exclusive lock on the store folder, so two conversions never write the same chunks at once."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreSettingsError(f"{root}: another conversion is writing into this store") from None
        yield  # the kernel drops the lock when the process ends, however it ends


def _task_rows(records, start: int, stop: int) -> list[tuple]:
    """The chunk's rows as plain tuples (NA -> None), cheap to pickle and free of pandas types."""
    part = records.iloc[start:stop]
    columns = []
    for name in part.columns:  # column by column, through numpy: Python scalars without a per-cell loop
        column = part[name]
        values = column.to_numpy(dtype=object).tolist()
        missing = column.isna().to_numpy()
        if missing.any():
            values = [None if gone else value for value, gone in zip(values, missing)]
        columns.append(values)
    return list(zip(*columns))


def _worker_context():
    # Fresh interpreters (not fork): workers do not inherit the caller's memory, threads or open files
    # (a forked child would also inherit the store lock), and peak memory stays per-worker small.
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        # Import the worker's modules once in the fork server; each worker then starts with them loaded.
        context.set_forkserver_preload(["esi.data.reader", "esi.data.quality", "esi.data.store"])
        return context
    return mp.get_context("spawn")


def convert_records(records, out: str | os.PathLike, settings: StoreSettings, workers: int | None = None,
                    progress: bool = True, source_info: dict | None = None) -> ConvertSummary:
    """Convert the records of a record table (see `esi.data.sources`) into the store at `out`.

    Args:
        records: DataFrame with at least record_id and path (absolute WFDB record paths), unique record ids.
        out: the store folder; created, or resumed if it holds a store with the same settings.
        settings: the store settings (rate, length, dtype, leads, chunk size, ...).
        workers: worker processes (default os.cpu_count()); 1 converts in this process.
        progress: show a tqdm progress bar (records/s, ETA).
        source_info: extra facts recorded in the manifest.

    Returns:
        The run's summary (also printed by the CLI).

    Raises:
        StoreSettingsError: `out` holds a store made with other settings, or another conversion holds it.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    clash = sorted(set(records.columns) & (set(STORE_COLUMNS) | {"notes"}))
    if clash or not {"record_id", "path"} <= set(records.columns):
        raise ValueError(f"the record table needs record_id and path columns and none of the store's own "
                         f"({', '.join(STORE_COLUMNS)}, notes); clashing: {', '.join(clash) or 'none'}")
    root = Path(out).resolve()
    workers = max(1, int(workers or os.cpu_count() or 1))
    with _store_lock(root):
        prepare_store(root, settings)
        ids = records["record_id"].astype(str).tolist()
        paths = records["path"].astype(str).tolist()
        plan = plan_chunks(len(records), settings.chunk_size)
        pending, skipped = [], 0
        for chunk, start, stop in plan:
            fp = fingerprint(ids[start:stop], paths[start:stop])
            marker = committed_chunk(root, chunk)
            if marker and (marker["start"], marker["stop"], marker["fingerprint"]) == (start, stop, fp):
                skipped += stop - start
            else:
                pending.append((chunk, start, stop, fp))

        columns = list(records.columns)

        def task(item) -> dict:
            chunk, start, stop, fp = item
            return {"root": str(root), "settings": settings.to_dict(), "chunk": chunk, "start": start,
                    "stop": stop, "fingerprint": fp, "columns": columns, "rows": _task_rows(records, start, stop)}

        n_pending = sum(stop - start for _, start, stop, _ in pending)
        bar = tqdm(total=n_pending, unit="rec", desc=f"converting into {root.name}", disable=not progress,
                   smoothing=0.05, dynamic_ncols=True)
        markers = []
        workers = min(workers, len(pending)) if pending else 1
        if workers == 1:
            for item in pending:
                markers.append(convert_chunk(task(item), on_record=lambda: bar.update(1)))
        else:
            markers = _run_pool(pending, task, workers, bar)
        bar.close()

        manifest = assemble(root, [chunk for chunk, _, _ in plan],
                            source_info={**(source_info or {}), "n_listed": len(records)})
        _remove_leftovers(root)
    return ConvertSummary(out=str(root), listed=len(records), converted=sum(m["converted"] for m in markers),
                          rejected=sum(m["rejected"] for m in markers), skipped=skipped,
                          records_in_store=manifest["n_records"], rejected_in_store=manifest["n_rejected"],
                          seconds=time.perf_counter() - started)


def _run_pool(pending: list, task: Callable, workers: int, bar) -> list[dict]:
    """Convert the pending chunks with a process pool, at most 2 chunks per worker queued at a time
    (so that the chunks' record rows are built lazily, never all at once)."""
    context = _worker_context()
    counter = context.Value("q", 0)
    markers: list[dict] = []
    queue = iter(pending)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                   initargs=(counter,))
    in_flight = set()
    try:
        for item in queue:
            in_flight.add(executor.submit(convert_chunk, task(item)))
            if len(in_flight) >= 2 * workers:
                break
        while in_flight:
            finished, in_flight = wait(in_flight, timeout=0.25, return_when=FIRST_COMPLETED)
            bar.update(counter.value - bar.n)
            for future in finished:
                markers.append(future.result())
                item = next(queue, None)
                if item is not None:
                    in_flight.add(executor.submit(convert_chunk, task(item)))
        bar.update(counter.value - bar.n)
    except BrokenProcessPool as error:
        executor.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError("a conversion worker process died: killed by the system (out of memory?) or, when "
                           "convert() is called from a script, the script lacks the `if __name__ == "
                           "\"__main__\":` guard that worker processes need. Finished chunks are kept: run "
                           "the same conversion again to resume.") from error
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return markers


def _remove_leftovers(root: Path) -> None:
    """Temporary files of chunks that a killed run never finished (their chunks have been redone since)."""
    for folder in (root / "shards", root / "parts"):
        for path in folder.glob("*.tmp"):
            path.unlink(missing_ok=True)


def convert(source: str, input: str | os.PathLike, out: str | os.PathLike, fs: float = 500, seconds: float = 10,
            dtype: str = "int16", workers: int | None = None, limit: int | None = None,
            allow_missing: bool = False, record_list: str | os.PathLike | None = None,
            chunk_size: int | None = None, leads: Sequence[str] = STANDARD_LEADS,
            progress: bool = True, crop: str = "start") -> ConvertSummary:
    """Convert a dataset into an ECG store (what `python -m esi.data.convert` runs).

    Args:
        source: "mimic" (MIMIC-IV-ECG record_list.csv), "ptbxl" (ptbxl_database.csv), "folder" (every *.hea),
            "challenge" (a CinC 2020/2021 training tree, or one source folder of it) or "ecg_arrhythmia"
            (PhysioNet ecg-arrhythmia 1.0.0).
        input: the dataset folder.
        out: the store folder to create or resume.
        fs: sampling rate of the store (Hz); records at another rate are resampled.
        seconds: record length in the store; shorter records are zero-padded at the end (their index row
            has n_samples < the store's length), longer ones cropped as `crop` says (cropped True).
        dtype: "int16" (lossless where the source allows) or "float16".
        workers: worker processes (default os.cpu_count()).
        limit: convert only the first `limit` records of the list.
        allow_missing: accept records lacking some leads (zero-filled, lead mask False) instead of rejecting.
        record_list: the record list CSV if not the standard one inside `input`.
        chunk_size: records per chunk/shard; default: taken from the store when resuming, else chosen from
            the number of records and workers (see `default_chunk_size`).
        leads: leads to store, in order.
        progress: show a progress bar.
        crop: which samples of a longer record to keep: "start" (the first ones) or "centre" (centre-crop, as
            ecg-fix and the Reality Check do). Part of the store's settings: a store is resumed only with its own.

    Returns:
        The run's summary; the store opens with `ECGStore(out)`.
    """
    from esi.data.sources import load_records

    records = load_records(source, input, record_list=record_list, fs=fs, limit=limit)
    return convert_table(records, out, source=source, input=input, fs=fs, seconds=seconds, dtype=dtype,
                         workers=workers, allow_missing=allow_missing, chunk_size=chunk_size, leads=leads,
                         progress=progress, crop=crop,
                         source_info={"record_list": str(Path(record_list).resolve()) if record_list else None})


def convert_table(records, out: str | os.PathLike, *, source: str, input: str | os.PathLike, fs: float = 500,
                  seconds: float = 10, dtype: str = "int16", workers: int | None = None, allow_missing: bool = False,
                  chunk_size: int | None = None, leads: Sequence[str] = STANDARD_LEADS, progress: bool = True,
                  crop: str = "start", source_info: dict | None = None) -> ConvertSummary:
    """Convert the records of a record table (`esi.data.sources`: e.g. one dataset's part of a larger download)
    with the settings `convert` takes; `source` and `input` are recorded in the store's settings.

    Args:
        records: the record table (record_id, path, passthrough columns).
        source_info: extra facts recorded in the manifest (the seconds are added).
        The others: as `convert`.
    """
    workers = max(1, int(workers or os.cpu_count() or 1))
    if chunk_size is None:
        try:    # resuming: the chunking the store was started with
            chunk_size = int(read_manifest(out)["settings"]["chunk_size"])
        except FileNotFoundError:
            chunk_size = default_chunk_size(len(records), workers)
    settings = StoreSettings(fs=float(fs), length=int(round(fs * seconds)), dtype=dtype, leads=tuple(leads),
                             source=source, input=str(Path(input).resolve()), allow_missing=bool(allow_missing),
                             chunk_size=int(chunk_size), crop=crop)
    return convert_records(records, out, settings, workers=workers, progress=progress,
                           source_info={**(source_info or {}), "seconds": seconds})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esi.data.convert",
        description="Convert WFDB ECG records (MIMIC-IV-ECG, PTB-XL, the PhysioNet Challenge layouts or any folder) "
                    "into a compact memory-mapped "
                    "store: int16/float16 shards at one rate and length plus an index table. Parallel, bounded "
                    "in memory, and resumable: if a run is interrupted, run the same command again.",
        epilog="examples: python -m esi.data.convert --source ptbxl --input data/ptbxl --out outputs/stores/ptbxl100 "
               "--fs 100 --seconds 10; python -m esi.data.convert --source challenge --input "
               "data/challenge-2021/training/cpsc_2018 --out outputs/stores/cpsc500 --fs 500 --crop centre")
    parser.add_argument("--source", required=True, choices=SOURCES,
                        help="kind of record list: mimic (record_list.csv), ptbxl (ptbxl_database.csv), folder "
                             "(every *.hea below --input), challenge (a CinC 2020/2021 training tree: "
                             "training/<source>/gN/*.hea|.mat, training/ itself or one source folder) or "
                             "ecg_arrhythmia (PhysioNet ecg-arrhythmia 1.0.0: WFDBRecords/ and "
                             "ConditionNames_SNOMED-CT.csv); the challenge ones carry source, dx, age, sex "
                             "into the index")
    parser.add_argument("--input", required=True, help="the dataset folder (record paths are relative to it)")
    parser.add_argument("--record-list", default=None,
                        help="record list CSV if not the standard one inside --input (mimic: record_list.csv, "
                             "ptbxl: ptbxl_database.csv)")
    parser.add_argument("--out", required=True, help="store folder to create, or to resume if it exists")
    parser.add_argument("--fs", type=float, default=500.0,
                        help="sampling rate of the store in Hz; other rates are resampled (default: 500)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="record length in seconds; shorter records are zero-padded at the end (index: "
                             "n_samples below the length), longer ones cropped (see --crop) (default: 10)")
    parser.add_argument("--crop", choices=CROPS, default="start",
                        help="which samples of a longer record to keep: start (the first ones, default) or "
                             "centre (centre-crop long records, as ecg-fix and the Reality Check do); a store "
                             "is resumed only with the crop it was made with")
    parser.add_argument("--dtype", choices=("int16", "float16"), default="int16",
                        help="sample type on disk: int16 keeps the source's ADC values exactly where it can "
                             "(default), float16 stores millivolts")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: the number of CPUs, %d here)" % (os.cpu_count() or 1))
    parser.add_argument("--limit", type=int, default=None,
                        help="convert only the first N records of the list (a quick trial)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="keep records that lack some of the 12 leads (zero-filled, lead mask False) instead "
                             "of rejecting them")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="records per chunk (one shard file each); default: kept from an existing store, "
                             "else about 4 chunks per worker, between 16 and 1000")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> ConvertSummary:
    args = build_parser().parse_args(argv)
    try:
        summary = convert(args.source, args.input, args.out, fs=args.fs, seconds=args.seconds, dtype=args.dtype,
                          workers=args.workers, limit=args.limit, allow_missing=args.allow_missing,
                          record_list=args.record_list, chunk_size=args.chunk_size, progress=not args.no_progress,
                          crop=args.crop)
    except (StoreSettingsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary)
    return summary


if __name__ == "__main__":
    # Run the copy imported under its real name, so that worker processes unpickle
    # esi.data.convert.convert_chunk rather than re-running this script as __mp_main__.
    from esi.data.convert import main as _main

    _main()
