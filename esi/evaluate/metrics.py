"""Evaluation metrics: macro AUROC with a bootstrap interval, and identification accuracy (CMC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def per_class_auroc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """AUROC of each class (NaN where a class has only one label value in y_true).

    Computed for all classes at once from score ranks (the Mann-Whitney U statistic, ties counted half), which
    equals sklearn's roc_auc_score and is fast enough for bootstrapping many classes.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    n_pos = y_true.sum(0)
    n_neg = len(y_true) - n_pos
    ranks = rankdata(y_score, axis=0)                       # average ranks for ties
    u = (ranks * y_true).sum(0) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean AUROC over the classes that have both labels present (the benchmark's macro AUC)."""
    aucs = per_class_auroc(y_true, y_score)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


@dataclass
class BootstrapResult:
    value: float
    low: float
    high: float
    n_boot: int


def bootstrap_macro_auroc(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 100, alpha: float = 0.05,
                          seed: int = 0) -> BootstrapResult:
    """Macro AUROC on all test records plus a percentile interval from `n_boot` resamples of the records.

    As in the PTB-XL benchmark, resamples in which some class has no positive (or no negative) record are
    drawn again, so that every resample scores the same classes.
    """
    y_true = np.asarray(y_true)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    valid = (y_true.sum(0) > 0) & (y_true.sum(0) < n)
    yt, ys = y_true[:, valid], np.asarray(y_score)[:, valid]
    values = []
    attempts = 0
    while len(values) < n_boot and attempts < n_boot * 50:
        attempts += 1
        idx = rng.integers(0, n, n)
        col_sums = yt[idx].sum(0)
        if (col_sums == 0).any() or (col_sums == n).any():
            continue
        values.append(macro_auroc(yt[idx], ys[idx]))
    point = macro_auroc(yt, ys)
    if not values:
        return BootstrapResult(point, float("nan"), float("nan"), 0)
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(point, float(low), float(high), len(values))


def identification_ranks(gallery: np.ndarray, gallery_ids: np.ndarray, probes: np.ndarray,
                         probe_ids: np.ndarray) -> np.ndarray:
    """For each probe, the rank (0 = best) of its own subject's gallery entry by cosine similarity."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True).clip(1e-12)
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True).clip(1e-12)
    sims = p @ g.T                                                   # (probes, gallery)
    own_col = {sid: i for i, sid in enumerate(gallery_ids)}
    missing = [pid for pid in probe_ids if pid not in own_col]
    if missing:
        raise ValueError(f"{len(missing)} probes have no gallery record (e.g. subject {missing[0]})")
    own = sims[np.arange(len(p)), [own_col[pid] for pid in probe_ids]]
    return (sims > own[:, None]).sum(axis=1)


def cmc_curve(ranks: np.ndarray, max_rank: int = 20) -> np.ndarray:
    """Cumulative match characteristic: accuracy at top-1 ... top-max_rank."""
    ranks = np.asarray(ranks)
    return np.array([(ranks < k).mean() for k in range(1, max_rank + 1)])
