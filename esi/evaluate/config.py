"""Settings of `python -m esi.evaluate` (params keys `evaluate_<field>`; see params/ptbxl_benchmark.yaml).

    config = load_evaluate_config("params/ptbxl_benchmark.yaml", ["evaluate_probe_epochs=20"])
    config.probe.epochs        # 20: each protocol's settings are one dataclass, passed whole to it

Each protocol's settings live beside the protocol (`ProbeSettings` in esi.evaluate.linear_probe, ...), each default
and its comment written once; their params keys are derived from them (`esi.config.settings_group`):
`evaluate_probe_epochs` sets `config.probe.epochs`, `evaluate_benchmark_lr` sets `config.benchmark.lr`, and the
settings every protocol shares (`CommonSettings`) keep their plain keys (`evaluate_n_boot` sets
`config.common.n_boot`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, Sequence

from esi.config import load_config, overrides_for, read_params, section_keys, settings_group
from esi.evaluate.benchmark import BenchmarkSettings
from esi.evaluate.encoders import EncoderSpec
from esi.evaluate.identification import IdentificationSettings
from esi.evaluate.linear_probe import ProbeSettings
from esi.evaluate.results import CommonSettings, Task
from esi.evaluate.zero_shot import ZeroShotSettings

PROTOCOLS = ("linear_probe", "benchmark", "zero_shot", "identification")
Protocol = Literal["linear_probe", "benchmark", "zero_shot", "identification"]


@dataclass
class EvaluateConfig:
    """Everything one evaluation run does (params keys `evaluate_<field>`); each field's comment says what it sets.
    Paths are relative to the repository root. The defaults are the published protocols (README: "Our presets vs
    the published protocols")."""

    # -- What is evaluated, on which data
    # the benchmarks: "ptbxl", "cpsc2018", "csn", or a PhysioNet/CinC Challenge source folder name ("georgia",
    # "cpsc_2018_extra", "ningbo", ...); every protocol runs on each (identification: PTB-XL only, the others
    # have no patient ids) and rows carry a `dataset` column
    datasets: list[str] = field(default_factory=lambda: ["ptbxl"])
    ptbxl_root: str = "data/ptbxl"        # PTB-XL: ptbxl_database.csv, scp_statements.csv, records100/, records500/
    # the Challenge 2020/2021 tree (training/<source>/gN/*.hea|.mat, or the folder above training/): cpsc2018 and
    # the other Challenge sources
    challenge_root: str = "data/challenge-2021"
    # ecg-arrhythmia 1.0.0 (the folder holding WFDBRecords/) for csn; "": CSN from challenge_root's
    # chapman_shaoxing + ningbo folders
    csn_root: str = "data/ecg-arrhythmia"
    # split of the non-PTB-XL datasets (esi.data.splits; all record-level, no patient ids exist): "stratified"
    # (multilabel-stratified 70/10/20, as ecg-fix's paper describes it), "ecgfix" (ecg-fix's code: a seeded
    # 70/10/20 permutation), "folds10" (10 stratified folds, 8 val, 9 test: the Reality Check's), "merl" (MERL's
    # released record -> split tables)
    challenge_split: Literal["stratified", "ecgfix", "folds10", "merl"] = "stratified"
    # records not 10 s long: "crop_pad" (centre-crop long ones, zero-pad short ones), "drop_short" (drop those under
    # 10 s: ecg-fix, Reality Check), "merl" (the first 10 s; CPSC2018: the first 5 s, zeros after, as MERL)
    challenge_length_policy: Literal["crop_pad", "drop_short", "merl"] = "crop_pad"
    # positives a class of CSN or a Challenge source needs (CPSC2018: its 9), counted over the split's records;
    # not applied by the fixed vocabularies (challenge_split ecgfix on cpsc2018/csn, challenge_labels merl_released)
    challenge_min_positives: int = 10
    # records none of whose codes is a class: "keep" (all-zero labels), "drop_empty", or "drop_unknown" (drop records
    # with a code outside the dataset's list); challenge_split ecgfix on cpsc2018/csn applies ecg-fix's own rule
    challenge_unknown_codes: Literal["keep", "drop_empty", "drop_unknown"] = "keep"
    # CSN labels: "exact" SNOMED codes, or "merl_released" (MERL's 38 substring-matched columns: reproduction only)
    challenge_labels: Literal["exact", "merl_released"] = "exact"
    out_dir: str = ""                     # the run folder; "": outputs/<run_name>, or outputs/evaluate
    store_dir: str = ""                   # converted stores (one per dataset and rate); "": <out_dir>/evaluate/stores
    cache_dir: str = ""                   # cached features; "": <out_dir>/evaluate/features (share it across runs)
    # the encoders to evaluate (`EncoderSpec` entries: kind, path, name, architecture, fs, normalize, ...)
    encoders: list[EncoderSpec] = field(default_factory=list)
    random_baselines: bool = True         # add the random-init twin of every pretrained encoder (the baseline)
    # which of linear_probe, benchmark, zero_shot, identification to run
    protocols: list[Protocol] = field(default_factory=lambda: list(PROTOCOLS))
    device: str = "cpu"                   # torch device ("cpu", "cuda", "cuda:1")
    batch_size: int = 32                  # records per forward pass extracting features (CPU 16-32; a GPU 256+)
    convert_workers: int = 0              # processes for the one-off conversions (0: all cores)
    # n_boot, ci_level, significance_resamples, seed, min_samples: what every protocol shares (CommonSettings)
    common: CommonSettings = settings_group(CommonSettings, prefix="")
    progress: bool = True                 # progress bars

    # -- The protocols' settings, each passed whole to its protocol (keys `evaluate_<protocol>_<field>`)
    probe: ProbeSettings = settings_group(ProbeSettings)             # Protocol B: linear probe on frozen features
    benchmark: BenchmarkSettings = settings_group(BenchmarkSettings)   # Protocol A: the benchmark recipe
    zero_shot: ZeroShotSettings = settings_group(ZeroShotSettings)   # class prompts vs ECG embeddings (ESI models)
    # PTB-XL: gallery = each patient's earliest record, probes = the later ones
    identification: IdentificationSettings = settings_group(IdentificationSettings)

    # -- Figures
    figures: bool = True                  # draw the figures
    figure_task: Task = "superdiagnostic"   # PTB-XL task of the per-class, ROC and label-fraction figures
    tsne_max_points: int = 2000           # records in the t-SNE map at most
    tsne_iterations: int = 1000           # t-SNE optimisation steps (>= 250)


def load_evaluate_config(files: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
                         overrides: Sequence[str] | None = None) -> tuple[EvaluateConfig, str]:
    """(EvaluateConfig, run name) from params files and `key=value` overrides.

    Args:
        files: params YAML files, later ones win; only `evaluate_*` keys (and `run_name`) are read.
        overrides: "KEY=VALUE" strings with the full params key (`evaluate_probe_epochs=20`; see
            esi.config.overrides_for); `run_name=...` names the run.

    Returns:
        The config, and the run name ("" when no file or override sets `run_name`).
    """
    run_name = str(read_params(files).get("run_name") or "")
    values = overrides_for("evaluate", overrides or [], [*section_keys("evaluate", EvaluateConfig), "run_name"])
    override_name = values.pop("run_name", None)
    config = load_config(EvaluateConfig, files, values, section="evaluate")
    return config, str(override_name or run_name)
