"""Protocol B: linear probes on frozen features (the protocol of MERL, ICML 2024, with selection on fold 9).

For each encoder, task, label fraction and seed:
  1. features of whole 10 s records at the encoder's own rate and normalisation (cached, esi.evaluate.features);
  2. `fraction` of the training folds 1-8 (`probe.label_fraction_subset`): by default MERL's exact draw
     (train_test_split(train_size=fraction, random_state=42) of the training records in ecg_id order), so our 1 %
     and 10 % rows use the same records as MERL's; "every_class" adds a positive of every class left without one;
  3. a linear head per weight decay on features standardised with the training rows (`probe.standardise`); the
     weight decay and epoch with the best macro AUROC on fold 9 are kept (`probe.train_linear_probe`), never
     looking at fold 10 (MERL keeps the best epoch on its test set, which inflates its numbers);
  4. macro AUROC and AUPRC on fold 10 with a bootstrap interval (90 % by default, the PTB-XL benchmark's), and the
     p-value of a paired bootstrap test against the encoder's random-init twin on the same records.

    table = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], "data/ptbxl",
                             tasks=["superdiagnostic"], fractions=[0.01, 0.1, 1.0], run_dir="outputs/run")

The random-init twin of every pretrained encoder is added by default (`random_baselines=True`).
"""

from __future__ import annotations

import os
from typing import Sequence

from esi.evaluate.encoders import EncoderSpec, LoadedEncoder, load_encoders, slug, twin_labels
from esi.evaluate.features import (FeatureSet, ProtocolResults, Workspace, attach_p_values, classification_rows,
                                   join_notes, official_splits, save_predictions)
from esi.evaluate.probe import MERL_SEED, label_fraction_subset, subset_classes_without_positive, train_linear_probe

PROTOCOL = "linear_probe"
RECIPE = "esi_probe"  # AdamW head per weight decay, epoch and decay chosen on fold 9
SELECTION = "fold9_best"
DEFAULT_TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")
DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


def probe_task(features: FeatureSet, task, fraction: float, seed: int = 0, *, epochs: int = 100, lr: float = 1e-2,
               weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, draw: str = "merl",
               subset_seed: int = MERL_SEED, n_boot: int = 100, ci_level: float = 0.90,
               encoder_label: str = "encoder", names: dict | None = None) -> dict:
    """Train and score one linear probe.

    Args:
        features: features of (at least) every record of the task.
        task: a `PTBXLTask` (all folds).
        fraction: share of the training folds used (0 < fraction <= 1).
        seed: seed of the head's initialisation and the bootstrap; the subset is drawn with subset_seed + seed.
        epochs, lr, weight_decays: the probe's training (see `probe.train_linear_probe`).
        draw: how the fraction is drawn ("merl" or "every_class", see `probe.label_fraction_subset`).
        subset_seed: seed of the draw for seed 0 (42: MERL's random_state).
        n_boot: bootstrap resamples of the test records.
        ci_level: coverage of the interval.
        encoder_label: the encoder's name in the rows.
        names: class label -> English name for the per-class rows.

    Returns:
        {"rows": tidy rows (macro AUROC, AUPRC), "per_class": rows, "y_true", "y_score", "classes", "ecg_ids",
         "probe": ProbeResult, "train_ids": ecg_ids of the training subset}.
    """
    train, val, test, scored, classes, notes = official_splits(task)
    y_train, y_val, y_test = train.y[:, scored], val.y[:, scored], test.y[:, scored]

    subset = label_fraction_subset(y_train, fraction, seed=subset_seed + seed, draw=draw)
    x_train = features.take(train.ecg_ids[subset])
    x_val, x_test = features.take(val.ecg_ids), features.take(test.ecg_ids)
    where = f"{encoder_label} / {task.task} / {PROTOCOL}"
    probe = train_linear_probe(x_train, y_train[subset], x_val, y_val, x_test, weight_decays=tuple(weight_decays),
                               epochs=epochs, lr=lr, seed=seed, classes=classes, where=where)
    unlearnable = subset_classes_without_positive(y_train[subset], classes)
    if unlearnable and fraction < 1:
        notes = join_notes(notes, f"{len(unlearnable)} class(es) without a positive in the {fraction:g} subset "
                                  f"({', '.join(unlearnable[:5])}{', ...' if len(unlearnable) > 5 else ''})")
    if probe.val_auroc != probe.val_auroc:  # NaN
        notes = join_notes(notes, "fold 9 has no class with both labels: epoch and weight decay not selected")
    notes = join_notes(notes, f"selected on fold 9: weight decay {probe.weight_decay:g}, epoch {probe.epoch} "
                              f"(val AUROC {probe.val_auroc:.3f})")
    scored_rows = classification_rows(task.task, PROTOCOL, encoder_label, classes, y_test, probe.test_scores,
                                      recipe=RECIPE, selection=SELECTION, subset_draw=draw if fraction < 1 else "all",
                                      label_fraction=fraction, n_train=len(subset), seed=seed, n_boot=n_boot,
                                      ci_level=ci_level, notes=notes, names=names)
    return {**scored_rows, "y_true": y_test, "y_score": probe.test_scores, "classes": classes,
            "ecg_ids": test.ecg_ids, "probe": probe, "train_ids": train.ecg_ids[subset]}


def linear_probe_results(encoders: Sequence[EncoderSpec | LoadedEncoder], workspace: Workspace,
                         tasks: Sequence[str] = DEFAULT_TASKS, fractions: Sequence[float] = DEFAULT_FRACTIONS, *,
                         seeds: Sequence[int] = (0,), epochs: int = 100, lr: float = 1e-2,
                         weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, draw: str = "merl",
                         subset_seed: int = MERL_SEED, n_boot: int = 100, ci_level: float = 0.90,
                         significance_resamples: int = 1000, min_samples: int = 0,
                         random_baselines: bool = True) -> ProtocolResults:
    """Protocol B for every encoder x task x fraction x seed in a `workspace` (stores, cache, device).

    The other arguments are those of `run_linear_probe`. Test-set scores are written to
    <run_dir>/evaluate/predictions/linear_probe/<task>/.
    """
    loaded = load_encoders(encoders, workspace.device, random_baselines)
    outputs, per_class = [], []
    for encoder in loaded:
        features = workspace.features(encoder)
        for task_name in tasks:
            task = workspace.task(task_name, min_samples)
            for fraction in fractions:
                for seed in seeds:
                    out = probe_task(features, task, fraction, seed, epochs=epochs, lr=lr,
                                     weight_decays=weight_decays, draw=draw, subset_seed=subset_seed, n_boot=n_boot,
                                     ci_level=ci_level, encoder_label=encoder.label,
                                     names=workspace.class_names(task.classes))
                    outputs.append({**out, "encoder": encoder.label, "key": (task_name, fraction, seed)})
                    per_class.extend(out["per_class"])
                    name = f"{slug(encoder.label)}_frac{fraction:g}_seed{seed}.npz"
                    save_predictions(workspace.predictions_dir / PROTOCOL / task_name / name, out["y_true"],
                                     out["y_score"], out["classes"], out["ecg_ids"], encoder=encoder.label,
                                     label_fraction=fraction, seed=seed, pretrained=encoder.pretrained,
                                     train_ids=out["train_ids"])
    attach_p_values(outputs, twin_labels(loaded), n_resamples=significance_resamples, seed=0)
    return ProtocolResults.from_rows([row for out in outputs for row in out["rows"]], per_class)


def run_linear_probe(encoders: Sequence[EncoderSpec | LoadedEncoder], ptbxl_root: str | os.PathLike,
                     tasks: Sequence[str] = DEFAULT_TASKS, fractions: Sequence[float] = DEFAULT_FRACTIONS, *,
                     run_dir: str | os.PathLike | None = None, store_dir: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None, seeds: Sequence[int] = (0,), epochs: int = 100,
                     lr: float = 1e-2, weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, draw: str = "merl",
                     n_boot: int = 100, ci_level: float = 0.90, significance_resamples: int = 1000,
                     min_samples: int = 0, random_baselines: bool = True, batch_size: int = 32,
                     device: str = "cpu", workers: int | None = None, progress: bool = True):
    """Protocol B: linear-probe macro AUROC and AUPRC on PTB-XL fold 10, as a tidy DataFrame (see RESULT_COLUMNS).

    Args:
        encoders: `EncoderSpec`s (loaded here) or `LoadedEncoder`s.
        ptbxl_root: the PTB-XL folder.
        tasks: PTB-XL tasks (default: super/sub/form/rhythm, as MERL).
        fractions: label fractions of the training folds (default 1 %, 10 %, 100 %).
        run_dir: where stores, cached features and predictions go (default outputs/evaluate).
        store_dir: converted PTB-XL stores (default <run_dir>/evaluate/stores).
        cache_dir: cached features (default <run_dir>/evaluate/features).
        seeds: one probe per seed (initialisation, bootstrap; the subset is drawn with random_state 42 + seed).
        epochs, lr, weight_decays: the probe's training; epoch and weight decay are chosen on fold 9.
        draw: how 1 %/10 % subsets are drawn: "merl" (MERL's exact records) or "every_class".
        n_boot: bootstrap resamples for the interval.
        ci_level: coverage of the interval (0.90: the PTB-XL benchmark's 5th-95th percentiles).
        significance_resamples: resamples of the paired test against each encoder's random-init twin.
        min_samples: keep classes with more than this many records (the benchmark's default 0).
        random_baselines: add the random-init twin of every pretrained spec.
        batch_size: records per forward pass when extracting features.
        device: torch device of the encoders.
        workers: processes for the one-off PTB-XL conversion (None: all cores).
        progress: show progress bars.

    Returns:
        pandas DataFrame, two rows (metric "macro_auroc", "macro_auprc") per encoder x task x fraction x seed.
    """
    workspace = Workspace(run_dir, ptbxl_root, store_dir=store_dir, cache_dir=cache_dir, device=device,
                          batch_size=batch_size, workers=workers, progress=progress)
    return linear_probe_results(encoders, workspace, tasks, fractions, seeds=seeds, epochs=epochs, lr=lr,
                                weight_decays=weight_decays, draw=draw, n_boot=n_boot, ci_level=ci_level,
                                significance_resamples=significance_resamples, min_samples=min_samples,
                                random_baselines=random_baselines).table
