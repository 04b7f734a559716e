"""Evaluation metrics on small arrays whose answers are known."""

import numpy as np
import pytest

from esi.evaluate.metrics import (bootstrap_macro_auroc, cmc_curve, identification_ranks, macro_auroc,
                                  per_class_auroc)


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
    res = bootstrap_macro_auroc(y, s, n_boot=100, seed=0)
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
    from esi.evaluate.probe import label_fraction_subset
    rng = np.random.default_rng(0)
    y = (rng.random((500, 6)) < [0.5, 0.2, 0.1, 0.02, 0.01, 0.004]).astype(int)
    sub = label_fraction_subset(y, 0.01, seed=3)
    assert (y[sub].sum(0) > 0).all()
    assert len(sub) <= 5 + 6
    assert np.array_equal(sub, label_fraction_subset(y, 0.01, seed=3))
    assert len(label_fraction_subset(y, 1.0)) == 500


def test_linear_probe_learns_a_separable_task_and_selects_on_validation():
    from esi.evaluate.probe import train_linear_probe
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


def test_rank_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=(120, 5))
    s = np.round(rng.normal(size=(120, 5)) + y, 1)          # rounding creates ties
    expected = [roc_auc_score(y[:, c], s[:, c]) for c in range(5)]
    assert per_class_auroc(y, s) == pytest.approx(expected, abs=1e-12)
