"""What the evaluation protocols ask of a dataset, and its two implementations: PTB-XL and the PhysioNet/CinC
Challenge datasets (CPSC2018, CSN, any Challenge source).

    PTBXLDataset("data/ptbxl")                                                   # PTB-XL's tasks, folds and patients
    ChallengeDataset("data/challenge-2021", "cpsc2018", split="stratified", length_policy="drop_short")

A protocol reads a dataset only through `EvalDataset`: its store at a rate, its tasks (`esi.data.ptbxl.FoldedTask`:
ecg_ids, y, classes, folds 1-8 train / 9 validate / 10 test), the records it scores, its class names, and the
columns its result rows carry. A third dataset (a folder of your own) is one more subclass: `store` and `task` are
all it must write; the rest has defaults for a dataset with one task named after it (see
tests/test_evaluate_datasets.py for one in thirty lines). A `Workspace` pairs a dataset with the run's folders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from esi.data.store import ECGStore
from esi.evaluate.features import is_converted, ptbxl_store, store_rows
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


class EvalDataset(ABC):
    """What an evaluation protocol asks of a dataset. Subclasses write `store` and `task` and set `name`,
    `length_policy` and `label_rule`; every other member has a default for a dataset with one task, named after
    the dataset, on record-level folds (PTB-XL overrides them for its several tasks and its patients).

    Attributes:
        name: the results' `dataset` column ("ptbxl", "cpsc2018", ...); the one task's name by default.
        title: how figures name the dataset ("PTB-XL"); default `name`.
        length_policy: the results' `length_policy` column: how records were brought to 10 s.
        label_rule: the results' `labels` column: the rule the labels follow.
        has_patient_ids: the records carry patient ids (`patient_table`): identification runs on the dataset.
        superclass_task: a task whose classes colour the run's embedding map (one class per record, or several);
            None: no map.
        task_fs: the rate of the store a dataset reads its tasks from, where it does (`evaluate` sets the first
            encoder's, a store it converts anyway); None: the tasks come from the dataset's own tables.
    """

    name: str
    length_policy: str
    label_rule: str
    has_patient_ids: bool = False
    superclass_task: str | None = None
    task_fs: float | None = None

    @property
    def title(self) -> str:
        return self.name

    @abstractmethod
    def store(self, fs: float) -> ECGStore:
        """The dataset's records at `fs` Hz as an `ECGStore` (10 s each), converted on first use."""

    @abstractmethod
    def task(self, name: str, min_samples: int = 0):
        """The task `name` (a `FoldedTask`: ecg_ids, y, classes, folds 1-8 train / 9 val / 10 test, split_label),
        loaded once; `min_samples`: keep classes with more than this many records where the dataset applies it."""

    def attach(self, store_dir: Path, summary_dir: Path, workers: int | None, progress: bool) -> None:
        """Called once by the `Workspace` evaluating this dataset: the run's folders for converted stores (one per
        dataset and rate) and for summaries, and how conversions run. A dataset read from finished stores needs
        none of it: the default does nothing."""

    @property
    def context(self) -> dict:
        """{"dataset", "length_policy", "labels"}: the columns every row on this dataset carries (see
        `ProtocolResults.from_rows`)."""
        return {"dataset": self.name, "length_policy": self.length_policy, "labels": self.label_rule}

    def task_names(self, requested: Sequence[str]) -> list[str]:
        """The tasks a protocol runs here when it is asked for `requested` (PTB-XL task names): the one task."""
        return [self.name]

    def scored_split(self, task, folds: Sequence[int]) -> str:
        """The results' `split` of rows scored on `folds` with nothing trained (zero-shot): "<split>:test"."""
        scored = "test" if list(folds) == [10] else "folds_" + ",".join(str(int(f)) for f in folds)
        return f"{task.split_label}:{scored}"

    def scored_records(self, fs: float, folds: Sequence[int]) -> np.ndarray:
        """The records in `folds` that a zero-shot run encodes once for all tasks: the task's."""
        task = self.task(self.name)
        return task.ecg_ids[np.isin(task.folds, list(folds))]

    def training_rows(self, store: ECGStore) -> np.ndarray | None:
        """Rows of `store` in the training split (an input scaler is fitted on them): the task's folds 1-8."""
        return store_rows(store, self.task(self.name).split("train").ecg_ids)

    def valid_samples(self, fs: float) -> int | None:
        """Samples of each record the encoders see as signal (None: the whole 10 s)."""
        return None

    def class_names(self, classes: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """English names of `classes`: `overrides` (from the params), else the class label itself."""
        overrides = overrides or {}
        return {c: overrides.get(c) or c for c in classes}

    def class_aliases(self, classes: Sequence[str]) -> dict[str, list[str]]:
        """Other texts each class is known by, to look its description up under (zero-shot): none."""
        return {c: [] for c in classes}

    def patient_table(self):
        """The records' patients (index ecg_id; columns patient_id, recording_date, strat_fold), for
        identification; only where `has_patient_ids`."""
        raise ValueError(f"{self.name}: no patient ids, so no identification (records are their own patients)")


@dataclass
class PTBXLDataset(EvalDataset):
    """PTB-XL (Wagner et al., 2020) as the benchmark reads it: its tasks (`esi.data.ptbxl.TASKS`), the stratified,
    patient-disjoint folds, SCP statement names, and patient ids.

    Args:
        root: the PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records100/, records500/).
    """

    root: Path
    _store_dir: Path | None = field(default=None, init=False, repr=False)     # set by `attach`
    _workers: int | None = field(default=None, init=False, repr=False)
    _progress: bool = field(default=True, init=False, repr=False)

    name = PTBXL_CONTEXT["dataset"]
    title = "PTB-XL"
    length_policy = PTBXL_CONTEXT["length_policy"]
    label_rule = PTBXL_CONTEXT["labels"]
    has_patient_ids = True
    superclass_task = "superdiagnostic"     # its five superclasses colour the embedding map

    def __post_init__(self):
        self.root = Path(self.root).expanduser().resolve()
        self._stores: dict[float, ECGStore] = {}
        self._tasks: dict[tuple[str, int], object] = {}
        self._statements = None

    def attach(self, store_dir: Path, summary_dir: Path, workers: int | None, progress: bool) -> None:
        self._store_dir, self._workers, self._progress = Path(store_dir), workers, progress

    def store(self, fs: float) -> ECGStore:
        """The PTB-XL store at `fs` Hz (<store_dir>/ptbxl_<fs>hz, converted on first use)."""
        fs = float(fs)
        if fs not in self._stores:
            if self._store_dir is None:
                raise ValueError(f"{self.root}: no store folder yet; evaluate the dataset in a Workspace")
            self._stores[fs] = ptbxl_store(self.root, fs, self._store_dir, workers=self._workers,
                                           progress=self._progress)
        return self._stores[fs]

    def task(self, name: str, min_samples: int = 0):
        """The PTB-XL task `name`, loaded once: classes occurring in more than `min_samples` records (every task but
        `diagnostic`, as the benchmark; see `esi.data.ptbxl.load_task`)."""
        from esi.data.ptbxl import load_task

        key = (name, int(min_samples))
        if key not in self._tasks:
            self._tasks[key] = load_task(self.root, name, min_samples=min_samples)
        return self._tasks[key]

    def task_names(self, requested: Sequence[str]) -> list[str]:
        """The `requested` PTB-XL tasks."""
        return list(requested)

    def scored_split(self, task, folds: Sequence[int]) -> str:
        """"ptbxl_fold_10" for rows scored on fold 10 (`fold_split`)."""
        return fold_split(folds)

    def scored_records(self, fs: float, folds: Sequence[int]) -> np.ndarray:
        """Every record of the store at `fs` in `folds`, whatever task it belongs to."""
        index = self.store(fs).index
        return index.loc[index["strat_fold"].isin(list(folds)), "record_id"].astype(int).to_numpy()

    def training_rows(self, store: ECGStore) -> np.ndarray | None:
        """None: folds 1-8 of the store, which `input_scaler` finds in its index itself."""
        return None

    def class_names(self, classes: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """English names of `classes` (`class_names`, with its `overrides`), from this scp_statements.csv."""
        return class_names(classes, self._statement_table(), overrides)

    def class_aliases(self, classes: Sequence[str]) -> dict[str, list[str]]:
        """The SCP statement's texts of each class (`statement_aliases`)."""
        return statement_aliases(classes, self._statement_table())

    def patient_table(self):
        """ptbxl_database.csv (`esi.data.ptbxl.load_database`): patient_id, recording_date, strat_fold."""
        from esi.data.ptbxl import load_database

        return load_database(self.root)

    def _statement_table(self):
        """This PTB-XL folder's scp_statements.csv (`load_statements`), read once."""
        from esi.data.ptbxl import load_statements

        if self._statements is None:
            self._statements = load_statements(self.root)
        return self._statements


@dataclass
class ChallengeDataset(EvalDataset):
    """CPSC2018, CSN or any PhysioNet/CinC Challenge source, read as downloaded: one task named after the dataset,
    on the folds of a split preset (record-level: these datasets have no patient ids).

    Args:
        root: the Challenge 2020/2021 tree (`training/`, or the folder above it) for cpsc2018 and other sources, or
            PhysioNet ecg-arrhythmia 1.0.0 (the folder holding WFDBRecords/) for csn.
        name: "cpsc2018", "csn", or a Challenge source folder name ("georgia", "cpsc_2018_extra", ...).
        split: the split preset (`esi.data.splits`: stratified, folds10, ecgfix, merl).
        length_policy: crop_pad (centre-crop long records, zero-pad short ones), drop_short (drop records under
            10 s, centre-crop long ones), merl (the first 10 s; for cpsc2018 only the first 5 s, zeros after, as
            MERL).
        min_positives: a class of csn or a source needs this many positive records (cpsc2018: its 9 classes).
        unknown_codes: keep | drop_empty | drop_unknown (see `esi.data.challenge_tasks`).
        labels: exact (SNOMED codes) | merl_released (MERL's 38 released CSN columns); split ecgfix brings
            ecg-fix's own labels on cpsc2018 and csn. The summary's "labels" row names the rule applied.
        split_seed: seed of the stratified / folds10 / ecgfix presets; None: 42, and for ecgfix the seed ecg-fix
            used for the dataset (774635088 for CSN).
        task_fs: the rate of the store whose index the task is built from (records the reader rejected there are
            not in the task; they are listed in the store's rejected.csv and counted in the summary).

    Stores go to <store_dir>/<name>_<fs>hz_<crop>; the task's class/record summary to
    <run_dir>/evaluate/<name>_summary.csv (the `Workspace`'s folders).
    """

    root: Path
    name: str = "cpsc2018"
    split: str = "stratified"
    length_policy: str = "crop_pad"
    min_positives: int = 10
    unknown_codes: str = "keep"
    labels: str = "exact"
    split_seed: int | None = None
    task_fs: float = 500.0
    _store_dir: Path | None = field(default=None, init=False, repr=False)     # set by `attach`
    _summary_dir: Path | None = field(default=None, init=False, repr=False)
    _workers: int | None = field(default=None, init=False, repr=False)
    _progress: bool = field(default=True, init=False, repr=False)

    def __post_init__(self):
        from esi.data.challenge_tasks import LENGTH_POLICIES, label_rule
        from esi.data.splits import PRESETS

        self.root = Path(self.root).expanduser().resolve()
        if self.split not in PRESETS:
            raise ValueError(f"unknown split preset {self.split!r}; expected one of: {', '.join(PRESETS)}")
        if self.length_policy not in LENGTH_POLICIES:
            raise ValueError(f"unknown length policy {self.length_policy!r}; expected one of: "
                             f"{', '.join(LENGTH_POLICIES)}")
        label_rule(self.name, self.split, self.labels)   # a label mode the dataset cannot take stops here
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: dataset folder {self.root} does not exist")
        # The record source this folder is read as: ecg-arrhythmia (the folder holding WFDBRecords/, or one inside
        # it, as esi.data.challenge.ecg_arrhythmia_records takes it) or a Challenge tree.
        inside = (self.root / "WFDBRecords").is_dir() or "WFDBRecords" in self.root.parts
        self.source = "ecg_arrhythmia" if inside else "challenge"
        self._records = None
        self._stores: dict[float, ECGStore] = {}
        self._task = None

    @property
    def label_rule(self) -> str:
        """The rule the task's labels follow ("exact", "merl_released", "ecgfix"): the rows' `labels` column."""
        from esi.data.challenge_tasks import label_rule

        return label_rule(self.name, self.split, self.labels)

    def attach(self, store_dir: Path, summary_dir: Path, workers: int | None, progress: bool) -> None:
        self._store_dir, self._summary_dir = Path(store_dir), Path(summary_dir)
        self._workers, self._progress = workers, progress

    def records(self):
        """The dataset's record table (record_id, path, source, dx, age, sex), read from the headers once."""
        import pandas as pd

        if self._records is None:
            from esi.data.challenge import challenge_records, ecg_arrhythmia_records
            from esi.data.challenge_tasks import DATASET_SOURCES

            sources = DATASET_SOURCES.get(self.name, (self.name,))
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
                raise ValueError(f"{self.root}: no records of {self.name} (source folder(s) {', '.join(sources)}); "
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
            if self._store_dir is None:
                raise ValueError(f"{self.name}: no store folder yet; evaluate the dataset in a Workspace")
            crop = POLICY_CROP[self.length_policy]
            out = self._store_dir / f"{self.name}_{fs:g}hz_{crop}"
            if not is_converted(out, self.root):
                convert_table(self.records(), out, source=self.source, input=self.root, fs=fs, seconds=10.0,
                              workers=self._workers, progress=self._progress, crop=crop,
                              source_info={"dataset": self.name})
            self._stores[fs] = ECGStore(out)
        return self._stores[fs]

    def task(self, name: str | None = None, min_samples: int = 0):
        """The dataset's one task (`ChallengeTask`, named after the dataset); `min_samples` does not apply (classes
        follow `min_positives` and the dataset's vocabulary)."""
        from esi.data.challenge_tasks import load_challenge_task, write_summary

        if name not in (None, self.name):
            raise ValueError(f"{self.name} has one task, {self.name!r}; got {name!r}")
        if self._task is None:
            import pandas as pd

            store = self.store(self.task_fs)
            self._task = load_challenge_task(store.index, self.name, split=self.split,
                                             min_positives=self.min_positives, unknown_codes=self.unknown_codes,
                                             seed=self.split_seed, length_policy=self.length_policy,
                                             labels=self.labels)
            # Records the reader could not convert never reach the index: count them here too.
            rejected = {"kind": "records", "name": "rejected by the reader", "count": len(store.rejected),
                        "status": "dropped" if len(store.rejected) else "",
                        "reason": f"listed in {store.path / 'rejected.csv'}" if len(store.rejected) else ""}
            self._task.summary = pd.concat([self._task.summary, pd.DataFrame([rejected])], ignore_index=True)
            path = write_summary(self._task.summary, self._summary_dir / f"{self.name}_summary.csv")
            if len(self._task) == 0:
                raise ValueError(f"{self.name}: no records left after the length policy and label rules; see {path}")
        return self._task

    def valid_samples(self, fs: float) -> int | None:
        """MERL reads only the first 5 s of CPSC2018 records; the rest of the 10 s frame is zeros."""
        from esi.data.challenge_tasks import valid_seconds

        seconds = valid_seconds(self.length_policy, self.name)
        return None if seconds is None else int(round(seconds * float(fs)))

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
