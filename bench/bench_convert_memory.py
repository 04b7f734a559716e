"""Peak memory of a conversion as the dataset grows: it should stay flat (bounded by chunks, not records).

    python bench/bench_convert_memory.py                     # 2,000 / 5,000 / 20,000 records at 500 Hz
    python bench/bench_convert_memory.py --sizes 1000 4000 --fs 100

Each size is a folder of symlinks to the real PTB-XL 500 Hz records of ../shared (copy k of the 500 records in
sub-folder k), converted by
`python -m esi.data.convert --source folder` in a fresh process. Resident memory (RSS) of that process and
all its children (fork server, workers) is sampled with psutil every 20 ms; the table shows the peaks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def make_folder(data: Path, folder: Path, n_records: int) -> None:
    """`n_records` WFDB records: copy k of the real PTB-XL records in sub-folder k, as symlinks."""
    sources = sorted((data / "records500").rglob("*.hea"))
    for i in range(n_records):
        source = sources[i % len(sources)]
        sub = folder / f"copy{i // len(sources):03d}"
        sub.mkdir(parents=True, exist_ok=True)
        for suffix in (".hea", ".dat"):
            (sub / (source.stem + suffix)).symlink_to(source.with_suffix(suffix))


def tree_rss(process: psutil.Process) -> tuple[int, int, int]:
    """(RSS of the process and all descendants, RSS of the process, largest RSS of one descendant) in bytes."""
    own = process.memory_info().rss
    children = []
    for child in process.children(recursive=True):
        try:
            children.append(child.memory_info().rss)
        except psutil.Error:
            pass
    return own + sum(children), own, max(children, default=0)


def run(folder: Path, out: Path, fs: float, workers: int) -> dict:
    command = [sys.executable, "-m", "esi.data.convert", "--source", "folder", "--input", str(folder),
               "--out", str(out), "--fs", f"{fs:g}", "--workers", str(workers), "--no-progress"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = psutil.Process(process.pid)
    peak_total = peak_main = peak_worker = 0
    while process.poll() is None:
        try:
            total, main, worker = tree_rss(handle)
        except psutil.Error:
            break
        peak_total, peak_main, peak_worker = max(peak_total, total), max(peak_main, main), max(peak_worker, worker)
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"conversion failed:\n{stderr}")
    return {"seconds": time.perf_counter() - started, "total": peak_total, "main": peak_main,
            "worker": peak_worker, "summary": stdout.strip().splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl",
                        help="PTB-XL folder (default: ../shared/data/ptbxl)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 20000],
                        help="numbers of records to convert (default 2000 5000 20000)")
    parser.add_argument("--fs", type=float, default=500, help="store rate (default 500)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="workers (default: CPUs)")
    args = parser.parse_args()

    results = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
        try:
            make_folder(args.data, work / "records", size)
            results.append((size, run(work / "records", work / "store", args.fs, args.workers)))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    mib = 1 << 20
    print(f"\npeak resident memory of `python -m esi.data.convert` ({args.workers} workers, {args.fs:g} Hz x 10 s)")
    print(f"{'records':>9}{'seconds':>9}{'peak RSS all (MiB)':>20}{'main (MiB)':>12}{'one worker (MiB)':>18}"
          f"{'data (MiB)':>12}")
    for size, r in results:
        data = size * 12 * int(args.fs * 10) * 2 / mib
        print(f"{size:>9}{r['seconds']:>9.1f}{r['total'] / mib:>20.0f}{r['main'] / mib:>12.0f}"
              f"{r['worker'] / mib:>18.0f}{data:>12.0f}")
    first, last = results[0], results[-1]
    print(f"\npeak RSS grows {last[1]['total'] / first[1]['total']:.2f}x for {last[0] / first[0]:.0f}x the records "
          f"(goal: flat); the store itself grows with the data: {last[0] * 12 * int(args.fs * 10) * 2 / mib:.0f} MiB")


if __name__ == "__main__":
    main()
