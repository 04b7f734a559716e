"""Protocol B: linear probing of frozen features.

A linear head (multi-label logistic regression) is trained on a fraction of the training records; its epoch
and weight decay are chosen on the validation fold only; the test fold is scored once with the chosen head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from esi.evaluate.metrics import macro_auroc


def label_fraction_subset(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a random `fraction` of rows of multi-hot `y` in which every class has a positive.

    Draws the fraction at random (seeded), then, for any class left without a positive, adds one random
    positive record of that class, so that the head can learn every class it is scored on.
    """
    n = len(y)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    if fraction >= 1:
        return np.arange(n)
    k = max(1, int(round(fraction * n)))
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    for c in range(y.shape[1]):
        positives = np.flatnonzero(y[:, c])
        if len(positives) and not any(i in chosen for i in positives):
            chosen.add(int(rng.choice(positives)))
    return np.array(sorted(chosen))


@dataclass
class ProbeResult:
    """The chosen head and how it was chosen. `val_curve` maps weight decay -> val AUROC per epoch."""
    weight_decay: float
    epoch: int
    val_auroc: float
    test_scores: np.ndarray
    val_curve: dict = field(default_factory=dict)


def _standardise(train: np.ndarray, *others: np.ndarray):
    mean = train.mean(0, keepdims=True)
    std = train.std(0, keepdims=True) + 1e-6
    return [(x - mean) / std for x in (train, *others)]


def train_linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       x_test: np.ndarray, weight_decays=(0.0, 1e-4, 1e-3, 1e-2), epochs: int = 100,
                       lr: float = 1e-2, batch_size: int = 256, seed: int = 0) -> ProbeResult:
    """Fit a linear head for each weight decay; keep the (weight decay, epoch) with the best val macro AUROC.

    Features are standardised with statistics of the training rows. The test rows are only scored by the
    chosen head, never used to choose.
    """
    xt, xv, xs = (torch.as_tensor(a, dtype=torch.float32) for a in _standardise(x_train, x_val, x_test))
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
                val = macro_auroc(y_val, head(xv).numpy())
            curve.append(val)
            if best is None or val > best[0]:
                with torch.no_grad():
                    best = (val, wd, epoch, torch.sigmoid(head(xs)).numpy())
        curves[wd] = curve
    val, wd, epoch, test_scores = best
    return ProbeResult(weight_decay=wd, epoch=epoch, val_auroc=val, test_scores=test_scores, val_curve=curves)
