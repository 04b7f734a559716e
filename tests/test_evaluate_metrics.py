"""Evaluation metrics on small arrays whose answers are known, and against independent implementations
(sklearn for the metrics, an explicit loop with pandas quantiles for the bootstrap as in the PTB-XL benchmark)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from esi.evaluate.metrics import (METRICS, BootstrapResult, _SortedColumns, bootstrap_indices,
                                  bootstrap_metrics, check_finite, cmc_curve,
                                  identification_ranks, macro_auprc, macro_auroc, paired_test,
                                  per_class_auroc, per_class_average_precision, scorable)


def test_macro_auroc_averages_classes_and_skips_single_label_columns():
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]])
    s = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.8, 0.4, 0.5], [0.3, 0.3, 0.5]])
    aucs = per_class_auroc(y, s)
    assert aucs[0] == 1.0 and aucs[1] == 0.75 and np.isnan(aucs[2])
    assert macro_auroc(y, s) == pytest.approx(0.875)


def test_bootstrap_interval_brackets_the_point_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(200, 4))
    s = y + rng.normal(0, 0.8, size=y.shape)
    res = bootstrap_metrics(y, s, ("macro_auroc",), n_boot=100, seed=0)["macro_auroc"]
    assert res.n_boot == 100
    assert res.low < res.value < res.high
    assert 0.6 < res.value < 0.95


def test_identification_finds_each_probe_in_the_gallery():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(10, 8))
    probes = gallery[[2, 5, 7]] + 0.01 * rng.normal(size=(3, 8))
    ranks = identification_ranks(gallery, np.arange(10), probes, np.array([2, 5, 7]))
    assert ranks.tolist() == [0, 0, 0]
    assert cmc_curve(np.array([0, 1, 4]), max_rank=5).tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="no gallery record"):
        identification_ranks(gallery, np.arange(10), probes, np.array([2, 5, 99]))


def test_label_fraction_subset_keeps_every_class_and_is_seeded():
    from esi.evaluate.linear_probe import label_fraction_subset
    rng = np.random.default_rng(0)
    y = (rng.random((500, 6)) < [0.5, 0.2, 0.1, 0.02, 0.01, 0.004]).astype(int)
    # The "every_class" draw (no longer the default, which is MERL's draw) keeps a positive of every class.
    sub = label_fraction_subset(y, 0.01, seed=3, draw="every_class")
    assert (y[sub].sum(0) > 0).all()
    assert len(sub) <= 5 + 6
    assert np.array_equal(sub, label_fraction_subset(y, 0.01, seed=3, draw="every_class"))
    assert len(label_fraction_subset(y, 1.0)) == 500


def test_linear_probe_learns_a_separable_task_and_selects_on_validation():
    from esi.evaluate.linear_probe import train_linear_probe
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 3))
    def make(n):
        x = rng.normal(size=(n, 16))
        return x, (x @ w > 0.5).astype(int)
    (xt, yt), (xv, yv), (xs, ys) = make(300), make(100), make(100)
    res = train_linear_probe(xt, yt, xv, yv, xs, weight_decays=(0.0, 1e-2), epochs=20)
    assert res.test_scores.shape == (100, 3)
    assert macro_auroc(ys, res.test_scores) > 0.95
    assert res.val_auroc == max(max(c) for c in res.val_curve.values())


def test_test_max_selection_reproduces_merls_reporting_and_is_named():
    from esi.evaluate.linear_probe import train_linear_probe
    rng = np.random.default_rng(1)
    w = rng.normal(size=(16, 3))
    def make(n):
        x = rng.normal(size=(n, 16))
        return x, (x @ w + rng.normal(0, 2.0, size=(n, 3)) > 0.5).astype(int)     # noisy: epochs differ on test
    (xt, yt), (xv, yv), (xs, ys) = make(200), make(80), make(80)
    validated = train_linear_probe(xt, yt, xv, yv, xs, weight_decays=(0.0, 1e-2), epochs=15)
    best_on_test = train_linear_probe(xt, yt, xv, yv, xs, weight_decays=(0.0, 1e-2), epochs=15,
                                      selection="test_max", y_test=ys)
    # The head kept is the one whose test AUROC is the largest of every (weight decay, epoch): never below the
    # validation-selected head's test AUROC.
    assert best_on_test.val_auroc == max(max(c) for c in best_on_test.val_curve.values())
    assert macro_auroc(ys, best_on_test.test_scores) == pytest.approx(best_on_test.val_auroc)
    assert macro_auroc(ys, best_on_test.test_scores) >= macro_auroc(ys, validated.test_scores)
    with pytest.raises(ValueError, match="needs y_test"):
        train_linear_probe(xt, yt, xv, yv, xs, epochs=1, selection="test_max")
    with pytest.raises(ValueError, match="unknown probe selection 'test'"):
        train_linear_probe(xt, yt, xv, yv, xs, epochs=1, selection="test")


def test_rank_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=(120, 5))
    s = np.round(rng.normal(size=(120, 5)) + y, 1)          # rounding creates ties
    expected = [roc_auc_score(y[:, c], s[:, c]) for c in range(5)]
    assert per_class_auroc(y, s) == pytest.approx(expected, abs=1e-12)


def _tied_data(seed, n=150, c=5, noise=1.0):
    """Labels with every class scorable and scores rounded to one decimal, so that ties are common."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < np.linspace(0.1, 0.5, c)).astype(int)
    y[0], y[1] = 1, 0                                          # every class has both labels
    return y, np.round(rng.normal(0, noise, size=(n, c)) + y, 1)


def test_average_precision_equals_sklearn_with_ties():
    y, s = _tied_data(3)
    s[:, 2] = np.round(s[:, 2])                                 # a class with few distinct scores
    expected = [average_precision_score(y[:, c], s[:, c]) for c in range(y.shape[1])]
    assert per_class_average_precision(y, s) == pytest.approx(expected, abs=1e-12)
    assert macro_auprc(y, s) == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    assert macro_auroc(y, s) == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)


def test_sorted_columns_score_resamples_from_counts_as_sklearn_does_on_the_resampled_arrays():
    # The bootstrap scores a resample from record counts on scores sorted once; this must equal scoring the
    # resampled arrays themselves, duplicated records and ties included.
    y, s = _tied_data(4, n=80)
    cols = _SortedColumns(y.astype(bool), s.astype(float))
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.integers(0, len(y), len(y))
        counts = np.bincount(idx, minlength=len(y))
        yi, si = y[idx], s[idx]
        ok = scorable(yi)
        auc = [roc_auc_score(yi[:, c], si[:, c]) if ok[c] else np.nan for c in range(y.shape[1])]
        ap = [average_precision_score(yi[:, c], si[:, c]) if ok[c] else np.nan for c in range(y.shape[1])]
        assert cols.auroc(counts) == pytest.approx(auc, abs=1e-12, nan_ok=True)
        assert cols.average_precision(counts) == pytest.approx(ap, abs=1e-12, nan_ok=True)


def test_unscorable_class_is_excluded_from_both_macro_means():
    y, s = _tied_data(5, c=4)
    y[:, 1] = 0                                                 # no positive
    y[:, 3] = 1                                                 # no negative
    assert scorable(y).tolist() == [True, False, True, False]
    assert np.isnan(per_class_auroc(y, s)[[1, 3]]).all()
    assert np.isnan(per_class_average_precision(y, s)[[1, 3]]).all()
    keep = [0, 2]
    assert macro_auroc(y, s) == pytest.approx(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in keep]), abs=1e-12)
    assert macro_auprc(y, s) == pytest.approx(
        np.mean([average_precision_score(y[:, c], s[:, c]) for c in keep]), abs=1e-12)
    assert np.isnan(macro_auroc(np.zeros((5, 2)), np.ones((5, 2))))
    assert set(METRICS) == {"macro_auroc", "macro_auprc"}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("macro", [macro_auroc, macro_auprc])
def test_non_finite_scores_raise_and_name_the_class(macro, bad):
    y, s = _tied_data(6, c=3)
    s[[4, 9], 1] = bad
    with pytest.raises(ValueError, match=r"(?s)2 of .*ESI / superdiagnostic / linear_probe.*'NORM'"):
        macro(y, s, classes=["MI", "NORM", "STTC"], where="ESI / superdiagnostic / linear_probe")
    with pytest.raises(ValueError, match="column 1"):
        macro(y, s)
    with pytest.raises(ValueError, match="'NORM'"):
        bootstrap_metrics(y, s, n_boot=5, classes=["MI", "NORM", "STTC"])
    with pytest.raises(ValueError, match="NaN or inf"):
        paired_test(y, s, np.zeros_like(s), n_permutations=5)
    check_finite(np.zeros((3, 2)))                              # finite scores pass silently


def test_bootstrap_resamples_keep_both_labels_and_are_seeded():
    rng = np.random.default_rng(7)
    y = (rng.random((120, 4)) < [0.5, 0.05, 0.02, 0.0]).astype(int)
    y[0, 2] = 1                                                 # a class with very few positives
    idx = bootstrap_indices(y, n_boot=50, seed=1)
    assert idx.shape == (50, 120) and idx.min() >= 0 and idx.max() < 120
    ok = scorable(y)
    for rows in idx:
        assert scorable(y[rows])[ok].all()
    assert np.array_equal(idx, bootstrap_indices(y, n_boot=50, seed=1))
    assert not np.array_equal(idx, bootstrap_indices(y, n_boot=50, seed=2))
    one_positive = np.zeros((200, 1), dtype=int)
    one_positive[0] = 1                                         # in about 63 % of resamples only
    with pytest.raises(ValueError, match="bootstrap resamples"):
        bootstrap_indices(one_positive, n_boot=100, seed=0, max_tries_factor=1)


def test_bootstrap_interval_matches_an_independent_benchmark_style_loop():
    y, s = _tied_data(8, n=200, c=4, noise=0.8)
    res = bootstrap_metrics(y, s, n_boot=100, level=0.90, seed=3)
    idx = bootstrap_indices(y, n_boot=100, seed=3)
    auc = pd.Series([roc_auc_score(y[r], s[r], average="macro") for r in idx])
    ap = pd.Series([average_precision_score(y[r], s[r], average="macro") for r in idx])
    for name, vals, point in [("macro_auroc", auc, roc_auc_score(y, s, average="macro")),
                              ("macro_auprc", ap, average_precision_score(y, s, average="macro"))]:
        r = res[name]
        assert isinstance(r, BootstrapResult) and r.n_boot == 100 and r.level == 0.90
        assert r.value == pytest.approx(point, abs=1e-12)
        assert r.low == pytest.approx(vals.quantile(0.05), abs=1e-12)
        assert r.high == pytest.approx(vals.quantile(0.95), abs=1e-12)
    alone = bootstrap_metrics(y, s, ("macro_auroc",), n_boot=100, level=0.90, seed=3)["macro_auroc"]
    assert (alone.value, alone.low, alone.high) == (res["macro_auroc"].value, res["macro_auroc"].low,
                                                    res["macro_auroc"].high)
    none = bootstrap_metrics(y, s, n_boot=0)["macro_auprc"]
    assert none.value == res["macro_auprc"].value and np.isnan(none.low) and np.isnan(none.high)


def test_paired_test_identical_models_give_p_one():
    y, s = _tied_data(9, n=100, c=3)
    res = paired_test(y, s, s.copy(), n_permutations=200)
    assert res.delta == 0.0 and res.p_value == 1.0 and res.n_permutations == 200
    hits = (np.arange(50) % 3 == 0).astype(int)
    acc = paired_test(None, hits, hits, metric="accuracy", n_permutations=200)
    assert acc.delta == 0.0 and acc.p_value == 1.0


def test_paired_test_detects_a_clearly_better_model():
    rng = np.random.default_rng(10)
    y = (rng.random((300, 3)) < 0.3).astype(int)
    good = y + rng.normal(0, 0.3, size=y.shape)
    noise = rng.normal(size=y.shape)
    res = paired_test(y, good, noise, metric="macro_auroc", n_permutations=1000)
    assert res.delta > 0.3 and res.p_value < 0.01
    assert paired_test(y, good, noise, metric="macro_auprc", n_permutations=1000).p_value < 0.01
    hits_a = (rng.random(300) < 0.8).astype(int)
    hits_b = (rng.random(300) < 0.4).astype(int)
    acc = paired_test(None, hits_a, hits_b, metric="accuracy", n_permutations=1000)
    assert acc.delta == pytest.approx(hits_a.mean() - hits_b.mean()) and acc.p_value < 0.01


def test_paired_accuracy_p_value_matches_an_independent_sign_flip_computation():
    rng = np.random.default_rng(11)
    hits_a = (rng.random(60) < 0.6).astype(int)
    hits_b = (rng.random(60) < 0.5).astype(int)
    acc = paired_test(None, hits_a, hits_b, metric="accuracy", n_permutations=200, seed=5)
    keep = np.random.default_rng(5).random((200, 60)) >= 0.5          # the swaps paired_test draws with seed 5
    d = [np.where(k, hits_a, hits_b).mean() - np.where(k, hits_b, hits_a).mean() for k in keep]
    observed = hits_a.mean() - hits_b.mean()
    assert acc.p_value == pytest.approx((1 + np.sum(np.abs(d) >= abs(observed) - 1e-12)) / 201)
    assert 0.01 < acc.p_value <= 1.0
