"""Settings of `python -m esi.evaluate` (params keys `evaluate_<field>`; see params/ptbxl_benchmark.yaml).

    config = load_evaluate_config("params/ptbxl_benchmark.yaml", ["evaluate_probe_epochs=20"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, Sequence

from esi.config import load_config, overrides_for, read_params, section_keys
from esi.data.ptbxl import TASKS
from esi.evaluate.encoders import EncoderSpec

PROTOCOLS = ("linear_probe", "benchmark", "zero_shot", "identification")
Protocol = Literal["linear_probe", "benchmark", "zero_shot", "identification"]
Task = Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]


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
    n_boot: int = 100                     # bootstrap resamples of the test records for every interval
    ci_level: float = 0.90                # coverage of every interval (0.90: the benchmark's 5th-95th percentiles)
    # random swaps of the paired permutation test of each pretrained encoder against its random-init twin (p_value)
    significance_resamples: int = 1000
    seed: int = 0                         # seed of subsets, heads, crops and bootstraps
    # PTB-XL: keep classes occurring in more than this many records (the benchmark: 0); as the benchmark's
    # select_data, every task but `diagnostic` applies it
    min_samples: int = 0
    progress: bool = True                 # progress bars

    # -- Protocol B: linear probe on frozen features
    # PTB-XL tasks (another dataset has one task, itself)
    probe_tasks: list[Task] = field(default_factory=lambda: ["superdiagnostic", "subdiagnostic", "form", "rhythm"])
    probe_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])   # label fractions of train
    probe_seeds: list[int] = field(default_factory=lambda: [0])   # one probe per seed
    probe_epochs: int = 100               # the head's epochs (the best one on the validation split is kept)
    probe_lr: float = 1e-2                # the head's AdamW learning rate
    # weight decays tried; the best on the validation split is kept
    probe_weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2])
    # how 1 %/10 % subsets are drawn: "merl" (MERL's records: train_test_split, random_state 42, of the training
    # records in id order) or "every_class" (plus a positive of every missing class)
    probe_subset_draw: Literal["merl", "every_class"] = "merl"
    # which head is scored: "validation" (the weight decay and epoch best on the validation split) or "test_max"
    # (MERL's reporting: the best test AUROC over epochs; reproduction only, optimistic, rows say selection test_max)
    probe_selection: Literal["validation", "test_max"] = "validation"

    # -- Protocol A: the PTB-XL benchmark recipe (trained end to end)
    benchmark_tasks: list[Task] = field(default_factory=lambda: list(TASKS))   # PTB-XL tasks (all six)
    benchmark_supervised: list[str] = field(default_factory=lambda: ["xresnet1d101"])   # trained from scratch
    benchmark_supervised_fs: float = 100.0   # their sampling rate (the benchmark: 100 Hz)
    benchmark_finetune: bool = True       # also fine-tune each encoder of `encoders` (at its own rate)
    # "benchmark" (the published recipe: its weight_init, Adam betas (0.9, 0.99), final-epoch model, fine-tuning
    # head first then all layers with discriminative rates) or "esi" (ours: the model's own init with zero residual
    # BN, AdamW 0.999, the epoch best on fold 9, all layers at once)
    benchmark_recipe: Literal["benchmark", "esi"] = "benchmark"
    # override the recipe's model selection; null: the recipe's. Any override makes the rows' recipe "custom"
    benchmark_selection: Literal["final_epoch", "fold9_best"] | None = None
    benchmark_epochs: int = 50            # epochs from scratch (the benchmark: 50; rows below it say so)
    benchmark_finetune_epochs: int = 30   # epochs of each fine-tuning phase (the benchmark: 30 head + 30 all layers)
    benchmark_batch_size: int = 128       # crops per step
    benchmark_lr: float | None = None     # null: the recipe's (benchmark 1e-2, esi 1e-2)
    benchmark_finetune_lr: float | None = None   # null: the recipe's (benchmark 1e-2, esi 1e-3)
    benchmark_weight_decay: float | None = None  # null: the recipe's (1e-2)
    benchmark_window_s: float = 2.5       # training crop and evaluation window (seconds)
    benchmark_stride_s: float = 1.25      # evaluation window stride (seconds); windows are max-aggregated
    benchmark_dropout: float = 0.5        # head dropout (half of it before the hidden layer)
    benchmark_train_fraction: float = 1.0   # share of the training split used (1.0: the benchmark)
    benchmark_save_models: bool = True    # keep the trained models (usable as EncoderSpec kind "supervised")
    benchmark_loader_workers: int = 0     # DataLoader worker processes for training

    # -- Zero-shot: class prompts vs ECG embeddings (ESI models)
    zero_shot_tasks: list[Task] = field(default_factory=lambda: ["superdiagnostic", "subdiagnostic", "form", "rhythm"])
    zero_shot_waveform_dict: str = ""     # statement -> description JSON (CQA output); "": class names only
    # prompt templates with {class_name} and {description} (embeddings averaged over them)
    zero_shot_templates: list[str] = field(default_factory=lambda: ["ECG showing {class_name}. {description}"])
    zero_shot_no_description_template: str = "ECG showing {class_name}."   # a class without a description
    zero_shot_class_names: dict = field(default_factory=dict)   # label (or SNOMED abbreviation) -> English name
    zero_shot_folds: list[int] = field(default_factory=lambda: [10])   # folds scored (10: the test split)

    # -- Identification (PTB-XL: gallery = each patient's earliest record, probes = the later ones)
    identification_folds: list[int] = field(default_factory=list)   # folds to draw patients from ([]: all)
    identification_max_rank: int = 20    # length of the CMC curve

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
