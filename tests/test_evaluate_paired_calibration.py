"""The paired test keeps its stated error rate: simulated test sets where the truth is known.

Under no true difference the two models' scores of a record are exchangeable (both are the same noisy function of
the labels); a p-value < 0.05 must then happen in about 5 % of test sets, also when some classes have only 2-5
test positives (where a bootstrap over records gave 0.23 and 0.12). A real difference must still be found.
"""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from esi.evaluate import paired_test
from esi.evaluate.metrics import _auroc_swap_weights, _average_precision_swaps, holm

N_RECORDS = 400
N_TEST_SETS = 300


def _labels(rng, positives: list[int | float]) -> np.ndarray:
    """(N_RECORDS, classes) labels: an int is that many positives exactly, a float a prevalence."""
    columns = []
    for p in positives:
        k = p if isinstance(p, int) else rng.binomial(N_RECORDS, p)
        column = np.zeros(N_RECORDS, dtype=bool)
        column[rng.choice(N_RECORDS, k, replace=False)] = True
        columns.append(column)
    return np.stack(columns, 1)


def _two_models(rng, y: np.ndarray, shift_a: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two models' scores: 1 SD separation on positives plus independent noise; model a's positives shifted by
    `shift_a` SD more (0: exchangeable)."""
    a = rng.normal(size=y.shape) + (1.0 + shift_a) * y
    b = rng.normal(size=y.shape) + 1.0 * y
    return a, b


SETTINGS = {
    "four common classes": [0.3, 0.2, 0.4, 0.25],
    "one of four classes with 2 positives": [0.3, 0.2, 0.4, 2],
    "twelve classes, three with 2/3/5 positives": [0.3, 0.2, 0.4, 0.25, 0.1, 0.15, 0.35, 0.05, 0.2, 2, 3, 5],
}


def _rejection_rate(setting: list, metric: str, n_permutations: int, shift_a: float = 0.0, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    rejected = 0
    for t in range(N_TEST_SETS):
        y = _labels(rng, setting)
        a, b = _two_models(rng, y, shift_a)
        rejected += paired_test(y, a, b, metric=metric, n_permutations=n_permutations, seed=t).p_value < 0.05
    return rejected / N_TEST_SETS


@pytest.mark.parametrize("setting", SETTINGS)
def test_paired_auroc_test_keeps_its_error_rate_with_rare_classes(setting):
    rate = _rejection_rate(SETTINGS[setting], "macro_auroc", n_permutations=199)
    assert 0.02 <= rate <= 0.08, f"{setting}: P(p < 0.05) = {rate:.3f} under no true difference"


def test_paired_auprc_test_keeps_its_error_rate_with_rare_classes():
    rate = _rejection_rate(SETTINGS["one of four classes with 2 positives"], "macro_auprc", n_permutations=99)
    assert 0.02 <= rate <= 0.08, f"P(p < 0.05) = {rate:.3f} under no true difference"


def test_paired_test_finds_a_real_difference_in_most_test_sets():
    power = _rejection_rate(SETTINGS["four common classes"], "macro_auroc", n_permutations=199, shift_a=0.35, seed=1)
    assert power >= 0.75, f"a 0.35 SD shift on positives found in only {power:.0%} of test sets"


def test_paired_accuracy_test_keeps_its_error_rate_and_finds_a_difference():
    rng = np.random.default_rng(2)
    null = power = 0
    for t in range(N_TEST_SETS):
        p_hit = rng.uniform(0.3, 0.9, N_RECORDS)                     # probes differ in difficulty, models do not
        a, b = rng.random(N_RECORDS) < p_hit, rng.random(N_RECORDS) < p_hit
        null += paired_test(None, a, b, metric="accuracy", n_permutations=199, seed=t).p_value < 0.05
        better = rng.random(N_RECORDS) < np.minimum(1.0, p_hit + 0.12)
        power += paired_test(None, better, b, metric="accuracy", n_permutations=199, seed=t).p_value < 0.05
    assert 0.02 <= null / N_TEST_SETS <= 0.08
    assert power / N_TEST_SETS >= 0.75


def _swapped(keep: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.where(keep[:, None], a, b), np.where(keep[:, None], b, a)


def test_every_swap_is_scored_as_sklearn_scores_the_swapped_arrays_ties_included():
    rng = np.random.default_rng(3)
    y = _labels(rng, [0.3, 2, 0.5, 5])
    a = np.round(rng.normal(size=y.shape) + y, 1)                    # rounded: many ties, within and across models
    b = np.round(rng.normal(size=y.shape) + 0.5 * y, 1)
    keep = rng.random((5, len(y))) < 0.5
    g = _auroc_swap_weights(y, a, b)
    ap_a, ap_b = _average_precision_swaps(y, a, b, keep)
    for k in range(len(keep)):
        sa, sb = _swapped(keep[k], a, b)
        auroc = np.mean([roc_auc_score(y[:, j], sa[:, j]) - roc_auc_score(y[:, j], sb[:, j]) for j in range(4)])
        assert np.where(keep[k], 1.0, -1.0) @ g == pytest.approx(auroc, abs=1e-12)
        assert ap_a[k] == pytest.approx(np.mean([average_precision_score(y[:, j], sa[:, j]) for j in range(4)]))
        assert ap_b[k] == pytest.approx(np.mean([average_precision_score(y[:, j], sb[:, j]) for j in range(4)]))


def test_the_p_value_counts_the_swaps_at_least_as_extreme_as_the_observed_difference():
    rng = np.random.default_rng(4)
    y = _labels(rng, [0.3, 0.2, 3])
    a, b = _two_models(rng, y, shift_a=0.2)
    res = paired_test(y, a, b, n_permutations=60, seed=7)
    keep = np.random.default_rng(7).random((60, len(y))) >= 0.5    # the swaps paired_test draws with seed 7
    ra, rb = (np.argsort(np.argsort(s, 0), 0) for s in (a, b))       # ranks: the scale the models are swapped on
    d = []
    for k in keep:
        sa, sb = _swapped(k, ra, rb)
        d.append(np.mean([roc_auc_score(y[:, j], sa[:, j]) - roc_auc_score(y[:, j], sb[:, j]) for j in range(3)]))
    observed = np.mean([roc_auc_score(y[:, j], a[:, j]) - roc_auc_score(y[:, j], b[:, j]) for j in range(3)])
    assert res.delta == pytest.approx(observed, abs=1e-12)
    assert res.p_value == pytest.approx((1 + np.sum(np.abs(d) >= abs(observed) - 1e-12)) / 61)


def test_a_monotone_rescaling_of_one_model_changes_neither_the_difference_nor_the_p_value():
    rng = np.random.default_rng(5)
    y = _labels(rng, [0.3, 0.2, 4])
    a, b = _two_models(rng, y, shift_a=0.2)
    for metric in ("macro_auroc", "macro_auprc"):
        plain = paired_test(y, a, b, metric=metric, n_permutations=200)
        confident = paired_test(y, 1 / (1 + np.exp(-8 * a)), b, metric=metric, n_permutations=200)
        assert (confident.delta, confident.p_value) == pytest.approx((plain.delta, plain.p_value))
    same = paired_test(y, a, a.copy(), n_permutations=200)
    assert same.delta == 0.0 and same.p_value == 1.0


def test_the_supported_macro_leaves_out_classes_with_few_positives():
    rng = np.random.default_rng(6)
    y = _labels(rng, [0.3, 0.2, 3])
    a, b = _two_models(rng, y)
    full = paired_test(y, a, b, metric="macro_auroc_supported", n_permutations=100, seed=1)
    two = paired_test(y[:, :2], a[:, :2], b[:, :2], metric="macro_auroc", n_permutations=100, seed=1)
    assert (full.delta, full.p_value) == pytest.approx((two.delta, two.p_value))
    with pytest.raises(ValueError, match=">= 10 positives"):
        paired_test(y[:, 2:], a[:, 2:], b[:, 2:], metric="macro_auroc_supported")
    with pytest.raises(ValueError, match="unknown metric"):
        paired_test(y, a, b, metric="auroc")


def test_holm_adjusts_a_family_of_p_values_and_leaves_missing_ones_out():
    adjusted = holm([0.01, np.nan, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    assert np.isnan(adjusted[1])
    assert adjusted[[0, 3, 2, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert np.isnan(holm([np.nan])).all() and holm([0.3]) == pytest.approx([0.3])
