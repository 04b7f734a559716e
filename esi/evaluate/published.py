"""Numbers other papers publish for the protocols `esi.evaluate` runs, each with where it was read, and whether
a row of ours was produced the way a published number was (`comparability`).

Macro AUROC in percent, as printed, keyed by our task names (PTB-XL tasks, "cpsc2018", "csn"). README.md ("CPSC2018
and CSN beside the literature") shows the same numbers, and a test keeps the two equal.
`beside_published(results.table)` puts our rows next to them (notebook 04), each pair with `comparable` and
`why_not`; `with_comparability(table)` adds the same two columns to the results table (comparable to at least one
published number), and the label-fraction figure draws a published value only beside comparable rows.
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

# The PTB-XL benchmark (Strodthoff et al. 2021), supervised from scratch, fold 10, macro AUROC (0.925 -> 92.5).
BENCHMARK: dict[str, dict[str, float]] = {
    "xresnet1d101": {"all": 92.5, "diagnostic": 93.7, "subdiagnostic": 92.9, "superdiagnostic": 92.8, "form": 89.6,
                     "rhythm": 95.7},
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
    "PTB-XL benchmark": "Strodthoff et al., IEEE JBHI 2021, Table 2 (helme/ecg_ptbxl_benchmarking), on PTB-XL v1.0.1",
}


def linear_probe_curve(model: str, task: str) -> dict[float, float] | None:
    """{label fraction: macro AUROC in 0-1} that `model` publishes for `task`, or None."""
    values = LINEAR_PROBE.get(model, {}).get(task)
    return None if values is None else {f: v / 100 for f, v in zip(FRACTIONS, values)}


PAPERS: tuple[str, ...] = tuple(dict.fromkeys([*LINEAR_PROBE, *ZERO_SHOT, "PTB-XL benchmark"]))


def published_auroc(paper: str, protocol: str, task: str, label_fraction: float | None, encoder: str = "") -> float:
    """The macro AUROC (0-1) `paper` publishes for a row of ours, or NaN where it publishes none (the PTB-XL
    benchmark: for a supervised row of the same architecture, named in `encoder`)."""
    if protocol == "zero_shot":
        value = ZERO_SHOT.get(paper, {}).get(task)
        return float("nan") if value is None else value / 100
    if protocol == "benchmark_supervised" and paper == "PTB-XL benchmark":
        values = [v[task] for arch, v in BENCHMARK.items() if encoder.startswith(arch) and task in v]
        return values[0] / 100 if values else float("nan")
    curve = (linear_probe_curve(paper, task) if protocol == "linear_probe" else None) or {}
    # A NaN or missing fraction matches none.
    matches = [v for f, v in curve.items() if label_fraction is not None and np.isclose(f, label_fraction)]
    return matches[0] if matches else float("nan")


# --- comparability: was our row produced the way the published number was? ----------------------------------------

# How each paper chose the scored model (our `selection` values): MERL kept the best epoch on the test split.
PAPER_SELECTION = {"MERL": "test_max", "HeartLang": "fold9_best", "PTB-XL benchmark": "final_epoch"}
# The split each paper scored, by dataset (our `split` values; zero-shot rows end in ":test" or name fold 10).
PAPER_SPLITS = {"ptbxl": ("ptbxl_folds_1-8/9/10", "ptbxl_fold_10"),
                "cpsc2018": ("merl_tables_records", "merl_tables_records:test"),
                "csn": ("merl_tables_records", "merl_tables_records:test")}
# MERL's input length per dataset (our length policies that give it): CPSC2018's first 5 s, CSN's 10 s records whole.
MERL_LENGTH_POLICIES = {"cpsc2018": ("merl",), "csn": ("merl", "crop_pad")}
# Fold-10 records of PTB-XL v1.0.3 (ours and MERL's); the benchmark's published numbers are on v1.0.1 (2,203).
PTBXL_V101_FOLD10 = 2203


# --- pretraining overlap: did the encoder see the test dataset's records while it was pretrained? -----------------

# The names under which a pretraining set holds each downstream dataset's records (adapters declare
# `InputSpec.pretrained_on` with these names). CSN (PhysioNet ecg-arrhythmia 1.0.0) is the Chapman(-Shaoxing) and
# Ningbo databases; the PhysioNet/CinC Challenge 2021 training set holds CPSC2018 (and its extra set), PTB-XL,
# PTB, Georgia, Chapman-Shaoxing and Ningbo (Reyna et al., Computing in Cardiology 2021, Table 1).
OVERLAPPING_SOURCES: dict[str, tuple[str, ...]] = {
    "ptbxl": ("PTB-XL", "PhysioNet 2021"),
    "cpsc2018": ("CPSC2018", "PhysioNet 2021"),
    "csn": ("Chapman", "Ningbo", "PhysioNet 2021"),
    "cpsc_2018": ("CPSC2018", "PhysioNet 2021"),
    "cpsc_2018_extra": ("CPSC2018-extra", "PhysioNet 2021"),
    "georgia": ("Georgia", "PhysioNet 2021"),
    "ptb": ("PTB", "PhysioNet 2021"),
    "chapman_shaoxing": ("Chapman", "PhysioNet 2021"),
    "ningbo": ("Ningbo", "PhysioNet 2021"),
}


def pretraining_overlap(dataset: str, pretrained_on) -> str:
    """The pretraining sets among `pretrained_on` that hold records of the downstream `dataset`, joined by ", "
    ("" when none do, or when the dataset is not one OVERLAPPING_SOURCES knows)."""
    sources = OVERLAPPING_SOURCES.get(str(dataset or "ptbxl"), ())
    return ", ".join(name for name in pretrained_on if name in sources)


def overlap_reason(overlap: str) -> str:
    """The why_not of a row whose encoder was pretrained on `overlap` ("" when it is empty or NaN)."""
    if not isinstance(overlap, str) or not overlap:
        return ""
    return f"the encoder was pretrained on {overlap}, which holds this dataset's records (test records included)"


def comparability(row, paper: str) -> tuple[bool, str]:
    """(comparable, why not) of one results row against what `paper` publishes for the same task and fraction.

    Comparable means produced by the paper's protocol in every respect this project can check: a published number
    exists; the test set is full-sized; the same split and, on CPSC2018/CSN, MERL's input length; the same model
    selection (MERL's test-split maximum is never compared with a validation-selected number, or vice versa); at
    1 % and 10 %, the very training records (MERL's draw with seed 0; HeartLang drew its own); on CSN, MERL's
    released labels; on PTB-XL against the benchmark, the same PTB-XL version; and an encoder that was not
    pretrained on the test dataset's records (`pretraining_overlap`).

    Args:
        row: a results row (a mapping: dict or pandas Series) with dataset, task, protocol, split, length_policy, selection,
            subset_draw, label_fraction, seed, n_test, encoder and optionally labels and pretraining_overlap.
        paper: one of PAPERS.

    Returns:
        (True, "") or (False, the reasons joined by "; ").
    """
    from esi.evaluate.results import SMOKE_TEST_RECORDS   # (results imports this module's neighbours: only here)

    get = row.get
    fraction = get("label_fraction")
    fraction = None if pd.isna(fraction) else float(fraction)
    published = published_auroc(paper, get("protocol"), get("task"), fraction, str(get("encoder", "")))
    if np.isnan(published) or get("metric", "macro_auroc") != "macro_auroc":   # papers publish macro AUROC only
        return False, f"{paper} publishes no number for this metric, protocol, task and label fraction"
    reasons = [r for r in [overlap_reason(get("pretraining_overlap", ""))] if r]
    n_test = int(get("n_test", 0) or 0)
    if n_test < SMOKE_TEST_RECORDS:
        reasons.append(f"smoke-sized test set ({n_test} records)")
    dataset = get("dataset", "ptbxl") or "ptbxl"
    if get("split") not in PAPER_SPLITS.get(dataset, ()):
        reasons.append(f"split {get('split')} is not {paper}'s ({', '.join(PAPER_SPLITS.get(dataset, ('-',)))})")
    if paper == "MERL" and dataset in MERL_LENGTH_POLICIES and get("length_policy") not in MERL_LENGTH_POLICIES[
            dataset]:
        reasons.append(f"length policy {get('length_policy')}: MERL fed "
                       + ("the first 5 s" if dataset == "cpsc2018" else "the whole 10 s records"))
    if paper == "MERL" and dataset == "csn" and get("labels", "") != "merl_released":
        reasons.append("CSN labels are exact SNOMED codes; MERL's released columns come from substring matching "
                       "(challenge_labels: merl_released reproduces them)")
    selection = get("selection")
    if get("protocol") != "zero_shot" and selection != PAPER_SELECTION[paper]:
        reasons.append(f"selection {selection}: {paper} used {PAPER_SELECTION[paper]}")
    if fraction is not None and fraction < 1:
        if paper == "HeartLang":
            reasons.append("HeartLang drew its own 1 %/10 % subsets (random.sample), not these records")
        elif get("subset_draw") != "merl":
            reasons.append(f"subset draw {get('subset_draw')}: not MERL's records")
        elif int(get("seed", 0) or 0) != 0:
            reasons.append(f"seed {get('seed')}: the subset is drawn with random_state 42 + seed, not MERL's 42")
    if paper == "PTB-XL benchmark" and n_test != PTBXL_V101_FOLD10:
        reasons.append(f"published on PTB-XL v1.0.1 ({PTBXL_V101_FOLD10:,} fold-10 records); this row scored "
                       f"{n_test:,} records")
    return not reasons, "; ".join(reasons)


def with_comparability(table: pd.DataFrame) -> pd.DataFrame:
    """The results table with `comparable` (some published number was produced the same way) and `why_not` (for
    each paper that publishes a number for the row, "<paper>: reasons"; rows no paper has: why there is none;
    a row whose encoder was pretrained on the test dataset's records: that first, and never comparable)."""
    comparable, why_not = [], []
    for row in table.to_dict("records"):
        verdicts = {paper: comparability(row, paper) for paper in PAPERS}
        published = {p: v for p, v in verdicts.items() if not v[1].startswith(f"{p} publishes no number")}
        comparable.append(any(ok for ok, _ in published.values()))
        overlap = overlap_reason(row.get("pretraining_overlap", ""))
        if not published:
            why_not.append("; ".join(r for r in (overlap, "no published number for this metric, protocol, task and "
                                                           "label fraction") if r))
        else:
            why_not.append(" | ".join(f"{p}: {reason}" for p, (ok, reason) in published.items() if not ok))
    return table.assign(comparable=comparable, why_not=why_not)


def beside_published(table: pd.DataFrame) -> pd.DataFrame:
    """Our macro AUROC rows beside every number a paper publishes for the same protocol, task and label fraction:
    one row per (our row, paper), with `comparable` and `why_not` (`comparability`).

    Our rows are the mean over seeds of rows that agree in everything `comparability` looks at, with the mean
    interval; a row with seeds other than 0 at 1 %/10 % is not MERL's draw, which `why_not` says.
    """
    keys = ["dataset", "task", "protocol", "split", "length_policy", "selection", "subset_draw", "label_fraction",
            "encoder"]
    columns = [*keys, "value", "ci_low", "ci_high", "paper", "published", "comparable", "why_not"]
    rows = table[table["metric"] == "macro_auroc"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    present = [k for k in keys if k in rows]
    extra = [k for k in ("labels",) if k in rows]
    grouped = (rows.groupby(present + extra, dropna=False, sort=False)
               .agg(value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
                    n_test=("n_test", "min"), seed=("seed", "max")).reset_index())
    out = []
    for row in grouped.to_dict("records"):
        for paper in PAPERS:
            fraction = None if pd.isna(row.get("label_fraction")) else row["label_fraction"]
            value = published_auroc(paper, row["protocol"], row["task"], fraction, str(row.get("encoder", "")))
            if np.isnan(value):
                continue
            ok, why = comparability(row, paper)
            out.append({**{k: row.get(k) for k in keys}, "value": row["value"], "ci_low": row["ci_low"],
                        "ci_high": row["ci_high"], "paper": paper, "published": value, "comparable": ok,
                        "why_not": why})
    return pd.DataFrame(out, columns=columns)
