"""Numbers other papers publish for the protocols `esi.evaluate` runs, each with where it was read.

Macro AUROC in percent, as printed, keyed by our task names (PTB-XL tasks, "cpsc2018", "csn"). The figures draw
them beside our rows only where those follow the same protocol (`plot_auroc_vs_fraction`: MERL's subset draw);
README.md ("CPSC2018 and CSN beside the literature") shows the same numbers, and a test keeps the two equal.
`beside_published(results.table)` puts our rows next to them (notebook 04).
None of these papers reports an interval or a randomly initialised encoder of its architecture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Linear probe, label fraction (1 %, 10 %, 100 % of the training split) -> macro AUROC.
FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)

LINEAR_PROBE: dict[str, dict[str, tuple[float, float, float]]] = {
    # MERL (Liu et al., ICML 2024), ResNet18, its Table 1; best epoch on the test split, 500 Hz, first 5 s of
    # CPSC2018 records, min-max scaled, its CSN labels made by substring matching (see README).
    "MERL": {
        "superdiagnostic": (82.39, 86.27, 88.67),
        "subdiagnostic": (64.90, 80.56, 84.72),
        "form": (58.26, 72.43, 79.65),
        "rhythm": (53.33, 82.88, 88.34),
        "cpsc2018": (70.33, 85.32, 90.57),
        "csn": (66.60, 82.74, 87.95),
    },
    # HeartLang (ICLR 2025), its Table 1; MERL's split tables, its own random 1 % / 10 % subsets (utils/QRSDataset.py
    # random.sample, not MERL's records), 100 Hz, best epoch on validation.
    "HeartLang": {
        "superdiagnostic": (78.94, 85.59, 87.52),
        "subdiagnostic": (64.68, 79.34, 88.91),
        "form": (58.70, 63.99, 80.23),
        "rhythm": (62.08, 76.22, 90.34),
        "cpsc2018": (60.44, 66.26, 77.87),
        "csn": (57.94, 68.93, 82.49),
    },
}

# Zero-shot macro AUROC on the test split.
ZERO_SHOT: dict[str, dict[str, float]] = {
    "MERL": {"superdiagnostic": 74.2, "subdiagnostic": 75.7, "form": 65.9, "rhythm": 78.5, "cpsc2018": 82.8,
             "csn": 74.4},
}

# Where each paper's numbers were read. MERL's own tables could not be read where this project is built; its rows
# are the copy D-BETA's authors print, checked two ways: the PTB-XL values agree (to 0.1) with those the PTB-XL
# benchmark notes this project was built from give for MERL, and the ten self-supervised baselines of the same table
# equal, digit for digit, those of HeartLang's Table 1 (both papers copy them from MERL's).
SOURCES: dict[str, str] = {
    "MERL": "MERL (arXiv 2403.06659) Table 1 and its zero-shot table, as quoted by D-BETA (first C-MELT, "
            "arXiv 2410.02131) Tables 2-3: github.com/manhph2211/D-BETA static/images/table23.png and "
            "Zero-shot.png, commit ab06272",
    "HeartLang": "HeartLang (arXiv 2502.10707) Table 1: github.com/PKUDigitalHealth/HeartLang figs/result.png, "
                 "commit a08afd8",
}


def linear_probe_curve(model: str, task: str) -> dict[float, float] | None:
    """{label fraction: macro AUROC in 0-1} that `model` publishes for `task`, or None."""
    values = LINEAR_PROBE.get(model, {}).get(task)
    return None if values is None else {f: v / 100 for f, v in zip(FRACTIONS, values)}


PAPERS: tuple[str, ...] = tuple(dict.fromkeys([*LINEAR_PROBE, *ZERO_SHOT]))


def published_auroc(paper: str, protocol: str, task: str, label_fraction: float | None) -> float:
    """The macro AUROC (0-1) `paper` publishes for a row of ours, or NaN where it publishes none."""
    if protocol == "zero_shot":
        value = ZERO_SHOT.get(paper, {}).get(task)
        return float("nan") if value is None else value / 100
    curve = (linear_probe_curve(paper, task) if protocol == "linear_probe" else None) or {}
    # A NaN or missing fraction matches none.
    matches = [v for f, v in curve.items() if label_fraction is not None and np.isclose(f, label_fraction)]
    return matches[0] if matches else float("nan")


def beside_published(table: pd.DataFrame) -> pd.DataFrame:
    """Our macro AUROC rows of the linear probe and zero-shot, each beside what every paper publishes for the same
    task and label fraction (one column per paper, "<paper> (published)", NaN where it publishes none).

    Rows are the mean over seeds per (dataset, task, protocol, subset_draw, label_fraction, encoder), with the mean
    interval. Only rows whose `subset_draw` is "merl" (or "all": every training record) use MERL's records; the
    published values chose their epochs differently (see the module doc and README).
    """
    keys = ["dataset", "task", "protocol", "split", "subset_draw", "label_fraction", "encoder"]
    columns = [*keys, "value", "ci_low", "ci_high", *(f"{p} (published)" for p in PAPERS)]
    rows = table[(table["metric"] == "macro_auroc") & table["protocol"].isin(["linear_probe", "zero_shot"])]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = (rows.groupby(keys, dropna=False, sort=False)[["value", "ci_low", "ci_high"]].mean().reset_index())
    for paper in PAPERS:
        rows[f"{paper} (published)"] = [published_auroc(paper, p, t, f) for p, t, f in
                                         zip(rows["protocol"], rows["task"], rows["label_fraction"])]
    return rows[columns]
