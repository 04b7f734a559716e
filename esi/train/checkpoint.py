"""Resumable training checkpoints, written atomically.

A checkpoint holds everything needed to continue as if never stopped: model, optimizer, scheduler, grad scaler,
the RNG states of python/numpy/torch (and CUDA), and the data position (epoch, batches done in it).
Files are written to a temporary name and renamed, so a kill during a save never leaves a broken newest file.
They hold only tensors and plain Python values (the RNG states too), so they load with `weights_only=True`:
resuming never unpickles code, and a file that would need it is refused.

Each checkpoint also records the run's settings (`config`); `check_same_settings` refuses to resume it under
settings that would change the model or its schedule, so a run folder never holds a mix of two runs.
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


# The train_* settings a resume may change: they decide where and how often a run logs and checkpoints, how it
# loads data, where it runs and when it stops, never what an optimizer step computes. Every other setting shapes
# the model, its data or its schedule (train_epochs sets the learning-rate curve), so it must match the checkpoint.
RESUME_MAY_CHANGE = frozenset({
    "out_dir", "resume", "num_workers", "convert_workers", "device", "compile", "checkpoint_every",
    "keep_checkpoints", "log_every", "tensorboard", "progress", "max_steps", "caption_samples"})


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed from; the message says which file and why."""


class SettingsChanged(CheckpointError):
    """A resume under settings that differ from the checkpoint's in something that shapes the result."""


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


def load_checkpoint(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """The state `save_checkpoint` wrote (`mmap`: tensors read only when used). Raises CheckpointError for a file
    that holds pickled objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def check_same_settings(path: Path, settings: dict, defaults: dict) -> None:
    """Raise SettingsChanged, naming every differing key, when checkpoint `path` was written under other settings.

    Args:
        path: the checkpoint a run is about to resume.
        settings: the run's settings now (TrainConfig as a dict).
        defaults: each setting's default; a key the checkpoint does not record (a setting added since it was
            written) counts as its default, which by convention reproduces the earlier behaviour.
    """
    saved = load_checkpoint(path, mmap=True).get("config")
    if saved is None:
        raise CheckpointError(f"checkpoint {path} records no settings, so a resume cannot be checked against them; "
                              "start over with train_resume: none, or set a new train_out_dir")
    changed = [f"train_{key} {saved.get(key, defaults.get(key))!r} -> {value!r}" for key, value in settings.items()
               if key not in RESUME_MAY_CHANGE and saved.get(key, defaults.get(key)) != value]
    if changed:
        raise SettingsChanged(
            f"{path} was written with other settings ({'; '.join(changed)}); resuming it would mix two runs. "
            "Set a new train_out_dir for this run, or train_resume: none to start over in this folder")


def remove_checkpoints(directory: Path) -> int:
    """Delete every checkpoint in `directory` (a run that starts over); returns how many there were."""
    old = list_checkpoints(directory)
    for path in old:
        path.unlink(missing_ok=True)
    return len(old)
