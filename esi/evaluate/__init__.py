"""Downstream evaluation on PTB-XL, CPSC2018, CSN and other PhysioNet/CinC Challenge sources: the PTB-XL benchmark
recipe (Protocol A), linear probes (Protocol B), zero-shot and ECG-based identification.
Entry point: `python -m esi.evaluate --config params/....yaml`.

    from esi.evaluate import EncoderSpec, Workspace, run_linear_probe

    workspace = Workspace("outputs/run", "data/ptbxl")          # run folder, feature cache, device; PTB-XL
    # or Workspace("outputs/run", ChallengeDataset("data/challenge-2021", "cpsc2018")) for CPSC2018, CSN, ...
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace)
    results.table                                               # the tidy results (RESULT_COLUMNS)

Every protocol is one `run_*(encoders, workspace, ...)` returning `ProtocolResults`; it reads the dataset only
through `EvalDataset` (`esi.evaluate.datasets`), so a dataset of your own is one subclass of it. `evaluate(config)`
runs the protocols a params file chooses and writes results.csv and the figures. Importing this package imports
torch.
"""

from __future__ import annotations

from esi.evaluate.config import load_evaluate_config
from esi.evaluate.datasets import ChallengeDataset, EvalDataset, PTBXLDataset
from esi.evaluate.encoders import EncoderSpec, load_encoder
from esi.evaluate.identification import run_identification
from esi.evaluate.linear_probe import label_fraction_subset, run_linear_probe
from esi.evaluate.metrics import macro_auprc, macro_auroc, paired_test
from esi.evaluate.benchmark import BenchmarkSettings, recipe_settings, run_benchmark
from esi.evaluate.results import ProtocolResults, results_pivot
from esi.evaluate.run import EvaluationResult, evaluate
from esi.evaluate.workspace import Workspace
from esi.evaluate.zero_shot import run_zero_shot

__all__ = [
    "BenchmarkSettings", "ChallengeDataset", "EncoderSpec", "EvalDataset", "EvaluationResult", "PTBXLDataset",
    "ProtocolResults", "Workspace",
    "evaluate", "label_fraction_subset", "load_encoder", "load_evaluate_config", "macro_auprc", "macro_auroc",
    "paired_test", "recipe_settings", "results_pivot", "run_identification", "run_linear_probe",
    "run_benchmark", "run_zero_shot",
]
