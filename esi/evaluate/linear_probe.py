"""Protocol B: linear probes on frozen features (the protocol of MERL, ICML 2024, with selection on fold 9).

For each encoder, task, label fraction and seed:
  1. features of whole 10 s records at the encoder's own rate and normalisation (cached, esi.evaluate.features);
  2. `fraction` of the training folds 1-8 (`label_fraction_subset`): by default MERL's exact draw
     (train_test_split(train_size=fraction, random_state=42) of the training records in ecg_id order), so our 1 %
     and 10 % rows use the same records as MERL's; "every_class" adds a positive of every class left without one;
  3. a linear head per weight decay on features standardised with the training rows (`standardise`); the
     weight decay and epoch with the best macro AUROC on fold 9 are kept (`train_linear_probe`), never
     looking at fold 10. MERL keeps the best epoch on its test set, which inflates its numbers; `selection=
     "test_max"` does the same to reproduce them (rows say `selection: test_max` and are never comparable to a
     validation-selected number);
  4. macro AUROC and AUPRC on fold 10 with a bootstrap interval (90 % by default, the PTB-XL benchmark's), and the
     p-value of a paired permutation test against the encoder's random-init twin on the same records.

    workspace = Workspace("outputs/run", "data/ptbxl")
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace,
                               ProbeSettings(tasks=["superdiagnostic"], fractions=[0.01, 0.1, 1.0]))
    results.table

The random-init twin of every pretrained encoder is added by default (`random_baselines=True`). The subset draws
are shared with the PTB-XL benchmark's `train_fraction`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Sequence

import numpy as np
import torch

from esi.config import with_changes
from esi.evaluate.encoders import EncoderSpec, LoadedEncoder, load_encoders, slug, twin_labels
from esi.evaluate.features import FeatureSet
from esi.evaluate.metrics import macro_auroc
from esi.evaluate.results import (CommonSettings, ProtocolResults, Task, attach_p_values, changed_settings,
                                  classification_rows, join_notes, save_predictions)
from esi.evaluate.workspace import Workspace, official_splits

PROTOCOL = "linear_probe"
RECIPE = "esi_probe"  # AdamW head per weight decay, epoch and decay chosen on fold 9
# How the (weight decay, epoch) of the scored head is chosen: on the validation split (the rows' selection
# "fold9_best"), or, for reproducing MERL's published numbers only, the best test AUROC over epochs ("test_max").
SELECTIONS = {"validation": "fold9_best", "test_max": "test_max"}
DEFAULT_TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")
DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)

# How a label fraction of the training records is drawn. "merl": exactly MERL's (ICML 2024) draw, scikit-learn's
# train_test_split(train_size=fraction, random_state=seed) of the training records in ecg_id order, so at 1 % some
# classes may have no positive (they then score near 0.5, as in MERL's tables); "every_class": a seeded random
# fraction plus one positive of any class left without one, so the head can learn every class it is scored on.
SUBSET_DRAWS = ("merl", "every_class")
MERL_SEED = 42  # MERL's random_state


@dataclass
class ProbeSettings:
    """Protocol B's settings (params keys `evaluate_probe_<field>`); the defaults are MERL's protocol with the
    head chosen on the validation split."""

    # PTB-XL tasks (another dataset has one task, itself)
    tasks: list[Task] = field(default_factory=lambda: list(DEFAULT_TASKS))
    fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))   # label fractions of train
    seeds: list[int] = field(default_factory=lambda: [0])   # one probe per seed (head; subset: subset_seed + seed)
    epochs: int = 100                     # the head's epochs (the best one on the validation split is kept)
    lr: float = 1e-2                      # the head's AdamW learning rate
    # weight decays tried; the best on the validation split is kept
    weight_decays: list[float] = field(default_factory=lambda: list(DEFAULT_WEIGHT_DECAYS))
    # how 1 %/10 % subsets are drawn: "merl" (MERL's records: train_test_split, random_state 42, of the training
    # records in id order) or "every_class" (plus a positive of every missing class)
    subset_draw: Literal["merl", "every_class"] = "merl"
    subset_seed: int = MERL_SEED          # seed of the subset draw for seed 0 (42: MERL's random_state)
    # which head is scored: "validation" (the weight decay and epoch best on the validation split) or "test_max"
    # (MERL's reporting: the best test AUROC over epochs; reproduction only, optimistic, rows say selection test_max)
    selection: Literal["validation", "test_max"] = "validation"


# Settings a probe row shows in columns of their own (task, label_fraction, seed, subset_draw, selection).
IN_COLUMNS = ("tasks", "fractions", "seeds", "subset_draw", "selection")


def row_settings(settings: ProbeSettings) -> dict:
    """The results' `settings` of a probe row: every other setting where it differs from the default."""
    names = [f.name for f in fields(settings) if f.name not in IN_COLUMNS]
    return changed_settings(settings, ProbeSettings(), names)


def label_fraction_subset(y: np.ndarray, fraction: float, seed: int = MERL_SEED, draw: str = "merl") -> np.ndarray:
    """Indices of the training rows of multi-hot `y` kept when only `fraction` of the labels is used.

    Args:
        y: (records, classes) labels of the training records, in ecg_id order (the order MERL's tables use).
        fraction: share of the records kept, 0 < fraction <= 1 (1: all rows, in order).
        seed: the draw's seed (MERL: 42).
        draw: "merl" (the rows `train_test_split(range(len(y)), train_size=fraction, random_state=seed)` keeps,
            in the order it returns them) or "every_class" (sorted rows; see SUBSET_DRAWS).
    """
    n = len(y)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if draw not in SUBSET_DRAWS:
        raise ValueError(f"unknown subset draw {draw!r}; expected one of: {', '.join(SUBSET_DRAWS)}")
    if fraction >= 1:
        return np.arange(n)
    if draw == "merl":
        from sklearn.model_selection import train_test_split

        kept, _ = train_test_split(np.arange(n), train_size=fraction, random_state=seed)
        return np.asarray(kept)
    rng = np.random.default_rng(seed)
    k = max(1, int(round(fraction * n)))
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    for c in range(y.shape[1]):
        positives = np.flatnonzero(y[:, c])
        if len(positives) and not any(i in chosen for i in positives):
            chosen.add(int(rng.choice(positives)))
    return np.array(sorted(chosen))


def subset_classes_without_positive(y_subset: np.ndarray, classes) -> list[str]:
    """The classes with no positive among the training rows a subset kept (a head cannot learn them)."""
    return [c for c, n in zip(classes, np.asarray(y_subset).sum(0)) if n == 0]


@dataclass
class ProbeResult:
    """The chosen head and how it was chosen. `val_curve` maps weight decay -> val AUROC per epoch."""
    weight_decay: float
    epoch: int
    val_auroc: float
    test_scores: np.ndarray
    val_curve: dict = field(default_factory=dict)


# Features whose training spread is below this share of the median feature's spread are scaled by the floor instead:
# a feature (nearly) constant on a small training subset would otherwise be divided by ~0 and dominate the head.
STD_FLOOR_SHARE = 0.1


def standardise(train: np.ndarray, *others: np.ndarray, floor_share: float = STD_FLOOR_SHARE) -> list[np.ndarray]:
    """Centre and scale features with the training rows' statistics: `[train, *others]` standardised.

    Each feature is divided by max(its training std, floor_share x the median training std over features)
    (1 if every feature is constant), so no feature is magnified more than 1/floor_share times a typical one.
    """
    mean = train.mean(0, keepdims=True)
    std = train.std(0, keepdims=True)
    typical = float(np.median(std))
    floor = floor_share * typical if typical > 0 else 1.0
    scale = np.maximum(std, floor)
    return [(x - mean) / scale for x in (train, *others)]


def train_linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       x_test: np.ndarray, weight_decays=(0.0, 1e-4, 1e-3, 1e-2), epochs: int = 100,
                       lr: float = 1e-2, batch_size: int = 256, seed: int = 0, classes=None,
                       where: str = "", selection: str = "validation",
                       y_test: np.ndarray | None = None) -> ProbeResult:
    """Fit a linear head for each weight decay; keep the (weight decay, epoch) with the best val macro AUROC.

    Features are standardised with statistics of the training rows (`standardise`). The test rows are only
    scored by the chosen head, never used to choose, unless selection="test_max" (MERL's reporting, for
    reproducing its numbers only: the (weight decay, epoch) with the best macro AUROC on `y_test`; `val_auroc`
    then holds that test AUROC). `classes` and `where` (e.g. "ESI / rhythm / linear_probe") name the class and the
    run in the error a non-finite score raises.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown probe selection {selection!r}; expected one of: {', '.join(SELECTIONS)}")
    if selection == "test_max" and y_test is None:
        raise ValueError('selection="test_max" needs y_test')
    xt, xv, xs = (torch.as_tensor(a, dtype=torch.float32) for a in standardise(x_train, x_val, x_test))
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    best = None
    curves = {}
    for wd in weight_decays:
        torch.manual_seed(seed)
        head = torch.nn.Linear(xt.shape[1], yt.shape[1])
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
        gen = torch.Generator().manual_seed(seed)
        curve = []
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = order[i:i + batch_size]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(head(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                if selection == "test_max":
                    val = macro_auroc(y_test, head(xs).numpy(), classes=classes, where=where)
                else:
                    val = macro_auroc(y_val, head(xv).numpy(), classes=classes, where=where)
            curve.append(val)
            if best is None or val > best[0]:
                with torch.no_grad():
                    best = (val, wd, epoch, torch.sigmoid(head(xs)).numpy())
        curves[wd] = curve
    val, wd, epoch, test_scores = best
    return ProbeResult(weight_decay=wd, epoch=epoch, val_auroc=val, test_scores=test_scores, val_curve=curves)


def probe_task(features: FeatureSet, task, fraction: float, seed: int = 0, settings: ProbeSettings | None = None,
               common: CommonSettings | None = None, *, encoder_label: str = "encoder", names: dict | None = None,
               **changes) -> dict:
    """Train and score one linear probe.

    Args:
        features: features of (at least) every record of the task.
        task: a `PTBXLTask` (all folds).
        fraction: share of the training folds used (0 < fraction <= 1).
        seed: seed of the head's initialisation and the bootstrap; the subset is drawn with subset_seed + seed.
        settings: the probe's training (epochs, lr, weight_decays, subset_draw, subset_seed, selection; see
            `ProbeSettings`, `train_linear_probe`); its tasks, fractions and seeds are not read here.
        common: bootstrap resamples and interval coverage (`CommonSettings`).
        encoder_label: the encoder's name in the rows.
        names: class label -> English name for the per-class rows.
        changes: fields of `settings` or `common` to change (`epochs=1, n_boot=0`).

    Returns:
        {"rows": tidy rows (macro AUROC, AUPRC), "per_class": rows, "y_true", "y_score", "classes", "ecg_ids",
         "probe": ProbeResult, "train_ids": ecg_ids of the training subset}.
    """
    settings, common = with_changes(changes, settings or ProbeSettings(), common or CommonSettings())
    selection = settings.selection
    train, val, test, scored, classes, notes = official_splits(task)
    y_train, y_val, y_test = train.y[:, scored], val.y[:, scored], test.y[:, scored]

    subset = label_fraction_subset(y_train, fraction, seed=settings.subset_seed + seed, draw=settings.subset_draw)
    x_train = features.take(train.ecg_ids[subset])
    x_val, x_test = features.take(val.ecg_ids), features.take(test.ecg_ids)
    where = f"{encoder_label} / {task.task} / {PROTOCOL}"
    probe = train_linear_probe(x_train, y_train[subset], x_val, y_val, x_test,
                               weight_decays=tuple(settings.weight_decays), epochs=settings.epochs, lr=settings.lr,
                               seed=seed, classes=classes, where=where, selection=selection, y_test=y_test)
    unlearnable = subset_classes_without_positive(y_train[subset], classes)
    if unlearnable and fraction < 1:
        notes = join_notes(notes, f"{len(unlearnable)} class(es) without a positive in the {fraction:g} subset "
                                  f"({', '.join(unlearnable[:5])}{', ...' if len(unlearnable) > 5 else ''})")
    if selection == "test_max":
        notes = join_notes(notes, f"selected on the scored test records (MERL's reporting, reproduction only: "
                                  f"optimistic, never comparable to a validation-selected number): weight decay "
                                  f"{probe.weight_decay:g}, epoch {probe.epoch}")
    else:
        if np.isnan(probe.val_auroc):
            notes = join_notes(notes, f"{task.validation_name} has no class with both labels: epoch and weight "
                                      "decay not selected")
        notes = join_notes(notes, f"selected on {task.validation_name}: weight decay {probe.weight_decay:g}, "
                                  f"epoch {probe.epoch} (val AUROC {probe.val_auroc:.3f})")
    scored_rows = classification_rows(task.task, PROTOCOL, encoder_label, classes, y_test, probe.test_scores,
                                      split=task.split_label, recipe=RECIPE, selection=SELECTIONS[selection],
                                      subset_draw=settings.subset_draw if fraction < 1 else "all",
                                      label_fraction=fraction, n_train=len(subset), seed=seed, n_boot=common.n_boot,
                                      ci_level=common.ci_level, notes=notes, names=names,
                                      settings=row_settings(settings))
    return {**scored_rows, "y_true": y_test, "y_score": probe.test_scores, "classes": classes,
            "ecg_ids": test.ecg_ids, "probe": probe, "train_ids": train.ecg_ids[subset]}


def run_linear_probe(encoders: Sequence[EncoderSpec | LoadedEncoder], workspace: Workspace,
                     settings: ProbeSettings | None = None, common: CommonSettings | None = None, *,
                     random_baselines: bool = True, **changes) -> ProtocolResults:
    """Protocol B: linear-probe macro AUROC and AUPRC on the test split for every encoder x task x fraction x seed.

    Args:
        encoders: `EncoderSpec`s (loaded here) or `LoadedEncoder`s.
        workspace: the dataset's `Workspace` (stores, feature cache, device, batch size).
        settings: the probe's settings (params keys `evaluate_probe_*`; default `ProbeSettings()`: MERL's tasks
            and fractions, the head chosen on the validation split).
        common: intervals, paired tests and classes kept (`evaluate_n_boot`, ...; default `CommonSettings()`).
        random_baselines: add the random-init twin of every pretrained spec.
        changes: fields of `settings` or `common` to change (`epochs=3, n_boot=20`).

    Returns:
        `ProtocolResults`; its table has four rows (metric "macro_auroc", "macro_auprc" and each over the
        supported classes) per encoder x task x fraction x seed. Test-set scores are written to
        <run_dir>/evaluate/predictions/linear_probe/<task>/.
    """
    settings, common = with_changes(changes, settings or ProbeSettings(), common or CommonSettings())
    loaded = load_encoders(encoders, workspace.device, random_baselines)
    outputs, per_class = [], []
    for encoder in loaded:
        features = workspace.features(encoder)
        for task_name in workspace.dataset.task_names(settings.tasks):
            task = workspace.dataset.task(task_name, common.min_samples)
            for fraction in settings.fractions:
                for seed in settings.seeds:
                    out = probe_task(features, task, fraction, seed, settings, common, encoder_label=encoder.label,
                                     names=workspace.dataset.class_names(task.classes))
                    outputs.append({**out, "encoder": encoder.label, "key": (task_name, fraction, seed)})
                    per_class.extend(out["per_class"])
                    name = f"{slug(encoder.label)}_frac{fraction:g}_seed{seed}.npz"
                    save_predictions(workspace.predictions_dir / PROTOCOL / task_name / name, out["y_true"],
                                     out["y_score"], out["classes"], out["ecg_ids"], encoder=encoder.label,
                                     label_fraction=fraction, seed=seed, pretrained=encoder.pretrained,
                                     train_ids=out["train_ids"])
    attach_p_values(outputs, twin_labels(loaded), n_resamples=common.significance_resamples, seed=0)
    rows = [row for out in outputs for row in out["rows"]]
    return ProtocolResults.from_rows(rows, per_class, **workspace.dataset.context, encoders=loaded)
