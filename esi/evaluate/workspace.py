"""What every protocol shares in one evaluation run: the `Workspace` (folders, converted stores, cached features,
tasks, device), the English names of PTB-XL classes, and the official fold split.

    workspace = Workspace("outputs/run", "data/ptbxl", device="cuda")
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from esi.data.store import ECGStore
from esi.evaluate.features import FeatureCache, FeatureSet, encoder_features, input_scaler, ptbxl_store

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
