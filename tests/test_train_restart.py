"""A lost worker under torchrun: the group restarts, resumes from the newest checkpoint and ends as if never stopped.

Two gloo processes run under `torchrun --max-restarts 1` (the command `esi.train.launch` runs); once a checkpoint
of step KILL_AFTER exists, rank 1 is SIGKILLed from outside, as an out-of-memory killer would. torchrun stops
rank 0, starts both again, and they must join a new process group (not hang on the previous attempt's
rendezvous) and resume. The finished model must equal an uninterrupted two-process run's bit for bit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from esi.train.checkpoint import latest_checkpoint
from esi.train.launch import launch_training, training_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import load_weights, tiny_settings, tiny_text_encoder, write_params  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
KILL_AFTER = 2         # rank 1 is killed once step 2 (of 4) is checkpointed: mid-epoch, so the data position resumes
RUN_TIMEOUT_S = 240    # per phase (up to the kill, after it): a hang fails here, not at the group's 30-minute timeout


def worker_pid(torchrun: psutil.Process, rank: int) -> int | None:
    """The process id of the torchrun worker with global rank `rank`, or None while it is not running."""
    for child in torchrun.children():   # the workers themselves, not their DataLoader workers (same environment)
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def run_killing_rank_1(command: list[str], checkpoints: Path, log: Path) -> dict:
    """Run `command` (torchrun), SIGKILL its rank-1 worker once step KILL_AFTER is checkpointed, wait for the end."""
    with open(log, "w") as out:
        child = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        torchrun = psutil.Process(child.pid)
        killed_at = killed_step = None
        deadline = time.monotonic() + RUN_TIMEOUT_S
        try:
            while child.poll() is None and killed_at is None and time.monotonic() < deadline:
                newest = latest_checkpoint(checkpoints)
                pid = worker_pid(torchrun, rank=1)
                if newest is not None and pid is not None and int(newest.stem.removeprefix("step_")) >= KILL_AFTER:
                    os.kill(pid, signal.SIGKILL)
                    killed_at, killed_step = time.monotonic(), int(newest.stem.removeprefix("step_"))
                time.sleep(0.02)
            returncode = child.wait(timeout=RUN_TIMEOUT_S if killed_at is not None else 1)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if child.poll() is None:        # a hung restart: stop torchrun and its workers
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    finished_at = time.monotonic()
    return {"returncode": returncode, "killed_step": killed_step, "log": log.read_text(),
            "restart_s": None if killed_at is None else finished_at - killed_at}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ptbxl_dir, store_dir) -> dict:
    basetemp = tmp_path_factory.getbasetemp()
    # Dropout on, as in test_train's kill-and-resume test: the resumed ranks must replay the masks, too.
    encoder = tiny_text_encoder(basetemp / "tiny-bert-dropout", dropout=0.1)
    root = tmp_path_factory.mktemp("restart")

    def params(name: str) -> Path:
        # 58 fold-1 records in batches of 8 per rank: 3 steps per epoch; 4 steps on random 2.5 s crops, a checkpoint
        # after every one. The ranks are seeded alike and draw alike, so the RNG state a checkpoint keeps (rank 0's)
        # is every rank's.
        settings = tiny_settings(root / name, store_dir, encoder, ptbxl_dir, val_folds=[], max_steps=4,
                                 checkpoint_every=1, keep_checkpoints=2, resume="auto")
        return write_params(root / f"{name}.yaml", settings)

    started = time.monotonic()
    uninterrupted = launch_training([params("uninterrupted")], nproc_per_node=2, max_restarts=1, stream=False)
    uninterrupted_s = time.monotonic() - started
    command = training_command([params("restarted")], nproc_per_node=2, max_restarts=1)
    restarted = run_killing_rank_1(command, root / "restarted" / "checkpoints", root / "restarted.log")
    if restarted["restart_s"] is not None:
        print(f"\nuninterrupted run {uninterrupted_s:.1f} s; rank 1 killed after step {restarted['killed_step']}, "
              f"the restarted run finished {restarted['restart_s']:.1f} s after the kill")
    return {"root": root, "uninterrupted": uninterrupted, "restarted": restarted}


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_finishes(runs):
    restarted = runs["restarted"]
    assert restarted["killed_step"] is not None, "the run finished before a worker could be killed"
    assert restarted["returncode"] == 0, f"exit {restarted['returncode']}:\n{restarted['log'][-4000:]}"
    assert "exitcode: -9" in restarted["log"]                      # torchrun saw the SIGKILL ...
    resumed = [line for line in restarted["log"].splitlines() if "[esi.train] resumed from" in line]
    assert len(resumed) == 1, restarted["log"][-4000:]            # ... and the new group resumed once
    resumed_step = int(re.search(r"\(step (\d+),", resumed[0]).group(1))
    assert resumed_step >= restarted["killed_step"]               # from the newest checkpoint at the kill


def test_the_restarted_run_ends_with_exactly_the_uninterrupted_weights(runs):
    expected = load_weights(runs["root"] / "uninterrupted" / "model")
    actual = load_weights(runs["root"] / "restarted" / "model")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert different == []
