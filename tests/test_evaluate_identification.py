"""Patient identification on the real PTB-XL table: who has two or more records, gallery = earliest record,
and the ranking logic (a perfect identity embedding scores 1.0; random embeddings stay in [0, 1])."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esi.data.ptbxl import load_database
from esi.evaluate.identification import bootstrap_accuracy, identification_rows, identification_split, identify


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
    assert [r["metric"] for r in rows] == ["top1_accuracy", "top5_accuracy"]
    for row in rows:
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert row["n_test"] == len(split.probe_ids) and "smoke-sized" in row["notes"]
    assert bootstrap_accuracy(np.ones(10)) == (1.0, 1.0)
