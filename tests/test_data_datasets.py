"""ECGDataset and its transforms on a store of real PTB-XL records (100 Hz, 10 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from esi.data.convert import convert
from esi.data.datasets import ECGDataset, collate
from esi.data.store import ECGStore
from esi.data.transforms import Augment, Scaler, fit_scaler, normalize, record_window_starts, window_starts
from oracles import sliding_windows


@pytest.fixture(scope="module")
def store(ptbxl_dir, tmp_path_factory) -> ECGStore:
    out = tmp_path_factory.mktemp("store")
    convert("ptbxl", ptbxl_dir, out, fs=100, workers=1, limit=40, progress=False)
    return ECGStore(out)


@pytest.fixture(scope="module")
def train_rows(store) -> np.ndarray:
    return np.flatnonzero(store.index.strat_fold.to_numpy() <= 8)


def test_items_are_dicts_of_the_record_in_millivolts(store):
    item = ECGDataset(store)[5]
    assert set(item) == {"ecg", "index"}
    assert item["ecg"].dtype == torch.float32 and item["ecg"].shape == (12, 1000)
    assert item["index"] == 5
    np.testing.assert_array_equal(item["ecg"].numpy(), store[5])


def test_a_subset_of_store_rows_is_served_in_order(store):
    dataset = ECGDataset(store, indices=[30, 4, 17])
    assert len(dataset) == 3
    assert [dataset[k]["index"] for k in range(3)] == [30, 4, 17]
    np.testing.assert_array_equal(dataset[1]["ecg"].numpy(), store[4])


def test_global_normalisation_gives_each_record_mean_0_std_1(store):
    x = ECGDataset(store, normalize="global").fetch(np.arange(len(store)))["ecg"].numpy()
    np.testing.assert_allclose(x.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2)), 1, atol=1e-4)


def test_per_lead_normalisation_gives_each_lead_mean_0_std_1(store):
    x = ECGDataset(store, normalize="per_lead").fetch(np.arange(10))["ecg"].numpy()
    np.testing.assert_allclose(x.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=-1), 1, atol=1e-4)


def test_scaler_fitted_on_the_train_split_standardises_it(store, train_rows):
    scaler = fit_scaler(store, train_rows, progress=False)
    train = store.read(train_rows)
    np.testing.assert_allclose(scaler.mean, train.mean(axis=(0, 2)), atol=1e-6)
    np.testing.assert_allclose(scaler.std, train.std(axis=(0, 2)), rtol=1e-4)
    x = ECGDataset(store, train_rows, normalize="scaler", scaler=scaler).fetch(np.arange(len(train_rows)))["ecg"]
    np.testing.assert_allclose(x.numpy().mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x.numpy().std(axis=(0, 2)), 1, atol=1e-3)


def test_single_scaler_over_all_leads_as_the_ptbxl_benchmark(store, train_rows):
    scaler = fit_scaler(store, train_rows, per_lead=False, progress=False)
    train = store.read(train_rows)
    np.testing.assert_allclose(scaler.mean, np.full(12, train.mean()), atol=1e-6)
    np.testing.assert_allclose(scaler.std, np.full(12, train.std()), rtol=1e-4)


def test_scaler_round_trips_through_json(store, train_rows, tmp_path):
    scaler = fit_scaler(store, train_rows, progress=False)
    scaler.save(tmp_path / "scaler.json")
    loaded = Scaler.load(tmp_path / "scaler.json")
    np.testing.assert_array_equal(loaded.mean, scaler.mean)
    assert loaded.leads == scaler.leads


def test_normalisation_ignores_zero_padding_and_keeps_it_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(2, 12, 500)).astype(np.float32)
    x[0, :, 300:] = 0  # record 0 has 300 real samples, then padding
    y = normalize(x, "global", n_valid=[300, 500])
    np.testing.assert_allclose(y[0, :, :300].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(y[0, :, :300].std(), 1, atol=1e-4)
    assert not y[0, :, 300:].any()


def test_a_nan_makes_its_whole_record_or_lead_nan_instead_of_zeros():
    # Zeros would train silently on a blank record; NaN everywhere lets the engine's check name the record.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 200)).astype(np.float32)
    x[0, 3, 50] = np.nan
    whole = normalize(x, "global")
    assert np.isnan(whole[0]).all() and np.isfinite(whole[1]).all()
    per_lead = normalize(x, "per_lead")
    assert np.isnan(per_lead[0, 3]).all()
    assert np.isfinite(np.delete(per_lead[0], 3, axis=0)).all() and np.isfinite(per_lead[1]).all()
    # Flat is not broken: a flat record still becomes zeros.
    x[1] = 0.5
    assert not normalize(x, "global")[1].any()


def test_random_crops_have_the_length_asked_and_are_slices_of_the_record(store):
    full = ECGDataset(store, normalize="global")
    cropped = ECGDataset(store, normalize="global", crop=250, seed=1)
    batch = cropped.fetch(np.arange(8))["ecg"].numpy()
    assert batch.shape == (8, 12, 250)
    for k in range(8):
        record = full[k]["ecg"].numpy()
        windows = sliding_windows(record, 250, 1)  # every possible crop
        assert any(np.array_equal(w, batch[k]) for w in windows)


def test_random_crops_repeat_with_the_seed_and_change_with_the_epoch(store):
    a = ECGDataset(store, crop=250, seed=3).fetch(np.arange(16))["ecg"]
    b = ECGDataset(store, crop=250, seed=3).fetch(np.arange(16))["ecg"]
    c = ECGDataset(store, crop=250, seed=3)
    c.set_epoch(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c.fetch(np.arange(16))["ecg"])


def test_center_crop_is_the_middle_of_the_record(store):
    item = ECGDataset(store, crop=400, crop_mode="center")[2]["ecg"].numpy()
    np.testing.assert_array_equal(item, store[2][:, 300:700])


def test_sliding_windows_count_and_positions(store):
    dataset = ECGDataset(store, normalize="global", windows=(250, 125))
    item = dataset[4]["ecg"].numpy()
    full = ECGDataset(store, normalize="global")[4]["ecg"].numpy()
    assert item.shape == (7, 12, 250)  # the PTB-XL protocol: 2.5 s windows every 1.25 s over 10 s
    for w, start in enumerate(window_starts(1000, 250, 125)):
        np.testing.assert_array_equal(item[w], full[:, start:start + 250])


def test_sliding_windows_function_on_numpy_and_torch():
    x = np.arange(2 * 3 * 10, dtype=np.float32).reshape(2, 3, 10)
    assert list(window_starts(10, 4, 3)) == [0, 3, 6]
    windows = sliding_windows(x, 4, 3)
    assert windows.shape == (2, 3, 3, 4)  # (records, windows, leads, length)
    np.testing.assert_array_equal(windows[1, 2], x[1, :, 6:10])
    np.testing.assert_array_equal(sliding_windows(torch.from_numpy(x), 4, 3).numpy(), windows)


def test_lead_subset_returns_those_leads_in_that_order(store):
    item = ECGDataset(store, leads=("V1", "II"))[3]["ecg"].numpy()
    assert item.shape == (2, 1000)
    np.testing.assert_array_equal(item, store[3][[6, 1]])


def test_augmentation_is_off_by_default_and_seeded_when_on(store):
    rows = np.arange(8)
    plain = ECGDataset(store).fetch(rows)["ecg"]
    first = ECGDataset(store, augment=True, seed=5).fetch(rows)["ecg"]
    again = ECGDataset(store, augment=True, seed=5).fetch(rows)["ecg"]
    other = ECGDataset(store, augment=True, seed=6).fetch(rows)["ecg"]
    np.testing.assert_array_equal(plain.numpy(), store.read(rows))
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, plain)


def test_augmentation_only_scales_when_asked(store):
    x = ECGDataset(store, augment=Augment(scale=(2.0, 2.0), noise_std=0, wander_amplitude=0))[0]["ecg"].numpy()
    np.testing.assert_allclose(x, 2 * store[0], rtol=1e-6)


def test_targets_come_with_their_records(store):
    targets = np.eye(len(store), 3, dtype=np.uint8)  # record k has class k (k < 3)
    dataset = ECGDataset(store, indices=[2, 0, 9], targets=targets)
    assert dataset[0]["y"].tolist() == [0, 0, 1]
    batch = dataset.fetch([0, 1, 2])
    assert batch["y"].dtype == torch.float32 and batch["y"].tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]


def test_bad_options_are_clear_errors(store):
    with pytest.raises(ValueError, match="normalize must be one of"):
        ECGDataset(store, normalize="minmax")
    with pytest.raises(ValueError, match="needs scaler"):
        ECGDataset(store, normalize="scaler")
    with pytest.raises(ValueError, match="not both"):
        ECGDataset(store, crop=250, windows=(250, 125))
    with pytest.raises(ValueError, match="targets must be aligned"):
        ECGDataset(store, targets=np.zeros((3, 2)))


def test_dataloader_with_two_workers_serves_every_record_once(store):
    dataset = ECGDataset(store, normalize="per_lead")
    seen = []
    for batch in dataset.loader(batch_size=8, shuffle=True, num_workers=2):
        assert batch["ecg"].shape[1:] == (12, 1000)
        np.testing.assert_array_equal(batch["ecg"].numpy(), dataset.fetch(batch["index"].numpy())["ecg"].numpy())
        seen.extend(batch["index"].tolist())
    assert sorted(seen) == list(range(len(store)))


class FetchInWorker(torch.utils.data.Dataset):
    """Item 0: (whether the batch of records 0-1 is in shared memory as the worker's fetch returns it, the batch)."""

    def __init__(self, dataset: ECGDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i):
        ecg = self.dataset.fetch([0, 1])["ecg"]
        return ecg.is_shared(), ecg


def test_a_worker_fills_its_batch_in_shared_memory(store):
    """A worker's batch is made in shared memory, so that handing it to the main process copies nothing; the
    main process's own batches are ordinary memory."""
    dataset = ECGDataset(store, normalize="global")
    shared_in_worker, ecg = next(iter(DataLoader(FetchInWorker(dataset), batch_size=None, num_workers=1)))
    assert shared_in_worker is True
    here = dataset.fetch([0, 1])["ecg"]
    assert not here.is_shared() and torch.equal(ecg, here)


def test_plain_dataloader_uses_the_batched_fetch(store):
    dataset = ECGDataset(store, crop=250, crop_mode="start")
    fast = next(iter(DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=collate)))
    default = next(iter(DataLoader(dataset, batch_size=8)))  # torch's default_collate re-stacks the items
    assert fast["ecg"].shape == (8, 12, 250)
    assert torch.equal(fast["ecg"], default["ecg"]) and torch.equal(fast["index"], default["index"])


def test_dataset_pickles_without_its_memory_maps(store):
    import pickle

    dataset = ECGDataset(store, normalize="global")
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset.store)) < 1000
    assert torch.equal(clone[7]["ecg"], dataset[7]["ecg"])


def test_fetch_threads_give_the_same_batch_as_one_thread(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=500, workers=1, limit=40, progress=False)  # 3 blocks of 500 Hz records
    rows = np.arange(39, -1, -1)
    one = ECGDataset(tmp_path, normalize="global", crop=1000, seed=2, threads=1).fetch(rows)
    two = ECGDataset(tmp_path, normalize="global", crop=1000, seed=2, threads=2).fetch(rows)
    assert torch.equal(one["ecg"], two["ecg"]) and torch.equal(one["index"], two["index"])


def test_record_windows_stay_inside_each_records_signal():
    starts, counts = record_window_starts([1000, 500, 600, 100, 874, 875], 250, 125, n_windows=7)
    assert counts.tolist() == [7, 3, 3, 1, 5, 6]
    assert starts[0].tolist() == window_starts(1000, 250, 125).tolist()
    assert starts[1].tolist() == [0, 125, 250, 250, 250, 250, 250]        # its last window repeated
    assert starts[3].tolist() == [0] * 7                                    # shorter than a window: one at 0
    assert (starts[4][:5] + 250 <= 874).all() and starts[5][5] + 250 == 875
