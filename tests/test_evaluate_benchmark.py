"""Protocol A, the PTB-XL benchmark: sliding-window max aggregation, the scaler fitted on training records only,
and the supervised xresnet1d101 trained for one epoch on a small subset of the real records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from esi.data.datasets import ECGDataset
from esi.data.ptbxl import load_task
from esi.data.transforms import sliding_windows
from esi.evaluate.encoders import EncoderSpec, load_encoder
from esi.evaluate.features import ptbxl_store, store_rows
from esi.evaluate.ptbxl_benchmark import (PROTOCOL_SUPERVISED, BenchmarkSettings, aggregate_max, benchmark_task,
                                          predict_records, supervised_spec)


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict:
    base = tmp_path_factory.getbasetemp() / "evaluate_shared"
    return {"store_dir": base / "stores", "cache_dir": base / "features"}


@pytest.fixture(scope="module")
def store(ptbxl_dir, shared):
    return ptbxl_store(ptbxl_dir, 100, shared["store_dir"], workers=1, progress=False)


@pytest.fixture(scope="module")
def small_task(ptbxl_dir):
    """Superdiagnostic on a small subset: 32 training records, 16 of fold 9, 16 of fold 10."""
    task = load_task(ptbxl_dir, "superdiagnostic")
    keep = np.zeros(len(task), dtype=bool)
    for split, n in (("train", 32), ("val", 16), ("test", 16)):
        keep[np.flatnonzero(task.mask(split))[:n]] = True
    return task.subset(keep)


@pytest.fixture(scope="module")
def trained(small_task, store):
    settings = BenchmarkSettings(epochs=1, batch_size=16, n_boot=20, seed=0)
    encoder = load_encoder(supervised_spec("xresnet1d101", fs=100))
    return benchmark_task(encoder, small_task, store, settings, protocol=PROTOCOL_SUPERVISED, progress=False)


def test_ten_seconds_in_2_5_s_windows_every_1_25_s_are_7_windows_and_the_record_score_is_their_max():
    fs = 100
    record = np.zeros((1, 12, 10 * fs), dtype=np.float32)
    record[0, 0, 640:650] = 5.0  # a burst inside windows 4 and 5 (starts 500 and 625)
    windows = sliding_windows(record, int(2.5 * fs), int(1.25 * fs))
    assert windows.shape == (1, 7, 12, 250)
    burst = windows[..., 0, :].max(-1)  # (1, 7): the burst's height as each window sees it
    np.testing.assert_array_equal(burst[0], [0, 0, 0, 0, 5, 5, 0])
    scores = np.array([[[0.1, 0.9], [0.7, 0.2], [0.3, 0.3]]])  # (records, windows, classes)
    np.testing.assert_array_equal(aggregate_max(scores), [[0.7, 0.9]])
    np.testing.assert_array_equal(aggregate_max(torch.from_numpy(scores)).numpy(), [[0.7, 0.9]])


class WindowMean(nn.Module):
    """A stand-in model whose 'logit' per window is the mean of lead I over the window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(-1, keepdim=True)


def test_record_predictions_are_the_max_over_their_windows(store, small_task):
    rows = store_rows(store, small_task.split("test").ecg_ids[:5])
    dataset = ECGDataset(store, rows, windows=(250, 125))
    predicted = predict_records(WindowMean(), dataset, batch_size=2)
    windows = sliding_windows(store.read(rows), 250, 125)                      # (5, 7, 12, 250)
    window_probs = 1 / (1 + np.exp(-windows[:, :, 0].mean(-1)))                # (5, 7) sigmoid of each window
    expected = window_probs.max(axis=1)
    np.testing.assert_allclose(predicted[:, 0], expected, rtol=1e-5)


def test_the_scaler_is_fitted_on_the_training_records_only(trained, store, small_task):
    train_rows = store_rows(store, small_task.split("train").ecg_ids)
    train_x = store.read(train_rows).astype(np.float64)
    scaler = trained["scaler"]
    # One mean and one std over all leads and samples of the training records (the benchmark's StandardScaler).
    np.testing.assert_allclose(scaler.mean, np.full(12, train_x.mean()), rtol=1e-6)
    np.testing.assert_allclose(scaler.std, np.full(12, train_x.std()), rtol=1e-6)
    everything = store.read(store_rows(store, small_task.ecg_ids)).astype(np.float64)
    assert not np.isclose(scaler.mean[0], everything.mean(), rtol=1e-6)


def test_supervised_xresnet1d101_trains_one_epoch_and_scores_the_test_fold(trained, small_task):
    row = trained["row"]
    assert row["protocol"] == PROTOCOL_SUPERVISED and row["encoder"] == "xresnet1d101 (supervised)"
    assert 0 <= row["value"] <= 1 and row["ci_low"] <= row["value"] <= row["ci_high"]
    assert (row["n_train"], row["n_test"]) == (32, 16)
    assert "epoch 1/1" in row["notes"] and "the benchmark trains 50" in row["notes"]
    assert trained["y_score"].shape == (16, len(trained["classes"]))
    assert trained["outcome"].best_epoch == 1 and len(trained["outcome"].history) == 1


def test_a_trained_model_serves_as_a_supervised_encoder(trained, tmp_path):
    path = tmp_path / "xresnet.pt"
    torch.save(trained["checkpoint"], path)
    encoder = load_encoder(EncoderSpec(kind="supervised", path=str(path)))
    assert (encoder.fs, encoder.normalize, encoder.pretrained) == (100.0, "scaler", True)
    np.testing.assert_allclose(encoder.scaler.mean, trained["scaler"].mean)
    trained_weights = trained["model"].encoder.state_dict()
    for name, tensor in encoder.module.state_dict().items():
        torch.testing.assert_close(tensor, trained_weights[name].cpu())
