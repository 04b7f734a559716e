"""Conversion throughput: `esi.data.convert` vs a plain `wfdb.rdsamp` loop over the same PTB-XL records.

    python bench/bench_convert.py                      # 500 Hz and 100 Hz files of ../shared/data/ptbxl
    python bench/bench_convert.py --fs 500 --rounds 5 --workers 2

What is compared, per sampling rate:
- wfdb.rdsamp: `wfdb.rdsamp(path)` on every PTB-XL record of that rate (it only reads);
- esi convert, 1 worker: `convert_records(..., workers=1)` on the same records listed `--repeat-one` times under
  distinct ids: the whole conversion (read, check, quality flags, write the shards, index and manifest) in
  this process;
- esi convert, N workers: the same with `--workers` worker processes on the list repeated `--repeat` times.

Fairness: both contenders read the same files, from the page cache (every file is read before timing, and an
untimed warm-up pass runs each contender once, so that imports and first-call costs are paid before). The
per-core figure is records per CPU-second, which stays meaningful on a machine shared with other jobs: for
the single-process contenders the process's own CPU time (user + system), for the parallel run the CPU time
of this process and of every process it starts (sampled with psutil; this includes starting the worker
processes, about 0.2 CPU-seconds once). rdsamp and the 1-worker conversion take turns for `--rounds` rounds
so that a burst of load from elsewhere hits both; the best and median rounds are shown.
The shards are written as a real conversion writes them: with O_DIRECT where the filesystem allows (see
`esi.data.store.ShardFile`); run with ESI_STORE_DIRECT_IO=0 to measure writes through the page cache instead.
Goal: the 1-worker conversion at >= 10x the per-core rate of wfdb.rdsamp.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL = 10.0

# pandas, psutil, wfdb and esi are imported inside the functions that use them: worker processes import this
# script's top level again (as multiprocessing does for the main module), and a heavy top level would add
# start-up work to the parallel run that `python -m esi.data.convert` does not have.


def repeated(records, times: int):
    """The record table (DataFrame) listed `times` times, each copy with its own record ids."""
    import pandas as pd

    copies = []
    for k in range(times):
        copy = records.copy()
        copy["record_id"] = copy["record_id"].astype(str) + f"-{k}"
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


class TreeCPU:
    """CPU seconds used by this process and all its descendants while the block runs (psutil sampling)."""

    def __enter__(self):
        import psutil

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
        import psutil

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


def in_process(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn(); nothing else runs in this process meanwhile."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def process_tree(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and every process it starts) of fn()."""
    with TreeCPU() as usage:
        fn()
    return usage.wall, usage.cpu


def bench_rate(data: Path, fs: float, args, work: Path) -> dict:
    """Time the contenders at one rate; returns {name: [(n_records, wall s, CPU s) per round]}."""
    import wfdb

    from esi.data.convert import convert_records
    from esi.data.sources import ptbxl_records
    from esi.data.store import StoreSettings

    records = ptbxl_records(data, fs=fs)
    paths = records.path.tolist()
    for path in paths:  # warm the page cache for both contenders
        for suffix in (".hea", ".dat"):
            Path(path + suffix).read_bytes()
    settings = StoreSettings(fs=float(fs), length=int(fs * 10), source="ptbxl", input=str(data),
                             chunk_size=args.chunk_size)
    one_list = repeated(records, args.repeat_one)
    counter = iter(range(10 ** 6))

    def timed_conversion(table, workers: int) -> tuple[float, float]:
        out = work / f"store-{next(counter)}"
        measure = in_process if workers == 1 else process_tree
        wall, cpu = measure(lambda: convert_records(table, out, settings, workers=workers, progress=False))
        shutil.rmtree(out)  # after the timing: deleting is not part of converting
        return wall, cpu

    def rdsamp() -> None:
        for path in paths:
            wfdb.rdsamp(path)

    # Warm-up, untimed: imports and first calls of both contenders.
    for path in paths[:20]:
        wfdb.rdsamp(path)
    timed_conversion(records.head(20), workers=1)

    results: dict[str, list[tuple[int, float, float]]] = {"wfdb.rdsamp loop (read only)": [],
                                                          "esi convert, 1 worker": []}
    for _ in range(args.rounds):
        results["wfdb.rdsamp loop (read only)"].append((len(paths),) + in_process(rdsamp))
        results["esi convert, 1 worker"].append((len(one_list),) + timed_conversion(one_list, workers=1))
    if args.workers > 1:
        listed = repeated(records, args.repeat)
        results[f"esi convert, {args.workers} workers"] = [(len(listed),) + timed_conversion(listed, args.workers)]
    return results


def report(fs: float, results: dict) -> float:
    """Print one rate's table; returns the median per-core ratio of the 1-worker conversion over rdsamp."""
    print(f"\nPTB-XL {fs:g} Hz records -> int16 store ({os.cpu_count()} CPUs here, load average "
          f"{os.getloadavg()[0]:.1f}); best round shown, per-core column: range over the rounds")
    print(f"{'method':<32}{'records':>8}{'rounds':>7}{'wall s':>8}{'records/s':>10}"
          f"{'us/record (CPU)':>17}{'per core (rec/CPU-s)':>22}")
    rates = {}
    for name, runs in results.items():
        per_core = [n / cpu for n, _, cpu in runs]
        best = max(range(len(runs)), key=lambda i: per_core[i])
        n, wall, cpu = runs[best]
        rates[name] = (max(per_core), statistics.median(per_core))
        spread = f"{min(per_core):.0f}-{max(per_core):.0f}" if len(runs) > 1 else f"{per_core[0]:.0f}"
        print(f"{name:<32}{n:>8}{len(runs):>7}{wall:>8.2f}{n / wall:>10.0f}{1e6 * cpu / n:>17.0f}"
              f"{spread:>22}")
    base_best, base_median = rates["wfdb.rdsamp loop (read only)"]
    one_best, one_median = rates["esi convert, 1 worker"]
    ratio = one_median / base_median
    print(f"per-core ratio, 1 worker vs wfdb.rdsamp: {ratio:.1f}x (median rounds), {one_best / base_best:.1f}x "
          f"(best rounds); goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'NOT met'}")
    for name, (best, _) in rates.items():
        if name.endswith("workers"):
            print(f"per-core ratio, {name.split(', ')[1]} (process tree, start-up included) vs wfdb.rdsamp: "
                  f"{best / base_median:.1f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl",
                        help="PTB-XL folder (default: ../shared/data/ptbxl)")
    parser.add_argument("--fs", type=float, nargs="+", default=[500, 100],
                        help="store rates; each reads the PTB-XL files of that rate (default: 500 100)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of rdsamp and 1 worker (default 3)")
    parser.add_argument("--repeat-one", type=int, default=4,
                        help="the 1-worker conversion lists the records this many times (default 4)")
    parser.add_argument("--repeat", type=int, default=20,
                        help="the parallel conversion lists the records this many times (default 20)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="worker processes of the parallel run; 1 skips it (default: CPUs)")
    parser.add_argument("--chunk-size", type=int, default=250, help="records per chunk (default 250)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        ratios = {fs: report(fs, bench_rate(args.data, fs, args, work)) for fs in args.fs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = ", ".join(f"{fs:g} Hz {ratio:.1f}x" for fs, ratio in ratios.items())
    met = all(ratio >= GOAL for ratio in ratios.values())
    print(f"\nsummary: per-core speed-up of the conversion over wfdb.rdsamp: {summary} "
          f"(goal >= {GOAL:g}x {'met' if met else 'NOT met'})")


if __name__ == "__main__":
    main()
