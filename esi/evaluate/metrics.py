"""Evaluation metrics: macro AUROC / AUPRC with bootstrap intervals as in the PTB-XL benchmark, paired bootstrap
tests against a baseline, and identification accuracy (CMC).

The bootstrap follows helme/ecg_ptbxl_benchmarking: the test records are resampled with replacement, resamples in
which a class loses all its positives (here: its positives or its negatives) are drawn again, the macro metric is
computed on every resample, and the reported interval is the pair of percentiles of those values (by default the
5th and 95th: a 90 % interval) around the point estimate on all test records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------

def _as_matrix(a: np.ndarray, name: str) -> np.ndarray:
    """`a` as a 2-D (records, classes) array; a 1-D array is one class."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (records, classes), got shape {a.shape}")
    return a


def _pair(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as bool and scores as float64, both (records, classes) and of the same shape."""
    y_true = _as_matrix(y_true, "y_true").astype(bool)
    y_score = _as_matrix(y_score, "y_score").astype(np.float64)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} differ in shape")
    return y_true, y_score


def _context(where: str) -> str:
    return f" in {where}" if where else ""


def check_finite(y_score: np.ndarray, classes: Sequence | None = None, where: str = "") -> None:
    """Raise ValueError if any score is NaN or infinite.

    A metric computed on such scores would be meaningless (and NaN-aware averages would silently drop the class),
    so the caller is told where the problem is instead.

    Args:
        y_score: (records, classes) scores; a 1-D array is taken as one class.
        classes: labels of the columns of y_score, used to name the first offending class; None names it by its
            column index.
        where: the caller's context for the message, e.g. "ESI / superdiagnostic / linear_probe".
    """
    y_score = _as_matrix(y_score, "y_score")
    bad = ~np.isfinite(y_score)
    if not bad.any():
        return
    per_class = bad.sum(0)
    col = int(np.flatnonzero(per_class)[0])
    if classes is not None and len(classes) != y_score.shape[1]:
        raise ValueError(f"{len(classes)} class labels for {y_score.shape[1]} score columns{_context(where)}")
    who = f"class {classes[col]!r} (column {col})" if classes is not None else f"column {col}"
    raise ValueError(f"{int(bad.sum())} of {bad.size} scores are NaN or inf{_context(where)}; first in {who}, "
                     f"which has {int(per_class[col])}; {int((per_class > 0).sum())} class(es) affected")


def scorable(y_true: np.ndarray) -> np.ndarray:
    """Boolean mask of the classes with at least one positive and one negative record.

    Args:
        y_true: (records, classes) 0/1 labels; a 1-D array is one class.
    """
    y_true = _as_matrix(y_true, "y_true").astype(bool)
    n_pos = y_true.sum(0)
    return (n_pos > 0) & (n_pos < len(y_true))


# --------------------------------------------------------------------------------------------------------------
# Per-class metrics
# --------------------------------------------------------------------------------------------------------------

def per_class_auroc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """AUROC of each class (NaN where a class has only one label value in y_true).

    Computed for all classes at once from score ranks (the Mann-Whitney U statistic, ties counted half), which
    equals sklearn's roc_auc_score and is fast enough for bootstrapping many classes.

    Args:
        y_true: (records, classes) 0/1 labels.
        y_score: (records, classes) scores, higher meaning more likely positive.
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


class _SortedColumns:
    """Scores sorted once per class, so that AUROC and average precision of the full set or of any bootstrap
    resample (given as how often each record was drawn) follow from cumulative sums, without sorting again.

    A record drawn k times is k records with the same score, hence in the same tie group, so weighting each
    record by its count gives exactly the metric of the resampled arrays.
    """

    def __init__(self, y_true: np.ndarray, y_score: np.ndarray):
        """Args:
            y_true: (records, classes) bool labels.
            y_score: (records, classes) finite float scores.
        """
        n, c = y_score.shape
        self.n, self.c = n, c
        self.order = np.argsort(y_score, axis=0, kind="stable")          # ascending
        s = np.take_along_axis(y_score, self.order, axis=0)
        self.pos = np.take_along_axis(y_true, self.order, axis=0).astype(np.float64)
        rows = np.arange(n)[:, None]
        first = np.ones((n, c), dtype=bool)
        first[1:] = s[1:] != s[:-1]                                      # a new tie group starts here
        last = np.ones((n, c), dtype=bool)
        last[:-1] = first[1:]
        # For every sorted position, the first and one past the last position of its tie group, as flat indices
        # into a (records + 1, classes) array of cumulative sums (np.take on flat indices is much faster than
        # take_along_axis).
        start = np.maximum.accumulate(np.where(first, rows, 0), axis=0)
        stop = np.minimum.accumulate(np.where(last, rows, n - 1)[::-1], axis=0)[::-1] + 1
        self.start = (start * c + np.arange(c)).ravel()
        self.stop = (stop * c + np.arange(c)).ravel()

    def _weights(self, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per sorted position: the record's weight, and its weight if positive (else 0)."""
        w = np.ones((self.n, self.c)) if counts is None else np.asarray(counts, dtype=np.float64)[self.order]
        return w, w * self.pos

    @staticmethod
    def _cumsum0(a: np.ndarray) -> np.ndarray:
        """Cumulative sum along records with a leading zero row: out[k] = sum of the first k rows."""
        out = np.zeros((a.shape[0] + 1, a.shape[1]))
        np.cumsum(a, axis=0, out=out[1:])
        return out

    def auroc(self, counts: np.ndarray | None = None) -> np.ndarray:
        """Per-class AUROC (NaN without positives or negatives).

        Args:
            counts: (records,) how often each record is drawn; None for every record once.
        """
        w, wp = self._weights(counts)
        wn = w - wp
        cn = self._cumsum0(wn)
        shape = (self.n, self.c)
        below = np.take(cn, self.start).reshape(shape)                   # negatives scored strictly lower
        upto = np.take(cn, self.stop).reshape(shape)                     # ... plus those tied with the record
        u = 0.5 * np.einsum("ij,ij->j", wp, below + upto)                # ties count half
        n_pos, n_neg = wp.sum(0), wn.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)

    def average_precision(self, counts: np.ndarray | None = None) -> np.ndarray:
        """Per-class average precision as sklearn defines it (NaN without positives or negatives).

        AP = sum over distinct thresholds t of (recall(t) - recall(previous t)) * precision(t); each positive
        adds 1/P of recall at the threshold equal to its own score, so AP is the mean over positives of the
        precision at their score, where the precision counts every record scored at least that high.

        Args:
            counts: (records,) how often each record is drawn; None for every record once.
        """
        w, wp = self._weights(counts)
        cp, cw = self._cumsum0(wp), self._cumsum0(w)
        n_pos, total = cp[-1], cw[-1]
        shape = (self.n, self.c)
        tp = n_pos - np.take(cp, self.start).reshape(shape)              # positives scored >= this score
        pp = total - np.take(cw, self.start).reshape(shape)              # records scored >= this score
        # pp is 0 only where nothing at or above this score was drawn, so wp is 0 there; 1 avoids 0 / 0.
        precision = tp / np.maximum(pp, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.einsum("ij,ij->j", wp, precision) / n_pos
        return np.where((n_pos > 0) & (n_pos < total), ap, np.nan)


def per_class_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Average precision (area under the precision-recall curve) of each class, equal to sklearn's
    average_precision_score per column, ties included (one point per distinct threshold).

    NaN where a class has no positive or no negative, so that it covers the same classes as per_class_auroc.
    Scores are sorted once per class with numpy; the rest is cumulative sums.

    Args:
        y_true: (records, classes) 0/1 labels.
        y_score: (records, classes) scores, higher meaning more likely positive; must be finite (ValueError).
    """
    y_true, y_score = _pair(y_true, y_score)
    check_finite(y_score)
    return _SortedColumns(y_true, y_score).average_precision()


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "macro_auroc": per_class_auroc,
    "macro_auprc": per_class_average_precision,
}
"""Macro metric name -> the per-class function it averages (over the scorable classes)."""

# The same metrics from pre-sorted scores, used inside bootstrap loops (one sort instead of one per resample);
# every metric of METRICS has one.
_SORTED_METRICS = {"macro_auroc": _SortedColumns.auroc, "macro_auprc": _SortedColumns.average_precision}
assert _SORTED_METRICS.keys() == METRICS.keys()


# --------------------------------------------------------------------------------------------------------------
# Macro metrics
# --------------------------------------------------------------------------------------------------------------

def _macro(metric: str, y_true: np.ndarray, y_score: np.ndarray, classes: Sequence | None, where: str) -> float:
    y_true, y_score = _pair(y_true, y_score)
    check_finite(y_score, classes, where)
    keep = scorable(y_true)
    if not keep.any():
        return float("nan")
    return float(METRICS[metric](y_true[:, keep], y_score[:, keep]).mean())


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence | None = None, where: str = "") -> float:
    """Mean AUROC over the scorable classes (the benchmark's macro AUC); NaN if no class is scorable.

    Args:
        y_true: (records, classes) 0/1 labels.
        y_score: (records, classes) scores; a NaN or inf score raises ValueError (see check_finite).
        classes: column labels, to name the class of a non-finite score.
        where: the caller's context for error messages.
    """
    return _macro("macro_auroc", y_true, y_score, classes, where)


def macro_auprc(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence | None = None, where: str = "") -> float:
    """Mean average precision over the scorable classes (the same classes as macro_auroc); NaN if none.

    Args:
        y_true: (records, classes) 0/1 labels.
        y_score: (records, classes) scores; a NaN or inf score raises ValueError (see check_finite).
        classes: column labels, to name the class of a non-finite score.
        where: the caller's context for error messages.
    """
    return _macro("macro_auprc", y_true, y_score, classes, where)


# --------------------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------------------

def bootstrap_indices(y_true: np.ndarray, n_boot: int = 100, seed: int = 0, max_tries_factor: int = 50,
                      where: str = "") -> np.ndarray:
    """Bootstrap resamples of the records: (n_boot, records) indices drawn with replacement.

    Resamples in which a class that is scorable on the full set lacks a positive or a negative are drawn again
    (the benchmark redraws when a class lacks a positive; also requiring a negative keeps AUROC defined), so
    that every resample scores the same classes.

    Args:
        y_true: (records, classes) 0/1 labels; with zero classes every resample is kept.
        n_boot: number of resamples to return.
        seed: seed of the numpy Generator that draws them.
        max_tries_factor: give up (ValueError) after n_boot * max_tries_factor draws.
        where: the caller's context for error messages.
    """
    y_true = _as_matrix(y_true, "y_true").astype(bool)
    n = len(y_true)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if n == 0 and n_boot > 0:
        raise ValueError(f"cannot resample an empty test set{_context(where)}")
    keep = scorable(y_true)
    y = y_true[:, keep].astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n), dtype=np.int64)
    got, tries, max_tries = 0, 0, n_boot * max_tries_factor
    while got < n_boot and tries < max_tries:
        tries += 1
        idx = rng.integers(0, n, n)
        n_pos = np.bincount(idx, minlength=n) @ y                       # positives of each class in the resample
        if ((n_pos > 0) & (n_pos < n)).all():
            out[got] = idx
            got += 1
    if got < n_boot:
        rarest = int(np.argmin(np.minimum(y.sum(0), n - y.sum(0))))
        raise ValueError(f"only {got} of {n_boot} bootstrap resamples{_context(where)} keep both labels of every "
                         f"scorable class after {tries} draws; the rarest class (scorable column {rarest}) has "
                         f"{int(min(y[:, rarest].sum(), n - y[:, rarest].sum()))} record(s) of its minority label")
    return out


@dataclass
class BootstrapResult:
    """A metric on all test records with a bootstrap percentile interval.

    Args:
        value: the metric on all test records.
        low, high: the (1 - level) / 2 and (1 + level) / 2 quantiles of the metric over the resamples (NaN when
            n_boot is 0).
        n_boot: number of resamples.
        level: coverage of the interval, e.g. 0.90 for the benchmark's 5th to 95th percentile.
    """
    value: float
    low: float
    high: float
    n_boot: int
    level: float


def _check_metric_names(metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")


def _resample_values(y_true: np.ndarray, y_score: np.ndarray, metrics: Sequence[str],
                     idx: np.ndarray) -> dict[str, np.ndarray]:
    """Macro value of each metric on each resample; y_true / y_score hold only the classes to average."""
    sorted_cols = _SortedColumns(y_true, y_score)
    n = len(y_true)
    values = {m: np.empty(len(idx)) for m in metrics}
    for b, rows in enumerate(idx):
        counts = np.bincount(rows, minlength=n)
        for m in metrics:
            values[m][b] = _SORTED_METRICS[m](sorted_cols, counts).mean()
    return values


def bootstrap_metrics(y_true: np.ndarray, y_score: np.ndarray, metrics: Sequence[str] = ("macro_auroc", "macro_auprc"),
                      n_boot: int = 100, level: float = 0.90, seed: int = 0, classes: Sequence | None = None,
                      where: str = "") -> dict[str, BootstrapResult]:
    """Macro metrics on all test records with bootstrap percentile intervals, as in the PTB-XL benchmark.

    Every metric is computed on the same resamples (bootstrap_indices) and averaged over the classes scorable on
    the full set (every resample keeps both labels of those classes). The interval is the (1 - level) / 2 and
    (1 + level) / 2 quantiles of the resample values with linear interpolation (numpy's default, the same as
    pandas' Series.quantile): level=0.90 gives the benchmark's 5th and 95th percentiles.

    Args:
        y_true: (records, classes) 0/1 labels.
        y_score: (records, classes) scores; a NaN or inf score raises ValueError (see check_finite).
        metrics: names from METRICS.
        n_boot: number of resamples; 0 gives NaN intervals.
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling.
        classes: column labels, for error messages.
        where: the caller's context for error messages.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    _check_metric_names(metrics)
    y_true, y_score = _pair(y_true, y_score)
    check_finite(y_score, classes, where)
    keep = scorable(y_true)
    yt, ys = y_true[:, keep], y_score[:, keep]
    nan = float("nan")
    if not keep.any():
        return {m: BootstrapResult(nan, nan, nan, 0, level) for m in metrics}
    points = {m: float(METRICS[m](yt, ys).mean()) for m in metrics}
    if n_boot == 0:
        return {m: BootstrapResult(points[m], nan, nan, 0, level) for m in metrics}
    idx = bootstrap_indices(yt, n_boot, seed, where=where)
    values = _resample_values(yt, ys, metrics, idx)
    out = {}
    for m in metrics:
        low, high = np.quantile(values[m], [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        out[m] = BootstrapResult(points[m], float(low), float(high), n_boot, level)
    return out


# --------------------------------------------------------------------------------------------------------------
# Paired significance against a baseline
# --------------------------------------------------------------------------------------------------------------

@dataclass
class PairedTest:
    """Difference of a metric between two models on the same test records, with a paired bootstrap p-value.

    Args:
        delta: metric(model a) - metric(model b) on all records.
        p_value: two-sided bootstrap p-value for delta != 0 (see paired_bootstrap_test).
        n_resamples: number of bootstrap resamples B.
    """
    delta: float
    p_value: float
    n_resamples: int


def _two_sided_p(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value from resampled differences: twice the smaller tail beyond zero, with the
    +1 correction so that it is never 0 for a finite number of resamples."""
    b = len(deltas)
    low = (1 + np.count_nonzero(deltas <= 0)) / (b + 1)
    high = (1 + np.count_nonzero(deltas >= 0)) / (b + 1)
    return float(min(1.0, 2.0 * min(low, high)))


def paired_bootstrap_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, metric: str = "macro_auroc",
                          n_resamples: int = 1000, seed: int = 0, classes: Sequence | None = None,
                          where: str = "") -> PairedTest:
    """Is model a better or worse than model b (e.g. a baseline) on the same test records?

    delta = metric(a) - metric(b) on all records, the macro over the classes scorable on the full set. The same
    B resamples (bootstrap_indices, with redraws as in bootstrap_metrics) are applied to both models, which keeps
    the pairing, and give B differences d*. The two-sided p-value is

        p = min(1, 2 * min((1 + #{d* <= 0}) / (B + 1), (1 + #{d* >= 0}) / (B + 1))),

    i.e. twice the bootstrap probability of the tail on the far side of zero; identical models give p = 1 and
    the smallest possible value is 2 / (B + 1).

    Args:
        y_true: (records, classes) 0/1 labels.
        score_a, score_b: (records, classes) scores of the two models; NaN or inf raises ValueError.
        metric: a name from METRICS.
        n_resamples: number of resamples B (>= 1).
        seed: seed of the resampling.
        classes: column labels, for error messages.
        where: the caller's context for error messages.
    """
    _check_metric_names([metric])
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    y_true, score_a = _pair(y_true, score_a)
    _, score_b = _pair(y_true, score_b)
    check_finite(score_a, classes, f"{where} (model a)" if where else "model a")
    check_finite(score_b, classes, f"{where} (model b)" if where else "model b")
    keep = scorable(y_true)
    if not keep.any():
        raise ValueError(f"no class has both labels{_context(where)}; nothing to compare")
    yt = y_true[:, keep]
    sa, sb = score_a[:, keep], score_b[:, keep]
    delta = float(METRICS[metric](yt, sa).mean() - METRICS[metric](yt, sb).mean())
    idx = bootstrap_indices(yt, n_resamples, seed, where=where)
    deltas = _resample_values(yt, sa, [metric], idx)[metric] - _resample_values(yt, sb, [metric], idx)[metric]
    return PairedTest(delta, _two_sided_p(deltas), n_resamples)


def paired_bootstrap_accuracy(hits_a: np.ndarray, hits_b: np.ndarray, n_resamples: int = 1000,
                              seed: int = 0) -> PairedTest:
    """Paired bootstrap test of the accuracy of two models on the same probes (e.g. top-1 identification).

    delta = mean(hits_a) - mean(hits_b). The probes are resampled with replacement (bootstrap_indices of a label
    matrix with no classes, so nothing is redrawn), the same resamples for both models, and the p-value follows
    the rule of paired_bootstrap_test: p = min(1, 2 * min((1 + #{d* <= 0}) / (B + 1), (1 + #{d* >= 0}) / (B + 1))).

    Args:
        hits_a, hits_b: (probes,) 0/1 (or bool) hit of each probe for models a and b, aligned probe by probe.
        n_resamples: number of resamples B (>= 1).
        seed: seed of the resampling.
    """
    a, b = np.asarray(hits_a, dtype=np.float64), np.asarray(hits_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"hits_a {a.shape} and hits_b {b.shape} must be 1-D and of the same length")
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("hits must be 0/1")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(a)
    if n == 0:
        raise ValueError("no probes to compare")
    diff = a - b
    idx = bootstrap_indices(np.zeros((n, 0), dtype=bool), n_resamples, seed)
    deltas = np.array([np.bincount(rows, minlength=n) @ diff for rows in idx]) / n
    return PairedTest(float(diff.mean()), _two_sided_p(deltas), n_resamples)


# --------------------------------------------------------------------------------------------------------------
# Identification
# --------------------------------------------------------------------------------------------------------------

def identification_ranks(gallery: np.ndarray, gallery_ids: np.ndarray, probes: np.ndarray,
                         probe_ids: np.ndarray) -> np.ndarray:
    """For each probe, the rank (0 = best) of its own subject's gallery entry by cosine similarity.

    Args:
        gallery: (gallery records, dim) embeddings, one per subject.
        gallery_ids: (gallery records,) subject of each gallery embedding.
        probes: (probes, dim) embeddings to identify.
        probe_ids: (probes,) true subject of each probe; every one must be in gallery_ids.
    """
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
    """Cumulative match characteristic: accuracy at top-1 ... top-max_rank.

    Args:
        ranks: (probes,) rank of each probe's own subject (0 = best), from identification_ranks.
        max_rank: the largest k of top-k.
    """
    ranks = np.asarray(ranks)
    return np.array([(ranks < k).mean() for k in range(1, max_rank + 1)])
