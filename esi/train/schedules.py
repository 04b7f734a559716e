"""Learning-rate schedules, as multiplicative factors of the base rate per optimizer step.

Both schedules count in optimizer steps (not epochs) so that gradient accumulation, resumption mid-epoch
and any world size behave the same way.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def paper_step_factor(step: int, steps_per_epoch: int, warmup_epochs: int = 5,
                      decay_every_epochs: int = 10, decay: float = 0.1) -> float:
    """The original ESI README's schedule: linear warm-up for 5 epochs, then x0.1 every 10 epochs.

    Decay epochs are counted from the end of the warm-up.
    """
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    epochs_after_warmup = (step - warmup_steps) // max(1, steps_per_epoch)
    return decay ** (epochs_after_warmup // decay_every_epochs)


def cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> float:
    """Linear warm-up to the base rate, then a half cosine down to `min_factor` of it at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, name: str, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                    min_lr_factor: float = 0.0, decay_every_epochs: int = 10, decay: float = 0.1) -> LambdaLR:
    """A LambdaLR for `name` in {"paper_step", "cosine", "constant"}; stepped once per optimizer step."""
    total = steps_per_epoch * epochs
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if name == "paper_step":
        fn = lambda s: paper_step_factor(s, steps_per_epoch, int(round(warmup_epochs)), decay_every_epochs, decay)
    elif name == "cosine":
        fn = lambda s: cosine_factor(s, total, warmup, min_lr_factor)
    elif name == "constant":
        fn = lambda s: min(1.0, (s + 1) / max(1, warmup)) if warmup else 1.0
    else:
        raise ValueError(f"unknown schedule {name!r}; choose paper_step, cosine or constant")
    return LambdaLR(optimizer, fn)
