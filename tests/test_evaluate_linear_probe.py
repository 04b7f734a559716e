"""Protocol B end to end on the real PTB-XL records: a random-init ConvNeXt V2 atto at 100 Hz, linear probes on
superdiagnostic with 1 %, 10 % and 100 % of folds 1-8 (a few epochs), cached features.

Converted stores and features live in a session-wide folder shared by the tests/test_evaluate_*.py files (the
same encoder gives the same features), so the 500 records are encoded once per test session."""

from __future__ import annotations

import numpy as np
import pytest

from esi.data.ptbxl import load_task
from esi.evaluate.encoders import EncoderSpec, load_encoder
from esi.evaluate.features import RESULT_COLUMNS, Workspace
from esi.evaluate.linear_probe import linear_probe_results, probe_task, run_linear_probe
from esi.evaluate.probe import label_fraction_subset

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
    table = run_linear_probe([SPEC], ptbxl_dir, run_dir=run_dir, workers=1, progress=False, **shared, **SETTINGS)
    return run_dir, table


def test_results_are_a_tidy_table_of_aurocs_with_ordered_intervals(first_run):
    _, table = first_run
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert len(table) == len(FRACTIONS)
    assert set(table["protocol"]) == {"linear_probe"} and set(table["metric"]) == {"macro_auroc"}
    assert sorted(table["label_fraction"]) == FRACTIONS
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
    again = linear_probe_results([SPEC], workspace, **SETTINGS).table
    assert (workspace.cache.hits, workspace.cache.misses) == (1, 0)
    assert cached[0].stat().st_mtime_ns == written
    np.testing.assert_allclose(again["value"], table["value"])


def test_each_fraction_trains_on_a_seeded_subset_of_folds_1_to_8_with_every_class(first_run, ptbxl_dir, shared):
    run_dir, table = first_run
    task = load_task(ptbxl_dir, "superdiagnostic")
    train = task.split("train")
    features = Workspace(run_dir, ptbxl_dir, progress=False, **shared).features(load_encoder(SPEC))  # cached
    for fraction in FRACTIONS:
        out = probe_task(features, task, fraction, seed=0, epochs=1, n_boot=0)
        expected = label_fraction_subset(train.y, fraction, seed=0)
        np.testing.assert_array_equal(out["train_ids"], train.ecg_ids[expected])
        assert (task.y[np.isin(task.ecg_ids, out["train_ids"])].sum(0) > 0).all()  # every class has a positive
        assert table.loc[np.isclose(table["label_fraction"], fraction), "n_train"].item() == len(expected)
    assert table.sort_values("label_fraction")["n_train"].is_monotonic_increasing
    assert table.loc[table["label_fraction"] == 1.0, "n_train"].item() == len(train)
