"""Frozen features of a benchmark's records, extracted once per (encoder, data, rate, normalisation) and cached.

    store = ptbxl_store("data/ptbxl", fs=500, store_dir="outputs/run/evaluate/stores")
    cache = FeatureCache("outputs/run/evaluate/features")
    feats = encoder_features(load_encoder(spec), store, cache)     # every record of the store
    x = feats.take(task.ecg_ids)                                   # (records, dim), rows aligned with the task

PTB-XL is converted once per sampling rate into an `ECGStore` (esi.data.convert; 100 and 500 Hz read the official
files of that rate, other rates are resampled from 500 Hz). Features of the whole store are computed in one pass,
so every task, label fraction and protocol reuses them. The cache file name is a hash of everything the features
depend on (encoder weights and preprocessing, the store's content, the normalisation and its scaler, what is
extracted); a second run with the same inputs reads the file instead of running the encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from esi.data.leads import STANDARD_LEADS
from esi.data.store import ECGStore, read_manifest

TRAIN_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)


def is_converted(out: Path, root: Path) -> bool:
    """Whether `out` holds a finished store of the dataset folder `root` (then it is reused, not converted again)."""
    try:
        manifest = read_manifest(out)
    except FileNotFoundError:
        return False
    return bool(manifest.get("complete")) and manifest["settings"]["input"] == str(root)


def ptbxl_store(ptbxl_root: str | os.PathLike, fs: float, store_dir: str | os.PathLike, seconds: float = 10.0,
                workers: int | None = None, progress: bool = True) -> ECGStore:
    """The PTB-XL records at `fs` Hz as an `ECGStore`, converted on first use and reused afterwards.

    Args:
        ptbxl_root: the PTB-XL folder (ptbxl_database.csv, records100/, records500/).
        fs: sampling rate of the store (Hz).
        store_dir: folder holding one store per rate (`ptbxl_<fs>hz`).
        seconds: record length in the store.
        workers: conversion processes (None: all cores).
        progress: show the conversion's progress bar.

    Raises:
        ValueError: the conversion rejected some records (their ids and reasons are in the store's rejected.csv).
    """
    from esi.data.convert import convert

    root = Path(ptbxl_root).expanduser().resolve()
    out = Path(store_dir) / f"ptbxl_{fs:g}hz"
    if not is_converted(out, root):
        convert("ptbxl", root, out, fs=fs, seconds=seconds, workers=workers, progress=progress)
    store = ECGStore(out)
    if store.manifest.get("n_rejected"):
        rejected = store.rejected
        examples = "; ".join(f"{r.record_id}: {r.reason}" for r in rejected.head(3).itertuples())
        raise ValueError(f"{out}: {len(rejected)} PTB-XL record(s) could not be read ({examples}); every record "
                         "of the benchmark must be evaluated, so fix or re-download them")
    return store


def record_keys(ids) -> list[str]:
    """The store's record_id strings of record ids: PTB-XL ecg_ids (ints) or record names ("A0001")."""
    return [i if isinstance(i, str) else str(int(i)) for i in ids]


def store_rows(store: ECGStore, ecg_ids) -> np.ndarray:
    """Store rows of record ids (PTB-XL ecg_ids or record names) in `store`, in the same order (KeyError naming
    missing ids)."""
    return store.locate(record_keys(ecg_ids))


def train_rows(store: ECGStore, folds=TRAIN_FOLDS) -> np.ndarray:
    """Rows of a PTB-XL `store` whose `strat_fold` is one of `folds` (default the training folds 1-8)."""
    folds_of_rows = store.index["strat_fold"].to_numpy()
    return np.flatnonzero(np.isin(folds_of_rows, folds))


def fit_train_scaler(store: ECGStore, rows, per_lead: bool = True, progress: bool = False):
    """A `Scaler` fitted on the given (training) store rows only; never on validation or test records.

    Args:
        store: the PTB-XL store.
        rows: the training rows.
        per_lead: one mean/std per lead (True) or one over all leads, the PTB-XL benchmark's StandardScaler.
        progress: show a progress bar.
    """
    from esi.data.transforms import fit_scaler

    return fit_scaler(store, rows, per_lead=per_lead, progress=progress)


def extract(encoder, store: ECGStore, rows=None, *, scaler=None, batch_size: int = 32, progress: bool = True,
            desc: str = "features", valid_samples: int | None = None) -> np.ndarray:
    """`encoder.features` of whole records of a store, in batches: every protocol's one way to features.

    Records are read as millivolts in the standard lead order at the store's rate; `LoadedEncoder.features`
    brings them to the encoder's rate, window, normalisation and lead order.

    Args:
        encoder: a `LoadedEncoder` (on the device it runs on).
        store: the ECG store.
        rows: store rows to encode, in this order (None: all).
        scaler: the scaler of an encoder whose normalisation is "scaler".
        batch_size: records per forward pass.
        progress: show a tqdm bar.
        desc: the bar's label.
        valid_samples: only each record's first this many samples are signal (see `ECGDataset`); None: all.

    Returns:
        float32 (len(rows), dim).
    """
    from tqdm.auto import tqdm

    from esi.data.datasets import ECGDataset
    from esi.data.transforms import lead_positions

    dataset = ECGDataset(store, rows, leads=STANDARD_LEADS, normalize=None, valid_samples=valid_samples)
    positions = lead_positions(STANDARD_LEADS, store.leads)
    chunks = []
    with tqdm(total=len(dataset), desc=desc, unit="ecg", disable=not progress, dynamic_ncols=True) as bar:
        for batch in dataset.loader(batch_size=batch_size):
            index = batch["index"].numpy()
            n_valid = store.n_valid[index] if valid_samples is None else np.minimum(store.n_valid[index], valid_samples)
            chunks.append(encoder.features(batch["ecg"], store.fs, n_valid=n_valid,
                                           mask=store.masks[index][:, positions], scaler=scaler))
            bar.update(len(index))
    if not chunks:
        raise ValueError("no records to extract features from")
    return np.concatenate(chunks)


@dataclass
class FeatureSet:
    """Features of store records. features: float32 (n, dim); record_ids: str (n,); path: the cache file;
    from_cache: True when read from disk rather than computed."""

    features: np.ndarray
    record_ids: np.ndarray
    path: Path
    from_cache: bool

    def take(self, ids) -> np.ndarray:
        """Rows of the features for record ids (PTB-XL ecg_ids or record names), in the order given."""
        position = {rid: i for i, rid in enumerate(self.record_ids)}
        wanted = record_keys(ids)
        missing = [w for w in wanted if w not in position]
        if missing:
            raise KeyError(f"{self.path}: no features for record(s) {', '.join(missing[:5])}")
        return self.features[[position[w] for w in wanted]]


class FeatureCache:
    """Feature files (npz) in one folder, named by a hash of what they depend on.

    `hits` and `misses` count how many requests were served from disk and how many computed.
    """

    def __init__(self, directory: str | os.PathLike):
        """
        Args:
            directory: where the npz files live (created when the first one is written).
        """
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts) -> str:
        """A short hash of JSON-able `parts` (encoder identity, data, preprocessing, what is extracted)."""
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def path(self, key: str, label: str = "") -> Path:
        """The file of cache `key`, its name prefixed by a readable `label`."""
        prefix = f"{label}-" if label else ""
        return self.directory / f"{prefix}{key}.npz"

    def get_or_compute(self, key: str, compute: Callable[[], tuple[np.ndarray, np.ndarray]], label: str = "",
                       meta: dict | None = None) -> FeatureSet:
        """The cached features for `key`, or `compute()` -> (features, record_ids) saved under it.

        Args:
            key: from `FeatureCache.key`.
            compute: called only on a miss.
            label: readable prefix of the file name (e.g. the encoder's slug).
            meta: JSON-able facts stored beside the arrays (what the features are).
        """
        path = self.path(key, label)
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                self.hits += 1
                return FeatureSet(data["features"], data["record_ids"].astype(str), path, from_cache=True)
        features, record_ids = compute()
        features = np.ascontiguousarray(features, dtype=np.float32)
        record_ids = np.asarray(record_ids).astype(str)
        if len(features) != len(record_ids):
            raise ValueError(f"{len(features)} feature rows for {len(record_ids)} record ids")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append .npz to a path
            np.savez(handle, features=features, record_ids=record_ids,
                     meta=np.asarray(json.dumps(meta or {}, default=str)))
        os.replace(tmp, path)  # a killed run never leaves a truncated cache file
        self.misses += 1
        return FeatureSet(features, record_ids, path, from_cache=False)


def store_identity(store: ECGStore) -> dict:
    """What a store's content depends on: its settings, record count and a hash of its record ids and gains."""
    digest = hashlib.sha1()
    digest.update("\n".join(store.index["record_id"].astype(str)).encode())
    digest.update(np.ascontiguousarray(store.gains).tobytes())
    settings = store.settings
    identity = {"input": settings.input, "fs": settings.fs, "length": settings.length, "dtype": settings.dtype,
                "n_records": len(store), "records": digest.hexdigest()[:16]}
    if settings.crop != "start":    # only then: the keys of stores written before `crop` existed stay the same
        identity["crop"] = settings.crop
    return identity


def input_scaler(encoder, store: ECGStore, rows=None):
    """The scaler to normalise the encoder's input with: its own if it has one, else fitted on the training rows.

    Args:
        encoder: a `LoadedEncoder`; None is returned unless its normalisation is "scaler".
        store: the store at the encoder's rate.
        rows: the training rows to fit on; None: PTB-XL folds 1-8 of a PTB-XL store.
    """
    if encoder.normalize != "scaler":
        return None
    if encoder.scaler is not None:
        return encoder.scaler
    return fit_train_scaler(store, train_rows(store) if rows is None else rows, per_lead=True)


def encoder_features(encoder, store: ECGStore, cache: FeatureCache, *, what: str = "pooled", ecg_ids=None,
                     scaler=None, batch_size: int = 32,
                     progress: bool = True, valid_samples: int | None = None) -> FeatureSet:
    """Features `encoder.features(x, store.fs)` of the records of `store`, cached.

    The cache key holds the encoder's identity (its weights and preprocessing; an external encoder's also its
    declared input), the store's content and what is extracted.

    Args:
        encoder: a `LoadedEncoder`, on the device it runs on (its fs must equal the store's; `features` applies its
            normalisation and lead order, or an external encoder's declared input).
        store: the PTB-XL store at the encoder's rate.
        cache: where features are kept.
        what: a name for what `encode` returns ("pooled" encoder features, "latent" ESI embeddings, ...).
        ecg_ids: only these records (e.g. the test fold), in this order; None: every record of the store.
        scaler: for normalize="scaler", the scaler to apply (default: `input_scaler(encoder, store)`).
        batch_size: records per forward pass.
        progress: show a progress bar while extracting.
        valid_samples: only each record's first this many samples are signal (MERL's CPSC2018 input); None: all.
    """
    from esi.evaluate.encoders import slug

    if abs(store.fs - encoder.fs) > 1e-6:
        raise ValueError(f"{encoder.label} takes {encoder.fs:g} Hz input but the store {store.path} is at "
                         f"{store.fs:g} Hz")
    rows = None if ecg_ids is None else store_rows(store, ecg_ids)
    record_ids = store.index["record_id"].astype(str).to_numpy()
    record_ids = record_ids if rows is None else record_ids[rows]
    if scaler is None:
        scaler = input_scaler(encoder, store)
    key = cache.key(encoder=encoder.identity, what=what, store=store_identity(store),
                    records=None if rows is None else hashlib.sha1(",".join(record_ids).encode()).hexdigest(),
                    normalize=encoder.normalize, leads=list(encoder.leads),
                    **({} if valid_samples is None else {"valid_samples": int(valid_samples)}),
                    scaler=None if scaler is None else [np.round(scaler.mean, 8).tolist(),
                                                        np.round(scaler.std, 8).tolist()])

    def compute():
        x = extract(encoder, store, rows, scaler=scaler, batch_size=batch_size, progress=progress,
                    desc=f"{what} features: {encoder.label}", valid_samples=valid_samples)
        return x, record_ids

    meta = {"encoder": encoder.label, "what": what, "fs": store.fs, "normalize": encoder.normalize,
            "store": str(store.path), "n_records": len(record_ids)}
    return cache.get_or_compute(key, compute, label=f"{slug(encoder.label)}-{what}", meta=meta)
