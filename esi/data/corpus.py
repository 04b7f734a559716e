"""The pretraining corpus: ECGs of a store paired with their texts, split into train and validation.

    corpus = build_corpus(kind="mimic", root=..., store_dir=..., waveform_dict=...)
    corpus.rows["train"], corpus.rows["val"]      # store rows
    corpus.texts[row]                             # the text of store row `row` ("" if it has none)

MIMIC-IV-ECG: text = demographics + machine statements + their waveform descriptions (esi.data.text); the
validation split holds whole subjects (a stable hash of subject_id), so no patient is on both sides.
PTB-XL (the CI-sized corpus): text = demographics + the English SCP statement descriptions + the report; the
official folds split it (default train 1-8, validation 9; fold 10 is never touched here).
Every ECG of the store is accounted for: those without a text are counted in `report`, never dropped silently.

What the data notebook (02) shows of it: `dataset_table(corpus)`, `statement_frequencies(train_cfg)` (records per
statement in the source tables), `example_rows(corpus, n)`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from esi.data.store import ECGStore
from esi.paths import resolve

KINDS = ("mimic", "ptbxl")


@dataclass
class PretrainingCorpus:
    """A store, one text per store row, and the rows of each split."""
    store: ECGStore
    texts: list[str]
    rows: dict[str, np.ndarray]
    report: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.store)} ECGs in the store", f"{len(self.rows['train'])} train",
                 f"{len(self.rows['val'])} validation"]
        for key, value in self.report.items():
            if isinstance(value, (int, float, str)):
                parts.append(f"{key}: {value}")
        return "; ".join(parts)


def ensure_store(kind: str, root: str | os.PathLike, store_dir: str | os.PathLike, fs: float, seconds: float,
                 workers: int | None = None, limit: int | None = None, progress: bool = True) -> ECGStore:
    """Open the store at `store_dir`, converting `root` into it first if it is missing or unfinished.

    Conversion is resumable, so calling this again after a kill completes the store.
    """
    from esi.data.convert import convert
    from esi.data.store import read_manifest

    store_dir = Path(store_dir)
    try:
        complete = read_manifest(store_dir).get("complete", False)
    except FileNotFoundError:
        complete = False
    if not complete:
        convert(kind, root, store_dir, fs=fs, seconds=seconds, workers=workers, limit=limit, progress=progress)
    return ECGStore(store_dir)


def subject_in_validation(subject_ids, fraction: float, salt: str = "esi-val") -> np.ndarray:
    """True for subjects in the validation share: a stable hash of the id, independent of dataset order."""
    out = np.zeros(len(subject_ids), dtype=bool)
    for i, sid in enumerate(subject_ids):
        digest = hashlib.sha1(f"{salt}:{sid}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "little") / 2 ** 64 < fraction
    return out


def build_corpus(kind: str, root: str | os.PathLike, store_dir: str | os.PathLike, fs: float = 500,
                 seconds: float = 10, waveform_dict: str | os.PathLike | None = None,
                 patients: str | os.PathLike | None = None, val_fraction: float = 0.05,
                 train_folds: Sequence[int] = tuple(range(1, 9)), val_folds: Sequence[int] = (9,),
                 max_words: int | None = None, limit: int | None = None, workers: int | None = None,
                 progress: bool = True) -> PretrainingCorpus:
    """Convert (if needed) and pair a dataset for pretraining.

    Args:
        kind: "mimic" (MIMIC-IV-ECG layout) or "ptbxl" (PTB-XL layout).
        root: the dataset folder.
        store_dir: where the ECG store is (or will be converted to).
        fs, seconds: the store's sampling rate and record length.
        waveform_dict: statement -> description JSON (the CQA output, or the paper's released file); MIMIC only.
            None composes texts without descriptions.
        patients: MIMIC-IV patients table (age, sex), optional.
        val_fraction: MIMIC: share of subjects held out for validation.
        train_folds, val_folds: PTB-XL folds of each split.
        max_words: word budget per text (descriptions are trimmed first); None: no budget.
        limit: use only the first `limit` records of the record list (smoke runs).
        workers: conversion processes.
        progress: progress bars.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; choose one of {', '.join(KINDS)}")
    store = ensure_store(kind, root, store_dir, fs, seconds, workers=workers, limit=limit, progress=progress)
    index = store.index
    texts = [""] * len(store)
    report: dict = {"rejected_by_conversion": int(len(store.rejected)) if store.rejected is not None else 0}

    if kind == "mimic":
        from esi.data.mimic import load_pairs
        from esi.data.statements import load_waveform_dict
        from esi.data.text import compose_corpus

        pairs, stats = load_pairs(root, patients=patients)
        descriptions = load_waveform_dict(waveform_dict) if waveform_dict else None
        composed, text_report = compose_corpus(pairs, descriptions, max_tokens=max_words, progress=progress)
        text_of = dict(zip(pairs["study_id"].astype(str), composed))
        for row, rid in enumerate(index["record_id"].astype(str)):
            texts[row] = text_of.get(rid, "")
        val = subject_in_validation(index["subject_id"].tolist(), val_fraction)
        report.update(statements_matched=text_report.n_matched if hasattr(text_report, "n_matched") else None,
                      text_report=text_report, pair_stats=stats)
    else:
        from esi.data.ptbxl import load_database, load_statements
        from esi.data.text import ptbxl_text

        database = load_database(root)
        statements = load_statements(root)
        folds = np.full(len(store), -1)
        for row, eid in enumerate(index["ecg_id"].astype(int)):
            if eid in database.index:
                meta = database.loc[eid]
                texts[row] = ptbxl_text(meta, statements, max_tokens=max_words).text
                folds[row] = int(meta["strat_fold"])
        train = np.isin(folds, list(train_folds))
        val = np.isin(folds, list(val_folds))
        unused = ~(train | val)
        report["outside_train_and_val_folds"] = int(unused.sum())
        val = val & ~train

    has_text = np.array([bool(t) for t in texts])
    report["without_text"] = int((~has_text).sum())
    if kind == "mimic":
        train_rows = np.flatnonzero(~val & has_text)
        val_rows = np.flatnonzero(val & has_text)
    else:
        train_rows = np.flatnonzero(train & has_text)
        val_rows = np.flatnonzero(val & has_text)
    if len(train_rows) == 0:
        raise ValueError(f"no training pairs in {root}: {report}")
    return PretrainingCorpus(store=store, texts=texts, rows={"train": train_rows, "val": val_rows}, report=report)


def dataset_table(corpus):
    """One table of the pretraining corpus: records, subjects, splits, texts, rates (a pandas DataFrame).

    Args:
        corpus: an `esi.data.corpus.PretrainingCorpus`.
    """
    import pandas as pd

    store, index = corpus.store, corpus.store.index
    subject = next((c for c in ("subject_id", "patient_id") if c in index), None)
    words = np.array([len(t.split()) for t in corpus.texts if t])
    rows = [
        ("ECGs in the store", len(store)),
        ("rejected by the conversion", int(corpus.report.get("rejected_by_conversion", 0))),
        ("subjects", int(index[subject].nunique()) if subject else "n/a"),
        ("training pairs", len(corpus.rows["train"])),
        ("validation pairs", len(corpus.rows["val"])),
        ("ECGs without a text", int(corpus.report.get("without_text", 0))),
        ("stored rate (Hz) x samples", f"{store.fs:g} x {store.length}"),
        ("source rates (Hz)", ", ".join(f"{fs:g}: {n}" for fs, n in index["fs_source"].value_counts().items())),
        ("words per text, median [min, max]",
         f"{np.median(words):.0f} [{words.min()}, {words.max()}]" if len(words) else "n/a"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def statement_frequencies(train_cfg):
    """Records per statement in the pretraining corpus's source tables (a pandas Series, most frequent first).

    MIMIC-IV-ECG: the machine statements (report_0 .. report_17); PTB-XL: the SCP statements' descriptions.

    Args:
        train_cfg: the TrainConfig (corpus kind and data_root).
    """
    import pandas as pd

    root = resolve(train_cfg.data_root)
    if train_cfg.corpus == "mimic":
        from esi.data.mimic import load_measurements

        statements = load_measurements(root)["statements"]
        counts = pd.Series([s for record in statements for s in dict.fromkeys(record)]).value_counts()
    else:
        from esi.data.ptbxl import load_database, load_statements

        names = load_statements(root)["description"]
        codes = [code for record in load_database(root)["scp_codes"] for code in record]
        counts = pd.Series([names.get(code, code) for code in codes]).value_counts()
    counts.name = "records"
    return counts


def example_rows(corpus, n: int, seed: int = 0) -> list[int]:
    """`n` store rows of the corpus with a text, drawn at random (seeded), in store order."""
    rows = np.concatenate([corpus.rows["train"], corpus.rows["val"]])
    if len(rows) == 0 or n <= 0:
        return []
    pick = np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False)
    return sorted(int(r) for r in pick)
