"""Seeded weights in a reference repository's key layout, and the fixtures that pin external encoders.

`seeded_state_dict(layout, seed)` makes the same tensors wherever it runs (same torch version, CPU): the
scratch script that ran the reference repository's own model code (scripts/reference_features.py) filled the
reference model with them, and tests/test_models_external.py loads them through our adapter. The layout
(every key's shape and dtype, in the reference model's order) is recorded in the fixture's JSON, taken from the
reference model's state_dict, so the test checks our architecture against the reference's keys, not against
itself.

Fixture folder tests/data/encoders/<name>/: reference.json (seed, repository, commit, record ids, layout,
feature call) and features.npy (float32 (n_records, dim), the reference's output).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "data" / "encoders"


def seeded_state_dict(layout: list[list], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random weights for every key of `layout` ([[name, shape, dtype(, alias_of)], ...]).

    Matrices and kernels: normal / sqrt(fan-in), so activations stay of order one through deep stacks.
    1-D `weight` (norm scales): 1 + 0.1 normal; `bias`: 0.1 normal; BatchNorm `running_mean`: 0.1 normal,
    `running_var`: uniform in [0.5, 1.5] (randomised statistics, so eval-mode BatchNorm is exercised);
    `num_batches_tracked`: 0. Keys are drawn in sorted order from one generator. A key that the reference model
    holds twice (one module under two names) gets its first name's tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype, *_ in sorted((e for e in layout if len(e) == 3), key=lambda entry: entry[0]):
        shape = tuple(shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[name] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        if leaf == "running_var":
            tensor = 0.5 + torch.rand(shape, generator=generator)
        elif leaf == "running_mean":
            tensor = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:]) if shape[0] > 1 or len(shape) == 2 else math.prod(shape[2:])
            tensor = torch.randn(shape, generator=generator) / math.sqrt(max(fan_in, 1))
        elif leaf == "weight":
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            tensor = 0.1 * torch.randn(shape, generator=generator)
        state[name] = tensor.to(getattr(torch, dtype))
    return {entry[0]: state[entry[-1] if len(entry) == 4 else entry[0]] for entry in layout}


def layout_of(state: dict[str, torch.Tensor]) -> list[list]:
    """[[name, shape, dtype(, alias_of)], ...] of a state_dict, in its order (what reference.json records); a
    tensor already listed under another name (the same storage) records that name."""
    first: dict[tuple, str] = {}
    layout = []
    for name, t in state.items():
        entry = [name, list(t.shape), str(t.dtype).removeprefix("torch.")]
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else (name,)
        if key in first:
            entry.append(first[key])
        else:
            first[key] = name
        layout.append(entry)
    return layout


def read_fixture(name: str) -> tuple[dict, np.ndarray]:
    """(reference.json as a dict, expected features) of fixture `name`."""
    folder = FIXTURES / name
    return json.loads((folder / "reference.json").read_text()), np.load(folder / "features.npy")
