"""A run folder holds one run: `resume: auto` continues a checkpoint only under the settings it was written with.

A changed setting that shapes the model or its schedule (train_lr here) stops `python -m esi.train` before any
work, with one line naming it and the two ways on, and leaves the folder as it was (config.yaml still describes
the checkpoints' model). Settings that cannot change the result (logging, progress, checkpoint cadence, when to
stop) may change, and the run resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esi.config import load_config
from esi.train import TrainConfig, train
from esi.train.checkpoint import RESUME_MAY_CHANGE, list_checkpoints
from test_train import tiny_settings, tiny_text_encoder, write_params

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory, ptbxl_dir, store_dir) -> dict:
    """A run stopped after one optimizer step (max_steps: its checkpoint is written), as a params file."""
    basetemp = tmp_path_factory.getbasetemp()
    encoder = tiny_text_encoder(basetemp / "tiny-bert-dropout", dropout=0.1)
    root = tmp_path_factory.mktemp("resume-check")
    settings = tiny_settings(root / "run", store_dir, encoder, ptbxl_dir, max_steps=1)
    train(load_config(TrainConfig, overrides=settings))
    return {"settings": settings, "params": write_params(root / "params.yaml", settings), "run": root / "run"}


def folder_state(run: Path) -> dict:
    """What a refused resume must leave untouched: config.yaml, the checkpoints, metrics.csv."""
    return {"config": (run / "config.yaml").read_text(), "metrics": (run / "metrics.csv").read_text(),
            "checkpoints": [(p.name, p.stat().st_mtime_ns) for p in list_checkpoints(run / "checkpoints")]}


def test_a_changed_learning_rate_stops_the_resume_with_one_line_naming_it(one_step_run):
    before = folder_state(one_step_run["run"])
    done = subprocess.run([sys.executable, "-m", "esi.train", "--config", str(one_step_run["params"]),
                           "--set", "train_lr=0.002", "--set", "train_max_steps=2"],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "train_lr 0.001 -> 0.002" in lines[0]
    assert "train_max_steps" not in lines[0]          # may change: it only says when to stop
    assert "train_out_dir" in lines[0] and "train_resume: none" in lines[0]
    assert "resumed from" not in done.stdout
    assert folder_state(one_step_run["run"]) == before   # nothing written: config.yaml still describes the model
    assert yaml.safe_load(before["config"])["lr"] == 0.001


def test_the_same_settings_resume_even_with_other_logging_and_checkpoint_cadence(one_step_run, capsys):
    settings = dict(one_step_run["settings"], max_steps=2, log_every=2, checkpoint_every=5, keep_checkpoints=1,
                    progress=True)
    assert {"max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "progress"} <= RESUME_MAY_CHANGE
    result = train(load_config(TrainConfig, overrides=settings))
    assert "resumed from" in capsys.readouterr().out
    assert result.steps == 2
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["max_steps"] == 2


def test_resume_none_starts_over_under_new_settings_and_removes_the_old_checkpoints(one_step_run, tmp_path):
    run = tmp_path / "run"
    settings = dict(one_step_run["settings"], out_dir=str(run), max_steps=2)
    train(load_config(TrainConfig, overrides=settings))
    # the new run stops at step 1: were step 2 of the old one kept, resume: auto would pick it below
    changed = dict(settings, lr=0.002, resume="none", max_steps=1)
    result = train(load_config(TrainConfig, overrides=changed))
    assert result.steps == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 0.002
    # the folder's checkpoints are all of the new run: a later resume: auto continues it, under its settings
    again = train(load_config(TrainConfig, overrides=dict(changed, resume="auto", max_steps=2)))
    assert again.steps == 2
