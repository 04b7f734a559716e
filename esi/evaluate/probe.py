"""Protocol B: linear probing of frozen features.

A linear head (multi-label logistic regression) is trained on a fraction of the training records; its epoch
and weight decay are chosen on the validation fold only; the test fold is scored once with the chosen head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from esi.evaluate.metrics import macro_auroc


# How a label fraction of the training records is drawn. "merl": exactly MERL's (ICML 2024) draw, scikit-learn's
# train_test_split(train_size=fraction, random_state=seed) of the training records in ecg_id order, so at 1 % some
# classes may have no positive (they then score near 0.5, as in MERL's tables); "every_class": a seeded random
# fraction plus one positive of any class left without one, so the head can learn every class it is scored on.
SUBSET_DRAWS = ("merl", "every_class")
MERL_SEED = 42  # MERL's random_state


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
                       where: str = "") -> ProbeResult:
    """Fit a linear head for each weight decay; keep the (weight decay, epoch) with the best val macro AUROC.

    Features are standardised with statistics of the training rows (`standardise`). The test rows are only
    scored by the chosen head, never used to choose. `classes` and `where` (e.g. "ESI / rhythm / linear_probe")
    name the class and the run in the error a non-finite score raises.
    """
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
                val = macro_auroc(y_val, head(xv).numpy(), classes=classes, where=where)
            curve.append(val)
            if best is None or val > best[0]:
                with torch.no_grad():
                    best = (val, wd, epoch, torch.sigmoid(head(xs)).numpy())
        curves[wd] = curve
    val, wd, epoch, test_scores = best
    return ProbeResult(weight_decay=wd, epoch=epoch, val_auroc=val, test_scores=test_scores, val_curve=curves)
