"""Reading a released checkpoint and loading it strictly: every tensor accounted for, by name.

A released encoder loaded with `strict=False` silently keeps random weights wherever a key was misspelled
(fairseq-signals #34); here a missing, unexpected or mis-shaped tensor is an error naming the file and the
tensor, and the only keys ever dropped are heads a family documents, listed by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

# How many tensor names an error lists before "... and N more".
NAMES_SHOWN = 5


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:NAMES_SHOWN])
    return shown + (f" ... and {len(keys) - NAMES_SHOWN} more" if len(keys) > NAMES_SHOWN else "")


def read_state_dict(source, containers: Iterable[str] = ()) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, label) from a path or an in-memory state_dict.

    Args:
        source: a checkpoint file (read with `weights_only=True`: tensors and plain data, no code runs) or a
            mapping name -> tensor.
        containers: keys under which a checkpoint may nest its state_dict (e.g. "state_dict", "model"); the
            first present is used.

    Returns:
        The name -> tensor mapping, and the label errors name (the file, or "state_dict").

    Raises:
        FileNotFoundError: no such file. ValueError: the file holds no state_dict.
    """
    if isinstance(source, Mapping):
        state, label = source, "state_dict"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        label = str(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle with code, a truncated file, not a torch file at all
            raise ValueError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from err
    for key in containers:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        where = f"at its top or under {', '.join(repr(c) for c in containers)}" if containers else "at its top"
        raise ValueError(f"{label}: no state_dict of tensors {where}")
    return dict(state), label


def drop_heads(state: dict[str, torch.Tensor], heads: Iterable[str]) -> dict[str, torch.Tensor]:
    """`state` without the tensors of the documented heads: each key equal to a name in `heads` or under it
    (`heads=("linear",)` drops "linear.weight" and "linear.bias")."""
    heads = tuple(heads)
    return {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}


def required(state: Mapping[str, torch.Tensor], key: str, family: str, label: str) -> torch.Tensor:
    """The tensor `key`, whose shape sets part of the architecture (read before the model can be built).

    Raises:
        ValueError: it is missing, naming `label`, the family and the tensor.
    """
    if key not in state:
        raise ValueError(f"{label}: weights do not fit {family}: missing 1 tensor(s): {key} (it sets the architecture)")
    return state[key]


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], label: str) -> nn.Module:
    """Load `state` into `module`, requiring exactly its keys and shapes.

    Raises:
        ValueError: one line naming `label` and the missing, unexpected or mis-shaped tensors.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensor(s): {_names(missing)}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} tensor(s): {_names(unexpected)}"] if unexpected else [])
        raise ValueError(f"{label}: weights do not fit {type(module).__name__}: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(t.shape)})" for k, t in expected.items()
             if tuple(state[k].shape) != tuple(t.shape)]
    if wrong:
        raise ValueError(f"{label}: weights do not fit {type(module).__name__}: wrong shape of {_names(wrong)}")
    module.load_state_dict(state, strict=True)
    return module
