"""Conversion throughput: `esi.data.convert` vs a plain `wfdb.rdsamp` loop over the same PTB-XL records.

    python bench/bench_convert.py                      # 500 Hz files of ../shared/data/ptbxl, listed 20 times
    python bench/bench_convert.py --fs 100 --repeat 20 --workers 2

The record list is the real PTB-XL records repeated `--repeat` times under distinct ids, so that the
parallel run lasts long enough to measure steady-state throughput (files come from the page cache either way:
every file is read once before timing; starting the worker processes costs about half a CPU-second once).
Per-core figures are records per CPU-second (user + system time of this process and of every worker it
starts, sampled with psutil), so that they stay meaningful on a machine shared with other jobs; wall-clock
records/s are shown beside them.
Goal: the conversion (which reads, checks, computes quality flags and writes the store) at >= 10x the
per-core rate of wfdb.rdsamp (which only reads).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import wfdb  # noqa: E402

from esi.data.convert import convert_records  # noqa: E402
from esi.data.sources import ptbxl_records  # noqa: E402
from esi.data.store import StoreSettings  # noqa: E402


def repeated(records: pd.DataFrame, times: int) -> pd.DataFrame:
    """The record table listed `times` times, each copy with its own record ids."""
    copies = []
    for k in range(times):
        copy = records.copy()
        copy["record_id"] = copy["record_id"].astype(str) + f"-{k}"
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


class TreeCPU:
    """CPU seconds used by this process and all its descendants while the block runs (psutil sampling)."""

    def __enter__(self):
        self.me = psutil.Process()
        self.last: dict[int, float] = {}
        self.start_self = sum(self.me.cpu_times()[:2])
        self.stop_flag = threading.Event()
        self.sampler_cpu = 0.0
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.wall = time.perf_counter()
        return self

    def _sample(self):
        while not self.stop_flag.is_set():
            for child in self.me.children(recursive=True):
                try:
                    self.last[child.pid] = sum(child.cpu_times()[:2])
                except psutil.Error:
                    pass  # exited between listing and reading; its last sample stands
            self.sampler_cpu = time.thread_time()  # the sampling itself is not the conversion's work
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.stop_flag.set()
        self.thread.join()
        self.cpu = (sum(self.me.cpu_times()[:2]) - self.start_self - self.sampler_cpu
                    + sum(self.last.values()))


def measure(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process tree) of fn()."""
    with TreeCPU() as usage:
        fn()
    return usage.wall, usage.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl",
                        help="PTB-XL folder (default: ../shared/data/ptbxl)")
    parser.add_argument("--fs", type=float, default=500, help="store rate; 100 reads the 100 Hz files (default 500)")
    parser.add_argument("--repeat", type=int, default=20, help="list the records this many times (default 20)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel workers (default: CPUs)")
    parser.add_argument("--baseline-records", type=int, default=200,
                        help="records read by the wfdb.rdsamp loop (default 200)")
    args = parser.parse_args()

    records = ptbxl_records(args.data, fs=args.fs)
    paths = records.path.tolist()
    for path in paths:  # warm the page cache for both contenders
        for suffix in (".hea", ".dat"):
            Path(path + suffix).read_bytes()
    settings = StoreSettings(fs=float(args.fs), length=int(args.fs * 10), source="ptbxl", input=str(args.data),
                             chunk_size=250)
    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    rows = []
    try:
        n_base = min(args.baseline_records, len(paths))
        wall, cpu = measure(lambda: [wfdb.rdsamp(p) for p in paths[:n_base]])
        rows.append(("wfdb.rdsamp loop (read only)", n_base, wall, cpu))

        wall, cpu = measure(lambda: convert_records(records, work / "one", settings, workers=1, progress=False))
        rows.append(("esi convert, 1 worker (in process)", len(records), wall, cpu))

        listed = repeated(records, args.repeat)
        wall, cpu = measure(lambda: convert_records(listed, work / "parallel", settings, workers=args.workers,
                                                    progress=False))
        rows.append((f"esi convert, {args.workers} workers", len(listed), wall, cpu))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nconversion of PTB-XL {args.fs:g} Hz records into an int16 store ({os.cpu_count()} CPUs here, "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"{'method':<38}{'records':>9}{'wall s':>8}{'records/s':>11}{'CPU s':>8}{'per core (rec/CPU-s)':>22}")
    for name, n, wall, cpu in rows:
        print(f"{name:<38}{n:>9}{wall:>8.2f}{n / wall:>11.0f}{cpu:>8.2f}{n / cpu:>22.0f}")
    base = rows[0][1] / rows[0][3]
    print(f"\nper-core ratio vs wfdb.rdsamp: 1 worker {rows[1][1] / rows[1][3] / base:.1f}x, "
          f"{args.workers} workers {rows[2][1] / rows[2][3] / base:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
