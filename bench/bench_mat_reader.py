"""Throughput of esi.data.reader.read_ecg on PhysioNet Challenge `.mat` records against wfdb.rdsamp on the same files.

    python bench/bench_mat_reader.py                  # 200 records, best of 3 passes
    python bench/bench_mat_reader.py --records 500 --repeat 5

Builds a challenge tree (training/cpsc_2018/gN/A0001.hea|.mat, MATLAB v4 files with the `16+24` byte offset,
exactly as the challenge ships them) in a temporary folder from the PTB-XL 500 Hz records of ../shared, reusing
records under new names, then times the readers as bench/bench_reader.py does: one core, same files, a warm-up
pass, best pass per reader. The ratio is read_ecg (fast path) over wfdb.rdsamp.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from anywhere
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the fixture writer

from bench_reader import READERS, best_pass_seconds  # noqa: E402
from challenge_fixtures import ptbxl_digital, write_challenge_record  # noqa: E402

from esi.data.reader import uses_fast_path  # noqa: E402


def build_tree(ptbxl_dir: Path, out: Path, n_records: int) -> list[str]:
    """`n_records` challenge records (A0001, ...; 100 per gN folder) cycling over PTB-XL's first 100 records.

    Returns:
        The record paths without extension.
    """
    sources = [ptbxl_digital(ptbxl_dir, ecg_id) for ecg_id in range(1, min(n_records, 100) + 1)]
    paths = []
    for k in range(n_records):
        folder = out / "training" / "cpsc_2018" / f"g{k // 100 + 1}"
        comments = {"Age": "60", "Sex": "Male", "Dx": "426783006", "Rx": "Unknown", "Hx": "Unknown", "Sx": "Unknown"}
        paths.append(str(write_challenge_record(folder, f"A{k + 1:04d}", sources[k % len(sources)], comments)))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared",
                        help="the shared data folder (default: ../shared beside the repository)")
    parser.add_argument("--records", type=int, default=200, help="records in the tree (default: 200)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per reader; the best one counts")
    args = parser.parse_args()

    readers = READERS
    with tempfile.TemporaryDirectory(prefix="bench-mat-") as tmp:
        paths = build_tree(args.shared / "data" / "ptbxl", Path(tmp), args.records)
        if not uses_fast_path(paths[0]):
            print(f"{paths[0]}: not on read_ecg's fast path", file=sys.stderr)
            return 1
        for read in readers.values():  # warm-up: page cache, imports, lazy wfdb set-up
            for path in paths[:20]:
                read(path)
        seconds = best_pass_seconds(readers, paths, args.repeat)
    rates = {name: len(paths) / seconds[name] for name in readers}
    ratio = rates["read_ecg"] / rates["wfdb.rdsamp"]
    print("challenge .mat records (12 x 5000, format 16+24) per second on one core; ratio = read_ecg / wfdb.rdsamp")
    print(f"{'records':>8} " + " ".join(f"{name:>21}" for name in readers) + f" {'ratio':>7}")
    print(f"{len(paths):>8} " + " ".join(f"{value:>21.0f}" for value in rates.values()) + f" {ratio:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
