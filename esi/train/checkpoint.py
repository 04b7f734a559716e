"""Resumable training checkpoints, written atomically.

A checkpoint holds everything needed to continue as if never stopped: model, optimizer, scheduler, grad scaler,
the RNG states of python/numpy/torch (and CUDA), and the data position (epoch, batches done in it).
Files are written to a temporary name and renamed, so a kill during a save never leaves a broken newest file.
They hold only tensors and plain Python values (the RNG states too), so they load with `weights_only=True`:
resuming never unpickles code, and a file that would need it is refused.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esi.paths import resolve

_NAME = re.compile(r"^step_(\d{9})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed from; the message says which file and why."""


def rng_state() -> dict:
    """The RNG states of python, numpy, torch (and CUDA), as tensors and plain values (weights_only-loadable)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        # numpy's legacy state is a tuple holding a uint32 array; its parts are stored as a tensor and numbers
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states `rng_state` returned."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first (by optimizer step)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(directory: Path) -> Path | None:
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None


def save_checkpoint(directory: Path, step: int, state: dict, keep_last: int = 3) -> Path:
    """Write `state` (+ RNG states) as step_<step>.pt and prune all but the newest `keep_last`."""
    state = dict(state)
    state["rng"] = rng_state()
    state["step"] = step
    path = checkpoint_path(directory, step)
    atomic_torch_save(state, path)
    if keep_last > 0:
        for old in list_checkpoints(directory)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """The state `save_checkpoint` wrote. Raises CheckpointError for a file that holds pickled objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's long explanation names the offending class or function as "GLOBAL module.name"
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"a pickled {found.group(1)}" if found else "pickled objects"
        raise CheckpointError(
            f"checkpoint {path} holds {what}, not only tensors and plain values; it is not loaded because "
            "unpickling can run arbitrary code. Resume from a checkpoint this version of esi.train wrote, or start "
            "over with train_resume=none") from None


def resume_path(resume: str, directory: Path) -> Path | None:
    """The checkpoint a run continues from: `resume` is "auto" (newest in `directory`, if any), "none"/"" (none)
    or a path (relative to the repository root); a path that does not exist is a FileNotFoundError."""
    if resume == "auto":
        return latest_checkpoint(directory)
    if resume in ("none", ""):
        return None
    path = resolve(resume)
    if not path.exists():
        raise FileNotFoundError(f"train_resume: checkpoint not found: {path}")
    return path
