"""Patient identification on the real PTB-XL table: who has two or more records, gallery = earliest record,
each probe's gap to its gallery record, the ranking logic (a perfect identity embedding scores 1.0; random
embeddings stay in [0, 1]) and the rows that leave out same-session probes (< 24 h)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esi.data.ptbxl import load_database
from esi.evaluate.identification import (IdentificationSplit, bootstrap_accuracy, identification_rows,
                                         identification_split, identify)

ROW_METRICS = ["top1_accuracy", "top5_accuracy", "top1_accuracy_beyond_24h", "top5_accuracy_beyond_24h"]


@pytest.fixture(scope="module")
def database(ptbxl_dir) -> pd.DataFrame:
    return load_database(ptbxl_dir)


@pytest.fixture(scope="module")
def split(database):
    return identification_split(database)


def test_patients_with_two_or_more_records_match_an_independent_count(ptbxl_dir, split):
    raw = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    records_per_patient = raw.groupby("patient_id")["ecg_id"].count()
    repeat = records_per_patient[records_per_patient >= 2]
    assert split.n_patients == len(repeat) > 0
    assert len(split.probe_ids) == int(repeat.sum()) - len(repeat)
    assert set(split.gallery_patients) == set(repeat.index.astype(np.int64))
    assert set(split.probe_patients) <= set(split.gallery_patients)
    assert not set(split.gallery_ids) & set(split.probe_ids)


def test_the_gallery_holds_each_patients_earliest_record(database, split):
    dates = pd.to_datetime(database["recording_date"])
    for ecg_id, patient in zip(split.gallery_ids, split.gallery_patients):
        own = dates[database["patient_id"] == patient]
        assert dates[ecg_id] == own.min()
    for ecg_id, patient in zip(split.probe_ids, split.probe_patients):
        gallery_id = split.gallery_ids[split.gallery_patients == patient][0]
        assert (dates[ecg_id], ecg_id) > (dates[gallery_id], gallery_id)


def test_an_embedding_that_is_a_perfect_identity_identifies_every_probe(split):
    rng = np.random.default_rng(0)
    per_patient = {p: rng.standard_normal(16) for p in split.gallery_patients}
    gallery = np.stack([per_patient[p] for p in split.gallery_patients])
    probes = np.stack([per_patient[p] for p in split.probe_patients])
    outcome = identify(gallery, split.gallery_patients, probes, split.probe_patients, max_rank=5)
    assert outcome.top1 == outcome.top5 == 1.0
    np.testing.assert_array_equal(outcome.cmc, np.ones(5))


def test_random_embeddings_give_accuracies_in_0_1_with_ordered_intervals(split):
    rng = np.random.default_rng(0)
    outcome = identify(rng.standard_normal((split.n_patients, 16)), split.gallery_patients,
                       rng.standard_normal((len(split.probe_ids), 16)), split.probe_patients, max_rank=10)
    assert 0 <= outcome.top1 <= outcome.top5 <= 1
    assert np.all(np.diff(outcome.cmc) >= 0)
    rows = identification_rows("random vectors", outcome, split, n_boot=50)
    assert [r["metric"] for r in rows] == ROW_METRICS
    for row in rows:
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert row["ci_level"] == 0.90 and "smoke-sized" in row["notes"]
    assert [r["n_test"] for r in rows[:2]] == [len(split.probe_ids)] * 2
    assert bootstrap_accuracy(np.ones(10)) == (1.0, 1.0)


def independent_probe_gaps(ptbxl_dir) -> dict[int, float]:
    """ecg_id -> hours since the patient's earliest recording, for every record but each patient's earliest,
    computed from the raw csv."""
    raw = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", parse_dates=["recording_date"])
    raw = raw.sort_values(["patient_id", "recording_date", "ecg_id"])
    earliest = raw.groupby("patient_id")["recording_date"].transform("min")
    hours = (raw["recording_date"] - earliest) / pd.Timedelta(hours=1)
    later = raw["patient_id"].duplicated()
    return dict(zip(raw.loc[later, "ecg_id"].astype(int), hours[later]))


def test_probe_gaps_match_an_independent_computation(ptbxl_dir, split):
    expected = independent_probe_gaps(ptbxl_dir)
    assert sorted(split.probe_ids.tolist()) == sorted(expected)
    np.testing.assert_allclose(split.probe_gap_hours, [expected[int(i)] for i in split.probe_ids])
    assert split.probe_gap_hours.dtype == np.float64 and split.probe_gap_hours.min() >= 0


def test_eight_of_the_34_probes_lie_within_24_hours_of_their_gallery_record(ptbxl_dir, split):
    gaps = np.array(list(independent_probe_gaps(ptbxl_dir).values()))
    # Records 1-500: 7 probes are repeats within the hour, and ecg_id 282 follows 279 by 19.5 h.
    assert (len(gaps), int((gaps < 24).sum()), int((gaps < 1).sum())) == (34, 8, 7)
    apart = split.probes_apart()
    assert apart.dtype == bool and int(apart.sum()) == 34 - 8
    assert 282 in split.probe_ids[~apart]
    np.testing.assert_array_equal(split.probes_apart(0.0), np.ones(34, dtype=bool))


def test_beyond_24h_rows_score_the_probes_24_hours_apart_on_the_whole_gallery(split):
    rng = np.random.default_rng(1)
    outcome = identify(rng.standard_normal((split.n_patients, 8)), split.gallery_patients,
                       rng.standard_normal((len(split.probe_ids), 8)), split.probe_patients)
    rows = identification_rows("random vectors", outcome, split, n_boot=20, level=0.8)
    by_metric = {row["metric"]: row for row in rows}
    assert [r["metric"] for r in rows] == ROW_METRICS
    apart = split.probes_apart()
    for k in (1, 5):
        row = by_metric[f"top{k}_accuracy_beyond_24h"]
        assert row["n_test"] == 26 and row["ci_level"] == 0.8
        assert row["value"] == pytest.approx(np.mean(outcome.ranks[apart] < k))
        assert "8 of 34 probes excluded" in row["notes"] and f"{split.n_patients} patients" in row["notes"]


def test_excluding_the_same_session_probes_removes_exactly_the_easy_ones():
    # Six patients with orthogonal embeddings; near probes copy their own gallery record (rank 0), far probes
    # are: two copies (rank 0), one pointing at another patient (rank 1), one opposite to its own (rank 5).
    basis = np.eye(6)
    gallery_patients = np.arange(100, 106)
    probe_patients = np.array([100, 101, 102, 103, 104, 105, 100])
    probes = np.stack([basis[0], basis[1], basis[2], basis[3], basis[4], basis[0], -basis[0]])
    gaps = np.array([0.0, 2.5, 23.99, 24.0, 48.0, 1000.0, 30.0])
    split = IdentificationSplit(np.arange(1, 7), gallery_patients, np.arange(11, 18), probe_patients, gaps)
    outcome = identify(basis, gallery_patients, probes, probe_patients, max_rank=6)
    np.testing.assert_array_equal(outcome.ranks, [0, 0, 0, 0, 0, 1, 5])

    rows = {r["metric"]: r for r in identification_rows("constructed", outcome, split, n_boot=200)}
    assert rows["top1_accuracy"]["value"] == pytest.approx(5 / 7)
    assert rows["top5_accuracy"]["value"] == pytest.approx(6 / 7)
    assert rows["top1_accuracy_beyond_24h"]["value"] == pytest.approx(2 / 4)
    assert rows["top5_accuracy_beyond_24h"]["value"] == pytest.approx(3 / 4)
    assert rows["top1_accuracy_beyond_24h"]["n_test"] == 4 and rows["top1_accuracy"]["n_test"] == 7
    assert "3 of 7 probes excluded" in rows["top1_accuracy_beyond_24h"]["notes"]


def test_no_probe_24_hours_apart_gives_nan_rows_not_an_error():
    split = IdentificationSplit(np.array([1, 2]), np.array([7, 8]), np.array([3]), np.array([7]), np.array([0.5]))
    outcome = identify(np.eye(2), split.gallery_patients, np.eye(2)[:1], split.probe_patients)
    rows = {r["metric"]: r for r in identification_rows("constructed", outcome, split, n_boot=10)}
    assert rows["top1_accuracy"]["value"] == 1.0
    beyond = rows["top1_accuracy_beyond_24h"]
    assert beyond["n_test"] == 0 and np.isnan(beyond["value"]) and np.isnan(beyond["ci_low"])


def test_bootstrap_level_sets_the_quantiles():
    hits = np.random.default_rng(0).random(200) < 0.6
    narrow = bootstrap_accuracy(hits, n_boot=400, level=0.5, seed=3)
    wide = bootstrap_accuracy(hits, n_boot=400, level=0.99, seed=3)
    assert wide[0] < narrow[0] < hits.mean() < narrow[1] < wide[1]
    # Same draws as a by-hand percentile interval at the default 90 %.
    rng = np.random.default_rng(3)
    means = hits[rng.integers(0, 200, (400, 200))].mean(axis=1)
    assert bootstrap_accuracy(hits, n_boot=400, seed=3) == tuple(np.quantile(means, [0.05, 0.95]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_accuracy(hits, level=95)
