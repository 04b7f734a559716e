"""Downstream evaluation on PTB-XL, CPSC2018, CSN and other PhysioNet/CinC Challenge sources: the PTB-XL benchmark
recipe (Protocol A), linear probes (Protocol B), zero-shot and ECG-based identification.
Entry point: `python -m esi.evaluate --config params/....yaml`.

    from esi.evaluate import EncoderSpec, Workspace, run_linear_probe

    workspace = Workspace("outputs/run", "data/ptbxl")          # run folder, feature cache, device; PTB-XL
    # or Workspace("outputs/run", ChallengeDataset("data/challenge-2021", "cpsc2018")) for CPSC2018, CSN, ...
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace,
                               ProbeSettings(tasks=["superdiagnostic"]))
    results.table                                               # the tidy results (RESULT_COLUMNS)

Every protocol is one `run_*(encoders, workspace, settings, common)` returning `ProtocolResults`, its settings one
dataclass (`ProbeSettings`, `BenchmarkSettings`, `ZeroShotSettings`, `IdentificationSettings`; `CommonSettings`:
intervals, paired tests, seed); `evaluate(config)` runs those a params file chooses (`Evaluation`, step by step in
notebook 04) and writes results.csv and the figures. A protocol reads the dataset only through `EvalDataset`
(`esi.evaluate.datasets`), so a dataset of your own is one subclass of it. Importing this package imports torch.
"""

from __future__ import annotations

from esi.evaluate.config import load_evaluate_config
from esi.evaluate.datasets import ChallengeDataset, EvalDataset, PTBXLDataset
from esi.evaluate.encoders import EncoderSpec, load_encoder
from esi.evaluate.identification import IdentificationSettings, run_identification
from esi.evaluate.linear_probe import ProbeSettings, label_fraction_subset, run_linear_probe
from esi.evaluate.metrics import macro_auprc, macro_auroc, paired_test
from esi.evaluate.benchmark import BenchmarkSettings, recipe_settings, run_benchmark
from esi.evaluate.results import CommonSettings, ProtocolResults, results_pivot
from esi.evaluate.run import Evaluation, EvaluationResult, evaluate, run_protocol
from esi.evaluate.workspace import Workspace
from esi.evaluate.zero_shot import ZeroShotSettings, run_zero_shot

__all__ = [
    "BenchmarkSettings", "ChallengeDataset", "CommonSettings", "EncoderSpec", "EvalDataset", "Evaluation",
    "EvaluationResult", "IdentificationSettings", "PTBXLDataset", "ProbeSettings", "ProtocolResults", "Workspace",
    "ZeroShotSettings", "evaluate", "label_fraction_subset", "load_encoder", "load_evaluate_config", "macro_auprc",
    "macro_auroc", "paired_test", "recipe_settings", "results_pivot", "run_benchmark", "run_identification",
    "run_linear_probe", "run_protocol", "run_zero_shot",
]
