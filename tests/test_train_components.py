"""The small parts of the training engine: schedules, checkpoints, metrics, the resumable sampler."""

import csv

import numpy as np
import pytest
import torch

from esi.train.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint,
                                  save_checkpoint, set_rng_state)
from esi.train.data import PairDataset
from esi.train.logger import MetricsLogger
from esi.train.sampling import ResumableBatchSampler
from esi.train.schedules import build_scheduler, cosine_factor, paper_step_factor
from esi.train.validation import retrieval_recall


def test_paper_schedule_warms_up_for_five_epochs_then_decays_tenfold_every_ten():
    spe = 4
    assert paper_step_factor(0, spe) == pytest.approx(1 / 20)
    assert paper_step_factor(19, spe) == pytest.approx(1.0)
    assert paper_step_factor(20 + 10 * spe - 1, spe) == pytest.approx(1.0)
    assert paper_step_factor(20 + 10 * spe, spe) == pytest.approx(0.1)
    assert paper_step_factor(20 + 20 * spe, spe) == pytest.approx(0.01)


def test_cosine_schedule_reaches_the_floor_at_the_end():
    assert cosine_factor(0, 100, 10) == pytest.approx(0.1)
    assert cosine_factor(10, 100, 10) == pytest.approx(1.0)
    assert cosine_factor(100, 100, 10, min_factor=0.05) == pytest.approx(0.05)
    values = [cosine_factor(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_build_scheduler_rejects_unknown_names():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        build_scheduler(opt, "linear-ish", steps_per_epoch=2, epochs=2, warmup_epochs=1)


def test_checkpoints_keep_the_newest_and_restore_rng(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"value": step}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000003.pt", "step_000000004.pt"]
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["value"] == 4 and state["step"] == 4
    expected = torch.rand(3)                      # the draw right after the save...
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected)   # ...is repeated after restoring its RNG state
    assert not list(tmp_path.glob(".*tmp*"))


def test_checkpoints_load_with_weights_only_and_restore_every_rng(tmp_path):
    import random

    # Leave a cached Gaussian in python's and numpy's generators: their states carry it.
    random.gauss(0, 1)
    np.random.randn(1)
    path = save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(2)}, "config": {"epochs": 3, "folds": [1, 2]}})
    state = torch.load(path, weights_only=True)   # tensors and plain values only: nothing is unpickled
    assert state["config"] == {"epochs": 3, "folds": [1, 2]} and torch.equal(state["model"]["w"], torch.ones(2))
    expected = (random.gauss(0, 1), random.random(), np.random.randn(3), torch.rand(2))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(state["rng"])
    assert (random.gauss(0, 1), random.random()) == expected[:2]
    assert np.array_equal(np.random.randn(3), expected[2]) and torch.equal(torch.rand(2), expected[3])


class _Arbitrary:
    """Any pickled object that is neither a tensor nor a plain value (its unpickling could run code)."""


def test_a_checkpoint_holding_a_pickled_object_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "step_000000001.pt"
    torch.save({"model": {}, "payload": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match=r"step_000000001\.pt holds a pickled \S*_Arbitrary, not only tensors "
                                              r"and plain values; it is not loaded because unpickling can run"):
        load_checkpoint(path)


def test_recall_is_perfect_for_identical_latents_and_at_chance_for_random():
    x = torch.randn(50, 16)
    assert retrieval_recall(x, x)["recall@1"] == 1.0
    g = torch.Generator().manual_seed(0)
    r = retrieval_recall(torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g))
    assert r["recall@10"] < 0.1                    # chance is 10/400


def test_metrics_logger_drops_rows_after_the_resumed_step(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.log("train", step, 0, {"loss": 1.0 / step})
    log.log("val", 5, 1, {"loss": 0.3, "recall@1": 0.5})
    log.close()
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    resumed.log("train", 4, 0, {"loss": 0.24})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["split"], r["step"]) for r in rows] == [("train", "1"), ("train", "2"), ("train", "3"), ("train", "4")]
    assert "recall@1" in rows[0]


def test_sampler_shards_ranks_disjointly_and_resumes_mid_epoch():
    full = ResumableBatchSampler(103, batch_size=5, world_size=2, rank=0, seed=7)
    other = ResumableBatchSampler(103, batch_size=5, world_size=2, rank=1, seed=7)
    full.set_epoch(3)
    other.set_epoch(3)
    a, b = list(full), list(other)
    assert len(a) == len(b) == 103 // 10
    seen = np.concatenate([np.concatenate(a), np.concatenate(b)])
    assert len(np.unique(seen)) == len(seen)
    full.set_epoch(3, start_batch=4)
    assert list(full) == a[4:]
    full.set_epoch(4)
    assert list(full) != a


class _FakeECGs:
    """Stands in for an ECGDataset: `fetch` returns store rows as the engine's PairDataset expects."""

    def __len__(self):
        return 4

    def fetch(self, positions):
        return {"ecg": torch.zeros(len(positions), 12, 10), "index": torch.as_tensor(positions)}


def test_pair_batches_pad_texts_to_a_multiple_of_eight_within_the_cache_width():
    lengths = np.array([3, 9, 17, 20], dtype=np.int32)
    ids = np.zeros((4, 20), dtype=np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(1, n + 1)
    pairs = PairDataset(_FakeECGs(), ids, lengths)
    assert pairs[[0]]["input_ids"].shape == (1, 8)
    assert pairs[[0, 1]]["input_ids"].shape == (2, 16)
    assert pairs[[2, 0]]["input_ids"].shape == (2, 20)            # capped at max_text_length
    batch = pairs[[1, 0]]
    assert batch["attention_mask"].sum(dim=1).tolist() == [9, 3]
    assert batch["input_ids"][1, :3].tolist() == [1, 2, 3] and batch["input_ids"][1, 3:].eq(0).all()
