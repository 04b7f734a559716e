"""What the step benchmarks share: timing a step function after a warm-up, and a fresh process per measurement."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Callable


def time_steps(step: Callable[[], None], warmup: int, steps: int, device: str = "cpu") -> tuple[float, float]:
    """Run `step` `warmup` times untimed, then `steps` times timed; returns (warm-up seconds, seconds per step).

    step: one unit of work (a forward/backward/optimizer step).
    warmup: untimed calls first (compilation, autotuning, the allocator, optimizer state).
    steps: timed calls.
    device: "cuda" waits for queued kernels before each clock read and resets the peak-memory counter after
        the warm-up, so torch.cuda.max_memory_allocated() afterwards covers the timed steps alone.
    """
    import torch

    cuda = device == "cuda"
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return warmup_s, (time.perf_counter() - start) / steps


def in_fresh_process(function, *args):
    """function(*args) in a new spawned process: its own peak memory, CUDA context and compile cache."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)
