"""Evaluation metrics: macro AUROC / AUPRC with bootstrap intervals as in the PTB-XL benchmark, paired permutation
tests against a baseline (with Holm's adjustment over a table), and identification accuracy (CMC).

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

# Classes with fewer test positives than this are "rare": their AUROC rests on a handful of records, so every macro
# row counts them (n_rare_classes) and a second macro leaves them out (`<metric>_supported`, ecg-fix's practice).
SUPPORTED_MIN_POSITIVES = 10
# The metrics a paired test compares: the macro metrics, the same over the supported classes, and the accuracy of
# per-record hits (identification: score_a / score_b are 0/1 hits, y_true is unused).
PAIRED_METRICS = ("macro_auroc", "macro_auprc", "macro_auroc_supported", "macro_auprc_supported", "accuracy")


def supported(y_true: np.ndarray, min_positives: int = SUPPORTED_MIN_POSITIVES) -> np.ndarray:
    """Boolean mask of the scorable classes with at least `min_positives` positive test records."""
    y_true = _as_matrix(y_true, "y_true").astype(bool)
    return scorable(y_true) & (y_true.sum(0) >= min_positives)


def n_rare_classes(y_true: np.ndarray, min_positives: int = SUPPORTED_MIN_POSITIVES) -> int:
    """How many scorable classes have fewer than `min_positives` positive test records."""
    y_true = _as_matrix(y_true, "y_true").astype(bool)
    return int((scorable(y_true) & ~supported(y_true, min_positives)).sum())


def metric_classes(metric: str, y_true: np.ndarray) -> tuple[str, np.ndarray]:
    """The per-class metric a macro metric averages and the mask of the classes it averages over.

    "macro_auroc" -> ("macro_auroc", scorable classes); "macro_auroc_supported" -> ("macro_auroc", scorable classes
    with >= SUPPORTED_MIN_POSITIVES positives).
    """
    if metric.endswith("_supported"):
        return metric[: -len("_supported")], supported(y_true)
    return metric, scorable(y_true)


@dataclass
class PairedTest:
    """Difference of a metric between two models on the same test records, with a paired permutation p-value.

    Args:
        delta: metric(model a) - metric(model b) on all records.
        p_value: two-sided permutation p-value for delta != 0 (see paired_test).
        n_permutations: number of random swaps B.
    """
    delta: float
    p_value: float
    n_permutations: int


def _ecdf_scores(score: np.ndarray) -> np.ndarray:
    """Each column's scores replaced by their average ranks / records: both metrics depend on the order of a
    model's scores only, and two models' scores on one scale is what makes swapping them meaningful."""
    return rankdata(score, axis=0) / len(score)


def _below(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How many of `sorted_values` are below each x, ties counted half."""
    return 0.5 * (np.searchsorted(sorted_values, x, "left") + np.searchsorted(sorted_values, x, "right"))


def _auroc_swap_weights(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(records,) weights g with macro AUROC(a') - macro AUROC(b') = sum_i t_i g_i for every swap pattern t.

    t_i = +1 keeps record i's scores, -1 swaps them between the models. Writing H(x, z) = [x > z] + [x = z] / 2,
    class c's Mann-Whitney U of a' minus that of b' expands into terms bilinear and linear in t; the bilinear ones
    cancel between the two models, which leaves, for a positive i and over the negatives j,
        g_ic = sum_j (H(a_i, a_j) + H(a_i, b_j) - H(b_i, a_j) - H(b_i, b_j)) / 2,
    and for a negative j, over the positives i,
        g_jc = sum_i (H(a_i, a_j) + H(b_i, a_j) - H(a_i, b_j) - H(b_i, b_j)) / 2,
    each divided by P_c N_c (and the macro by the number of classes). So every permutation costs one dot
    product: 1,000 swaps of 2,200 records x 71 classes take milliseconds after one sort per class.
    """
    n, c = y.shape
    g = np.zeros(n)
    for k in range(c):
        pos = y[:, k]
        ap, bp, an, bn = a[pos, k], b[pos, k], a[~pos, k], b[~pos, k]
        san, sbn, sap, sbp = np.sort(an), np.sort(bn), np.sort(ap), np.sort(bp)
        n_pos, n_neg = len(ap), len(an)
        gk = np.empty(n)
        gk[pos] = (_below(san, ap) + _below(sbn, ap) - _below(san, bp) - _below(sbn, bp)) / 2
        # positives above a negative's score x: n_pos - below(x)
        gk[~pos] = ((n_pos - _below(sap, an)) + (n_pos - _below(sbp, an))
                    - (n_pos - _below(sap, bn)) - (n_pos - _below(sbp, bn))) / 2
        g += gk / (n_pos * n_neg)
    return g / c


def _at_least(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How many of `sorted_values` are >= each x."""
    return len(sorted_values) - np.searchsorted(sorted_values, x, "left")


def _average_precision_swaps(y: np.ndarray, a: np.ndarray, b: np.ndarray, keep: np.ndarray,
                             chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Macro average precision of a' and of b' for every swap pattern (rows of `keep`, True = not swapped).

    AP of a class is the mean over its positives of the precision at the positive's own score x:
    tp(>= x) / (tp(>= x) + fp(>= x)). After a swap, how many of a' 's negatives score >= x is the count among a's
    negatives plus, for every swapped negative j, [b_j >= x] - [a_j >= x]; for b' it is b's count minus the same
    sum. One matrix product per class over the 2P candidate thresholds (each positive's a and b score) serves both
    models and every swap of a chunk.
    """
    n, c = y.shape
    n_swaps = len(keep)
    ap_a, ap_b = np.zeros(n_swaps), np.zeros(n_swaps)
    swapped = (~keep).astype(np.float32)                               # counts < 2**24: exact
    for k in range(c):
        pos = y[:, k]
        idx_pos = np.flatnonzero(pos)
        thresholds = np.concatenate([a[pos, k], b[pos, k]])             # column i: a_i, column P + i: b_i
        n_pos = len(idx_pos)
        counts = {}
        for group, rows in (("tp", pos), ("fp", ~pos)):
            va, vb = a[rows, k], b[rows, k]
            base_a = _at_least(np.sort(va), thresholds)
            base_b = _at_least(np.sort(vb), thresholds)
            change = (vb[:, None] >= thresholds).astype(np.float32) - (va[:, None] >= thresholds)
            counts[group] = (base_a, base_b, change, rows)
        cols = np.arange(n_pos)
        for lo in range(0, n_swaps, chunk):
            s = swapped[lo:lo + chunk]
            shifted = {g: s[:, rows] @ change for g, (_, _, change, rows) in counts.items()}
            tp_a = counts["tp"][0] + shifted["tp"]
            tp_b = counts["tp"][1] - shifted["tp"]
            fp_a = counts["fp"][0] + shifted["fp"]
            fp_b = counts["fp"][1] - shifted["fp"]
            flip = s[:, idx_pos].astype(bool)                           # positive i swapped: a' holds b_i
            col_a = np.where(flip, cols + n_pos, cols)                  # the threshold of a' 's positive i
            col_b = np.where(flip, cols, cols + n_pos)
            pick = lambda m, col: np.take_along_axis(m, col, axis=1)    # noqa: E731
            ap_a[lo:lo + chunk] += (pick(tp_a, col_a) / (pick(tp_a, col_a) + pick(fp_a, col_a))).mean(1)
            ap_b[lo:lo + chunk] += (pick(tp_b, col_b) / (pick(tp_b, col_b) + pick(fp_b, col_b))).mean(1)
    return ap_a / c, ap_b / c


def _two_sided_permutation_p(observed: float, permuted: np.ndarray) -> float:
    """(1 + #{|d*| >= |d|}) / (B + 1): the share of swaps at least as extreme, counting the observed one, so that
    P(p <= alpha) <= alpha under exchangeability. Identical models give 1."""
    tolerance = 1e-9 * max(1.0, abs(observed))                          # the same number computed two ways
    extreme = np.count_nonzero(np.abs(permuted) >= abs(observed) - tolerance)
    return float((1 + extreme) / (len(permuted) + 1))


def paired_test(y_true: np.ndarray | None, score_a: np.ndarray, score_b: np.ndarray, metric: str = "macro_auroc",
                n_permutations: int = 1000, seed: int = 0, classes: Sequence | None = None,
                where: str = "") -> PairedTest:
    """Is model a better or worse than model b (e.g. its random-init twin) on the same test records?

    A paired permutation test: under the null hypothesis the two models' scores of a record are exchangeable, so
    swapping them record by record (all classes of a record together, each record with probability 1/2) gives
    differences d* as likely as the observed one. The two-sided p-value is

        p = (1 + #{|d*| >= |delta|}) / (B + 1),

    for any number of test positives (a bootstrap over records is not: a class with k positives never shows a
    resample where the other model wins it, which made its p-values too small). Before swapping, each model's
    scores of a class are replaced by their ranks / records: AUROC and AUPRC depend on a model's ordering only, and
    this puts the two models on one scale, so a model whose probabilities are merely more confident is not
    "different". The test is exact when these rank scores are exchangeable record by record; simulations with
    exchangeable raw scores keep the error rate (tests/test_evaluate_paired_calibration.py). Identical models give
    p = 1; the smallest p is 1 / (B + 1).

    Args:
        y_true: (records, classes) 0/1 labels; unused (None) for metric="accuracy".
        score_a, score_b: (records, classes) scores of the two models (NaN or inf: ValueError); for "accuracy",
            (records,) 0/1 hits (e.g. whether identification found a probe's subject at top-k).
        metric: one of PAIRED_METRICS. A "_supported" metric averages only the classes with at least
            SUPPORTED_MIN_POSITIVES test positives.
        n_permutations: number of random swap patterns B (>= 1).
        seed: seed of the swaps.
        classes: column labels, for error messages.
        where: the caller's context for error messages.
    """
    if metric not in PAIRED_METRICS:
        raise ValueError(f"unknown metric {metric!r} for a paired test; known: {', '.join(PAIRED_METRICS)}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    if metric == "accuracy":
        a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
        if a.ndim != 1 or a.shape != b.shape:
            raise ValueError(f"hits a {a.shape} and hits b {b.shape} must be 1-D and of the same length")
        if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
            raise ValueError("hits must be 0/1")
        if len(a) == 0:
            raise ValueError(f"no probes to compare{_context(where)}")
        diff = (a - b) / len(a)
        signs = np.where(rng.random((n_permutations, len(a))) >= 0.5, 1.0, -1.0)
        return PairedTest(float(diff.sum()), _two_sided_permutation_p(diff.sum(), signs @ diff), n_permutations)

    y, score_a = _pair(y_true, score_a)
    _, score_b = _pair(y, score_b)
    check_finite(score_a, classes, f"{where} (model a)" if where else "model a")
    check_finite(score_b, classes, f"{where} (model b)" if where else "model b")
    base, keep = metric_classes(metric, y)
    if not keep.any():
        raise ValueError(f"no class{_context(where)} has both labels"
                         + (f" and >= {SUPPORTED_MIN_POSITIVES} positives" if metric != base else "")
                         + "; nothing to compare")
    y, a, b = y[:, keep], _ecdf_scores(score_a[:, keep]), _ecdf_scores(score_b[:, keep])
    delta = float(METRICS[base](y, score_a[:, keep]).mean() - METRICS[base](y, score_b[:, keep]).mean())
    not_swapped = rng.random((n_permutations, len(y))) >= 0.5
    if base == "macro_auroc":
        g = _auroc_swap_weights(y, a, b)
        observed, permuted = g.sum(), np.where(not_swapped, 1.0, -1.0) @ g
    else:   # the unswapped pattern first: the observed difference from the same counts as every swap's
        ap_a, ap_b = _average_precision_swaps(y, a, b, np.vstack([np.ones((1, len(y)), dtype=bool), not_swapped]))
        observed, permuted = float(ap_a[0] - ap_b[0]), ap_a[1:] - ap_b[1:]
    return PairedTest(delta, _two_sided_permutation_p(observed, permuted), n_permutations)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not in the family and stay NaN).

    Sorted ascending, the k-th smallest of m is multiplied by (m - k + 1), made non-decreasing and capped at 1:
    rejecting every hypothesis whose adjusted p is <= alpha keeps the chance of any false rejection <= alpha,
    whatever the dependence between the tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = len(present)
    if m == 0:
        return out
    order = present[np.argsort(p[present], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


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
