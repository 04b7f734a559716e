"""Speed of the paired permutation test (`esi.evaluate.paired_test`) on a PTB-XL `all`-sized test set.

2,200 records x 71 classes, with the class prevalences of PTB-XL's 71 statements (read from the 500 records of
../shared when present, else a spread from 0.2 % to 75 %), two models' scores; 1,000 swaps for macro AUROC and
macro AUPRC, against a baseline measured in the same run: the bootstrap interval of the same scores with 1,000
resamples (`bootstrap_metrics`), which sorts once per class as the permutation test does.

    .venv/bin/python bench/bench_paired_test.py [--records 2200] [--permutations 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SHARED_PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl"


def prevalences(n_classes: int) -> np.ndarray:
    """Prevalence of each of PTB-XL's statements among ../shared's records (the most frequent n_classes), or a
    log-spaced spread when ../shared is absent."""
    if (SHARED_PTBXL / "ptbxl_database.csv").exists():
        from esi.data.ptbxl import load_task

        y = load_task(SHARED_PTBXL, "all").y
        p = np.sort(y.mean(0))[::-1][:n_classes]
        if len(p) == n_classes:
            return np.maximum(p, 1.0 / 2200)
    return np.geomspace(0.75, 0.002, n_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2200)
    parser.add_argument("--classes", type=int, default=71)
    parser.add_argument("--permutations", type=int, default=1000)
    args = parser.parse_args()

    from esi.evaluate.metrics import bootstrap_metrics, paired_test

    rng = np.random.default_rng(0)
    p = prevalences(args.classes)
    y = rng.random((args.records, args.classes)) < p
    y[0], y[1] = True, False                                    # every class scorable
    a = rng.normal(size=y.shape) + 1.0 * y
    b = rng.normal(size=y.shape) + 0.9 * y
    print(f"{args.records} records x {args.classes} classes (positives per class: {int(y.sum(0).min())}-"
          f"{int(y.sum(0).max())}), {args.permutations} swaps / resamples")
    start = time.perf_counter()
    bootstrap_metrics(y, a, ("macro_auroc", "macro_auprc"), n_boot=args.permutations)
    baseline = time.perf_counter() - start
    print(f"baseline: bootstrap interval, AUROC + AUPRC      {baseline:7.2f} s")
    for metric in ("macro_auroc", "macro_auprc"):
        start = time.perf_counter()
        result = paired_test(y, a, b, metric=metric, n_permutations=args.permutations)
        took = time.perf_counter() - start
        print(f"paired_test {metric:<12} (p = {result.p_value:.4f})  {took:7.2f} s  "
              f"= {took / baseline:.2f}x the bootstrap's time")


if __name__ == "__main__":
    main()
