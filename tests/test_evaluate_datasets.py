"""A third dataset is one `EvalDataset` subclass, not a branch in the protocols: a user's converted store, labelled
from its own index, runs through the linear probe as PTB-XL and the Challenge datasets do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esi.data.ptbxl import FoldedTask
from esi.data.store import ECGStore
from esi.evaluate import EncoderSpec, EvalDataset, PTBXLDataset, Workspace, run_linear_probe
from esi.evaluate.results import RESULT_COLUMNS


@dataclass
class FolderTask(FoldedTask):
    """One task of the folder: the per-record arrays `FoldedTask` cuts by split."""

    task: str
    ecg_ids: np.ndarray
    classes: list[str]
    y: np.ndarray
    folds: np.ndarray
    patient_ids: np.ndarray
    meta: pd.DataFrame

    split_label = "my_folds_1-8/9/10"


class StoreFolder(EvalDataset):
    """A finished store of the user's own records, labelled female / over 60 from its index, on its strat_fold."""

    name, length_policy, label_rule = "my_folder", "as_stored", "sex_and_age"

    def __init__(self, path):
        self.path = Path(path)

    def store(self, fs: float) -> ECGStore:
        store = ECGStore(self.path)
        if store.fs != float(fs):
            raise ValueError(f"{self.path} holds {store.fs:g} Hz records, not {fs:g} Hz")
        return store

    def task(self, name: str, min_samples: int = 0) -> FolderTask:
        index = self.store(100).index
        ids = index["record_id"].astype(int).to_numpy()
        y = np.stack([index["sex"] == 1, index["age"] > 60], axis=1).astype(np.uint8)
        return FolderTask(self.name, ids, ["female", "over_60"], y, index["strat_fold"].to_numpy(),
                          index["subject_id"].to_numpy(), index.set_index(ids))


def test_a_third_dataset_is_one_subclass_and_runs_the_linear_probe(store_dir, tmp_path):
    workspace = Workspace(tmp_path, StoreFolder(store_dir), progress=False)
    # A ConvNeXt V2 far smaller than atto: the 500 records are encoded in a second.
    spec = EncoderSpec(kind="random", architecture="convnextv2_atto", fs=100, normalize="per_lead",
                       encoder_kwargs={"depths": (1, 1, 1, 1), "dims": (8, 8, 16, 16)})
    tasks = workspace.dataset.task_names(["superdiagnostic"])            # the run asks for PTB-XL's: it has one
    table = run_linear_probe([spec], workspace, tasks=tasks, fractions=[1.0], epochs=2, n_boot=10).table
    assert list(table.columns) == list(RESULT_COLUMNS) and len(table) == 4
    assert (table["dataset"] == "my_folder").all() and (table["task"] == "my_folder").all()
    assert (table["split"] == "my_folds_1-8/9/10").all()
    assert (table["length_policy"] == "as_stored").all() and (table["labels"] == "sex_and_age").all()
    assert (table["n_test"] == int((workspace.dataset.task("my_folder").folds == 10).sum())).all()
    assert table["value"].between(0, 1).all()
    assert workspace.dataset.has_patient_ids is False and workspace.dataset.superclass_task is None


def test_a_folder_is_ptbxl_and_a_dataset_without_store_or_task_cannot_be_made(ptbxl_dir, tmp_path):
    workspace = Workspace(tmp_path, ptbxl_dir)
    assert isinstance(workspace.dataset, PTBXLDataset) and workspace.dataset.root == ptbxl_dir.resolve()

    class NoTask(EvalDataset):
        name, length_policy, label_rule = "half", "as_stored", "none"

        def store(self, fs):
            return None

    with pytest.raises(TypeError, match="task"):
        NoTask()
