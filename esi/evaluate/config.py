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
    """Everything one evaluation run does (params keys `evaluate_<field>`).

    General
      datasets: the benchmarks: "ptbxl", "cpsc2018", "csn", or any PhysioNet/CinC Challenge source folder name
        ("georgia", "cpsc_2018_extra", "ningbo", ...). Every protocol runs on each (identification: PTB-XL only,
        the others have no patient ids); rows carry a `dataset` column.
      ptbxl_root: the PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records100/, records500/).
      challenge_root: the PhysioNet/CinC Challenge 2020/2021 tree (training/<source>/gN/*.hea|.mat, or the folder
        above training/) for cpsc2018 and the other Challenge sources.
      csn_root: PhysioNet ecg-arrhythmia 1.0.0 (the folder holding WFDBRecords/) for csn; "" = take CSN from
        challenge_root's chapman_shaoxing + ningbo folders instead.
      challenge_split: the split preset of the non-PTB-XL datasets: "stratified" (multilabel-stratified 70/10/20,
        seed 42: the ecg-fix recipe as its paper describes it), "ecgfix" (ecg-fix's code: a seeded 70/10/20
        permutation), "folds10" (10 stratified folds, 8 = val, 9 = test: the Reality Check's), "merl" (MERL's
        released record -> split tables); all record-level (no patient ids exist), see esi.data.splits.
      challenge_length_policy: records not 10 s long: "crop_pad" (centre-crop long ones, zero-pad short ones),
        "drop_short" (drop those under 10 s: ecg-fix, Reality Check), "merl" (the first 10 s; CPSC2018: the first
        5 s, zeros after, as MERL). A column of every row.
      challenge_min_positives: a class of CSN or a Challenge source needs this many positive records (CPSC2018 has
        its 9 classes).
      challenge_unknown_codes: records none of whose codes is a class: "keep" (all-zero labels), "drop_empty", or
        "drop_unknown" (ecg-fix's CSN rule: drop records with a code outside the dataset's list).
      out_dir: the run folder; "" = outputs/<run_name> (params key `run_name`), or outputs/evaluate.
      store_dir: converted PTB-XL stores (one per rate); "" = <out_dir>/evaluate/stores.
      cache_dir: cached features; "" = <out_dir>/evaluate/features (share it to reuse features across runs).
      encoders: the encoders to evaluate (`EncoderSpec` entries: kind, path, name, architecture, fs, normalize...).
      random_baselines: add the random-init twin of every pretrained encoder (always reported as the baseline).
      protocols: which of linear_probe, benchmark, zero_shot, identification to run.
      device: torch device ("cpu", "cuda", "cuda:1").
      batch_size: records per forward pass when extracting features (on CPU 16-32 is fastest; on a GPU 256+).
      convert_workers: processes for the one-off PTB-XL conversion (0: all cores).
      n_boot: bootstrap resamples of the test records for every interval.
      ci_level: coverage of every interval (0.90: the PTB-XL benchmark's 5th and 95th percentiles).
      significance_resamples: resamples of the paired bootstrap test of each pretrained encoder against its
        random-init twin on the same test records (the results' p_value).
      seed: seed of subsets, heads, crops and bootstraps.
      min_samples: keep classes occurring in more than this many records (the benchmark: 0); like the benchmark's
        select_data, every task but `diagnostic` applies it.
      progress: show progress bars.
    Protocol B: linear probe
      probe_tasks, probe_fractions, probe_seeds: PTB-XL tasks (another dataset has one task, itself), label
        fractions of the training split, one probe per seed.
      probe_epochs, probe_lr, probe_weight_decays: the head's training; epoch and decay chosen on fold 9.
      probe_subset_draw: how the 1 %/10 % subsets are drawn: "merl" (MERL's exact records: train_test_split with
        random_state 42 of folds 1-8 in ecg_id order) or "every_class" (plus a positive of every missing class).
    Protocol A: PTB-XL benchmark
      benchmark_tasks: tasks (all six by default).
      benchmark_supervised: architectures trained from scratch (xresnet1d101).
      benchmark_supervised_fs: their sampling rate (the benchmark: 100 Hz).
      benchmark_finetune: also fine-tune each encoder in `encoders` (at its own rate) with the same recipe.
      benchmark_recipe: "benchmark" (the published recipe: its weight_init, Adam betas (0.9, 0.99), final-epoch
        model, fine-tuning head first then all layers with discriminative rates) or "esi" (our variant: the
        model's own init with zero residual BN, AdamW 0.999, the epoch best on fold 9, all layers at once).
      benchmark_selection: override the recipe's model selection ("final_epoch" or "fold9_best"); null: the
        recipe's. Any override turns the rows' recipe into "custom" and the notes say what differs.
      benchmark_epochs: epochs from scratch (the benchmark: 50; rows below it say so).
      benchmark_finetune_epochs: epochs of each fine-tuning phase (the benchmark: 30 head-only + 30 all layers).
      benchmark_batch_size: crops per step (128).
      benchmark_lr, benchmark_finetune_lr, benchmark_weight_decay: null = the recipe's (benchmark: 1e-2, 1e-2,
        1e-2; esi: 1e-2, 1e-3, 1e-2).
      benchmark_window_s, benchmark_stride_s: crop/window length and evaluation stride (seconds).
      benchmark_dropout: head dropout (half of it before the hidden layer).
      benchmark_train_fraction: share of folds 1-8 used (1.0 = the benchmark).
      benchmark_save_models: keep the trained models (usable as EncoderSpec kind "supervised").
      benchmark_loader_workers: DataLoader worker processes for training.
    Zero-shot
      zero_shot_tasks: tasks.
      zero_shot_waveform_dict: statement -> description JSON (CQA output); "" = class names only.
      zero_shot_templates: prompt templates with {class_name} and {description} (embeddings averaged).
      zero_shot_no_description_template: prompt of a class without a description ({class_name}).
      zero_shot_class_names: label -> English name overrides.
      zero_shot_folds: folds scored (10).
    Identification
      identification_folds: folds to draw patients from ([] = all).
      identification_max_rank: length of the CMC curve.
    Figures
      figures: draw the figures.
      figure_task: task of the per-class, ROC and label-fraction figures.
      tsne_max_points: records in the t-SNE map at most.
      tsne_iterations: t-SNE optimisation steps (>= 250).
    """

    datasets: list[str] = field(default_factory=lambda: ["ptbxl"])
    ptbxl_root: str = "data/ptbxl"
    challenge_root: str = "data/challenge-2021"
    csn_root: str = "data/ecg-arrhythmia"
    challenge_split: Literal["stratified", "ecgfix", "folds10", "merl"] = "stratified"
    challenge_length_policy: Literal["crop_pad", "drop_short", "merl"] = "crop_pad"
    challenge_min_positives: int = 10
    challenge_unknown_codes: Literal["keep", "drop_empty", "drop_unknown"] = "keep"
    out_dir: str = ""
    store_dir: str = ""
    cache_dir: str = ""
    encoders: list[EncoderSpec] = field(default_factory=list)
    random_baselines: bool = True
    protocols: list[Protocol] = field(default_factory=lambda: list(PROTOCOLS))
    device: str = "cpu"
    batch_size: int = 32
    convert_workers: int = 0
    n_boot: int = 100
    ci_level: float = 0.90
    significance_resamples: int = 1000
    seed: int = 0
    min_samples: int = 0
    progress: bool = True

    probe_tasks: list[Task] = field(default_factory=lambda: ["superdiagnostic", "subdiagnostic", "form", "rhythm"])
    probe_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    probe_seeds: list[int] = field(default_factory=lambda: [0])
    probe_epochs: int = 100
    probe_lr: float = 1e-2
    probe_weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2])
    probe_subset_draw: Literal["merl", "every_class"] = "merl"

    benchmark_tasks: list[Task] = field(default_factory=lambda: list(TASKS))
    benchmark_supervised: list[str] = field(default_factory=lambda: ["xresnet1d101"])
    benchmark_supervised_fs: float = 100.0
    benchmark_finetune: bool = True
    benchmark_recipe: Literal["benchmark", "esi"] = "benchmark"
    benchmark_selection: Literal["final_epoch", "fold9_best"] | None = None
    benchmark_epochs: int = 50
    benchmark_finetune_epochs: int = 30
    benchmark_batch_size: int = 128
    benchmark_lr: float | None = None
    benchmark_finetune_lr: float | None = None
    benchmark_weight_decay: float | None = None
    benchmark_window_s: float = 2.5
    benchmark_stride_s: float = 1.25
    benchmark_dropout: float = 0.5
    benchmark_train_fraction: float = 1.0
    benchmark_save_models: bool = True
    benchmark_loader_workers: int = 0

    zero_shot_tasks: list[Task] = field(default_factory=lambda: ["superdiagnostic", "subdiagnostic", "form", "rhythm"])
    zero_shot_waveform_dict: str = ""
    zero_shot_templates: list[str] = field(default_factory=lambda: ["ECG showing {class_name}. {description}"])
    zero_shot_no_description_template: str = "ECG showing {class_name}."
    zero_shot_class_names: dict = field(default_factory=dict)
    zero_shot_folds: list[int] = field(default_factory=lambda: [10])

    identification_folds: list[int] = field(default_factory=list)
    identification_max_rank: int = 20

    figures: bool = True
    figure_task: Task = "superdiagnostic"
    tsne_max_points: int = 2000
    tsne_iterations: int = 1000


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
