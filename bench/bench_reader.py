"""Throughput of esi.data.reader.read_ecg against a plain wfdb.rdsamp loop, on the PTB-XL records of ../shared.

    python bench/bench_reader.py                      # both rates, best of 3 passes
    python bench/bench_reader.py --rates 500 --repeat 5

Both readers run in this process, one core, on the same files, after a warm-up pass that puts the files in the
page cache; each figure is the best pass, so a busy machine penalises both alike. The ratio is the speed-up
of read_ecg (fast path) over wfdb.rdsamp; `read_ecg(fast=False)` is shown as well (wfdb plus our checks).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from anywhere

import wfdb  # noqa: E402

from esi.data.reader import read_ecg  # noqa: E402


def best_pass_seconds(readers: dict, paths: list[str], repeat: int) -> dict[str, float]:
    """For each reader, the fastest of `repeat` timed passes over every path.

    The readers take turns pass by pass, so a burst of load from elsewhere hits them alike.
    """
    best = {name: float("inf") for name in readers}
    for _ in range(repeat):
        for name, read in readers.items():
            start = time.perf_counter()
            for path in paths:
                read(path)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


# The readers timed, the baseline first: wfdb's own, ours forced through wfdb's decoder, ours.
READERS = {
    "wfdb.rdsamp": lambda path: wfdb.rdsamp(path),
    "read_ecg(fast=False)": lambda path: read_ecg(path, fast=False),
    "read_ecg": lambda path: read_ecg(path),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared",
                        help="the shared data folder (default: ../shared beside the repository)")
    parser.add_argument("--rates", type=int, nargs="+", default=[500, 100], choices=[100, 500],
                        help="PTB-XL sampling rates to time")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per reader; the best one counts")
    args = parser.parse_args()

    readers = READERS
    print("records per second on one core; ratio = read_ecg / wfdb.rdsamp")
    print(f"{'rate':>5} {'records':>8} " + " ".join(f"{name:>21}" for name in readers) + f" {'ratio':>7}")
    for rate in args.rates:
        folder = args.shared / "data" / "ptbxl" / f"records{rate}"
        paths = [str(header.with_suffix("")) for header in sorted(folder.glob("*/*.hea"))]
        if not paths:
            print(f"no records under {folder}", file=sys.stderr)
            return 1
        for read in readers.values():  # warm-up: page cache, imports, lazy scipy/wfdb set-up
            for path in paths[:20]:
                read(path)
        seconds = best_pass_seconds(readers, paths, args.repeat)
        rates = {name: len(paths) / seconds[name] for name in readers}
        ratio = rates["read_ecg"] / rates["wfdb.rdsamp"]
        print(f"{rate:>5} {len(paths):>8} " + " ".join(f"{value:>21.0f}" for value in rates.values())
              + f" {ratio:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
