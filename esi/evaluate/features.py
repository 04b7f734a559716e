"""Frozen features of PTB-XL records, extracted once per (encoder, data, rate, normalisation) and cached.

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
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch

from esi.data.leads import STANDARD_LEADS
from esi.data.store import ECGStore, read_manifest

if TYPE_CHECKING:
    import pandas as pd

TRAIN_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)


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
    try:
        manifest = read_manifest(out)
        ready = manifest.get("complete") and manifest["settings"]["input"] == str(root)
    except FileNotFoundError:
        ready = False
    if not ready:
        convert("ptbxl", root, out, fs=fs, seconds=seconds, workers=workers, progress=progress)
    store = ECGStore(out)
    if store.manifest.get("n_rejected"):
        rejected = store.rejected
        examples = "; ".join(f"{r.record_id}: {r.reason}" for r in rejected.head(3).itertuples())
        raise ValueError(f"{out}: {len(rejected)} PTB-XL record(s) could not be read ({examples}); every record "
                         "of the benchmark must be evaluated, so fix or re-download them")
    return store


def store_rows(store: ECGStore, ecg_ids) -> np.ndarray:
    """Store rows of PTB-XL `ecg_ids` in a PTB-XL `store`, in the same order (KeyError naming missing ids)."""
    return store.locate([str(int(i)) for i in ecg_ids])


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


@torch.inference_mode()
def extract(encode: Callable[[torch.Tensor], torch.Tensor], store: ECGStore, rows=None, *, normalize: str | None,
            scaler=None, leads=STANDARD_LEADS, batch_size: int = 32, device: str | torch.device = "cpu",
            progress: bool = True, desc: str = "features") -> np.ndarray:
    """Run `encode` over whole records of a store, in batches, without gradients.

    Args:
        encode: (batch, 12, time) tensor on `device` -> (batch, dim) tensor (e.g. `encoder.encode`).
        store: the ECG store.
        rows: store rows to encode, in this order (None: all).
        normalize: "global", "per_lead", "scaler" or None (see esi.data.transforms.normalize).
        scaler: the scaler for normalize="scaler".
        leads: lead order the encoder expects.
        batch_size: records per forward pass.
        device: where the encoder runs.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        float32 (len(rows), dim).
    """
    from tqdm.auto import tqdm

    from esi.data.datasets import ECGDataset

    dataset = ECGDataset(store, rows, leads=leads, normalize=normalize, scaler=scaler)
    chunks = []
    with tqdm(total=len(dataset), desc=desc, unit="ecg", disable=not progress, dynamic_ncols=True) as bar:
        for batch in dataset.loader(batch_size=batch_size):
            out = encode(batch["ecg"].to(device, non_blocking=True))
            chunks.append(out.float().cpu().numpy())
            bar.update(len(out))
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
        """Rows of the features for record ids (PTB-XL ecg_ids), in the order given."""
        position = {rid: i for i, rid in enumerate(self.record_ids)}
        wanted = [str(int(i)) if not isinstance(i, str) else i for i in ids]
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
    return {"input": settings.input, "fs": settings.fs, "length": settings.length, "dtype": settings.dtype,
            "n_records": len(store), "records": digest.hexdigest()[:16]}


def input_scaler(encoder, store: ECGStore):
    """The scaler to normalise the encoder's input with: its own if it has one, else fitted on PTB-XL folds 1-8.

    Args:
        encoder: a `LoadedEncoder`; None is returned unless its normalisation is "scaler".
        store: the PTB-XL store at the encoder's rate (the training folds are read from it).
    """
    if encoder.normalize != "scaler":
        return None
    if encoder.scaler is not None:
        return encoder.scaler
    return fit_train_scaler(store, train_rows(store), per_lead=True)


def encoder_features(encoder, store: ECGStore, cache: FeatureCache, *, what: str = "pooled", ecg_ids=None,
                     scaler=None, batch_size: int = 32, device: str | torch.device = "cpu",
                     progress: bool = True) -> FeatureSet:
    """Features `encoder.module.encode(x)` of the records of `store`, cached.

    Args:
        encoder: a `LoadedEncoder` on `device` (its fs must equal the store's; its normalisation and lead order
            are applied to the input).
        store: the PTB-XL store at the encoder's rate.
        cache: where features are kept.
        what: a name for what `encode` returns ("pooled" encoder features, "latent" ESI embeddings, ...).
        ecg_ids: only these records (e.g. the test fold), in this order; None: every record of the store.
        scaler: for normalize="scaler", the scaler to apply (default: `input_scaler(encoder, store)`).
        batch_size: records per forward pass.
        device: where the encoder runs.
        progress: show a progress bar while extracting.
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
                    scaler=None if scaler is None else [np.round(scaler.mean, 8).tolist(),
                                                        np.round(scaler.std, 8).tolist()])

    def compute():
        x = extract(encoder.module.encode, store, rows, normalize=encoder.normalize, scaler=scaler,
                    leads=encoder.leads, batch_size=batch_size, device=device, progress=progress,
                    desc=f"{what} features: {encoder.label}")
        return x, record_ids

    meta = {"encoder": encoder.label, "what": what, "fs": store.fs, "normalize": encoder.normalize,
            "store": str(store.path), "n_records": len(record_ids)}
    return cache.get_or_compute(key, compute, label=f"{slug(encoder.label)}-{what}", meta=meta)


# --- class names -----------------------------------------------------------------------------------------

# English names of the benchmark's label groups that are not SCP statement codes themselves: the five
# superclasses and the merged subclasses (diagnostic_class / diagnostic_subclass values of scp_statements.csv).
GROUP_NAMES = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
    "_AVB": "atrioventricular block",
    "LAFB/LPFB": "left anterior or left posterior fascicular block",
    "ISCA": "ischemia in anterior leads",
    "ISCI": "ischemia in inferior leads",
}


def class_names(classes: Sequence[str], statements, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The English name of each class: `overrides`, then `GROUP_NAMES`, then the SCP statement's description.

    Args:
        classes: the task's class labels (SCP codes or group names).
        statements: `esi.data.ptbxl.load_statements` output.
        overrides: names given in the params ({"MI": "myocardial infarction", ...}).
    """
    overrides = overrides or {}
    names = {}
    for c in classes:
        description = statements["description"].get(c) if c in statements.index else None
        names[c] = overrides.get(c) or GROUP_NAMES.get(c) or (description if isinstance(description, str) else c)
    return names


# --- the workspace every protocol shares ------------------------------------------------------------------


@dataclass
class Workspace:
    """Where an evaluation keeps what it makes, and how it runs encoders.

    run_dir: the run's output folder (results.csv, figures/ and evaluate/ below it); None: outputs/evaluate.
    ptbxl_root: the PTB-XL folder.
    store_dir: converted PTB-XL stores, one per rate (default <run_dir>/evaluate/stores).
    cache_dir: cached features (default <run_dir>/evaluate/features); share it between runs to reuse features.
    device: torch device of the encoders.
    batch_size: records per forward pass when extracting features.
    workers: processes for converting PTB-XL (None: all cores).
    progress: show progress bars.
    """

    run_dir: Path | None
    ptbxl_root: Path
    store_dir: Path | None = None
    cache_dir: Path | None = None
    device: str = "cpu"
    batch_size: int = 32
    workers: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.run_dir is None:
            from esi.paths import outputs_dir

            self.run_dir = outputs_dir() / "evaluate"
        self.run_dir = Path(self.run_dir)
        self.ptbxl_root = Path(self.ptbxl_root).expanduser().resolve()
        self.store_dir = Path(self.store_dir) if self.store_dir else self.run_dir / "evaluate" / "stores"
        self.cache = FeatureCache(Path(self.cache_dir) if self.cache_dir else self.run_dir / "evaluate" / "features")
        self._stores: dict[float, ECGStore] = {}
        self._tasks: dict[tuple[str, int], object] = {}
        self._statements = None
        self._scalers: dict[float, object] = {}

    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "evaluate" / "predictions"

    @property
    def models_dir(self) -> Path:
        return self.run_dir / "evaluate" / "models"

    def store(self, fs: float) -> ECGStore:
        """The PTB-XL store at `fs` Hz (converted on first use)."""
        fs = float(fs)
        if fs not in self._stores:
            self._stores[fs] = ptbxl_store(self.ptbxl_root, fs, self.store_dir, workers=self.workers,
                                           progress=self.progress)
        return self._stores[fs]

    def task(self, name: str, min_samples: int = 0):
        """The PTB-XL task `name`, loaded once: classes occurring in more than `min_samples` records (every task but
        `diagnostic`, as the benchmark; see `esi.data.ptbxl.load_task`)."""
        from esi.data.ptbxl import load_task

        key = (name, int(min_samples))
        if key not in self._tasks:
            self._tasks[key] = load_task(self.ptbxl_root, name, min_samples=min_samples)
        return self._tasks[key]

    def class_names(self, classes: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """English names of `classes` (see `class_names`, with its `overrides`), from this scp_statements.csv."""
        from esi.data.ptbxl import load_statements

        if self._statements is None:
            self._statements = load_statements(self.ptbxl_root)
        return class_names(classes, self._statements, overrides)

    def input_scaler(self, encoder):
        """`input_scaler(encoder, store)`, fitted on folds 1-8 once per rate and kept for the run."""
        if encoder.normalize != "scaler":
            return None
        if encoder.scaler is not None:
            return encoder.scaler
        if encoder.fs not in self._scalers:
            self._scalers[encoder.fs] = input_scaler(encoder, self.store(encoder.fs))
        return self._scalers[encoder.fs]

    def features(self, encoder, what: str = "pooled", ecg_ids=None) -> FeatureSet:
        """Cached features from a `LoadedEncoder` of the records `ecg_ids` (default: all), `what` naming them
        (see `encoder_features`)."""
        return encoder_features(encoder, self.store(encoder.fs), self.cache, what=what, ecg_ids=ecg_ids,
                                scaler=self.input_scaler(encoder),
                                batch_size=self.batch_size, device=self.device, progress=self.progress)


# --- the tidy results table ------------------------------------------------------------------------------

RESULT_COLUMNS = ("task", "protocol", "recipe", "selection", "subset_draw", "label_fraction", "encoder", "metric",
                  "value", "ci_low", "ci_high", "ci_level", "p_value", "n_test", "n_train", "seed", "notes")
PER_CLASS_COLUMNS = ("task", "protocol", "recipe", "label_fraction", "encoder", "seed", "class", "class_name", "auroc",
                     "auprc", "n_positive_test")
# The macro metrics every classification protocol reports (AUPRC beside AUROC: the field's practice for
# imbalanced labels).
CLASSIFICATION_METRICS = ("macro_auroc", "macro_auprc")
# PTB-XL's fold 10 holds 2,198 records; with fewer than this many, results are a smoke test, not a benchmark.
SMOKE_TEST_RECORDS = 500


def smoke_note(n_test: int) -> str:
    """The note every result scored on only `n_test` < SMOKE_TEST_RECORDS records carries ("" otherwise)."""
    if n_test < SMOKE_TEST_RECORDS:
        return (f"smoke-sized: {n_test} test records (< {SMOKE_TEST_RECORDS}; PTB-XL fold 10 has 2,198), "
                "not comparable to published numbers")
    return ""


def official_splits(task):
    """(train, val, test, scored, classes, notes) of a PTB-XL task on the official folds 1-8 / 9 / 10.

    A class with no positive in the training folds cannot be learned by any model: it is left out of scoring
    (`scored` is the boolean class mask, `classes` the kept names) and `notes` says so.
    """
    train, val, test = task.split("train"), task.split("val"), task.split("test")
    if min(len(train), len(val), len(test)) == 0:
        raise ValueError(f"{task.task}: needs records in folds 1-8, 9 and 10; has {len(train)}/{len(val)}/{len(test)}")
    scored = train.y.sum(0) > 0
    classes = [c for c, keep in zip(task.classes, scored) if keep]
    notes = ""
    if not scored.all():
        dropped = [c for c, keep in zip(task.classes, scored) if not keep]
        notes = f"{len(dropped)} class(es) without a training positive not scored ({', '.join(dropped[:5])})"
    return train, val, test, scored, classes, notes


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def result_row(task: str, protocol: str, encoder: str, metric: str, value: float, ci_low: float = float("nan"),
               ci_high: float = float("nan"), *, recipe: str = "", selection: str = "", subset_draw: str = "",
               ci_level: float = float("nan"), p_value: float = float("nan"), label_fraction: float = float("nan"),
               n_test: int = 0, n_train: int = 0, seed: int | None = None, notes: str = "",
               size_note: bool = True) -> dict:
    """One row of the tidy results table (RESULT_COLUMNS).

    Args:
        task, protocol, encoder, metric: what was measured, how, on which encoder.
        value, ci_low, ci_high: the result and its bootstrap interval.
        recipe: the named training recipe that produced it ("benchmark", "esi", ...; "" where nothing is trained).
        selection: how the scored model was chosen ("final_epoch", "fold9_best", "none").
        subset_draw: how a label fraction of the training records was drawn ("merl", "every_class", "all").
        ci_level: coverage of [ci_low, ci_high] (0.90: the benchmark's 5th-95th percentiles).
        p_value: paired test against the encoder's random-init twin on the same test records (NaN: no twin).
        label_fraction: share of the training labels used (NaN where none are used).
        n_test, n_train: records scored and records trained on.
        seed: the seed of the run.
        notes: facts a reader needs (model selection, coverage, ...).
        size_note: prefix the smoke-size note when n_test < SMOKE_TEST_RECORDS (protocols with another notion of
            size, such as identification's probes, write their own).
    """
    return {"task": task, "protocol": protocol, "recipe": recipe, "selection": selection, "subset_draw": subset_draw,
            "label_fraction": label_fraction, "encoder": encoder, "metric": metric, "value": float(value),
            "ci_low": float(ci_low), "ci_high": float(ci_high), "ci_level": float(ci_level),
            "p_value": float(p_value), "n_test": int(n_test), "n_train": int(n_train), "seed": seed,
            "notes": join_notes(smoke_note(n_test) if size_note else "", notes)}


def unscorable_note(y_true: np.ndarray, classes) -> str:
    """The note naming the classes that cannot be scored on these test labels (no positive or no negative)."""
    from esi.evaluate.metrics import scorable

    left_out = [c for c, ok in zip(classes, scorable(y_true)) if not ok]
    if not left_out:
        return ""
    shown = ", ".join(left_out[:8]) + (", ..." if len(left_out) > 8 else "")
    return (f"{len(left_out)} of {len(classes)} class(es) not scorable on the test records (no positive or no "
            f"negative), left out of the macro means: {shown}")


def classification_rows(task: str, protocol: str, encoder: str, classes, y_true: np.ndarray, y_score: np.ndarray, *,
                        recipe: str, selection: str, subset_draw: str = "", label_fraction: float = float("nan"),
                        n_train: int = 0, seed: int = 0, n_boot: int = 100, ci_level: float = 0.90,
                        notes: str = "", names=None) -> dict:
    """Score one model's test predictions: macro AUROC and AUPRC rows with bootstrap intervals, per-class rows.

    Every classification protocol ends here, so every one reports the same metrics the same way: a non-finite
    score is an error naming the encoder, task and class (never a class quietly left out), classes without
    both labels on the test set are named in the notes, and both metrics share the same resamples.

    Args:
        task, protocol, encoder: as in the results table.
        classes: class labels, aligned with the columns of y_true and y_score.
        y_true, y_score: (records, classes) test labels and scores.
        recipe, selection, subset_draw, label_fraction, n_train, seed: as in `result_row`.
        n_boot: bootstrap resamples of the test records (drawn with `seed`).
        ci_level: coverage of the interval.
        notes: the protocol's own notes.
        names: class label -> English name for the per-class rows.

    Returns:
        {"rows": [macro_auroc row, macro_auprc row], "per_class": per-class rows}.
    """
    from esi.evaluate.metrics import bootstrap_metrics, per_class_auroc, per_class_average_precision

    where = f"{encoder} / {task} / {protocol}"
    results = bootstrap_metrics(y_true, y_score, metrics=CLASSIFICATION_METRICS, n_boot=n_boot, level=ci_level,
                                seed=seed, classes=list(classes), where=where)
    notes = join_notes(unscorable_note(y_true, classes), notes)
    rows = [result_row(task, protocol, encoder, metric, r.value, r.low, r.high, recipe=recipe, selection=selection,
                       subset_draw=subset_draw, ci_level=r.level, label_fraction=label_fraction,
                       n_test=len(y_true), n_train=n_train, seed=seed, notes=notes)
            for metric, r in results.items()]
    aucs, aps = per_class_auroc(y_true, y_score), per_class_average_precision(y_true, y_score)
    names = names or {}
    per_class = [{"task": task, "protocol": protocol, "recipe": recipe, "label_fraction": label_fraction,
                  "encoder": encoder, "seed": seed, "class": c, "class_name": names.get(c, c), "auroc": float(a),
                  "auprc": float(ap), "n_positive_test": int(y_true[:, j].sum())}
                 for j, (c, a, ap) in enumerate(zip(classes, aucs, aps))]
    return {"rows": rows, "per_class": per_class}


def save_predictions(path: Path, y_true: np.ndarray, y_score: np.ndarray, classes, ecg_ids, **extra) -> Path:
    """Write one model's test-set scores (for figures and later analysis) as npz at `path`.

    Args:
        path: the .npz file (folders created).
        y_true: (records, classes) labels; y_score: (records, classes) scores.
        classes: class labels; ecg_ids: (records,) the records.
        extra: further named values stored alongside (encoder, label_fraction, seed, pretrained, ...).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, y_true=np.asarray(y_true, dtype=np.uint8), y_score=np.asarray(y_score, dtype=np.float32),
                 classes=np.asarray(list(classes)).astype(str), ecg_ids=np.asarray(ecg_ids, dtype=np.int64),
                 **{k: np.asarray(v) for k, v in extra.items()})
    return path


def attach_p_values(outputs: list[dict], twins: dict[str, str], n_resamples: int = 1000, seed: int = 0) -> None:
    """Set `p_value` on the rows of every pretrained model from a paired test against its random-init twin.

    The twin's output must score the same test records under the same key (task, fraction, seed, ...); both
    models are resampled with the same record indices (`paired_bootstrap_test`), so the test sees their
    difference, not the spread of either alone.

    Args:
        outputs: one dict per scored model: "encoder" (label), "key" (anything hashable naming the comparison
            cell), "rows" (its result rows, changed in place), "y_true", "y_score".
        twins: pretrained label -> twin label (`esi.evaluate.encoders.twin_labels`).
        n_resamples: bootstrap resamples of the paired test.
        seed: seed of the resamples.
    """
    from esi.evaluate.metrics import paired_bootstrap_test

    by_cell = {(o["key"], o["encoder"]): o for o in outputs}
    for out in outputs:
        base = by_cell.get((out["key"], twins.get(out["encoder"])))
        if base is None:
            continue
        if not np.array_equal(out["y_true"], base["y_true"]):
            raise ValueError(f"{out['encoder']} and its twin {base['encoder']} were scored on different test "
                             f"records ({out['key']}); a paired test needs the same records")
        for row in out["rows"]:
            test = paired_bootstrap_test(out["y_true"], out["y_score"], base["y_score"], metric=row["metric"],
                                         n_resamples=n_resamples, seed=seed)
            row["p_value"] = test.p_value
            row["notes"] = join_notes(row["notes"], f"p vs {base['encoder']}: paired bootstrap over the same "
                                                    f"{len(out['y_true'])} test records ({test.n_resamples} "
                                                    f"resamples), difference {test.delta:+.3f}")


@dataclass
class ProtocolResults:
    """What a protocol returns: the tidy results (RESULT_COLUMNS) and per-class AUROCs (PER_CLASS_COLUMNS)."""

    table: "pd.DataFrame"
    per_class: "pd.DataFrame"

    @classmethod
    def from_rows(cls, rows: list[dict], per_class_rows: list[dict]) -> "ProtocolResults":
        """Both tables from lists of row dicts (`result_row` and `per_class_rows` output)."""
        import pandas as pd

        return cls(pd.DataFrame(rows, columns=list(RESULT_COLUMNS)),
                   pd.DataFrame(per_class_rows, columns=list(PER_CLASS_COLUMNS)))
