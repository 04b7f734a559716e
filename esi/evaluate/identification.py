"""ECG-based patient identification on PTB-XL with frozen embeddings.

PTB-XL patients with at least two records: each patient's earliest record (by `recording_date`, ties broken by
ecg_id) forms the gallery, every later record is a probe. A probe is identified correctly at rank k when its own
patient's gallery record is among the k gallery records most cosine-similar to it. Reported: top-1 and top-5
accuracy (with a bootstrap interval over probes) and the whole CMC curve, for each encoder and its random-init
twin.

    split = identification_split(load_database("data/ptbxl"))
    outcome = identify(features.take(split.gallery_ids), split.gallery_patients,
                       features.take(split.probe_ids), split.probe_patients)
    outcome.top1, outcome.top5, outcome.cmc
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from esi.evaluate.encoders import EncoderSpec, LoadedEncoder, load_encoders, slug
from esi.evaluate.features import ProtocolResults, Workspace, join_notes, result_row
from esi.evaluate.metrics import cmc_curve, identification_ranks

PROTOCOL = "identification"
TASK = "patient_identification"
# Identification has no fixed test fold; under this many probes the result is a smoke test.
SMOKE_PROBES = 500


@dataclass
class IdentificationSplit:
    """Gallery (one record per patient, the earliest) and probes (the later records), as aligned arrays."""

    gallery_ids: np.ndarray
    gallery_patients: np.ndarray
    probe_ids: np.ndarray
    probe_patients: np.ndarray

    @property
    def n_patients(self) -> int:
        return len(self.gallery_ids)


def identification_split(database: pd.DataFrame, folds: Sequence[int] | None = None) -> IdentificationSplit:
    """Patients with at least two records: gallery = each one's earliest record, probes = the others.

    Args:
        database: `esi.data.ptbxl.load_database` output (index ecg_id; columns patient_id, recording_date,
            strat_fold).
        folds: only records of these folds (None: all; PTB-XL keeps each patient's records in one fold).

    Raises:
        ValueError: a record without a readable recording_date (naming it), or no patient with two records.
    """
    table = database if folds is None else database[database["strat_fold"].isin(list(folds))]
    dates = pd.to_datetime(table["recording_date"], errors="coerce")
    if dates.isna().any():
        bad = table.index[dates.isna()].tolist()[:5]
        raise ValueError(f"ecg_id {bad}: recording_date missing or unreadable; cannot order a patient's records")
    records = pd.DataFrame({"ecg_id": table.index.to_numpy(dtype=np.int64),
                            "patient_id": table["patient_id"].to_numpy(dtype=np.int64), "date": dates.to_numpy()})
    counts = records["patient_id"].map(records["patient_id"].value_counts())
    records = records[counts >= 2].sort_values(["patient_id", "date", "ecg_id"], kind="stable")
    if records.empty:
        raise ValueError("no patient has two or more records" + (f" in folds {list(folds)}" if folds else ""))
    first = ~records["patient_id"].duplicated()
    gallery, probes = records[first], records[~first]
    return IdentificationSplit(gallery["ecg_id"].to_numpy(), gallery["patient_id"].to_numpy(),
                               probes["ecg_id"].to_numpy(), probes["patient_id"].to_numpy())


@dataclass
class IdentificationOutcome:
    """ranks: (probes,) 0 = own patient's gallery record ranked first; cmc: accuracy at rank 1..max_rank."""

    ranks: np.ndarray
    cmc: np.ndarray

    @property
    def top1(self) -> float:
        return float(np.mean(self.ranks < 1))

    @property
    def top5(self) -> float:
        return float(np.mean(self.ranks < 5))


def identify(gallery: np.ndarray, gallery_patients: np.ndarray, probes: np.ndarray, probe_patients: np.ndarray,
             max_rank: int = 20) -> IdentificationOutcome:
    """Rank the gallery for every probe by cosine similarity.

    Args:
        gallery: (patients, dim) embeddings of the gallery records.
        gallery_patients: (patients,) their patient ids.
        probes: (probes, dim) embeddings of the probe records.
        probe_patients: (probes,) their patient ids.
        max_rank: length of the CMC curve.
    """
    ranks = identification_ranks(gallery, gallery_patients, probes, probe_patients)
    return IdentificationOutcome(ranks=ranks, cmc=cmc_curve(ranks, max_rank))


def bootstrap_accuracy(hits: np.ndarray, n_boot: int = 100, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile interval (level 1 - alpha) of the mean of 0/1 `hits` over `n_boot` resamples of the probes,
    drawn with `seed`."""
    hits = np.asarray(hits, dtype=np.float64)
    if len(hits) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), (n_boot, len(hits)))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def identification_rows(label: str, outcome: IdentificationOutcome, split: IdentificationSplit, n_boot: int = 100,
                        seed: int = 0, notes: str = "") -> list[dict]:
    """Tidy rows (top-1 and top-5 accuracy with bootstrap intervals) of one encoder's identification.

    Args:
        label: the encoder's name.
        outcome: its `identify` result; split: the gallery/probe split it was run on.
        n_boot, seed: bootstrap resamples of the probes and their seed.
        notes: extra notes for the rows.
    """
    size_note = (f"smoke-sized: {len(split.probe_ids)} probes (< {SMOKE_PROBES})"
                 if len(split.probe_ids) < SMOKE_PROBES else "")
    facts = f"{split.n_patients} patients in the gallery, {len(split.probe_ids)} probes"
    rows = []
    for k in (1, 5):
        hits = outcome.ranks < k
        low, high = bootstrap_accuracy(hits, n_boot, seed=seed)
        rows.append(result_row(TASK, PROTOCOL, label, f"top{k}_accuracy", hits.mean(), low, high,
                               n_test=len(split.probe_ids), seed=seed, notes=join_notes(size_note, facts, notes),
                               size_note=False))
    return rows


def identification_results(encoders: Sequence[EncoderSpec | LoadedEncoder], workspace: Workspace, *,
                           folds: Sequence[int] | None = None, max_rank: int = 20, n_boot: int = 100, seed: int = 0,
                           random_baselines: bool = True) -> ProtocolResults:
    """Identification for every encoder in a `workspace`; CMC curves and ranks go to
    <run_dir>/evaluate/predictions/identification/<encoder>.npz.

    The other arguments are those of `run_identification`.
    """
    from esi.data.ptbxl import load_database

    split = identification_split(load_database(workspace.ptbxl_root), folds)
    rows = []
    for encoder in load_encoders(encoders, workspace.device, random_baselines):
        features = workspace.features(encoder)  # every record: the same cached features as the linear probe
        outcome = identify(features.take(split.gallery_ids), split.gallery_patients, features.take(split.probe_ids),
                           split.probe_patients, max_rank=max_rank)
        rows.extend(identification_rows(encoder.label, outcome, split, n_boot, seed))
        path = workspace.predictions_dir / PROTOCOL / f"{slug(encoder.label)}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez(handle, ranks=outcome.ranks, cmc=outcome.cmc, probe_ids=split.probe_ids,
                     encoder=np.asarray(encoder.label), pretrained=np.asarray(encoder.pretrained),
                     n_gallery=np.asarray(split.n_patients))
    return ProtocolResults.from_rows(rows, [])


def run_identification(encoders: Sequence[EncoderSpec | LoadedEncoder], ptbxl_root: str | os.PathLike, *,
                       folds: Sequence[int] | None = None, run_dir: str | os.PathLike | None = None,
                       store_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                       max_rank: int = 20, n_boot: int = 100, seed: int = 0, random_baselines: bool = True,
                       batch_size: int = 32, device: str = "cpu", workers: int | None = None, progress: bool = True):
    """Patient identification (top-1/top-5 accuracy) as a tidy DataFrame (see RESULT_COLUMNS).

    Args:
        encoders: `EncoderSpec`s or `LoadedEncoder`s.
        ptbxl_root: the PTB-XL folder.
        folds: restrict to these folds (None: all records).
        run_dir: where stores, features and CMC curves go (default outputs/evaluate).
        store_dir: converted PTB-XL stores (default <run_dir>/evaluate/stores).
        cache_dir: cached features (default <run_dir>/evaluate/features).
        max_rank: length of the CMC curve saved.
        n_boot: bootstrap resamples of the probes.
        seed: bootstrap seed.
        random_baselines: add the random-init twin of every pretrained spec.
        batch_size: records per forward pass.
        device: torch device.
        workers: processes for the one-off PTB-XL conversion.
        progress: show progress bars.
    """
    workspace = Workspace(run_dir, ptbxl_root, store_dir=store_dir, cache_dir=cache_dir, device=device,
                          batch_size=batch_size, workers=workers, progress=progress)
    return identification_results(encoders, workspace, folds=folds, max_rank=max_rank, n_boot=n_boot, seed=seed,
                                  random_baselines=random_baselines).table
