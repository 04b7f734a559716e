"""Protocol A: the PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021), trained end to end.

The benchmark's recipe, for every task:
  - folds 1-8 train, fold 9 selects the epoch, fold 10 is scored once;
  - input standardised with ONE mean/std fitted on the training records (the benchmark's StandardScaler), or the
    per-record normalisation a pretrained encoder was pretrained with;
  - training on random 2.5 s crops; validation and test on 2.5 s windows every 1.25 s, each record's prediction
    the maximum over its windows;
  - BCE loss, batch 128, AdamW with weight decay 1e-2, one-cycle schedule peaking at lr 1e-2, 50 epochs;
  - head: concatenated adaptive max and average pooling -> BN/Dropout/Linear(128)/ReLU/BN/Dropout/Linear;
  - macro AUROC on fold 10 with a 100-resample bootstrap interval.

Two modes, both here: "benchmark_supervised" trains an architecture (default xresnet1d101 at 100 Hz) from scratch;
"benchmark_finetune" fine-tunes a pretrained encoder at the rate it was pretrained on (and, as the baseline, its
random-init twin with the same recipe).

    table = run_ptbxl_benchmark([], "data/ptbxl", tasks=["superdiagnostic"], supervised=["xresnet1d101"],
                                run_dir="outputs/run", epochs=50)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esi.data.ptbxl import TASKS
from esi.evaluate.encoders import EncoderSpec, LoadedEncoder, fresh_copy, load_encoder, slug, with_random_baselines
from esi.evaluate.features import (ProtocolResults, Workspace, fit_train_scaler, join_notes, official_splits,
                                   per_class_rows, result_row, save_predictions, store_rows)
from esi.evaluate.metrics import bootstrap_macro_auroc, macro_auroc
from esi.evaluate.probe import label_fraction_subset

PROTOCOL_SUPERVISED = "benchmark_supervised"
PROTOCOL_FINETUNE = "benchmark_finetune"
BENCHMARK_EPOCHS = 50


@dataclass
class BenchmarkSettings:
    """The training recipe (defaults: the benchmark's).

    epochs: passes over the training records (the benchmark: 50); the epoch is chosen on fold 9.
    batch_size: records (crops) per step.
    lr: peak learning rate of the one-cycle schedule.
    weight_decay: AdamW weight decay.
    window_s, stride_s: crop/window length and the stride of the evaluation windows (seconds).
    dropout: dropout before the last layer of the head (half of it before the first).
    hidden: width of the head's hidden layer.
    train_fraction: share of the training folds used (seeded, every class kept; 1.0 = all).
    seed: seed of the subset, the head, the crops and the batch order.
    n_boot: bootstrap resamples of the test records.
    num_workers: DataLoader worker processes.
    """

    epochs: int = BENCHMARK_EPOCHS
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-2
    window_s: float = 2.5
    stride_s: float = 1.25
    dropout: float = 0.5
    hidden: int = 128
    train_fraction: float = 1.0
    seed: int = 0
    n_boot: int = 100
    num_workers: int = 0


# --- the model -----------------------------------------------------------------------------------------------


class BenchmarkHead(nn.Module):
    """The benchmark's head (fastai's create_head1d): concat max+avg pooling over time, then
    BN -> Dropout(p/2) -> Linear(2d, hidden) -> ReLU -> BN -> Dropout(p) -> Linear(hidden, classes).

    dim: the encoder's token width d. n_classes: outputs. hidden: hidden width (128). dropout: p (0.5).
    """

    def __init__(self, dim: int, n_classes: int, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm1d(2 * dim), nn.Dropout(dropout / 2), nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, n_classes),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, n_tokens, dim) -> logits (batch, n_classes)."""
        x = tokens.transpose(1, 2)                                                   # (B, d, n)
        pooled = torch.cat([F.adaptive_max_pool1d(x, 1), F.adaptive_avg_pool1d(x, 1)], dim=1).flatten(1)  # (B, 2d)
        return self.layers(pooled)


class BenchmarkClassifier(nn.Module):
    """An ECG encoder with the benchmark head: (batch, 12, time) -> logits (batch, classes)."""

    def __init__(self, encoder: nn.Module, n_classes: int, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.encoder = encoder
        self.head = BenchmarkHead(encoder.dim, n_classes, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).tokens)


# --- windows and max aggregation -----------------------------------------------------------------------------


def aggregate_max(window_scores: torch.Tensor | np.ndarray):
    """Per-record scores from `window_scores` (records, windows, classes): the maximum over the windows."""
    return window_scores.max(dim=1).values if torch.is_tensor(window_scores) else np.max(window_scores, axis=1)


@torch.inference_mode()
def predict_records(model: nn.Module, dataset, batch_size: int = 128, device: str | torch.device = "cpu") -> np.ndarray:
    """Max-aggregated probabilities (records, classes) over each record's sliding windows.

    Args:
        model: (batch, 12, window) -> logits (batch, classes); switched to eval mode here.
        dataset: an `ECGDataset` built with windows=(length, stride): items (windows, 12, length).
        batch_size: records per forward pass (each brings all its windows).
        device: where the model runs.
    """
    model.eval()
    out = []
    for batch in dataset.loader(batch_size=batch_size):
        x = batch["ecg"].to(device)                                                  # (B, W, 12, L)
        b, w = x.shape[:2]
        probs = torch.sigmoid(model(x.flatten(0, 1)).float()).view(b, w, -1)         # (B, W, C)
        out.append(aggregate_max(probs).cpu().numpy())
    return np.concatenate(out)


# --- training ------------------------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """The chosen epoch (1-based), its fold-9 macro AUROC, and every epoch's train loss and val AUROC."""

    best_epoch: int
    best_val_auroc: float
    history: list[dict] = field(default_factory=list)


def train_benchmark_model(model: nn.Module, train_set, val_set, y_val: np.ndarray, settings: BenchmarkSettings,
                          device: str | torch.device = "cpu", progress: bool = True, desc: str = "") -> TrainOutcome:
    """Train with BCE, AdamW and a one-cycle schedule; keep the weights of the epoch best on fold 9.

    Args:
        model: the classifier (moved to `device`); holds the chosen epoch's weights on return.
        train_set: `ECGDataset` of random crops with targets.
        val_set: `ECGDataset` of sliding windows of the validation records.
        y_val: (val records, classes) multi-hot labels, in `val_set` order.
        settings: the recipe.
        device: torch device.
        progress: show a progress bar over epochs.
        desc: the bar's label.
    """
    from tqdm.auto import tqdm

    model.to(device)
    # BatchNorm cannot train on a last batch of one record; drop the incomplete last batch when there is a choice.
    drop_last = len(train_set) > settings.batch_size and len(train_set) % settings.batch_size == 1
    loader = train_set.loader(batch_size=settings.batch_size, shuffle=True, drop_last=drop_last,
                              num_workers=settings.num_workers, seed=settings.seed)
    steps = len(loader) * settings.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    # torch's OneCycleLR defaults (30 % warm-up, start lr/25, end lr/25e4, cosine, beta1 cycled 0.95 <-> 0.85)
    # are those of fastai v1's fit_one_cycle, which the benchmark used.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=max(steps, 1))
    best_state, best = None, (-math.inf, 0)
    history = []
    bar = tqdm(range(1, settings.epochs + 1), desc=desc or "training", unit="epoch", disable=not progress)
    for epoch in bar:
        train_set.set_epoch(epoch)
        model.train()
        losses = []
        for batch in loader:
            logits = model(batch["ecg"].to(device))
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch["y"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        val_auroc = macro_auroc(y_val, predict_records(model, val_set, settings.batch_size, device))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_macro_auroc": val_auroc})
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.4f}", val_auroc=f"{val_auroc:.4f}")
        score = val_auroc if np.isfinite(val_auroc) else -math.inf
        if best_state is None or score > best[0]:
            best = (score, epoch)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return TrainOutcome(best_epoch=best[1], best_val_auroc=float(best[0]) if np.isfinite(best[0]) else float("nan"),
                        history=history)


def benchmark_task(encoder: LoadedEncoder, task, store, settings: BenchmarkSettings, *, protocol: str,
                   device: str | torch.device = "cpu", progress: bool = True, names: dict | None = None) -> dict:
    """Train and score one model (a fresh copy of `encoder` plus a new head) on one task.

    Args:
        encoder: the encoder to train from (copied; the loaded one is left untouched).
        task: a `PTBXLTask` (all folds).
        store: the PTB-XL store at the encoder's rate.
        settings: the recipe.
        protocol: PROTOCOL_SUPERVISED or PROTOCOL_FINETUNE (the tidy table's protocol).
        device: torch device.
        progress: show progress bars.
        names: class label -> English name for the per-class rows.

    Returns:
        {"row", "per_class", "y_true", "y_score", "classes", "ecg_ids", "model", "scaler", "outcome", "checkpoint"}
        where checkpoint is a dict ready for torch.save (loadable as an EncoderSpec(kind="supervised")).
    """
    from esi.data.datasets import ECGDataset

    if abs(store.fs - encoder.fs) > 1e-6:
        raise ValueError(f"{encoder.label} is fed at {encoder.fs:g} Hz but the store is at {store.fs:g} Hz")
    train, val, test, scored, classes, notes = official_splits(task)
    subset = label_fraction_subset(train.y[:, scored], settings.train_fraction, seed=settings.seed)

    rows_train = store_rows(store, train.ecg_ids[subset])
    rows_val, rows_test = store_rows(store, val.ecg_ids), store_rows(store, test.ecg_ids)
    targets = np.zeros((len(store), len(classes)), dtype=np.float32)  # ECGDataset wants targets per store row
    targets[rows_train] = train.y[subset][:, scored]

    # The benchmark's single StandardScaler, fitted on the training records only; a pretrained encoder keeps the
    # per-record normalisation it was pretrained with.
    scaler = fit_train_scaler(store, rows_train, per_lead=False) if encoder.normalize == "scaler" else None
    window = int(round(settings.window_s * store.fs))
    stride = int(round(settings.stride_s * store.fs))
    common = dict(leads=encoder.leads, normalize=encoder.normalize, scaler=scaler)
    train_set = ECGDataset(store, rows_train, targets=targets, crop=window, crop_mode="random", seed=settings.seed,
                           **common)
    val_set = ECGDataset(store, rows_val, windows=(window, stride), **common)
    test_set = ECGDataset(store, rows_test, windows=(window, stride), **common)

    torch.manual_seed(settings.seed)
    model = BenchmarkClassifier(fresh_copy(encoder), len(classes), settings.hidden, settings.dropout)
    outcome = train_benchmark_model(model, train_set, val_set, val.y[:, scored], settings, device, progress,
                                    desc=f"{task.task}: {encoder.label}")
    y_test = test.y[:, scored]
    scores = predict_records(model, test_set, settings.batch_size, device)
    boot = bootstrap_macro_auroc(y_test, scores, n_boot=settings.n_boot, seed=settings.seed)

    notes = join_notes(notes, f"selected on fold 9: epoch {outcome.best_epoch}/{settings.epochs} "
                              f"(val AUROC {outcome.best_val_auroc:.3f})")
    if settings.epochs < BENCHMARK_EPOCHS:
        notes = join_notes(notes, f"{settings.epochs} epoch(s), the benchmark trains {BENCHMARK_EPOCHS}")
    row = result_row(task.task, protocol, encoder.label, "macro_auroc", boot.value, boot.low, boot.high,
                     label_fraction=settings.train_fraction, n_test=len(test), n_train=len(subset),
                     seed=settings.seed, notes=notes)
    per_class = per_class_rows(task.task, protocol, encoder.label, classes, y_test, scores,
                               label_fraction=settings.train_fraction, seed=settings.seed, names=names)
    checkpoint = {"architecture": encoder.architecture, "encoder_kwargs": encoder.encoder_kwargs,
                  "encoder_state": {k: v.cpu() for k, v in model.encoder.state_dict().items()},
                  "head_state": {k: v.cpu() for k, v in model.head.state_dict().items()},
                  "task": task.task, "classes": classes, "fs": store.fs, "normalize": encoder.normalize,
                  "leads": list(encoder.leads), "scaler": None if scaler is None else scaler.to_dict(),
                  "best_epoch": outcome.best_epoch, "history": outcome.history, "source": encoder.label}
    return {"row": row, "per_class": per_class, "y_true": y_test, "y_score": scores, "classes": classes,
            "ecg_ids": test.ecg_ids, "model": model, "scaler": scaler, "outcome": outcome, "checkpoint": checkpoint}


# --- the protocol --------------------------------------------------------------------------------------------


def supervised_spec(architecture: str, fs: float = 100.0, seed: int = 0) -> EncoderSpec:
    """The spec of `architecture` trained from scratch by the benchmark recipe at `fs` Hz (single scaler,
    standard leads), its initial weights drawn with `seed`."""
    return EncoderSpec(kind="random", architecture=architecture, name=f"{architecture} (supervised)", fs=fs,
                       normalize="scaler", seed=seed)


def benchmark_results(encoders: Sequence[EncoderSpec | LoadedEncoder], workspace: Workspace,
                      tasks: Sequence[str] = TASKS, *, supervised: Sequence[str] = ("xresnet1d101",),
                      supervised_fs: float = 100.0, settings: BenchmarkSettings | None = None,
                      finetune_lr: float = 1e-3, min_samples: int = 0, random_baselines: bool = True,
                      save_models: bool = True) -> ProtocolResults:
    """Protocol A for the supervised architectures and every encoder to fine-tune, in a `workspace`.

    settings: the recipe of the supervised models (fine-tuning uses it with lr = finetune_lr). The other
    arguments are those of `run_ptbxl_benchmark`. Test-set scores go to <run_dir>/evaluate/predictions/<protocol>/<task>/, trained models (if `save_models`)
    to <run_dir>/evaluate/models/<protocol>/<task>/<encoder>.pt.
    """
    settings = settings or BenchmarkSettings()
    specs = [e for e in encoders if isinstance(e, EncoderSpec)]
    if random_baselines:
        specs = with_random_baselines(specs)
    plan = [(load_encoder(supervised_spec(a, supervised_fs, settings.seed), "cpu"), PROTOCOL_SUPERVISED, settings)
            for a in supervised]
    finetune = replace(settings, lr=finetune_lr)
    plan += [(e, PROTOCOL_FINETUNE, finetune) for e in encoders if isinstance(e, LoadedEncoder)]
    plan += [(load_encoder(s, "cpu"), PROTOCOL_FINETUNE, finetune) for s in specs]

    rows, per_class = [], []
    for encoder, protocol, recipe in plan:
        store = workspace.store(encoder.fs)
        for task_name in tasks:
            task = workspace.task(task_name, min_samples)
            out = benchmark_task(encoder, task, store, recipe, protocol=protocol, device=workspace.device,
                                 progress=workspace.progress, names=workspace.class_names(task.classes))
            rows.append(out["row"])
            per_class.extend(out["per_class"])
            name = slug(encoder.label)
            save_predictions(workspace.predictions_dir / protocol / task_name / f"{name}.npz", out["y_true"],
                             out["y_score"], out["classes"], out["ecg_ids"], encoder=encoder.label,
                             label_fraction=recipe.train_fraction, seed=recipe.seed, pretrained=encoder.pretrained)
            if save_models:
                path = workspace.models_dir / protocol / task_name / f"{name}.pt"
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(out["checkpoint"], path)
    return ProtocolResults.from_rows(rows, per_class)


def run_ptbxl_benchmark(encoders: Sequence[EncoderSpec | LoadedEncoder], ptbxl_root: str | os.PathLike,
                        tasks: Sequence[str] = TASKS, *, supervised: Sequence[str] = ("xresnet1d101",),
                        supervised_fs: float = 100.0, run_dir: str | os.PathLike | None = None,
                        store_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                        epochs: int = BENCHMARK_EPOCHS, batch_size: int = 128, lr: float = 1e-2,
                        finetune_lr: float = 1e-3, weight_decay: float = 1e-2, train_fraction: float = 1.0,
                        n_boot: int = 100, seed: int = 0, min_samples: int = 0, random_baselines: bool = True,
                        save_models: bool = True, device: str = "cpu", workers: int | None = None,
                        progress: bool = True):
    """Protocol A: the PTB-XL benchmark, as a tidy DataFrame (see RESULT_COLUMNS), metric "macro_auroc".

    Args:
        encoders: pretrained encoders to fine-tune (`EncoderSpec`s or `LoadedEncoder`s); may be empty.
        ptbxl_root: the PTB-XL folder.
        tasks: the benchmark tasks (default all six).
        supervised: architectures trained from scratch (default xresnet1d101, the benchmark's strongest).
        supervised_fs: their sampling rate (the benchmark: 100 Hz).
        run_dir: where stores, predictions and models go (default outputs/evaluate).
        store_dir: converted PTB-XL stores (default <run_dir>/evaluate/stores).
        cache_dir: cached features (default <run_dir>/evaluate/features).
        epochs: training epochs (the benchmark: 50); the epoch is chosen on fold 9.
        batch_size: crops per step (128).
        lr: peak one-cycle learning rate of the supervised models (1e-2).
        finetune_lr: peak learning rate when fine-tuning encoders (and their random twins).
        weight_decay: AdamW weight decay (1e-2).
        train_fraction: share of the training folds used (seeded, every class kept).
        n_boot: bootstrap resamples of the test records.
        seed: seed of initialisation, crops, batch order and bootstrap.
        min_samples: keep classes with more than this many records.
        random_baselines: fine-tune the random-init twin of every pretrained encoder too.
        save_models: keep each trained model (usable later as EncoderSpec(kind="supervised", path=...)).
        device: torch device.
        workers: processes for the one-off PTB-XL conversion (None: all cores).
        progress: show progress bars.
    """
    workspace = Workspace(run_dir, ptbxl_root, store_dir=store_dir, cache_dir=cache_dir, device=device,
                          workers=workers, progress=progress)
    settings = BenchmarkSettings(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                 train_fraction=train_fraction, seed=seed, n_boot=n_boot)
    return benchmark_results(encoders, workspace, tasks, supervised=supervised, supervised_fs=supervised_fs,
                             settings=settings, finetune_lr=finetune_lr, min_samples=min_samples,
                             random_baselines=random_baselines, save_models=save_models).table
