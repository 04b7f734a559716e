"""The pretraining engine `esi.train`, end to end on the real PTB-XL records in ../shared.

Most runs use a tiny text encoder (a 2-layer BERT with random weights and MiniLM's tokenizer, built into a temporary
folder) so that a few optimizer steps take a fraction of a second. All runs read one 100 Hz store converted once
per test session (conftest's `store_dir`). The short real pretraining (the bundled MiniLM, retrieval far above
chance) is in test_evaluate_end_to_end.py, where the same run also serves the linear-probe comparison.

The kill-and-resume test starts `python -m esi.train` in subprocesses and SIGKILLs one of them from outside once
it has checkpointed a chosen step, as an out-of-memory killer or a pre-empted node would.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from esi.config import ConfigError, load_config
from esi.train import TrainConfig, main, train
from esi.train.checkpoint import checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint
from esi.train.data import NonFiniteBatchError

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- shared material: one tiny text encoder, a config writer (the store: conftest's store_dir) -----------

def tiny_text_encoder(folder: Path, dropout: float) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer, saved as a Hugging Face folder."""
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoTokenizer, BertConfig, BertModel

    from esi.models.text_encoder import bundled_minilm_path

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    partial = folder.with_name(folder.name + ".partial")
    BertModel(config).save_pretrained(partial)
    AutoTokenizer.from_pretrained(bundled_minilm_path()).save_pretrained(partial)
    partial.rename(folder)
    return folder


def tiny_settings(out_dir: Path, store_dir: Path, text_encoder: Path, ptbxl_dir: Path, /, **changes) -> dict:
    """train_* settings of a run that takes seconds: ConvNeXt V2 atto on 2.5 s crops, a one-block decoder,
    PTB-XL fold 1 for training (58 records: 7 steps of 8) and fold 3 for validation (34 records)."""
    settings = dict(
        out_dir=str(out_dir), corpus="ptbxl", data_root=str(ptbxl_dir), store_dir=str(store_dir),
        fs=100, seconds=10, crop_seconds=2.5, train_folds=[1], val_folds=[3],
        ecg_encoder="convnextv2_atto", text_encoder=str(text_encoder), max_text_length=32,
        model={"decoder_depth": 1, "decoder_heads": 2, "n_queries": 4, "latent_dim": 32},
        batch_size=8, epochs=2, lr=1e-3, text_lr=1e-4, schedule="cosine", warmup_epochs=0.5,
        checkpoint_every=3, keep_checkpoints=3, log_every=1, caption_samples=0, tensorboard=False, progress=False,
    )
    settings.update(changes)
    return settings


def write_params(path: Path, settings: dict) -> Path:
    """Write settings as a params file (flat keys with the train_ prefix, as in params/)."""
    path.write_text(yaml.safe_dump({f"train_{k}": v for k, v in settings.items()}, sort_keys=False))
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def steps_of(rows: list[dict], split: str) -> list[int]:
    return [int(float(r["step"])) for r in rows if r["split"] == split]


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def weights_after(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """The model state saved in the checkpoint of optimizer step `step`."""
    return load_checkpoint(checkpoint_path(run_dir / "checkpoints", step))["model"]


def largest_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[str, float]:
    """The tensor whose elements differ most between two states of the same model, and by how much."""
    assert a.keys() == b.keys()
    gaps = {name: float((a[name].float() - b[name].float()).abs().max()) for name in a}
    worst = max(gaps, key=gaps.get)
    return worst, gaps[worst]


@pytest.fixture(scope="session")
def text_encoder(tmp_path_factory) -> Path:
    """Tiny BERT with dropout on: the resumed run must replay the dropout masks, too."""
    return tiny_text_encoder(tmp_path_factory.getbasetemp() / "tiny-bert-dropout", dropout=0.1)


@pytest.fixture
def settings(tmp_path, store_dir, text_encoder, ptbxl_dir):
    def make(**changes) -> dict:
        return tiny_settings(tmp_path / "run", store_dir, text_encoder, ptbxl_dir, **changes)
    return make


# ---- kill at any step, resume, get the same model ----------------------------------------------------------

KILL_AFTER = 9        # the run is killed once it has checkpointed this step (epoch 2, its 2nd step) or a later one
STEPS_PER_EPOCH = 7   # 58 fold-1 records // 8


def engine_command(params: Path) -> list[str]:
    """`python -m esi.train --config params`, as a user would start it."""
    return [sys.executable, "-m", "esi.train", "--config", str(params)]


def run_engine(params: Path) -> subprocess.CompletedProcess:
    """The engine in a child process, waited for."""
    return subprocess.run(engine_command(params), cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=900)


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"esi.train failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def checkpointed_step(path: Path) -> int:
    return int(path.stem.removeprefix("step_"))


def kill_once_checkpointed(params: Path, checkpoint_dir: Path, step: int, log: Path) -> int:
    """Start the engine and SIGKILL it as soon as a checkpoint of optimizer step `step` or later exists.

    Returns the exit status (-9 when the kill landed). Where exactly it lands (mid-step, mid-save, in
    validation) is up to the scheduler; the tests below hold wherever it does.
    """
    with open(log, "w") as out:
        child = subprocess.Popen(engine_command(params), cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                 stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while child.poll() is None and time.monotonic() < deadline:
            newest = latest_checkpoint(checkpoint_dir)
            if newest is not None and checkpointed_step(newest) >= step:
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        return child.wait(timeout=60)


@pytest.fixture(scope="module")
def interrupted_and_resumed(tmp_path_factory, store_dir, text_encoder, ptbxl_dir) -> dict:
    """An uninterrupted run, and the same run SIGKILLed after it checkpointed step KILL_AFTER (or a later one),
    then started again (resume: auto). The interrupted run checkpoints every step, so the kill may land anywhere.

    Every source of randomness the engine has is switched on: dropout in the text encoder, random crops,
    augmentation, a DataLoader worker process, the cosine schedule, TensorBoard logging.
    """
    root = tmp_path_factory.mktemp("resume")
    common = dict(augment=True, num_workers=1, tensorboard=True, resume="auto")
    reference_params = write_params(root / "reference.yaml", tiny_settings(
        root / "reference", store_dir, text_encoder, ptbxl_dir, **common))
    interrupted_params = write_params(root / "interrupted.yaml", tiny_settings(
        root / "interrupted", store_dir, text_encoder, ptbxl_dir, checkpoint_every=1, **common))
    reference = succeeded(run_engine(reference_params))
    killed_status = kill_once_checkpointed(interrupted_params, root / "interrupted" / "checkpoints", KILL_AFTER,
                                           root / "killed.log")
    checkpoints_at_kill = [p.name for p in list_checkpoints(root / "interrupted" / "checkpoints")]
    model_at_kill = (root / "interrupted" / "model").exists()
    resumed = succeeded(run_engine(interrupted_params))
    return {"root": root, "reference": reference, "killed_status": killed_status,
            "killed_log": (root / "killed.log").read_text(), "resumed": resumed,
            "checkpoints_at_kill": checkpoints_at_kill, "model_at_kill": model_at_kill}


def test_the_run_is_killed_by_sigkill_before_it_saves_its_model(interrupted_and_resumed):
    assert interrupted_and_resumed["killed_status"] == -signal.SIGKILL, interrupted_and_resumed["killed_log"][-2000:]
    assert not interrupted_and_resumed["model_at_kill"]


def test_checkpoints_come_every_n_steps_and_at_epoch_ends_and_only_the_newest_are_kept(interrupted_and_resumed):
    # checkpoint_every=3 over 2 x 7 steps: 3, 6, 7 (epoch end), 9, 12, 14 (epoch end); keep_checkpoints=3 keeps 3
    directory = interrupted_and_resumed["root"] / "reference" / "checkpoints"
    assert [p.name for p in list_checkpoints(directory)] == [
        "step_000000009.pt", "step_000000012.pt", "step_000000014.pt"]
    state = load_checkpoint(checkpoint_path(directory, 9))
    assert (state["step"], state["epoch"], state["batch"]) == (9, 1, 2)     # resumes at epoch 1 (0-based), batch 2


def test_resume_auto_continues_from_the_newest_checkpoint(interrupted_and_resumed):
    newest = interrupted_and_resumed["checkpoints_at_kill"][-1]
    step = checkpointed_step(Path(newest))
    assert step >= KILL_AFTER
    # mid-epoch checkpoints record the batches done in the epoch; epoch-end ones the next epoch at batch 0
    epoch, batch = divmod(step, STEPS_PER_EPOCH)
    assert "resumed from" in interrupted_and_resumed["resumed"].stdout
    assert f"{newest} (step {step}, epoch {epoch}, batch {batch})" in interrupted_and_resumed["resumed"].stdout


def test_a_killed_and_resumed_run_ends_with_exactly_the_uninterrupted_weights(interrupted_and_resumed):
    root = interrupted_and_resumed["root"]
    expected = load_weights(root / "reference" / "model")
    actual = load_weights(root / "interrupted" / "model")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert different == []


def test_a_resumed_run_logs_every_step_once(interrupted_and_resumed):
    rows = read_metrics(interrupted_and_resumed["root"] / "interrupted")
    total = 2 * STEPS_PER_EPOCH
    assert steps_of(rows, "train") == list(range(1, total + 1))
    assert steps_of(rows, "val") == [STEPS_PER_EPOCH, total]


def test_resume_none_starts_over(settings, capsys):
    first = train(load_config(TrainConfig, overrides=settings(max_steps=2, checkpoint_every=1)))
    assert latest_checkpoint(first.run_dir / "checkpoints").name == "step_000000002.pt"
    capsys.readouterr()
    again = train(load_config(TrainConfig, overrides=settings(max_steps=1, resume="none")))
    assert again.steps == 1 and "resumed from" not in capsys.readouterr().out
    assert steps_of(read_metrics(again.run_dir), "train") == [1]


# ---- distributed-free properties of one run ----------------------------------------------------------------

def test_paper_step_schedule_warms_up_then_divides_the_rate_by_ten(settings):
    # 1 step per epoch (fold 3: 34 records, batch 32): 2 warm-up epochs, 10 at the full rate, then x0.1
    cfg = load_config(TrainConfig, overrides=settings(
        train_folds=[3], val_folds=[], batch_size=32, epochs=13, schedule="paper_step", warmup_epochs=2,
        lr=1e-3, text_lr=1e-4, checkpoint_every=100, keep_checkpoints=1))
    result = train(cfg)
    rows = [r for r in read_metrics(result.run_dir) if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, 14))
    # metrics.csv logs the rate each optimizer step used
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.5e-3] + [1e-3] * 11 + [1e-4], rel=1e-6)


def test_gradient_accumulation_of_two_batches_of_b_steps_like_one_batch_of_2b(tmp_path, store_dir, ptbxl_dir):
    # Exact for the caption loss when every text has the same token count (PTB-XL texts cut at 16 tokens);
    # the contrastive loss is switched off because its negatives are, by nature, those of each micro-batch.
    encoder = tiny_text_encoder(tmp_path.parent / "tiny-bert-no-dropout", dropout=0.0)
    common = dict(crop_seconds=None, max_text_length=16, val_folds=[], schedule="constant", warmup_epochs=0,
                  max_steps=2, checkpoint_every=1, model={"decoder_depth": 1, "decoder_heads": 2, "n_queries": 4,
                                                          "latent_dim": 32, "contrastive_weight": 0.0})
    whole = train(load_config(TrainConfig, overrides=tiny_settings(
        tmp_path / "whole", store_dir, encoder, ptbxl_dir, batch_size=16, grad_accum=1, **common)))
    accumulated = train(load_config(TrainConfig, overrides=tiny_settings(
        tmp_path / "accumulated", store_dir, encoder, ptbxl_dir, batch_size=8, grad_accum=2, **common)))
    assert whole.steps == accumulated.steps == 2
    for step in (1, 2):
        name, gap = largest_gap(weights_after(whole.run_dir, step), weights_after(accumulated.run_dir, step))
        assert gap < 1e-5, f"step {step}: {name} differs by {gap:.3g}"
    # AdamW's update hardly depends on the gradient's scale, so the weights alone would miss a wrongly scaled
    # sum of micro-batch gradients: the logged gradient norms (before clipping) and losses must agree too.
    for column in ("grad_norm", "caption_loss"):
        logged = [[float(r[column]) for r in read_metrics(run.run_dir) if r["split"] == "train"]
                  for run in (whole, accumulated)]
        assert logged[0] == pytest.approx(logged[1], rel=1e-4), column


# ---- bad input and bad settings: clear errors --------------------------------------------------------------

def test_a_nan_in_the_data_stops_training_naming_the_record(tmp_path, ptbxl_dir, text_encoder):
    from esi.data.convert import convert
    from esi.data.store import ECGStore

    store_dir = tmp_path / "store16"
    convert("ptbxl", ptbxl_dir, store_dir, fs=100, seconds=10, dtype="float16", limit=40, workers=1,
            progress=False)
    store = ECGStore(store_dir)
    # Damage one sample of one training record on disk, as a bad copy or a broken converter would.
    folds = store.index["strat_fold"].astype(int)
    row = int(np.flatnonzero(folds.between(1, 8))[0])
    shard_index = int(store.shards[row])
    shard = np.memmap(store_dir / "shards" / f"shard-{shard_index:06d}.bin", dtype=np.float16, mode="r+",
                      shape=(int((store.shards == shard_index).sum()), len(store.leads), store.length))
    shard[store.rows[row], 4, 100] = np.nan
    shard.flush()
    del shard
    # One batch holds every training record, so the damaged one is in the first batch; whole records (no crop)
    # so that the damaged sample is in it.
    cfg = load_config(TrainConfig, overrides=tiny_settings(
        tmp_path / "run", store_dir, text_encoder, ptbxl_dir, train_folds=list(range(1, 9)), val_folds=[],
        batch_size=int(folds.between(1, 8).sum()), crop_seconds=None, max_steps=1))
    record_id = str(store.index["record_id"].iloc[row])
    with pytest.raises(NonFiniteBatchError, match=rf"non-finite ECG values in record\(s\) {record_id} of store"):
        train(cfg)


def test_a_diverging_run_stops_at_the_first_non_finite_loss(settings):
    # A learning rate of 1e30 blows the weights up in one step; the next loss is not finite.
    cfg = load_config(TrainConfig, overrides=settings(lr=1e30, text_lr=1e30, warmup_epochs=0, schedule="constant",
                                                      clip_grad=None, max_steps=4))
    with pytest.raises(NonFiniteBatchError, match=r"non-finite loss .* at step 1, epoch 0; batch records: \d+"):
        train(cfg)


def test_a_missing_data_root_is_an_error(settings):
    cfg = load_config(TrainConfig, overrides={**settings(), "data_root": ""})
    with pytest.raises(ConfigError, match="train_data_root is empty"):
        train(cfg)


def test_a_hub_text_encoder_that_is_not_cached_fails_at_once_offline(settings, monkeypatch):
    from esi.models.text_encoder import TextEncoderNotAvailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(TrainConfig, overrides=settings(text_encoder="esi-tests/no-such-encoder"))
    with pytest.raises(TextEncoderNotAvailable, match=r"'esi-tests/no-such-encoder' is not available: HF_HUB_OFFLINE"):
        train(cfg)


# ---- the command line answers a bad file, setting or model in one line, with exit status 2 -----------------

def command_line_error(capsys, argv: list[str]) -> str:
    """Run `main(argv)`, which must exit with status 2 and one `error: ...` line on stderr; returns that line."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_missing_config_file_is_one_line_and_exit_status_2(tmp_path):
    # As a user meets it: `python -m esi.train` in its own process.
    missing = tmp_path / "no-such-params.yaml"
    done = subprocess.run(engine_command(missing), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: config file not found: {missing}"]


def test_broken_yaml_is_one_line_naming_the_file(tmp_path, capsys):
    params = tmp_path / "broken.yaml"
    params.write_text("train_epochs: [3, 4\ntrain_lr: 1e-3\n")
    line = command_line_error(capsys, ["--config", str(params)])
    assert line.startswith(f"error: {params}: not valid YAML: ")


def test_an_unknown_setting_is_an_error_with_a_hint(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", {"data_root": "/data", "epoch": 3})
    line = command_line_error(capsys, ["--config", str(params)])
    assert re.search(r"unknown key 'epoch'.*Did you mean 'epochs'", line)
    ok = write_params(tmp_path / "ok.yaml", {"data_root": "/data"})
    assert "did you mean train_batch_size?" in command_line_error(capsys, ["--config", str(ok), "--set", "batchsize=3"])
    # called as a function, the loader still raises
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'.*Did you mean 'epochs'"):
        load_config(TrainConfig, [params], section="train")


def test_cli_set_takes_the_full_params_key_and_refuses_a_short_or_other_stage_key(tmp_path, capsys):
    ok = write_params(tmp_path / "ok.yaml", {"data_root": "/data"})
    # the full key reaches the config: the run stops at the data root the override names
    line = command_line_error(capsys, ["--config", str(ok), "--set", f"train_data_root={tmp_path / 'elsewhere'}"])
    assert line.startswith("error: train_data_root: ") and "elsewhere" in line
    line = command_line_error(capsys, ["--config", str(ok), "--set", "epochs=2"])
    assert line.startswith("error: --set epochs=2: did you mean train_epochs?")
    line = command_line_error(capsys, ["--config", str(ok), "--set", "evaluate_seed=2"])
    assert line.startswith("error: --set evaluate_seed=2: did you mean train_seed?")
    assert "evaluate_ keys belong to the evaluate stage" in line


def test_a_text_encoder_missing_from_the_cache_is_one_line_with_the_fix(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = write_params(tmp_path / "params.yaml", settings(text_encoder="esi-tests/no-such-encoder"))
    line = command_line_error(capsys, ["--config", str(params)])
    assert line.startswith("error: train_text_encoder: text encoder 'esi-tests/no-such-encoder' is not available: "
                           "HF_HUB_OFFLINE")
    assert "huggingface-cli download esi-tests/no-such-encoder" in line
