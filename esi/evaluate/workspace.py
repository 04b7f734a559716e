"""What every protocol shares in one evaluation run on one dataset: the `Workspace` (folders, converted stores,
cached features, tasks, device), the English names of classes, and the dataset's train/val/test split.

    workspace = Workspace("outputs/run", "data/ptbxl", device="cuda")                         # PTB-XL
    workspace = ChallengeWorkspace("outputs/run", "data/challenge-2021/training", dataset="cpsc2018",
                                   split="stratified", length_policy="drop_short")          # CPSC2018, CSN, ...
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace)

Every protocol takes either: a task has the same interface on every dataset (`esi.data.ptbxl.PTBXLTask`,
`esi.data.challenge_tasks.ChallengeTask`: folds 1-8 train, 9 validate, 10 test), and the rows say which dataset,
split preset and length policy produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from esi.data.store import ECGStore
from esi.evaluate.features import (FeatureCache, FeatureSet, encoder_features, input_scaler, is_converted,
                                   ptbxl_store, store_rows)
from esi.evaluate.results import PTBXL_CONTEXT, fold_split

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


def statement_aliases(classes: Sequence[str], statements) -> dict[str, list[str]]:
    """class -> the texts scp_statements.csv gives its SCP code (description, SCP-ECG statement description).

    Args:
        classes: class labels (SCP codes or group names; a group name has none).
        statements: `esi.data.ptbxl.load_statements` output.
    """
    out = {}
    for c in classes:
        texts = []
        if c in statements.index:
            for column in ("description", "SCP-ECG Statement Description"):
                value = statements[column].get(c) if column in statements.columns else None
                if isinstance(value, str):
                    texts.append(value)
        out[c] = texts
    return out


@dataclass
class Workspace:
    """Where an evaluation keeps what it makes, and how it runs encoders.

    run_dir: the run's output folder (results.csv, figures/ and evaluate/ below it); None: outputs/evaluate.
    root: the PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records100/, records500/).
    store_dir: converted PTB-XL stores, one per rate (default <run_dir>/evaluate/stores).
    cache_dir: cached features (default <run_dir>/evaluate/features); share it between runs to reuse features.
    device: torch device of the encoders.
    batch_size: records per forward pass when extracting features.
    workers: processes for converting PTB-XL (None: all cores).
    progress: show progress bars.
    """

    run_dir: Path | None
    root: Path
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
        self.root = Path(self.root).expanduser().resolve()
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
            self._stores[fs] = ptbxl_store(self.root, fs, self.store_dir, workers=self.workers,
                                           progress=self.progress)
        return self._stores[fs]

    def task(self, name: str, min_samples: int = 0):
        """The PTB-XL task `name`, loaded once: classes occurring in more than `min_samples` records (every task but
        `diagnostic`, as the benchmark; see `esi.data.ptbxl.load_task`)."""
        from esi.data.ptbxl import load_task

        key = (name, int(min_samples))
        if key not in self._tasks:
            self._tasks[key] = load_task(self.root, name, min_samples=min_samples)
        return self._tasks[key]

    def class_names(self, classes: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """English names of `classes` (see `class_names`, with its `overrides`), from this scp_statements.csv."""
        return class_names(classes, self._statement_table(), overrides)

    # What this workspace's rows say in the results' dataset and length_policy columns.
    dataset = PTBXL_CONTEXT["dataset"]
    length_policy = PTBXL_CONTEXT["length_policy"]
    label_rule = PTBXL_CONTEXT["labels"]
    # Identification needs several records per patient: PTB-XL has patient ids, the Challenge datasets none.
    has_patient_ids = True

    def task_names(self, requested: Sequence[str]) -> list[str]:
        """The tasks a protocol runs here: the `requested` PTB-XL tasks."""
        return list(requested)

    def scored_split(self, task, folds: Sequence[int]) -> str:
        """The results' `split` of rows scored on `folds` with nothing trained (zero-shot): "ptbxl_fold_10"."""
        return fold_split(folds)

    @property
    def context(self) -> dict:
        """{"dataset", "length_policy", "labels"}: the columns every row of this workspace carries (see
        ProtocolResults)."""
        return {"dataset": self.dataset, "length_policy": self.length_policy, "labels": self.label_rule}

    def class_aliases(self, classes: Sequence[str]) -> dict[str, list[str]]:
        """Other texts a class is known by, to look its description up under: the SCP statement's texts."""
        return statement_aliases(classes, self._statement_table())

    def _statement_table(self):
        """This PTB-XL folder's scp_statements.csv (`load_statements`), read once."""
        from esi.data.ptbxl import load_statements

        if self._statements is None:
            self._statements = load_statements(self.root)
        return self._statements

    def scored_records(self, fs: float, folds: Sequence[int]) -> np.ndarray:
        """Every record of the store at `fs` in `folds` (the records a zero-shot run encodes once for all tasks)."""
        index = self.store(fs).index
        return index.loc[index["strat_fold"].isin(list(folds)), "record_id"].astype(int).to_numpy()

    def valid_samples(self, fs: float) -> int | None:
        """Samples of each record the encoders see as signal (None: the whole 10 s; see ChallengeWorkspace)."""
        return None

    def training_rows(self, store: ECGStore) -> np.ndarray | None:
        """Rows of `store` in the training split (None: PTB-XL's folds 1-8, which `input_scaler` finds itself)."""
        return None

    def input_scaler(self, encoder):
        """`input_scaler(encoder, store)`: the encoder's own, else fitted on the training split once per rate."""
        if encoder.normalize != "scaler":
            return None
        if encoder.scaler is not None:
            return encoder.scaler
        if encoder.fs not in self._scalers:
            store = self.store(encoder.fs)
            self._scalers[encoder.fs] = input_scaler(encoder, store, self.training_rows(store))
        return self._scalers[encoder.fs]

    def features(self, encoder, what: str = "pooled", ecg_ids=None) -> FeatureSet:
        """Cached features from a `LoadedEncoder` of the records `ecg_ids` (default: all), `what` naming them
        (see `encoder_features`)."""
        return encoder_features(encoder, self.store(encoder.fs), self.cache, what=what, ecg_ids=ecg_ids,
                                scaler=self.input_scaler(encoder), valid_samples=self.valid_samples(encoder.fs),
                                batch_size=self.batch_size, device=self.device, progress=self.progress)


@dataclass
class ChallengeWorkspace(Workspace):
    """A `Workspace` on CPSC2018, CSN or any PhysioNet/CinC Challenge source, read as downloaded.

    root: the Challenge 2020/2021 tree (`training/`, or the folder above it) for cpsc2018 and other sources, or
        PhysioNet ecg-arrhythmia 1.0.0 (the folder holding WFDBRecords/) for csn.
    dataset: "cpsc2018", "csn", or a Challenge source folder name ("georgia", "cpsc_2018_extra", ...).
    split: the split preset (`esi.data.splits`: stratified, folds10, ecgfix, merl).
    length_policy: crop_pad (centre-crop long records, zero-pad short ones), drop_short (drop records under 10 s,
        centre-crop long ones), merl (the first 10 s; for cpsc2018 only the first 5 s, zeros after, as MERL).
    min_positives: a class of csn or a source needs this many positive records (cpsc2018: its 9 classes).
    unknown_codes: keep | drop_empty | drop_unknown (see `esi.data.challenge_tasks`).
    labels: exact (SNOMED codes) | merl_released (MERL's 38 released CSN columns); split ecgfix brings ecg-fix's
        own labels on cpsc2018 and csn. The summary's "labels" row names the rule applied.
    split_seed: seed of the stratified / folds10 / ecgfix presets; None: 42, and for ecgfix the seed ecg-fix used
        for the dataset (774635088 for CSN).
    task_fs: the rate of the store whose index the task is built from (records the reader rejected there are
        not in the task; they are listed in the store's rejected.csv and counted in the summary).
    The other fields are `Workspace`'s. The task is named after the dataset; its class/record summary is written
    to <run_dir>/evaluate/<dataset>_summary.csv.
    """

    dataset: str = "cpsc2018"
    split: str = "stratified"
    length_policy: str = "crop_pad"
    min_positives: int = 10
    unknown_codes: str = "keep"
    labels: str = "exact"
    split_seed: int | None = None
    task_fs: float = 500.0
    has_patient_ids = False     # record-level datasets: no identification, splits not patient-disjoint

    @property
    def label_rule(self) -> str:
        """The rule the task's labels follow ("exact", "merl_released", "ecgfix"): the rows' `labels` column."""
        from esi.data.challenge_tasks import label_rule

        return label_rule(self.dataset, self.split, self.labels)

    def __post_init__(self):
        from esi.data.challenge_tasks import LENGTH_POLICIES, label_rule
        from esi.data.splits import PRESETS

        super().__post_init__()
        if self.split not in PRESETS:
            raise ValueError(f"unknown split preset {self.split!r}; expected one of: {', '.join(PRESETS)}")
        if self.length_policy not in LENGTH_POLICIES:
            raise ValueError(f"unknown length policy {self.length_policy!r}; expected one of: "
                             f"{', '.join(LENGTH_POLICIES)}")
        label_rule(self.dataset, self.split, self.labels)   # a label mode the dataset cannot take stops here
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.dataset}: dataset folder {self.root} does not exist")
        # The record source this folder is read as: ecg-arrhythmia (the folder holding WFDBRecords/, or one inside
        # it, as esi.data.challenge.ecg_arrhythmia_records takes it) or a Challenge tree.
        inside = (self.root / "WFDBRecords").is_dir() or "WFDBRecords" in self.root.parts
        self.source = "ecg_arrhythmia" if inside else "challenge"
        self._records = None
        self._task = None

    def records(self):
        """The dataset's record table (record_id, path, source, dx, age, sex), read from the headers once."""
        import pandas as pd

        if self._records is None:
            from esi.data.challenge import challenge_records, ecg_arrhythmia_records
            from esi.data.challenge_tasks import DATASET_SOURCES

            sources = DATASET_SOURCES.get(self.dataset, (self.dataset,))
            if self.source == "ecg_arrhythmia":
                table = ecg_arrhythmia_records(self.root)
            else:
                # Only the dataset's source folders when the tree has them (CPSC2018 is 6,877 of ~88,000 headers).
                folders = [f for s in sources for f in (self.root / "training" / s, self.root / s) if f.is_dir()]
                table = (pd.concat([challenge_records(f) for f in folders], ignore_index=True) if folders
                         else challenge_records(self.root))
            chosen = table[table["source"].astype(str).isin(sources)]
            if chosen.empty:
                found = ", ".join(sorted(table["source"].astype(str).unique())[:10])
                raise ValueError(f"{self.root}: no records of {self.dataset} (source folder(s) {', '.join(sources)}); "
                                 f"found {found}")
            self._records = chosen.reset_index(drop=True)
        return self._records

    def store(self, fs: float) -> ECGStore:
        """The dataset at `fs` Hz as an `ECGStore` (10 s, cropped as the length policy says), converted on first use.
        Records the reader rejects are recorded in the store's rejected.csv and left out of the task."""
        from esi.data.challenge_tasks import POLICY_CROP
        from esi.data.convert import convert_table

        fs = float(fs)
        if fs not in self._stores:
            crop = POLICY_CROP[self.length_policy]
            out = self.store_dir / f"{self.dataset}_{fs:g}hz_{crop}"
            if not is_converted(out, self.root):
                convert_table(self.records(), out, source=self.source, input=self.root, fs=fs, seconds=10.0,
                              workers=self.workers, progress=self.progress, crop=crop,
                              source_info={"dataset": self.dataset})
            self._stores[fs] = ECGStore(out)
        return self._stores[fs]

    def task(self, name: str | None = None, min_samples: int = 0):
        """The dataset's one task (`ChallengeTask`, named after the dataset); `min_samples` does not apply (classes
        follow `min_positives` and the dataset's vocabulary)."""
        from esi.data.challenge_tasks import load_challenge_task, write_summary

        if name not in (None, self.dataset):
            raise ValueError(f"{self.dataset} has one task, {self.dataset!r}; got {name!r}")
        if self._task is None:
            import pandas as pd

            store = self.store(self.task_fs)
            self._task = load_challenge_task(store.index, self.dataset, split=self.split,
                                             min_positives=self.min_positives, unknown_codes=self.unknown_codes,
                                             seed=self.split_seed, length_policy=self.length_policy,
                                             labels=self.labels)
            # Records the reader could not convert never reach the index: count them here too.
            rejected = {"kind": "records", "name": "rejected by the reader", "count": len(store.rejected),
                        "status": "dropped" if len(store.rejected) else "",
                        "reason": f"listed in {store.path / 'rejected.csv'}" if len(store.rejected) else ""}
            self._task.summary = pd.concat([self._task.summary, pd.DataFrame([rejected])], ignore_index=True)
            path = write_summary(self._task.summary, self.run_dir / "evaluate" / f"{self.dataset}_summary.csv")
            if len(self._task) == 0:
                raise ValueError(f"{self.dataset}: no records left after the length policy and label rules; see {path}")
        return self._task

    def class_names(self, classes: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """English names of SNOMED-CT classes (the shipped table), `overrides` (by code or abbreviation) first."""
        from esi.data.snomed import describe_code

        overrides = overrides or {}
        names = {}
        for c in classes:
            abbreviation, name = describe_code(c)
            names[c] = overrides.get(c) or overrides.get(abbreviation) or (name.lower() if name else c)
        return names

    def class_aliases(self, classes: Sequence[str]) -> dict[str, list[str]]:
        """Other texts a class is known by: its Challenge abbreviation, CSN acronym and name, and the code."""
        from esi.data.snomed import snomed_table

        table = snomed_table().set_index("code")
        out = {}
        for c in classes:
            texts = []
            if c in table.index:
                row = table.loc[c]
                texts = [str(row[k]) for k in ("name", "csn_name", "abbreviation", "csn_acronym")
                         if k in row and isinstance(row[k], str) and row[k]]
            out[c] = texts + [c]
        return out

    def task_names(self, requested: Sequence[str]) -> list[str]:
        """A Challenge dataset has one task, named after it, whatever PTB-XL tasks a protocol asks for."""
        return [self.dataset]

    def scored_split(self, task, folds: Sequence[int]) -> str:
        """The results' `split` of rows scored on `folds` with nothing trained: "<split preset>:test"."""
        scored = "test" if list(folds) == [10] else "folds_" + ",".join(str(int(f)) for f in folds)
        return f"{task.split_label}:{scored}"

    def scored_records(self, fs: float, folds: Sequence[int]) -> np.ndarray:
        task = self.task()
        return task.ecg_ids[np.isin(task.folds, list(folds))]

    def valid_samples(self, fs: float) -> int | None:
        """MERL reads only the first 5 s of CPSC2018 records; the rest of the 10 s frame is zeros."""
        from esi.data.challenge_tasks import valid_seconds

        seconds = valid_seconds(self.length_policy, self.dataset)
        return None if seconds is None else int(round(seconds * float(fs)))

    def training_rows(self, store: ECGStore) -> np.ndarray:
        """Rows of `store` in this dataset's training split (a scaler is fitted on them)."""
        return store_rows(store, self.task().split("train").ecg_ids)


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
