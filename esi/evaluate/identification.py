"""ECG-based patient identification on PTB-XL with frozen embeddings.

PTB-XL patients with at least two records: each patient's earliest record (by `recording_date`, ties broken by
ecg_id) forms the gallery, every later record is a probe. A probe is identified correctly at rank k when its own
patient's gallery record is among the k gallery records most cosine-similar to it. Reported: top-1 and top-5
accuracy (with a bootstrap interval over probes) and the whole CMC curve, for each encoder and its random-init
twin.

A probe recorded minutes after its gallery record (a repeat in the same session) is far easier to match than one
taken on another visit, so top-1/top-5 are also reported on the probes at least 24 h after their gallery record
(`top1_accuracy_beyond_24h`, `top5_accuracy_beyond_24h`; the gallery stays whole). On PTB-XL records 1-500,
8 of the 34 probes are within 24 h (7 of them within the hour).

    split = identification_split(load_database("data/ptbxl"))
    outcome = identify(features.take(split.gallery_ids), split.gallery_patients,
                       features.take(split.probe_ids), split.probe_patients)
    outcome.top1, outcome.top5, outcome.cmc

    results = run_identification(encoders, Workspace("outputs/run", "data/ptbxl"))   # every encoder and its twin
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from esi.config import with_changes
from esi.evaluate.encoders import EncoderSpec, LoadedEncoder, load_encoders, slug, twin_labels
from esi.evaluate.metrics import cmc_curve, identification_ranks, paired_test
from esi.evaluate.results import CommonSettings, ProtocolResults, fold_split, join_notes, result_row
from esi.evaluate.workspace import Workspace

PROTOCOL = "identification"
RECIPE = "earliest_record_gallery"  # gallery: each patient's first record; probes: the later ones
TASK = "patient_identification"
# Identification has no fixed test fold; under this many probes the result is a smoke test.
SMOKE_PROBES = 500
# Probes closer than this to their gallery record count as same-session repeats for the `_beyond_24h` rows.
SAME_SESSION_HOURS = 24.0


@dataclass
class IdentificationSettings:
    """Identification's settings (params keys `evaluate_identification_<field>`); gallery = each patient's
    earliest record, probes = the later ones."""

    folds: list[int] = field(default_factory=list)   # folds to draw patients from ([]: all)
    max_rank: int = 20                    # length of the CMC curve


@dataclass
class IdentificationSplit:
    """Gallery (one record per patient, the earliest) and probes (the later records), as aligned arrays.

    Attributes:
        gallery_ids: int64 (patients,), ecg_id of each patient's gallery record.
        gallery_patients: int64 (patients,), their patient ids.
        probe_ids: int64 (probes,), ecg_id of every probe record.
        probe_patients: int64 (probes,), their patient ids.
        probe_gap_hours: float64 (probes,), hours from the patient's gallery recording to the probe's (>= 0).
    """

    gallery_ids: np.ndarray
    gallery_patients: np.ndarray
    probe_ids: np.ndarray
    probe_patients: np.ndarray
    probe_gap_hours: np.ndarray

    @property
    def n_patients(self) -> int:
        return len(self.gallery_ids)

    def probes_apart(self, min_hours: float = SAME_SESSION_HOURS) -> np.ndarray:
        """Boolean (probes,) mask of the probes recorded at least `min_hours` after their gallery record.

        Args:
            min_hours: the smallest gap kept, in hours (default 24: drops same-session repeats).
        """
        return self.probe_gap_hours >= min_hours


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
    # Rows are sorted by date within each patient, so the group's first date is the gallery recording's.
    gallery_date = records.groupby("patient_id")["date"].transform("first")
    gap_hours = (records["date"] - gallery_date).dt.total_seconds() / 3600.0
    gallery, probes = records[first], records[~first]
    return IdentificationSplit(gallery["ecg_id"].to_numpy(), gallery["patient_id"].to_numpy(),
                               probes["ecg_id"].to_numpy(), probes["patient_id"].to_numpy(),
                               gap_hours[~first].to_numpy(dtype=np.float64))


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


def bootstrap_accuracy(hits: np.ndarray, n_boot: int = 100, level: float = 0.90,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 `hits`, resampling the probes.

    Args:
        hits: (probes,) 1 where a probe was identified, 0 where not.
        n_boot: resamples drawn (0: no interval, NaNs).
        level: coverage of the interval; its ends are the (1 - level)/2 and (1 + level)/2 quantiles
            (0.90: the 5th and 95th percentiles, as the PTB-XL benchmark reports).
        seed: seed of the resampling.

    Returns:
        (low, high); (NaN, NaN) when there are no hits to resample or n_boot <= 0.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    hits = np.asarray(hits, dtype=np.float64)
    if len(hits) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), (n_boot, len(hits)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def identification_rows(label: str, outcome: IdentificationOutcome, split: IdentificationSplit, n_boot: int = 100,
                        seed: int = 0, notes: str = "", level: float = 0.90,
                        split_name: str = "ptbxl_all_folds") -> list[dict]:
    """Tidy rows of one encoder's identification: top-1 and top-5 accuracy on all probes, then the same on the
    probes at least 24 h after their gallery record (`..._beyond_24h`), each with a bootstrap interval.

    Args:
        label: the encoder's name.
        outcome: its `identify` result (ranks aligned with `split.probe_ids`).
        split: the gallery/probe split it was run on.
        n_boot: bootstrap resamples of the probes.
        seed: the bootstrap's seed.
        notes: extra notes for the rows.
        level: coverage of the bootstrap intervals (0.90: 5th-95th percentiles).
        split_name: the results' split column (the folds the patients were drawn from, `fold_split`).
    """
    n_probes = len(split.probe_ids)
    if len(outcome.ranks) != n_probes:
        raise ValueError(f"{len(outcome.ranks)} ranks for {n_probes} probes; was `outcome` run on this split?")
    apart = split.probes_apart()
    n_near = int(n_probes - apart.sum())
    subsets = [
        ("", np.ones(n_probes, dtype=bool), f"{split.n_patients} patients in the gallery, {n_probes} probes"),
        ("_beyond_24h", apart,
         f"{n_near} of {n_probes} probes excluded: recorded within {SAME_SESSION_HOURS:g} h of their gallery record "
         f"(same-session repeats are easy to match); gallery unchanged ({split.n_patients} patients)"),
    ]
    rows = []
    for suffix, mask, facts in subsets:
        n_test = int(mask.sum())
        size_note = f"smoke-sized: {n_test} probes (< {SMOKE_PROBES})" if n_test < SMOKE_PROBES else ""
        for k in (1, 5):
            hits = outcome.ranks[mask] < k
            # No probe left (e.g. every repeat in one session): NaN rather than numpy's empty-mean warning.
            value = float(hits.mean()) if n_test else float("nan")
            low, high = bootstrap_accuracy(hits, n_boot, level=level, seed=seed)
            rows.append(result_row(TASK, PROTOCOL, label, f"top{k}_accuracy{suffix}", value, low, high,
                                   split=split_name, recipe=RECIPE, selection="none",
                                   ci_level=level, n_test=n_test, seed=seed,
                                   notes=join_notes(size_note, facts, notes), size_note=False))
    return rows


def run_identification(encoders: Sequence[EncoderSpec | LoadedEncoder], workspace: Workspace,
                       settings: IdentificationSettings | None = None, common: CommonSettings | None = None, *,
                       random_baselines: bool = True, **changes) -> ProtocolResults:
    """Patient identification (top-1/top-5 accuracy) of every encoder, each pretrained one tested against its
    random-init twin on the same probes.

    Args:
        encoders: `EncoderSpec`s or `LoadedEncoder`s.
        workspace: the PTB-XL `Workspace` (patient ids, stores, feature cache, device, batch size).
        settings: folds and CMC length (params keys `evaluate_identification_*`; default: all folds, rank 20).
        common: bootstrap seed and resamples, interval coverage and paired-test resamples (default
            `CommonSettings()`).
        random_baselines: add the random-init twin of every pretrained spec.
        changes: fields of `settings` or `common` to change (`max_rank=5, n_boot=20`).

    Returns:
        `ProtocolResults` (no per-class rows). CMC curves, the ranks of all probes and each probe's gap to its
        gallery record (hours) go to <run_dir>/evaluate/predictions/identification/<encoder>.npz.
    """
    settings, common = with_changes(changes, settings or IdentificationSettings(), common or CommonSettings())
    folds = settings.folds or None
    split = identification_split(workspace.dataset.patient_table(), folds)
    loaded = load_encoders(encoders, workspace.device, random_baselines)
    rows, ranks = {}, {}
    for encoder in loaded:
        features = workspace.features(encoder)  # every record: the same cached features as the linear probe
        outcome = identify(features.take(split.gallery_ids), split.gallery_patients, features.take(split.probe_ids),
                           split.probe_patients, max_rank=settings.max_rank)
        rows[encoder.label] = identification_rows(encoder.label, outcome, split, common.n_boot, common.seed,
                                                  level=common.ci_level, split_name=fold_split(folds))
        ranks[encoder.label] = outcome.ranks
        path = workspace.predictions_dir / PROTOCOL / f"{slug(encoder.label)}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez(handle, ranks=outcome.ranks, cmc=outcome.cmc, probe_ids=split.probe_ids,
                     probe_gap_hours=split.probe_gap_hours,
                     encoder=np.asarray(encoder.label), pretrained=np.asarray(encoder.pretrained),
                     n_gallery=np.asarray(split.n_patients))
    for label, twin in twin_labels(loaded).items():
        attach_identification_p_values(rows[label], ranks[label], ranks[twin], split, twin,
                                       common.significance_resamples)
    return ProtocolResults.from_rows([row for encoder_rows in rows.values() for row in encoder_rows], [],
                                     **workspace.dataset.context, encoders=loaded)


def attach_identification_p_values(rows: list[dict], ranks: np.ndarray, twin_ranks: np.ndarray,
                                   split: IdentificationSplit, twin: str, n_resamples: int = 1000) -> None:
    """Set `p_value` on an encoder's identification rows: a paired permutation test over the same probes of its
    hits against its random-init twin's (`paired_test(..., metric="accuracy")`).

    Args:
        rows: the encoder's `identification_rows` (changed in place).
        ranks, twin_ranks: (probes,) the two encoders' ranks of the own gallery record.
        split: the split both were run on; twin: the twin's label (named in the notes).
        n_resamples: random swaps of the permutation test.
    """
    for row in rows:
        k = int(row["metric"][3])                                   # "top1_accuracy..." -> 1
        mask = split.probes_apart() if row["metric"].endswith("_beyond_24h") else np.ones(len(ranks), dtype=bool)
        if not mask.any():
            continue
        test = paired_test(None, ranks[mask] < k, twin_ranks[mask] < k, metric="accuracy",
                           n_permutations=n_resamples, seed=0)
        row["p_value"], row["baseline"] = test.p_value, twin
        row["notes"] = join_notes(row["notes"], f"p vs {twin}: paired permutation test over the same "
                                                f"{int(mask.sum())} probes ({test.n_permutations} swaps), "
                                                f"difference {test.delta:+.3f}")
