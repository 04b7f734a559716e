"""Where one evaluation run keeps what it makes and how it runs encoders: the `Workspace` (run folder, feature
cache, device) around one dataset (`esi.evaluate.datasets`).

    workspace = Workspace("outputs/run", "data/ptbxl", device="cuda")                 # a folder: PTB-XL
    workspace = Workspace("outputs/run", ChallengeDataset("data/challenge-2021/training", "cpsc2018",
                                                          split="stratified", length_policy="drop_short"))
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace)

A protocol asks `workspace.dataset` (an `EvalDataset`) for stores, tasks and class names, and the workspace for
features and the folders its outputs go to; the rows say which dataset, split and length policy produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from esi.evaluate.datasets import EvalDataset, PTBXLDataset
from esi.evaluate.features import FeatureCache, FeatureSet, encoder_features, input_scaler


@dataclass
class Workspace:
    """One dataset in one evaluation run: where the run keeps what it makes, and how it runs encoders.

    run_dir: the run's output folder (results.csv, figures/ and evaluate/ below it); None: outputs/evaluate.
    dataset: the `EvalDataset` evaluated; a folder: PTB-XL there (`PTBXLDataset`).
    store_dir: converted stores, one per dataset and rate (default <run_dir>/evaluate/stores).
    cache_dir: cached features (default <run_dir>/evaluate/features); share it between runs to reuse features.
    device: torch device of the encoders.
    batch_size: records per forward pass when extracting features.
    workers: processes for converting a dataset (None: all cores).
    progress: show progress bars.
    """

    run_dir: Path | None
    dataset: EvalDataset | str | Path
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
        if not isinstance(self.dataset, EvalDataset):
            self.dataset = PTBXLDataset(self.dataset)
        self.store_dir = Path(self.store_dir) if self.store_dir else self.run_dir / "evaluate" / "stores"
        self.cache = FeatureCache(Path(self.cache_dir) if self.cache_dir else self.run_dir / "evaluate" / "features")
        self.dataset.attach(self.store_dir, self.run_dir / "evaluate", workers=self.workers, progress=self.progress)
        self._scalers: dict[float, object] = {}

    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "evaluate" / "predictions"

    @property
    def models_dir(self) -> Path:
        return self.run_dir / "evaluate" / "models"

    def input_scaler(self, encoder):
        """`input_scaler(encoder, store)`: the encoder's own, else fitted on the training split once per rate."""
        if encoder.normalize != "scaler":
            return None
        if encoder.scaler is not None:
            return encoder.scaler
        if encoder.fs not in self._scalers:
            store = self.dataset.store(encoder.fs)
            self._scalers[encoder.fs] = input_scaler(encoder, store, self.dataset.training_rows(store))
        return self._scalers[encoder.fs]

    def features(self, encoder, what: str = "pooled", ecg_ids=None) -> FeatureSet:
        """Cached features from a `LoadedEncoder` of the dataset's records `ecg_ids` (default: all), `what` naming
        them (see `encoder_features`)."""
        return encoder_features(encoder, self.dataset.store(encoder.fs), self.cache, what=what, ecg_ids=ecg_ids,
                                scaler=self.input_scaler(encoder), valid_samples=self.dataset.valid_samples(encoder.fs),
                                batch_size=self.batch_size, progress=self.progress)


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
