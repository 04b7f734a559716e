"""What training reads: the corpus (ECG store + texts), its token ids, and batches of both.

Rank 0 converts the store and tokenises the texts first (both are cached on disk); the other ranks wait at a
barrier and then open the finished files, so no two processes ever write the same file.
"""

from __future__ import annotations

import numpy as np
import torch

from esi.config import ConfigError
from esi.paths import resolve
from esi.train.config import TrainConfig
from esi.train.distributed import DistContext, barrier

TEXT_WIDTH_MULTIPLE = 8


class NonFiniteBatchError(RuntimeError):
    """A batch (or its loss) contains NaN/inf; the message names the records involved."""


class PairDataset(torch.utils.data.Dataset):
    """Store rows of an `ECGDataset` with their token ids; `dataset[list]` returns a whole batch."""

    def __init__(self, ecgs, input_ids: np.ndarray, lengths: np.ndarray):
        self.ecgs = ecgs
        self.input_ids = input_ids
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.ecgs)

    def set_epoch(self, epoch: int) -> None:
        self.ecgs.set_epoch(epoch)

    def __getitem__(self, positions):
        batch = self.ecgs.fetch(positions)
        rows = batch["index"].numpy()
        # Pad to the longest text of the batch only, rounded up to a multiple of 8: tensor cores want it, and
        # torch.compile then meets a handful of text widths instead of one per length.
        longest = max(2, int(self.lengths[rows].max()))
        width = min(self.input_ids.shape[1], -(-longest // TEXT_WIDTH_MULTIPLE) * TEXT_WIDTH_MULTIPLE)
        ids = torch.from_numpy(self.input_ids[rows, :width].astype(np.int64))
        mask = (torch.arange(width)[None, :] < torch.from_numpy(self.lengths[rows].astype(np.int64))[:, None])
        batch["input_ids"] = ids
        batch["attention_mask"] = mask.long()
        return batch


def _identity(batch):
    return batch


def make_loader(dataset, sampler, num_workers: int, pin: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over whole batches: the sampler yields a batch's positions, `dataset[positions]` builds it."""
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity,
                                       num_workers=num_workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(0))


def corpus_arguments(cfg: TrainConfig, progress: bool | None = None) -> dict:
    """The `esi.data.corpus.build_corpus` arguments of this config: the one place that maps train_* settings
    onto the corpus, so a notebook that explores the data reads exactly the store and texts training will."""
    if not cfg.data_root:
        raise ConfigError("train_data_root is empty: point it at a MIMIC-IV-ECG or PTB-XL folder")
    root = resolve(cfg.data_root)
    if not root.exists():
        raise FileNotFoundError(f"train_data_root: {root} does not exist")
    return dict(kind=cfg.corpus, root=root,
                store_dir=resolve(cfg.store_dir) if cfg.store_dir else resolve(cfg.out_dir) / "store",
                fs=cfg.fs, seconds=cfg.seconds,
                waveform_dict=resolve(cfg.waveform_dict) if cfg.waveform_dict else None,
                patients=resolve(cfg.patients) if cfg.patients else None, val_fraction=cfg.val_fraction,
                train_folds=cfg.train_folds, val_folds=cfg.val_folds, max_words=cfg.max_words,
                limit=cfg.max_records, workers=cfg.convert_workers,
                progress=cfg.progress if progress is None else progress)


def load_corpus(cfg: TrainConfig, ctx: DistContext):
    """The run's ECG-text pairs: rank 0 converts the store if needed (resumable), the others then open it."""
    from esi.data.corpus import build_corpus

    arguments = corpus_arguments(cfg, progress=cfg.progress and ctx.is_main)
    if ctx.is_main:
        corpus = build_corpus(**arguments)
    barrier()
    if not ctx.is_main:
        corpus = build_corpus(**arguments)
    if ctx.is_main:
        print(f"[esi.train] corpus: {corpus.summary()}", flush=True)
    return corpus


def load_tokens(cfg: TrainConfig, ctx: DistContext, texts, tokenizer, cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and lengths of every text, tokenised once: rank 0 writes the cache, the others read it."""
    from esi.data.tokens import tokenize_corpus

    if ctx.is_main:
        tokens = tokenize_corpus(texts, tokenizer, cfg.max_text_length, cache_dir, progress=cfg.progress)
    barrier()
    if not ctx.is_main:
        tokens = tokenize_corpus(texts, tokenizer, cfg.max_text_length, cache_dir, progress=False)
    return tokens


def pair_datasets(cfg: TrainConfig, corpus, input_ids: np.ndarray, lengths: np.ndarray):
    """(train, validation) PairDatasets: random crops (+ augmentation) for training, centre crops for validation."""
    from esi.data.datasets import ECGDataset

    store = corpus.store
    crop = int(round(cfg.crop_seconds * store.fs)) if cfg.crop_seconds else None
    train_ecgs = ECGDataset(store, corpus.rows["train"], normalize=cfg.normalize, crop=crop, crop_mode="random",
                            augment=cfg.augment, seed=cfg.seed)
    val_ecgs = ECGDataset(store, corpus.rows["val"], normalize=cfg.normalize, crop=crop, crop_mode="center",
                          seed=cfg.seed)
    return PairDataset(train_ecgs, input_ids, lengths), PairDataset(val_ecgs, input_ids, lengths)


def records_of(store, rows) -> str:
    """The record ids of store `rows`, for error messages (the first ten)."""
    ids = store.index["record_id"].iloc[np.asarray(rows)].astype(str).tolist()
    return ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")


def check_finite_batch(batch: dict, store) -> None:
    """Raise NonFiniteBatchError naming the records whose ECG holds NaN/inf."""
    bad = ~torch.isfinite(batch["ecg"]).flatten(1).all(dim=1)
    if bad.any():
        rows = batch["index"][bad].numpy()
        raise NonFiniteBatchError(f"non-finite ECG values in record(s) {records_of(store, rows)} "
                                  f"of store {store.path}")
