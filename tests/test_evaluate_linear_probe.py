"""Protocol B end to end on the real PTB-XL records: a random-init ConvNeXt V2 atto at 100 Hz, linear probes on
superdiagnostic with 1 %, 10 % and 100 % of folds 1-8 (a few epochs), cached features.

Converted stores and features live in a session-wide folder shared by the tests/test_evaluate_*.py files (the
same encoder gives the same features), so the 500 records are encoded once per test session."""

from __future__ import annotations

import numpy as np
import pytest

from esi.data.ptbxl import load_task
from esi.evaluate.encoders import EncoderSpec, load_encoder
from esi.evaluate.linear_probe import label_fraction_subset, probe_task, run_linear_probe
from esi.evaluate.results import RESULT_COLUMNS
from esi.evaluate.workspace import Workspace

FRACTIONS = [0.01, 0.1, 1.0]
SPEC = EncoderSpec(kind="random", architecture="convnextv2_atto", fs=100, normalize="per_lead", seed=0)
SETTINGS = dict(tasks=["superdiagnostic"], fractions=FRACTIONS, epochs=3, n_boot=20)


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict:
    base = tmp_path_factory.getbasetemp() / "evaluate_shared"
    return {"store_dir": base / "stores", "cache_dir": base / "features"}


@pytest.fixture(scope="module")
def first_run(ptbxl_dir, shared, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("linear_probe")
    workspace = Workspace(run_dir, ptbxl_dir, workers=1, progress=False, **shared)
    table = run_linear_probe([SPEC], workspace, **SETTINGS).table
    return run_dir, table


def test_results_are_a_tidy_table_of_aurocs_and_auprcs_with_ordered_90_percent_intervals(first_run):
    _, table = first_run
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert len(table) == 4 * len(FRACTIONS)
    assert set(table["protocol"]) == {"linear_probe"} and set(table["metric"]) == {"macro_auroc", "macro_auprc", "macro_auroc_supported", "macro_auprc_supported"}
    assert sorted(table["label_fraction"]) == sorted(FRACTIONS * 4)
    assert (table["ci_level"] == 0.90).all()
    assert (table["recipe"] == "esi_probe").all() and (table["selection"] == "fold9_best").all()
    assert (table["split"] == "ptbxl_folds_1-8/9/10").all()
    # The subsets are MERL's draw unless all records are used; a random encoder has no twin, so no p-value.
    assert dict(zip(table["label_fraction"], table["subset_draw"])) == {0.01: "merl", 0.1: "merl", 1.0: "all"}
    assert table["p_value"].isna().all()
    assert table["encoder"].str.startswith("random init").all()
    assert table["value"].between(0, 1).all()
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    # Fold 10 of the 500 shared records holds 64 superdiagnostic records: flagged as a smoke test.
    assert (table["n_test"] == 64).all()
    assert table["notes"].str.contains("smoke-sized").all()
    assert table["notes"].str.contains("selected on fold 9").all()


def test_a_second_run_reads_the_cached_features_instead_of_extracting(first_run, ptbxl_dir, shared):
    run_dir, table = first_run
    cached = sorted(shared["cache_dir"].glob("random_init_convnextv2_atto-pooled-*.npz"))
    assert len(cached) == 1
    written = cached[0].stat().st_mtime_ns

    workspace = Workspace(run_dir, ptbxl_dir, workers=1, progress=False, **shared)
    again = run_linear_probe([SPEC], workspace, **SETTINGS).table
    assert (workspace.cache.hits, workspace.cache.misses) == (1, 0)
    assert cached[0].stat().st_mtime_ns == written
    np.testing.assert_allclose(again["value"], table["value"])


def merl_subset_ids(ptbxl_dir, task, fraction: float) -> np.ndarray:
    """MERL's draw, written as MERL's finetune_dataset.getdataset does it: its training table (the task's records of
    folds 1-8, in ecg_id order) through train_test_split(csv, train_size=ratio, random_state=42)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    database = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    csv = database[database["strat_fold"] <= 8]
    csv = csv[csv["ecg_id"].isin(task.ecg_ids)].sort_values("ecg_id").reset_index(drop=True)
    kept, _ = train_test_split(csv, train_size=fraction, random_state=42)
    return kept["ecg_id"].to_numpy()


def test_each_fraction_trains_on_exactly_the_records_merl_draws(first_run, ptbxl_dir, shared):
    run_dir, table = first_run
    task = load_task(ptbxl_dir, "superdiagnostic")
    train = task.split("train")
    features = Workspace(run_dir, ptbxl_dir, progress=False, **shared).features(load_encoder(SPEC))  # cached
    for fraction in FRACTIONS[:-1]:
        out = probe_task(features, task, fraction, seed=0, epochs=1, n_boot=0)
        np.testing.assert_array_equal(out["train_ids"], merl_subset_ids(ptbxl_dir, task, fraction))
        rows = table[np.isclose(table["label_fraction"], fraction)]
        assert (rows["n_train"] == len(out["train_ids"])).all()
    assert table.sort_values("label_fraction")["n_train"].is_monotonic_increasing
    assert (table.loc[table["label_fraction"] == 1.0, "n_train"] == len(train)).all()


def test_the_every_class_draw_adds_a_positive_of_each_class_the_merl_draw_misses(first_run, ptbxl_dir, shared):
    run_dir, _ = first_run
    task = load_task(ptbxl_dir, "rhythm")
    features = Workspace(run_dir, ptbxl_dir, progress=False, **shared).features(load_encoder(SPEC))  # cached
    merl = probe_task(features, task, 0.01, seed=0, epochs=1, n_boot=0, subset_draw="merl")
    every = probe_task(features, task, 0.01, seed=0, epochs=1, n_boot=0, subset_draw="every_class")
    train = task.split("train")
    has_positive = lambda ids: train.y[np.isin(train.ecg_ids, ids)].sum(0) > 0  # noqa: E731
    trainable = train.y.sum(0) > 0
    assert (has_positive(every["train_ids"]) == trainable).all()
    assert not (has_positive(merl["train_ids"]) == trainable).all()  # 1 % of 353 records misses rhythm classes
    assert "without a positive in the 0.01 subset" in merl["rows"][0]["notes"]
    assert {r["subset_draw"] for r in every["rows"]} == {"every_class"}


def test_label_fraction_subset_is_sklearns_train_test_split_for_the_merl_draw():
    from sklearn.model_selection import train_test_split

    y = np.random.default_rng(0).integers(0, 2, (1000, 5))
    for fraction in (0.01, 0.1, 0.5):
        expected, _ = train_test_split(list(range(len(y))), train_size=fraction, random_state=42)
        np.testing.assert_array_equal(label_fraction_subset(y, fraction, seed=42, draw="merl"), expected)
        np.testing.assert_array_equal(label_fraction_subset(y, fraction), expected)  # merl, seed 42 by default
    np.testing.assert_array_equal(label_fraction_subset(y, 1.0), np.arange(len(y)))
    with pytest.raises(ValueError, match="unknown subset draw"):
        label_fraction_subset(y, 0.1, draw="stratified")


def test_standardise_floors_the_scale_so_a_feature_constant_in_training_cannot_blow_up():
    from esi.evaluate.linear_probe import standardise

    rng = np.random.default_rng(0)
    train = rng.normal(0, 2.0, (20, 8))
    train[:, 3] = 0.5          # constant on the training rows
    train[:, 5] = 0.5 + 1e-9 * rng.normal(size=20)  # numerically constant
    test = rng.normal(0, 2.0, (10, 8))
    xt, xs = standardise(train, test)
    typical = np.median(train.std(0))
    # An honest feature is standardised exactly; the constant ones are divided by 0.1 x the median spread, so a
    # test value within a few typical spreads stays within a few tens, never 1e6 as with std + 1e-6.
    np.testing.assert_allclose(xt[:, 0], (train[:, 0] - train[:, 0].mean()) / train[:, 0].std())
    np.testing.assert_allclose(xs[:, 3], (test[:, 3] - 0.5) / (0.1 * typical))
    assert np.abs(xs).max() < 100
    assert np.isfinite(standardise(np.ones((4, 3)), np.zeros((2, 3)))[1]).all()  # all constant: scale 1
