"""The results contract every protocol shares: both macro metrics with intervals, errors that name the encoder,
task and class of a non-finite score, notes naming unscorable classes, and p-values against the random-init twin."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from esi.evaluate.encoders import twin_labels
from esi.evaluate.results import PTBXL_SPLIT as SPLIT
from esi.evaluate.results import RESULT_COLUMNS, attach_p_values, classification_rows, fold_split, result_row
from esi.evaluate.identification import IdentificationSplit, attach_identification_p_values, identification_rows
from esi.evaluate.identification import IdentificationOutcome


def labels_and_scores(n: int = 300, classes: int = 4, signal: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, classes)) < 0.3).astype(np.uint8)
    return y, y * signal + rng.normal(size=y.shape)


def test_a_result_row_has_every_column_of_the_contract():
    row = result_row("rhythm", "linear_probe", "ESI", "macro_auroc", 0.9, 0.85, 0.93, recipe="esi_probe",
                     selection="fold9_best", subset_draw="merl", ci_level=0.9, label_fraction=0.1, n_test=2198)
    assert tuple(row) == RESULT_COLUMNS
    assert np.isnan(row["p_value"]) and row["notes"] == ""  # no twin yet; a full-size test set has no smoke note


def test_classification_rows_report_auroc_and_auprc_on_the_same_resamples_with_per_class_values():
    y, scores = labels_and_scores()
    out = classification_rows("form", "benchmark_supervised", "xresnet1d101", list("ABCD"), y, scores,
                              split=SPLIT, recipe="benchmark", selection="final_epoch", n_boot=50, ci_level=0.9)
    assert [r["metric"] for r in out["rows"]] == ["macro_auroc", "macro_auprc", "macro_auroc_supported",
                                                  "macro_auprc_supported"]
    from sklearn.metrics import average_precision_score, roc_auc_score

    assert out["rows"][0]["value"] == pytest.approx(roc_auc_score(y, scores, average="macro"))
    assert out["rows"][1]["value"] == pytest.approx(average_precision_score(y, scores, average="macro"))
    assert all(r["ci_level"] == 0.9 and r["recipe"] == "benchmark" and r["selection"] == "final_epoch"
               for r in out["rows"])
    assert [(r["class"], round(r["auroc"], 6)) for r in out["per_class"]] == [
        (c, round(roc_auc_score(y[:, j], scores[:, j]), 6)) for j, c in enumerate("ABCD")]
    assert all(0 <= r["auprc"] <= 1 for r in out["per_class"])


def test_every_macro_row_counts_its_rare_classes_and_a_second_macro_leaves_them_out():
    from sklearn.metrics import roc_auc_score

    y, scores = labels_and_scores()
    y[:, 2] = 0
    y[[5, 9, 11], 2] = 1                                         # 3 test positives: a rare class
    out = classification_rows("form", "linear_probe", "ESI", list("ABCD"), y, scores, split=SPLIT,
                              recipe="esi_probe", selection="fold9_best", n_boot=20)
    rows = {r["metric"]: r for r in out["rows"]}
    assert rows["macro_auroc"]["n_rare_classes"] == 1 and rows["macro_auroc_supported"]["n_rare_classes"] == 0
    assert rows["macro_auroc"]["value"] == pytest.approx(roc_auc_score(y, scores, average="macro"))
    assert rows["macro_auroc_supported"]["value"] == pytest.approx(
        roc_auc_score(y[:, [0, 1, 3]], scores[:, [0, 1, 3]], average="macro"))
    assert "over the 3 class(es) with >= 10 test positives (1 rare class(es) left out)" in \
        rows["macro_auprc_supported"]["notes"]
    assert rows["macro_auroc_supported"]["ci_low"] < rows["macro_auroc_supported"]["value"]
    few = classification_rows("form", "linear_probe", "ESI", list("AB"), y[:40, 2:4] * 0 + np.eye(40, 2, dtype=int),
                              scores[:40, 2:4], split=SPLIT, recipe="esi_probe", selection="fold9_best", n_boot=0)
    none = {r["metric"]: r for r in few["rows"]}["macro_auroc_supported"]
    assert np.isnan(none["value"]) and "no class has >= 10 test positives" in none["notes"]


def test_the_holm_column_adjusts_over_every_p_value_of_one_table():
    from esi.evaluate.results import ProtocolResults

    rows = [result_row("rhythm", "linear_probe", e, "macro_auroc", 0.9, p_value=p, n_test=2198)
            for e, p in (("a", 0.01), ("b", 0.04), ("c", float("nan")), ("d", 0.03))]
    first = ProtocolResults.from_rows(rows[:2], [])
    assert first.table["p_value_holm"].tolist() == pytest.approx([0.02, 0.04])
    both = ProtocolResults.concat([first, ProtocolResults.from_rows(rows[2:], [])])
    assert both.table["p_value_holm"].iloc[[0, 1, 3]].tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(both.table["p_value_holm"].iloc[2])


def test_a_non_finite_score_is_an_error_naming_encoder_task_and_class():
    y, scores = labels_and_scores()
    scores[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"(?s)ESI / rhythm / linear_probe.*'C'"):
        classification_rows("rhythm", "linear_probe", "ESI", list("ABCD"), y, scores, split=SPLIT, recipe="esi_probe",
                            selection="fold9_best")
    scores[7, 2] = np.inf
    with pytest.raises(ValueError, match="'C'"):
        classification_rows("rhythm", "linear_probe", "ESI", list("ABCD"), y, scores, split=SPLIT, recipe="esi_probe",
                            selection="fold9_best")


def test_classes_without_both_labels_on_the_test_set_are_named_in_the_notes_and_left_out_of_the_mean():
    y, scores = labels_and_scores()
    y[:, 1] = 0                     # no positive
    y[:, 3] = 1                     # no negative
    out = classification_rows("form", "linear_probe", "ESI", ["NDT", "PVC", "LVOLT", "HVOLT"], y, scores,
                              split=SPLIT, recipe="esi_probe", selection="fold9_best", n_boot=20)
    assert "2 of 4 class(es) not scorable" in out["rows"][0]["notes"] and "PVC, HVOLT" in out["rows"][0]["notes"]
    from sklearn.metrics import roc_auc_score

    assert out["rows"][0]["value"] == pytest.approx(roc_auc_score(y[:, [0, 2]], scores[:, [0, 2]], average="macro"))


def test_twins_pair_a_pretrained_encoder_with_the_random_encoder_of_its_architecture_rate_and_normalisation():
    enc = lambda label, pretrained, arch="convnextv2_atto", fs=500.0: SimpleNamespace(  # noqa: E731
        label=label, pretrained=pretrained, architecture=arch, fs=fs, normalize="global")
    encoders = [enc("ESI", True), enc("random init (convnextv2_atto)", False), enc("ESI 100 Hz", True, fs=100.0),
                enc("supervised", True, arch="xresnet1d101")]
    assert twin_labels(encoders) == {"ESI": "random init (convnextv2_atto)"}


def test_p_values_compare_each_pretrained_model_with_its_twin_on_the_same_records_only():
    y, good = labels_and_scores(signal=2.0, seed=1)
    _, noise = labels_and_scores(signal=0.0, seed=2)
    outputs = []
    for encoder, scores in (("ESI", good), ("random", noise)):
        for key in ("rhythm", "form"):
            out = classification_rows(key, "linear_probe", encoder, list("ABCD"), y, scores, split=SPLIT,
                                      recipe="esi_probe", selection="fold9_best", n_boot=10)
            outputs.append({**out, "encoder": encoder, "key": key, "y_true": y, "y_score": scores})
    attach_p_values(outputs, {"ESI": "random"}, n_resamples=200)
    for out in outputs:
        p = [r["p_value"] for r in out["rows"]]
        if out["encoder"] == "ESI":
            assert all(value < 0.01 for value in p)                  # far better than noise on 300 records
            assert all("p vs random: paired permutation test" in r["notes"] for r in out["rows"])
        else:
            assert np.isnan(p).all()
    # Identical scores: no evidence of a difference.
    same = [{**outputs[0], "rows": [dict(r) for r in outputs[0]["rows"]]},
            {**outputs[0], "encoder": "random", "rows": [dict(r) for r in outputs[0]["rows"]]}]
    attach_p_values(same, {"ESI": "random"}, n_resamples=200)
    assert all(r["p_value"] > 0.5 for r in same[0]["rows"])
    # A twin scored on other records cannot be paired.
    other = [outputs[0], {**outputs[2], "y_true": y[::-1]}]
    with pytest.raises(ValueError, match="different test records"):
        attach_p_values(other, {"ESI": "random"})


def test_identification_p_values_pair_the_hits_of_the_same_probes():
    n = 200
    split = IdentificationSplit(gallery_ids=np.arange(n), gallery_patients=np.arange(n), probe_ids=np.arange(n) + n,
                                probe_patients=np.arange(n), probe_gap_hours=np.where(np.arange(n) < 50, 1.0, 48.0))
    good = np.where(np.arange(n) % 4 == 0, 3, 0)      # 75 % found first
    bad = np.where(np.arange(n) % 4 == 0, 0, 4)       # 25 % first; both find every probe within 5 ranks
    rows = identification_rows("ESI", IdentificationOutcome(good, np.zeros(20)), split, n_boot=10)
    attach_identification_p_values(rows, good, bad, split, "random init", n_resamples=200)
    p = {r["metric"]: r["p_value"] for r in rows}
    assert p["top1_accuracy"] < 0.01 and p["top1_accuracy_beyond_24h"] < 0.01
    assert p["top5_accuracy"] > 0.5
    assert {r["metric"] for r in rows} == {"top1_accuracy", "top5_accuracy", "top1_accuracy_beyond_24h",
                                           "top5_accuracy_beyond_24h"}


def test_the_results_pivot_shows_each_recipe_on_its_own_row_and_the_p_value_beside_the_interval():
    import pandas as pd

    from esi.evaluate.results import results_pivot

    rows = [result_row("superdiagnostic", "benchmark_finetune", encoder, "macro_auroc", value, value - 0.02,
                       value + 0.02, recipe=recipe, ci_level=0.9, p_value=p, n_test=2198)
            for encoder, recipe, value, p in (("ESI", "benchmark", 0.91, 0.004), ("random init", "benchmark", 0.88,
                                               np.nan), ("ESI", "esi", 0.92, 0.03))]
    pivot = results_pivot(pd.DataFrame(rows, columns=list(RESULT_COLUMNS)))
    assert pivot.loc[("benchmark_finetune", "benchmark", "superdiagnostic", "", "macro_auroc"), "ESI"] == \
        "0.910 [0.890, 0.930] p=0.004"
    assert pivot.loc[("benchmark_finetune", "benchmark", "superdiagnostic", "", "macro_auroc"), "random init"] == \
        "0.880 [0.860, 0.900]"
    assert pivot.loc[("benchmark_finetune", "esi", "superdiagnostic", "", "macro_auroc"), "random init"] == ""


def test_every_row_names_its_split():
    assert SPLIT == "ptbxl_folds_1-8/9/10"
    assert fold_split([10]) == "ptbxl_fold_10" and fold_split([9, 10]) == "ptbxl_folds_9,10"
    assert fold_split(None) == fold_split([]) == "ptbxl_all_folds"
    y, scores = labels_and_scores()
    out = classification_rows("form", "linear_probe", "ESI", list("ABCD"), y, scores, split=SPLIT,
                              recipe="esi_probe", selection="fold9_best", n_boot=10)
    assert {r["split"] for r in out["rows"]} == {SPLIT}


def test_a_model_with_constant_scores_is_said_not_to_have_learned_in_its_notes_and_the_pivot():
    import pandas as pd

    from esi.evaluate.results import CONSTANT_SCORES, results_pivot

    y, scores = labels_and_scores()
    constant = np.full_like(scores, 0.3)
    out = classification_rows("superdiagnostic", "benchmark_supervised", "xresnet1d101", list("ABCD"), y, constant,
                              split=SPLIT, recipe="benchmark", selection="last_epoch", n_boot=10)
    auroc = next(r for r in out["rows"] if r["metric"] == "macro_auroc")
    assert (auroc["value"], auroc["ci_low"], auroc["ci_high"]) == (0.5, 0.5, 0.5)
    assert CONSTANT_SCORES in auroc["notes"]
    cell = results_pivot(pd.DataFrame(out["rows"], columns=list(RESULT_COLUMNS))).iloc[0]["xresnet1d101"]
    assert cell == "0.500 [0.500, 0.500] (constant scores: did not learn)"
    learned = classification_rows("superdiagnostic", "benchmark_supervised", "xresnet1d101", list("ABCD"), y, scores,
                                  split=SPLIT, recipe="benchmark", selection="last_epoch", n_boot=10)
    assert all(CONSTANT_SCORES not in r["notes"] for r in learned["rows"])
