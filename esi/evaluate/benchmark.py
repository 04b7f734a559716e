"""Protocol A: the PTB-XL benchmark recipe (Strodthoff et al., IEEE JBHI 2021), trained end to end, on any dataset
(PTB-XL, CPSC2018, CSN, a Challenge source).

What every recipe shares, as the benchmark's code (helme/ecg_ptbxl_benchmarking, code/models/fastai_model.py):
  - folds 1-8 train, fold 9 validates, fold 10 is scored once;
  - input standardised with ONE mean/std fitted on the training records (the benchmark's StandardScaler), or the
    per-record normalisation a pretrained encoder was pretrained with;
  - training on random 2.5 s crops, the incomplete last batch dropped (fastai's DataBunch); validation and test on
    2.5 s windows every 1.25 s, each record's prediction the maximum over its windows;
  - BCE loss, batch 128, Adam with decoupled weight decay 1e-2 (fastai v1's true_wd: p *= 1 - lr * wd, then the
    Adam step; here torch's AdamW, which does the same), fastai v1's one-cycle schedule (cosine warm-up over 30 %
    of the steps from lr/25 to lr, cosine down to lr/25e4, beta1 0.95 -> 0.85 -> 0.95), 50 epochs at lr 1e-2;
  - head: concatenated adaptive max and average pooling -> BN/Dropout/Linear(128)/ReLU/BN/Dropout/Linear;
  - macro AUROC and AUPRC on fold 10 with a 100-resample bootstrap, 5th-95th percentiles (a 90 % interval).

Recipes (`RECIPES`, `recipe_settings`; the `recipe` column of the results names the one used, "custom" if knobs
were changed, and the `settings` column lists every setting that differs from that preset):
  - "benchmark" (the default), the benchmark exactly: the benchmark's weight_init over the whole model (every
    BatchNorm 1/0, Kaiming-normal conv and linear weights; this undoes the zero-initialised last BN of the xresnet
    residual branches), Adam betas (0.9, 0.99), no model selection (`early_stopping=None`: the model after the
    last epoch is scored); fine-tuning in two phases of 30 epochs (head and every encoder BatchNorm at lr 1e-2,
    then all layers with max learning rates lr/1000, lr/100, lr/10 over three layer groups).
  - "esi", our variant: the model's own initialisation (zero residual BN kept), betas (0.9, 0.999), the epoch
    with the best fold-9 macro AUROC kept, fine-tuning of all layers at once for `epochs` at 1e-3.

Two protocols: "benchmark_supervised" trains an architecture (default xresnet1d101 at 100 Hz) from scratch;
"benchmark_finetune" fine-tunes a pretrained encoder at the rate it was pretrained on (and, as the baseline, its
random-init twin with the same recipe, tested against it with a paired permutation test).

    workspace = Workspace("outputs/run", "data/ptbxl")
    results = run_benchmark([], workspace, recipe_settings("benchmark", tasks=["superdiagnostic"]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esi.config import with_changes
from esi.data.ptbxl import TASKS, FoldedTask
from esi.evaluate.encoders import EncoderSpec, LoadedEncoder, fresh_copy, load_encoder, load_encoders, slug, twin_labels
from esi.evaluate.features import fit_train_scaler, store_rows
from esi.evaluate.linear_probe import MERL_SEED, SUBSET_DRAWS, label_fraction_subset, subset_classes_without_positive
from esi.evaluate.metrics import macro_auroc
from esi.evaluate.results import (CommonSettings, ProtocolResults, Task, attach_p_values, changed_settings,
                                  classification_rows, join_notes, save_predictions)
from esi.evaluate.workspace import Workspace, official_splits

PROTOCOL_SUPERVISED = "benchmark_supervised"
PROTOCOL_FINETUNE = "benchmark_finetune"
BENCHMARK_EPOCHS = 50            # fastai_model's `epochs`
BENCHMARK_FINETUNE_EPOCHS = 30   # fastai_model's `epochs_finetuning`, each of the two phases
BENCHMARK_BATCH_SIZE = 128       # fastai_model's `bs`

INITS = ("benchmark", "model")
SELECTIONS = ("final_epoch", "fold9_best")
FINETUNE_SCHEDULES = ("gradual", "all_layers")

# The knobs each named recipe sets. The benchmark fine-tunes at fastai_model's default lr (1e-2): neither its
# configs (code/configs/fastai_configs.py) nor its Finetuning-Example notebook pass another.
RECIPES: dict[str, dict] = {
    "benchmark": {"init": "benchmark", "beta2": 0.99, "selection": "final_epoch", "finetune_schedule": "gradual",
                  "lr": 1e-2, "finetune_lr": 1e-2, "weight_decay": 1e-2},
    "esi": {"init": "model", "beta2": 0.999, "selection": "fold9_best", "finetune_schedule": "all_layers",
            "lr": 1e-2, "finetune_lr": 1e-3, "weight_decay": 1e-2},
}
# The recipe knobs that matter to each protocol (a fine-tuning knob does not change a model trained from scratch).
PROTOCOL_KNOBS = {
    PROTOCOL_SUPERVISED: ("init", "beta2", "selection", "lr", "weight_decay"),
    PROTOCOL_FINETUNE: ("init", "beta2", "selection", "finetune_schedule", "finetune_lr", "weight_decay"),
}
# Settings that are no part of how a row's model was trained (what runs, where it goes), or a column of their own.
NOT_IN_ROWS = ("tasks", "supervised", "supervised_fs", "finetune", "save_models", "loader_workers", "recipe",
               "train_fraction", "subset_draw")
# Settings that do not change a model of this protocol (the epochs of the other fine-tuning schedule: row_settings).
UNUSED_BY = {PROTOCOL_SUPERVISED: ("finetune_schedule", "finetune_lr", "finetune_epochs"),
             PROTOCOL_FINETUNE: ("lr",)}


@dataclass
class BenchmarkSettings:
    """Protocol A: what is trained and the training recipe (params keys `evaluate_benchmark_<field>`; defaults:
    the benchmark's, `recipe_settings("esi")` gives ours). A recipe knob left None takes its preset's value
    (`RECIPES[recipe]`); the results' `recipe` is `recipe_label(settings)`, "custom" when a knob differs from
    every preset, and their `settings` column lists what differs from the preset. Knobs are filled in when the
    settings are made: to switch presets, make new ones (`recipe_settings`), not `dataclasses.replace(recipe=...)`."""

    # -- what is trained
    tasks: list[Task] = field(default_factory=lambda: list(TASKS))   # PTB-XL tasks (all six)
    supervised: list[str] = field(default_factory=lambda: ["xresnet1d101"])   # trained from scratch
    supervised_fs: float = 100.0          # their sampling rate (the benchmark: 100 Hz)
    finetune: bool = True                 # also fine-tune each encoder evaluated (at its own rate)
    save_models: bool = True              # keep the trained models (usable as EncoderSpec kind "supervised")
    loader_workers: int = 0               # DataLoader worker processes for training

    # -- the recipe
    # "benchmark" (the published recipe: its weight_init, Adam betas (0.9, 0.99), final-epoch model, fine-tuning
    # head first then all layers with discriminative rates) or "esi" (ours: the model's own init with zero residual
    # BN, AdamW 0.999, the epoch best on fold 9, all layers at once)
    recipe: Literal["benchmark", "esi"] = "benchmark"
    # "benchmark": the benchmark's weight_init (every BatchNorm 1/0, Kaiming-normal Conv1d/Linear weights, zero
    # bias) over the whole model from scratch, over the new head when fine-tuning; "model": the modules' own
    # initialisation (xresnet's zero residual BN, torch's Linear init); None: the recipe's
    init: Literal["benchmark", "model"] | None = None
    # Adam's second-moment decay (fastai v1's AdamW: 0.99; torch's default: 0.999; beta1 follows the one-cycle
    # schedule 0.95 -> 0.85 -> 0.95); None: the recipe's
    beta2: float | None = None
    # "final_epoch": the model after the last epoch is scored (the benchmark's early_stopping=None; fold 9 is
    # scored once, for the notes); "fold9_best": the epoch with the best fold-9 macro AUROC (per phase when
    # fine-tuning gradually, as fastai's SaveModelCallback); None: the recipe's
    selection: Literal["final_epoch", "fold9_best"] | None = None
    # "gradual": the benchmark's two phases (head + encoder BatchNorm for `finetune_epochs` at `finetune_lr`,
    # then all layers for `finetune_epochs` at max lrs finetune_lr/1000, /100, /10 over stem, encoder, head);
    # "all_layers": all layers at once for `epochs` at `finetune_lr`; None: the recipe's
    finetune_schedule: Literal["gradual", "all_layers"] | None = None
    epochs: int = BENCHMARK_EPOCHS        # epochs from scratch and of "all_layers" fine-tuning (the benchmark: 50)
    # epochs of each "gradual" fine-tuning phase (the benchmark: 30 head + 30 all layers)
    finetune_epochs: int = BENCHMARK_FINETUNE_EPOCHS
    batch_size: int = BENCHMARK_BATCH_SIZE   # crops per step (the benchmark: 128); at least 2 (BatchNorm)
    lr: float | None = None               # peak one-cycle lr from scratch; None: the recipe's (1e-2)
    finetune_lr: float | None = None      # peak one-cycle lr fine-tuning; None: the recipe's (benchmark 1e-2, esi 1e-3)
    # decoupled weight decay (AdamW) on every trainable parameter, as fastai's bn_wd=True; None: the recipe's (1e-2)
    weight_decay: float | None = None
    window_s: float = 2.5                 # training crop and evaluation window (seconds)
    stride_s: float = 1.25                # evaluation window stride (seconds); windows are max-aggregated
    dropout: float = 0.5                  # head dropout before its last layer (half of it before the first)
    hidden: int = 128                     # width of the head's hidden layer
    train_fraction: float = 1.0           # share of the training split used (1.0: the benchmark)
    # how that share is drawn ("merl" or "every_class", see esi.evaluate.linear_probe.label_fraction_subset)
    subset_draw: Literal["merl", "every_class"] = "merl"
    subset_seed: int = MERL_SEED          # seed of the draw for seed 0 (42: MERL's random_state); the draw uses + seed

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        for knob, preset in RECIPES[self.recipe].items():      # None: the recipe's
            if getattr(self, knob) is None:
                setattr(self, knob, preset)
        for name, allowed in (("init", INITS), ("selection", SELECTIONS),
                              ("finetune_schedule", FINETUNE_SCHEDULES), ("subset_draw", SUBSET_DRAWS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 < self.beta2 < 1.0:
            raise ValueError(f"beta2 must be in (0, 1), got {self.beta2}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (BatchNorm cannot train on one record), got "
                             f"{self.batch_size}")
        if self.epochs < 1 or self.finetune_epochs < 1:
            raise ValueError(f"epochs and finetune_epochs must be >= 1, got {self.epochs}, {self.finetune_epochs}")


def recipe_settings(name: str = "benchmark", **overrides) -> BenchmarkSettings:
    """The settings of the preset `name` (a key of RECIPES), with any field replaced by `overrides`.

    name: "benchmark" or "esi".
    overrides: BenchmarkSettings fields to change (epochs=1, selection="fold9_best", ...).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    if "recipe" in overrides:
        raise TypeError("name the recipe with `name`, not in overrides")
    return BenchmarkSettings(recipe=name, **{**RECIPES[name], **overrides})


def _knobs(protocol: str | None) -> tuple[str, ...]:
    if protocol is None:
        return tuple(dict.fromkeys(k for knobs in PROTOCOL_KNOBS.values() for k in knobs))
    if protocol not in PROTOCOL_KNOBS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOL_KNOBS)}")
    return PROTOCOL_KNOBS[protocol]


def recipe_label(settings: BenchmarkSettings, protocol: str | None = None) -> str:
    """The preset whose knobs `settings` has (its own `recipe` first), else "custom".

    settings: the recipe.
    protocol: compare only the knobs that matter to this protocol (PROTOCOL_KNOBS); None: all of them.
    """
    knobs = _knobs(protocol)
    for name in (settings.recipe, *RECIPES):
        if all(getattr(settings, k) == RECIPES[name][k] for k in knobs):
            return name
    return "custom"


def row_settings(settings: BenchmarkSettings, protocol: str) -> dict:
    """The settings that made a `protocol` row and differ from its recipe's preset (the results' `settings`).

    settings: the recipe. protocol: PROTOCOL_SUPERVISED or PROTOCOL_FINETUNE (only the knobs that matter to it).
    """
    unused = UNUSED_BY[protocol]
    if protocol == PROTOCOL_FINETUNE:
        unused += ("epochs",) if settings.finetune_schedule == "gradual" else ("finetune_epochs",)
    names = [f.name for f in fields(settings) if f.name not in NOT_IN_ROWS + unused]
    return changed_settings(settings, recipe_settings(settings.recipe), names)


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


def benchmark_weight_init(module: nn.Module) -> None:
    """The benchmark's `weight_init` (code/models/basic_conv1d.py), for `model.apply(benchmark_weight_init)`.

    module: one module; Conv1d and Linear get torch's kaiming_normal_ with its default arguments (fan_in, gain
    sqrt(2): std sqrt(2 / fan_in)) and a zero bias; BatchNorm1d gets weight 1 and bias 0. Others are left as
    they are (the benchmark's models hold no other parametrised layer but its unused SqueezeExcite).
    """
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    if isinstance(module, nn.BatchNorm1d) and module.affine:
        nn.init.constant_(module.weight, 1.0)
        nn.init.constant_(module.bias, 0.0)


# --- layer groups (fastai's learn.split) ---------------------------------------------------------------------

# fastai v1's bn_types: the layers `learn.freeze()` leaves trainable when train_bn=True (not LayerNorm).
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _holds_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def stem_module(encoder: nn.Module) -> nn.Module | None:
    """The encoder's first layer group for discriminative learning rates.

    xresnet1d (`esi.models.xresnet1d`): its stem (the three stem convs; its max-pool has no parameters), as the
    benchmark's get_layer_groups splits at self[3]. ConvNeXt V2: downsample_layers[0] (the patchifying conv and
    its norm). Any other encoder: its first child holding parameters, looking inside a ModuleList/ModuleDict
    (a list of layers, not a layer); None if no child holds any (the encoder's parameters are its own).

    encoder: the encoder module.
    """
    from esi.models.convnextv2 import ConvNeXtV2Encoder
    from esi.models.xresnet1d import XResNet1d

    from esi.models.external.prepared import PreparedEncoder

    if isinstance(encoder, PreparedEncoder):    # a released encoder: the stem of the network inside
        return stem_module(encoder.net)
    if isinstance(encoder, XResNet1d):
        return encoder.stem
    if isinstance(encoder, ConvNeXtV2Encoder):
        return encoder.downsample_layers[0]
    module = encoder
    while True:
        child = next((c for c in module.children() if _holds_parameters(c)), None)
        if child is None:
            return None
        if not isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            return child
        module = child


def layer_groups(model: BenchmarkClassifier) -> list[list[nn.Parameter]]:
    """The three layer groups of `model` (the benchmark's learn.split on xresnet1d's get_layer_groups): the
    encoder's stem (`stem_module`; empty if it has none), the rest of the encoder, the head.

    model: the classifier.
    """
    stem_part = stem_module(model.encoder)
    stem = [] if stem_part is None else list(stem_part.parameters())
    in_stem = {id(p) for p in stem}
    rest = [p for p in model.encoder.parameters() if id(p) not in in_stem]
    return [stem, rest, list(model.head.parameters())]


@dataclass
class Phase:
    """One fit_one_cycle call: which parameters train, at which max learning rates, for how many epochs.

    name: what trains, for the notes and history.
    groups: (parameters, max learning rate) per optimiser parameter group; every other parameter is frozen.
    epochs: epochs of the phase.
    """

    name: str
    groups: list[tuple[list[nn.Parameter], float]]
    epochs: int


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """`n` learning rates from `start` to `stop` spaced geometrically (fastai's even_mults, used for slice(a, b)).

    start, stop: the first and last value. n: how many.
    """
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step ** i for i in range(n)]


def training_phases(model: BenchmarkClassifier, settings: BenchmarkSettings, protocol: str) -> list[Phase]:
    """The phases `train_benchmark_model` runs for `protocol` under `settings`.

    From scratch: all parameters for `epochs` at `lr`. Fine-tuning, "all_layers": all parameters for `epochs` at
    `finetune_lr`. Fine-tuning, "gradual" (the benchmark: learn.freeze(); fit_one_cycle(30, lr); learn.unfreeze();
    fit_one_cycle(30, slice(lr/1000, lr/10))): first the head and every BatchNorm of the encoder (fastai's
    train_bn), then all layers with max learning rates lr/1000, lr/100, lr/10 over `layer_groups`.

    model: the classifier. settings: the recipe. protocol: PROTOCOL_SUPERVISED or PROTOCOL_FINETUNE.
    """
    everything = list(model.parameters())
    if protocol == PROTOCOL_SUPERVISED:
        return [Phase("all layers", [(everything, settings.lr)], settings.epochs)]
    if protocol != PROTOCOL_FINETUNE:
        raise ValueError(f"unknown protocol {protocol!r}")
    lr = settings.finetune_lr
    if settings.finetune_schedule == "all_layers":
        return [Phase("all layers", [(everything, lr)], settings.epochs)]
    bn = [p for m in model.encoder.modules() if isinstance(m, BN_TYPES) for p in m.parameters(recurse=False)]
    frozen_encoder = Phase("head and encoder BatchNorm", [(list(model.head.parameters()) + bn, lr)],
                           settings.finetune_epochs)
    groups = layer_groups(model)
    unfrozen = Phase("all layers, discriminative lr",
                     list(zip(groups, even_mults(lr / 1000, lr / 10, len(groups)))), settings.finetune_epochs)
    return [frozen_encoder, unfrozen]


# --- optimiser and schedule (fastai v1) ----------------------------------------------------------------------


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def one_cycle_at(step: int, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div: float | None = None, moms: tuple[float, float] = (0.95, 0.85)) -> tuple[float, float]:
    """(learning rate / max lr, beta1) that fastai v1's fit_one_cycle uses for optimiser step `step` (0-based).

    fastai 1.0.61 (the benchmark's): warm-up over a1 = int(pct_start * total) steps, at least one (its Scheduler
    takes max(1, n_iter)); step i <= a1 uses the cosine from 1/div_factor to 1 at i / a1, later steps the cosine
    from 1 to 1/final_div at (i - a1) / (total - a1); beta1 runs 0.95 -> 0.85 -> 0.95 alongside. So the peak is at
    step a1 and the last step stays one step short of the final value. torch's OneCycleLR differs by a step
    (peak at step 0.3 * total - 1, final value reached on the last step); this follows fastai.

    step: the optimiser step. total_steps: steps of the whole cycle (batches per epoch x epochs).
    pct_start, div_factor, final_div, moms: fit_one_cycle's arguments (final_div None: div_factor * 1e4).
    """
    final_div = div_factor * 1e4 if final_div is None else final_div
    a1 = int(total_steps * pct_start)
    warm, rest = max(1, a1), max(1, total_steps - a1)
    if step <= warm:
        pct = step / warm
        return _anneal_cos(1 / div_factor, 1.0, pct), _anneal_cos(moms[0], moms[1], pct)
    pct = min((step - warm) / rest, 1.0)
    return _anneal_cos(1.0, 1 / final_div, pct), _anneal_cos(moms[1], moms[0], pct)


class OneCycle:
    """fastai v1's one-cycle schedule on a torch optimiser: `at(step)` before each optimiser step sets every
    group's lr (its "max_lr" x the cycle's factor) and Adam's beta1 (beta2 kept).

    optimizer: an Adam/AdamW whose param groups carry "max_lr". total_steps: steps of the cycle.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int):
        self.optimizer, self.total_steps = optimizer, max(int(total_steps), 1)

    def at(self, step: int) -> None:
        """Set the hyperparameters of optimiser step `step` (0-based)."""
        factor, beta1 = one_cycle_at(step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["max_lr"] * factor
            group["betas"] = (beta1, group["betas"][1])


def benchmark_optimizer(groups: list[tuple[list[nn.Parameter], float]],
                        settings: BenchmarkSettings) -> torch.optim.AdamW:
    """AdamW over `groups` ((parameters, max lr) each), betas (0.95 -> scheduled, beta2), eps 1e-8, decoupled weight
    decay `settings.weight_decay`.

    torch's AdamW multiplies each parameter by 1 - lr * weight_decay and then takes the Adam step with the
    same lr, which is fastai v1's true_wd step (OptimWrapper.step: p.data.mul_(1 - wd * lr), then
    optim.Adam.step with weight_decay 0) on the same parameter groups.

    groups: parameter groups and their max learning rates. settings: the recipe (beta2, weight_decay).
    """
    param_groups = [{"params": params, "lr": max_lr / 25, "max_lr": max_lr} for params, max_lr in groups if params]
    return torch.optim.AdamW(param_groups, betas=(0.95, settings.beta2), eps=1e-8,
                             weight_decay=settings.weight_decay)


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
    """What training chose and saw.

    selection: the rule applied ("final_epoch" or "fold9_best").
    selected_epoch: epoch (1-based, within the last phase) whose weights the model holds.
    last_epoch: epochs of the last phase.
    val_auroc: fold-9 macro AUROC of those weights (NaN when fold 9 has no class with both labels).
    history: one dict per epoch: phase, epoch, train_loss, and val_macro_auroc where it was computed.
    phases: per phase: name, epochs, steps_per_epoch, max_lrs (one per optimiser group), n_params (trainable
        elements per group).
    notes: facts for the results' notes (the loader's batch policy, a selection that could not be made, ...).
    """

    selection: str
    selected_epoch: int
    last_epoch: int
    val_auroc: float
    history: list[dict] = field(default_factory=list)
    phases: list[dict] = field(default_factory=list)
    notes: str = ""


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_benchmark_model(model: nn.Module, train_set, settings: BenchmarkSettings, *,
                          validate: Callable[[nn.Module], float], phases: Sequence[Phase] | None = None,
                          device: str | torch.device = "cpu", progress: bool = True,
                          where: str = "", validation_name: str = FoldedTask.validation_name,
                          seed: int = 0) -> TrainOutcome:
    """Train with BCE, AdamW (fastai v1's) and fastai v1's one-cycle schedule, one cycle per phase; the model
    holds the scored weights on return (`settings.selection`).

    Args:
        model: the classifier (moved to `device`); every parameter is trainable again on return.
        train_set: `ECGDataset` of random crops with targets ("ecg", "y").
        settings: the recipe.
        validate: model -> macro AUROC on the validation split (NaN if no class has both labels). "fold9_best"
            calls it after every epoch; "final_epoch" once, after training, for the notes.
        phases: what trains when (`training_phases`); None: all parameters for `settings.epochs` at `settings.lr`.
        device: torch device.
        progress: show a progress bar over epochs.
        where: "encoder / task" for the progress bar and error messages.
        validation_name: how the notes name the validation split ("fold 9" on PTB-XL).
        seed: seed of the batch order.

    Raises:
        FloatingPointError: a non-finite training loss, naming `where`, the phase, epoch and step.
        ValueError: a training set of fewer than 2 records (BatchNorm cannot train on one).
    """
    from tqdm.auto import tqdm

    model.to(device)
    if phases is None:
        phases = [Phase("all layers", [(list(model.parameters()), settings.lr)], settings.epochs)]
    n = len(train_set)
    if n < 2:
        raise ValueError(f"{where}: {n} training record(s); BatchNorm needs batches of at least 2")
    # fastai's DataBunch drops the incomplete last batch; a set smaller than one batch would then never train, so
    # its one partial batch is kept (and said).
    drop_last = n >= settings.batch_size
    notes = "" if drop_last else (f"{n} training records < batch {settings.batch_size}: one partial batch per "
                                  f"epoch (fastai would drop it and not train)")
    # One loader for all phases: its generator goes on drawing new batch orders.
    loader = train_set.loader(batch_size=settings.batch_size, shuffle=True, drop_last=drop_last,
                              num_workers=settings.loader_workers, seed=seed)
    history, phase_info = [], []
    total_epochs = sum(p.epochs for p in phases)
    bar = tqdm(total=total_epochs, desc=where or "training", unit="epoch", disable=not progress)
    done = 0
    for phase_no, phase in enumerate(phases, start=1):
        trainable = {id(p) for params, _ in phase.groups for p in params}
        for p in model.parameters():  # fastai's freeze/unfreeze: only this phase's groups get gradients
            p.requires_grad_(id(p) in trainable)
        optimizer = benchmark_optimizer(phase.groups, settings)  # fresh Adam state, as fastai's create_opt
        schedule = OneCycle(optimizer, len(loader) * phase.epochs)
        phase_info.append({"name": phase.name, "epochs": phase.epochs, "steps_per_epoch": len(loader),
                           "max_lrs": [g["max_lr"] for g in optimizer.param_groups],
                           "n_params": [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups]})
        best_state, best = None, (-math.inf, 0)
        step = 0
        for epoch in range(1, phase.epochs + 1):
            done += 1
            train_set.set_epoch(done)  # new crops every epoch, across phases too
            model.train()
            losses = []
            for i, batch in enumerate(loader, start=1):
                schedule.at(step)
                logits = model(batch["ecg"].to(device))
                loss = F.binary_cross_entropy_with_logits(logits.float(), batch["y"].to(device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{where}: training loss is {loss.item()} in phase {phase_no} "
                                             f"({phase.name}), epoch {epoch}, step {i} of {len(loader)}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                losses.append(loss.item())
            entry = {"phase": phase_no, "epoch": epoch, "train_loss": float(np.mean(losses))}
            if settings.selection == "fold9_best":
                score = float(validate(model))
                entry["val_macro_auroc"] = score
                if np.isfinite(score) and score > best[0]:
                    best, best_state = (score, epoch), _snapshot(model)
            history.append(entry)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if k in ("train_loss", "val_macro_auroc")})
        # The scored weights of this phase (and the next phase's start): fastai's SaveModelCallback reloads the
        # phase's best at the end of its fit; without selection, the last epoch's.
        selected, val_auroc = phase.epochs, float("nan")
        if best_state is not None:
            model.load_state_dict(best_state)
            selected, val_auroc = best[1], best[0]
        elif settings.selection == "fold9_best":
            notes = join_notes(notes, f"phase {phase_no}: {validation_name} has no class with both labels, "
                                      "nothing selected; the last epoch is kept")
    bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    if settings.selection == "final_epoch":
        val_auroc = float(validate(model))
        history[-1]["val_macro_auroc"] = val_auroc
    return TrainOutcome(selection=settings.selection, selected_epoch=selected, last_epoch=phases[-1].epochs,
                        val_auroc=val_auroc, history=history, phases=phase_info, notes=notes)


def _training_notes(outcome: TrainOutcome, validation_name: str) -> str:
    """How the scored model was chosen (on `validation_name`) and what training met; the settings that made it
    are in the row's columns (`recipe`, `selection`, `settings`)."""
    if outcome.selection == "final_epoch":
        notes = (f"scored after the last epoch, nothing selected on {validation_name} (as the benchmark); its macro "
                 f"AUROC {outcome.val_auroc:.3f}")
    else:
        phase = " of the last phase" if len(outcome.phases) > 1 else ""
        notes = (f"selected on {validation_name}: epoch {outcome.selected_epoch}/{outcome.last_epoch}{phase} "
                 f"(val AUROC {outcome.val_auroc:.3f})")
    return join_notes(outcome.notes, notes)


def build_classifier(encoder: LoadedEncoder, n_classes: int, settings: BenchmarkSettings,
                     protocol: str, seed: int = 0) -> BenchmarkClassifier:
    """A fresh copy of `encoder` with a new head, initialised per `settings.init` (the head drawn with `seed`).

    encoder: the encoder (copied). n_classes: outputs. settings: the recipe (init, hidden, dropout).
    protocol: PROTOCOL_SUPERVISED re-initialises the whole model under init="benchmark", PROTOCOL_FINETUNE the head.
    seed: seed of the new weights.
    """
    torch.manual_seed(seed)
    model = BenchmarkClassifier(fresh_copy(encoder), n_classes, settings.hidden, settings.dropout)
    if settings.init == "benchmark":
        # From scratch the benchmark re-initialises the whole model (learn.model.apply(weight_init)); when
        # fine-tuning only the new layers are new (it Kaiming-initialises its new output layer; our whole head is new).
        (model if protocol == PROTOCOL_SUPERVISED else model.head).apply(benchmark_weight_init)
    return model


def benchmark_task(encoder: LoadedEncoder, task, store, settings: BenchmarkSettings, *, protocol: str,
                   common: CommonSettings | None = None, device: str | torch.device = "cpu", progress: bool = True,
                   names: dict | None = None, valid_samples: int | None = None) -> dict:
    """Train and score one model (a fresh copy of `encoder` plus a new head) on one task.

    Args:
        encoder: the encoder to train from (copied; the loaded one is left untouched).
        task: a `PTBXLTask` or `ChallengeTask` (all folds).
        store: the dataset's store at the encoder's rate.
        settings: the recipe.
        protocol: PROTOCOL_SUPERVISED (whole model initialised per `settings.init`, trained from scratch) or
            PROTOCOL_FINETUNE (the encoder's weights kept, a new head, `settings.finetune_schedule`).
        common: the seed (initialisation, crops, batch order, subset draw, bootstrap) and the intervals (default
            `CommonSettings()`).
        device: torch device.
        progress: show progress bars.
        names: class label -> English name for the per-class rows.
        valid_samples: only each record's first this many samples are signal (MERL's CPSC2018 input); None: all.

    Returns:
        {"rows" (macro AUROC and AUPRC), "per_class", "y_true", "y_score", "classes", "ecg_ids", "model", "scaler",
         "outcome", "checkpoint", "recipe"} where checkpoint is a dict ready for torch.save (loadable as an
        EncoderSpec(kind="supervised")) and recipe is `recipe_label(settings, protocol)`.
    """
    from esi.data.datasets import ECGDataset

    common = common or CommonSettings()
    if protocol not in PROTOCOL_KNOBS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOL_KNOBS)}")
    if abs(store.fs - encoder.fs) > 1e-6:
        raise ValueError(f"{encoder.label} is fed at {encoder.fs:g} Hz but the store is at {store.fs:g} Hz")
    where = f"{encoder.label} / {task.task} / {protocol}"
    train, val, test, scored, classes, notes = official_splits(task)
    y_train = train.y[:, scored]
    subset = label_fraction_subset(y_train, settings.train_fraction, seed=settings.subset_seed + common.seed,
                                   draw=settings.subset_draw)
    unlearnable = subset_classes_without_positive(y_train[subset], classes)
    if unlearnable and settings.train_fraction < 1:
        notes = join_notes(notes, f"{len(unlearnable)} class(es) without a positive in the {settings.train_fraction:g} "
                                  f"subset ({', '.join(unlearnable[:5])}{', ...' if len(unlearnable) > 5 else ''})")

    rows_train = store_rows(store, train.ecg_ids[subset])
    rows_val, rows_test = store_rows(store, val.ecg_ids), store_rows(store, test.ecg_ids)
    targets = np.zeros((len(store), len(classes)), dtype=np.float32)  # ECGDataset wants targets per store row
    targets[rows_train] = y_train[subset]

    # The benchmark's single StandardScaler, fitted on the training records only; a pretrained encoder keeps the
    # per-record normalisation it was pretrained with.
    scaler = fit_train_scaler(store, rows_train, per_lead=False) if encoder.normalize == "scaler" else None
    # An external encoder takes the window it was trained on (its PreparedEncoder pads or crops to it).
    window = int(round((encoder.window_s or settings.window_s) * store.fs))
    stride = int(round(settings.stride_s * store.fs))
    inputs = dict(leads=encoder.leads, normalize=encoder.normalize, scaler=scaler, valid_samples=valid_samples)
    train_set = ECGDataset(store, rows_train, targets=targets, crop=window, crop_mode="random", seed=common.seed,
                           **inputs)
    val_set = ECGDataset(store, rows_val, windows=(window, stride), **inputs)
    test_set = ECGDataset(store, rows_test, windows=(window, stride), **inputs)
    y_val = val.y[:, scored]

    def validate(model: nn.Module) -> float:
        return macro_auroc(y_val, predict_records(model, val_set, settings.batch_size, device), classes=classes,
                           where=f"{where} / {task.validation_name}")

    model = build_classifier(encoder, len(classes), settings, protocol, seed=common.seed)
    outcome = train_benchmark_model(model, train_set, settings, validate=validate,
                                    phases=training_phases(model, settings, protocol), device=device,
                                    progress=progress, where=where, validation_name=task.validation_name,
                                    seed=common.seed)
    y_test = test.y[:, scored]
    scores = predict_records(model, test_set, settings.batch_size, device)
    recipe = recipe_label(settings, protocol)
    scored_rows = classification_rows(
        task.task, protocol, encoder.label, classes, y_test, scores, split=task.split_label, recipe=recipe,
        selection=settings.selection,
        subset_draw=settings.subset_draw if settings.train_fraction < 1 else "all",
        label_fraction=settings.train_fraction, n_train=len(subset), seed=common.seed, n_boot=common.n_boot,
        ci_level=common.ci_level, notes=join_notes(notes, _training_notes(outcome, task.validation_name)),
        names=names, settings=row_settings(settings, protocol))
    for row in scored_rows["rows"]:     # what the model saw: the recipe's window (an external encoder: its own)
        row["encoder_window_s"] = window / store.fs
    checkpoint = {"architecture": encoder.architecture, "encoder_kwargs": encoder.encoder_kwargs,
                  "encoder_state": {k: v.cpu() for k, v in model.encoder.state_dict().items()},
                  "head_state": {k: v.cpu() for k, v in model.head.state_dict().items()},
                  "task": task.task, "classes": classes, "fs": store.fs, "normalize": encoder.normalize,
                  "leads": list(encoder.leads), "scaler": None if scaler is None else scaler.to_dict(),
                  "protocol": protocol, "recipe": recipe, "selection": settings.selection,
                  "selected_epoch": outcome.selected_epoch, "history": outcome.history, "source": encoder.label}
    return {**scored_rows, "y_true": y_test, "y_score": scores, "classes": classes, "ecg_ids": test.ecg_ids,
            "model": model, "scaler": scaler, "outcome": outcome, "checkpoint": checkpoint, "recipe": recipe}


# --- the protocol --------------------------------------------------------------------------------------------


def supervised_spec(architecture: str, fs: float = 100.0, seed: int = 0) -> EncoderSpec:
    """The spec of `architecture` trained from scratch by the benchmark recipe at `fs` Hz (single scaler,
    standard leads), its initial weights drawn with `seed`."""
    return EncoderSpec(kind="random", architecture=architecture, name=f"{architecture} (supervised)", fs=fs,
                       normalize="scaler", seed=seed)


def run_benchmark(encoders: Sequence[EncoderSpec | LoadedEncoder], workspace: Workspace,
                  settings: BenchmarkSettings | None = None, common: CommonSettings | None = None, *,
                  random_baselines: bool = True, **changes) -> ProtocolResults:
    """Protocol A: the PTB-XL benchmark recipe, macro AUROC and AUPRC on the test split, for the supervised
    architectures and (`settings.finetune`) every encoder to fine-tune.

    Args:
        encoders: pretrained encoders to fine-tune (`EncoderSpec`s or `LoadedEncoder`s); may be empty.
        workspace: the dataset's `Workspace` (stores, device, progress bars).
        settings: what is trained and the recipe (params keys `evaluate_benchmark_*`; default: the benchmark's
            six tasks, xresnet1d101 from scratch at 100 Hz, its recipe); `recipe_settings("esi", epochs=...)` gives
            another preset (a changed knob makes the rows' recipe "custom").
        common: seed, intervals, paired tests and classes kept (`evaluate_n_boot`, ...; default `CommonSettings()`).
        random_baselines: fine-tune the random-init twin of every pretrained encoder too.
        changes: fields of `settings` or `common` to change (`epochs=1, n_boot=20`).

    Returns:
        `ProtocolResults`. Every pretrained encoder's rows get the p-value of a paired permutation test against its
        random-init twin fine-tuned the same way. Test-set scores go to
        <run_dir>/evaluate/predictions/<protocol>/<task>/, trained models (if `settings.save_models`) to
        <run_dir>/evaluate/models/<protocol>/<task>/<encoder>.pt.
    """
    settings, common = with_changes(changes, settings or BenchmarkSettings(), common or CommonSettings())
    to_finetune = load_encoders(encoders, "cpu", random_baselines) if settings.finetune else []
    plan = [(load_encoder(supervised_spec(a, settings.supervised_fs, common.seed), "cpu"), PROTOCOL_SUPERVISED)
            for a in settings.supervised]
    plan += [(e, PROTOCOL_FINETUNE) for e in to_finetune]

    outputs, per_class = [], []
    for encoder, protocol in plan:
        store = workspace.dataset.store(encoder.fs)
        for task_name in workspace.dataset.task_names(settings.tasks):
            task = workspace.dataset.task(task_name, common.min_samples)
            out = benchmark_task(encoder, task, store, settings, protocol=protocol, common=common,
                                 device=workspace.device, progress=workspace.progress,
                                 names=workspace.dataset.class_names(task.classes),
                                 valid_samples=workspace.dataset.valid_samples(encoder.fs))
            outputs.append({"encoder": encoder.label, "rows": out["rows"], "y_true": out["y_true"],
                            "y_score": out["y_score"],
                            "key": (task_name, protocol, out["recipe"], settings.train_fraction, common.seed)})
            per_class.extend(out["per_class"])
            name = slug(encoder.label)
            save_predictions(workspace.predictions_dir / protocol / task_name / f"{name}.npz", out["y_true"],
                             out["y_score"], out["classes"], out["ecg_ids"], encoder=encoder.label,
                             label_fraction=settings.train_fraction, seed=common.seed,
                             pretrained=encoder.pretrained, recipe=out["recipe"], selection=settings.selection)
            if settings.save_models:
                path = workspace.models_dir / protocol / task_name / f"{name}.pt"
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(out["checkpoint"], path)
    # Twins only among the fine-tuned encoders: a supervised architecture is not the baseline of a pretrained one.
    attach_p_values(outputs, twin_labels(to_finetune), n_resamples=common.significance_resamples, seed=common.seed)
    rows = [row for out in outputs for row in out["rows"]]
    return ProtocolResults.from_rows(rows, per_class, **workspace.dataset.context,
                                     encoders=[encoder for encoder, _ in plan])
