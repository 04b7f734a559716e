"""PyTorch Dataset over an ECG store: one vectorised read and transform per batch.

    store = ECGStore("outputs/stores/ptbxl100")
    train = ECGDataset(store, train_rows, targets=y, normalize="scaler", scaler=fit_scaler(store, train_rows),
                       crop=250, augment=True, seed=0)
    loader = train.loader(batch_size=256, shuffle=True)   # filled by threads of this process
    for batch in loader:
        batch["ecg"]    # float32 (256, 12, 250)
        batch["y"]      # float32 (256, n_classes)
        batch["index"]  # int64 (256,) store rows

    test = ECGDataset(store, test_rows, normalize="scaler", scaler=scaler, windows=(250, 125))
    test[0]["ecg"]      # (7, 12, 250): every 2.5 s window, for max-aggregated evaluation

Batched fetching: `DataLoader` calls `__getitems__` with a whole batch of indices, and `dataset.loader(...)`
(or `collate_fn=esi.data.datasets.collate`) passes the batch through without re-stacking it.

Where the work happens: with num_workers=0 a batch is filled by a few threads of the main process (numpy
releases the GIL), into ordinary memory; this is the fastest way for large records. With worker processes
(num_workers>0, which also work) each batch is written straight into a fresh shared-memory segment that the main
process maps without copying, but the kernel must provide and zero those pages for every batch: for 500 Hz x 10 s
records that costs several times the decoding itself (see bench/bench_loader.py).

Randomness (crop positions, augmentation) is drawn from a generator seeded by (seed, epoch, the batch's store
rows): the same batches give the same samples whatever the number of workers. Call `set_epoch` each epoch
(before creating the epoch's iterator) to get new crops.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence as SequenceABC
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from esi.data.store import ECGStore
from esi.data.transforms import (NORMALIZATIONS, Augment, Scaler, lead_positions, normalize,
                                 random_crop_offsets, record_window_starts, window_starts)

CROP_MODES = ("random", "center", "start")
# Records are decoded and normalised in blocks of about this many bytes of float32: large enough to amortise
# numpy's per-call overhead, small enough that each step finds the previous step's output in the CPU cache
# (4 MB measured best on a 32 MB L3: 16 records at 500 Hz x 10 s).
_BLOCK_BYTES = 1 << 22


class ECGDataset(Dataset):
    """Records of an `ECGStore` as float32 tensors, normalised, cropped or windowed, optionally augmented.

    Items are dicts: {"ecg": tensor, "index": store row, "y": targets row (only with `targets`)}.
    """

    def __init__(self, store: ECGStore | str | os.PathLike, indices=None, *, targets=None,
                 leads: Sequence[str] | None = None, normalize: str | None = None, scaler: Scaler | None = None,
                 crop: int | None = None, crop_mode: str = "random", windows: tuple[int, int] | None = None,
                 augment: bool | Augment | None = None, seed: int = 0, threads: int | None = None,
                 valid_samples: int | None = None):
        """
        Args:
            store: an `ECGStore` or the path of one.
            indices: the store rows this dataset serves (e.g. a split); None means every record.
            targets: optional per-record targets aligned with the store rows, shape (len(store), ...) (e.g. a
                multi-hot label matrix); item i gets targets[indices[i]] as float32.
            leads: a subset of the store's leads to return, in this order (default: all).
            normalize: None, "global" (one mean/std per record, as the original ESI), "per_lead" (z-score each
                lead of each record) or "scaler" (the per-lead mean/std of `scaler`).
            scaler: a `Scaler` from `esi.data.transforms.fit_scaler`, for normalize="scaler".
            crop: return a crop of this many samples instead of the whole record.
            crop_mode: "random" (training), "center" or "start" (deterministic).
            windows: (length, stride) in samples: return the sliding windows of the record's signal stacked as
                (n_windows, n_leads, length) (evaluation with max aggregation), and its own window count as
                "n_windows": a record with fewer valid samples than the frame (zero-padded, or `valid_samples`)
                has fewer windows, and its row repeats its last window (`record_window_starts`). Excludes `crop`.
            augment: None/False (default), True for `Augment()`'s defaults, or an `Augment`.
            seed: seed of the crop positions and augmentation.
            valid_samples: treat only each record's first this many samples as signal: the rest is zeroed before
                normalising, as a shorter record's padding is (MERL's CPSC2018 input: 5 s of a 10 s frame). None:
                the whole record.
            threads: threads that fill one batch together; default 1 inside DataLoader worker processes and
                up to 4 (the CPU count) in the main process, so that num_workers=0 still uses several cores.
        """
        self.store = store if isinstance(store, ECGStore) else ECGStore(store)
        n = len(self.store)
        self.indices = (np.arange(n, dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64).reshape(-1))
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"indices must be store rows in [0, {n}), got {self.indices.min()}..{self.indices.max()}")
        self.targets = None
        if targets is not None:
            targets = np.asarray(targets)
            if targets.shape[0] != n:
                raise ValueError(f"targets must be aligned with the store rows: {n} rows, got {targets.shape[0]}")
            self.targets = targets
        self.leads = tuple(self.store.leads if leads is None else (self.store.leads[p] for p in
                                                                    lead_positions(leads, self.store.leads)))
        self._lead_pos = np.asarray(lead_positions(self.leads, self.store.leads))
        self._all_leads = len(self._lead_pos) == len(self.store.leads) and bool(
            (self._lead_pos == np.arange(len(self.store.leads))).all())

        if normalize is not None and normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)} or None, got {normalize!r}")
        if normalize == "scaler" and scaler is None:
            raise ValueError('normalize="scaler" needs scaler=fit_scaler(store, train_indices)')
        self.normalize = normalize
        self.scaler = scaler.select(self.leads) if (normalize == "scaler") else None

        if crop is not None and windows is not None:
            raise ValueError("use either crop (one crop per record) or windows (all windows), not both")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {', '.join(CROP_MODES)}, got {crop_mode!r}")
        length = self.store.length
        if crop is not None and not 0 < crop <= length:
            raise ValueError(f"crop must be in 1..{length} samples (the store's length), got {crop}")
        self.crop, self.crop_mode = crop, crop_mode
        self.windows = None
        self._window_starts = None
        if windows is not None:
            window_length, stride = (int(v) for v in windows)
            self._window_starts = window_starts(length, window_length, stride)
            self.windows = (window_length, stride)

        if valid_samples is not None and not 0 < int(valid_samples) <= length:
            raise ValueError(f"valid_samples must be in 1..{length} samples (the store's length), got {valid_samples}")
        self.valid_samples = None if valid_samples is None else int(valid_samples)
        self.augment = Augment() if augment is True else (augment or None)
        self.seed = int(seed)
        self.epoch = 0
        self.threads = None if threads is None else max(1, int(threads))

    # --- shapes and randomness ---

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one item's "ecg"."""
        n_leads = len(self.leads)
        if self.windows is not None:
            return (len(self._window_starts), n_leads, self.windows[0])
        return (n_leads, self.crop or self.store.length)

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops/augmentations for a new epoch (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def _rng(self, rows: np.ndarray) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *rows.tolist()])

    def __len__(self) -> int:
        return len(self.indices)

    # --- fetching ---

    def __getitem__(self, i):
        """One item (int i) or a whole batch (a list/array of positions) as a dict of tensors."""
        if isinstance(i, torch.Tensor) and i.dim() == 0:
            i = int(i)
        if isinstance(i, (SequenceABC, np.ndarray, torch.Tensor)) and not isinstance(i, str):
            return self.fetch(i)
        batch = self.fetch([i])
        return _Items(batch)[0]

    def __getitems__(self, positions):
        """A batch for DataLoader: a sequence of per-item dicts that also carries the stacked batch."""
        return _Items(self.fetch(positions))

    def fetch(self, positions) -> dict[str, torch.Tensor]:
        """The batch of dataset positions `positions`: {"ecg": (n, *item_shape), "index": (n,), ["y": (n, ...)],
        ["n_windows": (n,) with `windows`: each record's own windows]}."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"position out of range for a dataset of {len(self)} records")
        rows = self.indices[positions]
        store = self.store
        n = len(rows)
        ecg, x_out = _new_batch((n,) + self.item_shape)
        rng = self._rng(rows) if (self.augment is not None or (self.crop and self.crop_mode == "random")) else None
        offsets = self._crop_offsets(rows, rng)
        n_windows = np.empty(n, dtype=np.int64) if self.windows is not None else None

        n_leads, length = len(self.leads), store.length
        block = max(1, _BLOCK_BYTES // (n_leads * length * 4))
        starts = range(0, n, block)
        threads = self._threads_here()
        if threads > 1 and len(starts) > 1:
            # Blocks are independent and numpy releases the GIL in its loops: threads share the batch
            # without copying it between processes.
            list(self._pool(threads).map(lambda s: self._fill(rows, s, s + block, x_out, offsets, n_windows), starts))
        else:
            for start in starts:
                self._fill(rows, start, start + block, x_out, offsets, n_windows)
        if self.augment is not None:
            flat = x_out.reshape((-1,) + x_out.shape[-2:])  # windows: augment each window
            self.augment(flat, rng, store.fs)

        batch = {"ecg": ecg, "index": torch.from_numpy(rows.copy())}
        if n_windows is not None:
            batch["n_windows"] = torch.from_numpy(n_windows)
        if self.targets is not None:
            batch["y"] = torch.from_numpy(np.ascontiguousarray(self.targets[rows], dtype=np.float32))
        return batch

    def _fill(self, rows: np.ndarray, start: int, stop: int, x_out: np.ndarray, offsets,
              n_windows_out: np.ndarray | None = None) -> None:
        """Decode, normalise and crop/window records rows[start:stop] into x_out[start:stop]."""
        store = self.store
        block_rows = rows[start:stop]
        b = len(block_rows)
        direct = self.crop is None and self.windows is None  # whole records: decode straight into the batch
        x = x_out[start:start + b] if direct else self._scratch(b)
        for k, row in enumerate(block_rows):
            view = store._view(row)  # the record inside the memory map, no copy
            np.divide(view if self._all_leads else view[self._lead_pos], store.gains[row], out=x[k])
        n_valid = self._n_valid(block_rows)
        if self.valid_samples is not None:
            x[..., self.valid_samples:] = 0
        if self.normalize is not None:
            mask = store.masks[block_rows][:, self._lead_pos]
            normalize(x, self.normalize, self.scaler, n_valid=n_valid, mask=mask, out=x)
        if self.windows is not None:
            win, stride = self.windows
            starts, counts = record_window_starts(n_valid, win, stride, len(self._window_starts))
            for k in range(b):
                for w, s in enumerate(starts[k]):
                    x_out[start + k, w] = x[k, :, s:s + win]
            if n_windows_out is not None:
                n_windows_out[start:start + b] = counts
        elif not direct:
            for k in range(b):
                x_out[start + k] = x[k, :, offsets[start + k]:offsets[start + k] + self.crop]

    def _n_valid(self, rows: np.ndarray) -> np.ndarray:
        """Samples of signal in each of the store rows: the record's own, capped at `valid_samples`."""
        n_valid = self.store.n_valid[rows]
        return n_valid if self.valid_samples is None else np.minimum(n_valid, self.valid_samples)

    def _scratch(self, b: int) -> np.ndarray:
        """A per-thread float32 buffer for b whole records (reused: no fresh pages per block)."""
        local = self.__dict__.setdefault("_local", threading.local())
        buffer = getattr(local, "buffer", None)
        if buffer is None or len(buffer) < b:
            buffer = local.buffer = np.empty((b, len(self.leads), self.store.length), dtype=np.float32)
        return buffer[:b]

    def _threads_here(self) -> int:
        if self.threads is not None:
            return self.threads
        # Inside a DataLoader worker the processes already share the CPUs.
        return 1 if torch.utils.data.get_worker_info() is not None else min(4, os.cpu_count() or 1)

    def _pool(self, threads: int) -> ThreadPoolExecutor:
        # Keyed by process and size: a pool inherited through fork has no threads behind it.
        key = (os.getpid(), threads)
        if self.__dict__.get("_executor_key") != key:
            self.__dict__["_executor"] = ThreadPoolExecutor(threads, thread_name_prefix="ecg-fetch")
            self.__dict__["_executor_key"] = key
        return self.__dict__["_executor"]

    def __getstate__(self):
        # Thread pools and per-thread buffers belong to one process; each process makes its own.
        return {k: v for k, v in self.__dict__.items() if k not in ("_executor", "_executor_key", "_local")}

    def _crop_offsets(self, rows: np.ndarray, rng) -> np.ndarray | None:
        if self.crop is None:
            return None
        n_valid = self._n_valid(rows)           # crops come from the signal, not a zeroed rest
        if self.crop_mode == "random":
            return random_crop_offsets(n_valid, self.crop, rng)
        if self.crop_mode == "center":
            return np.maximum(np.minimum(n_valid, self.store.length) - self.crop, 0) // 2
        return np.zeros(len(rows), dtype=np.int64)

    # --- loading ---

    def loader(self, batch_size: int, shuffle: bool = False, num_workers: int = 0, drop_last: bool = False,
               seed: int | None = None, **kwargs) -> DataLoader:
        """A DataLoader that fetches each batch with one `fetch` call and never re-stacks it.

        Args:
            batch_size: records per batch.
            shuffle: random order each epoch (seeded by `seed`, default the dataset's seed).
            num_workers: worker processes (0, the default: load in this process with `threads` threads).
            drop_last: drop the last incomplete batch.
            seed: seed of the shuffling order.
            **kwargs: passed to DataLoader (pin_memory, persistent_workers, prefetch_factor, ...).
        """
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        sampler = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
        # batch_size=None: the sampler yields whole batches and __getitem__(list) returns them ready-made.
        return DataLoader(self, sampler=batches, batch_size=None, num_workers=num_workers,
                          collate_fn=_identity, **kwargs)


def _identity(batch):
    return batch


def _new_batch(shape: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray]:
    """An uninitialised float32 batch as (tensor, numpy view of the same memory).

    In the main process it is a numpy allocation, which numpy backs with transparent huge pages when it is
    large: far fewer page faults. In a DataLoader worker it is moved to shared memory (`share_memory_`) before
    it is filled, so that sending it to the main process moves a file descriptor, not the data (sharing the
    filled batch, as the DataLoader does with what a worker returns, would copy all of it). `share_memory_`
    copies the pages never written; from numpy's huge-page allocation that copy is cheap (measured in a
    DataLoader with 2 workers on 2 busy cores: within 5 % of allocating in shared memory directly, about 20 %
    faster than sharing torch.empty's pages).
    """
    array = np.empty(shape, dtype=np.float32)
    if torch.utils.data.get_worker_info() is None:
        return torch.from_numpy(array), array
    tensor = torch.from_numpy(array).share_memory_()
    return tensor, tensor.numpy()


class _Items(SequenceABC):
    """A batch seen as a sequence of per-item dicts (what DataLoader's collate receives from __getitems__).

    `collate` returns the stacked batch as it is; torch's default_collate also works (it re-stacks the items).
    """

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["index"])

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        item = {key: value[k] for key, value in self.batch.items()}
        item["index"] = int(item["index"])
        return item


def collate(items):
    """collate_fn for DataLoader(dataset, batch_size=..., collate_fn=collate): the batch that `__getitems__`
    already stacked, without copying; other lists of items go through torch's default_collate."""
    if isinstance(items, _Items):
        return items.batch
    return torch.utils.data.default_collate(items)
