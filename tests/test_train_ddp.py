"""Distributed pretraining on CPU, started the way a notebook starts it: `esi.train.launch.launch_training`.

Two gloo processes with a per-process batch of B must take the same optimizer step as one process with a
batch of 2B on the same pairs: the contrastive loss scores every ECG against the global batch (gathered from both
ranks) and DDP averages the gradients. What holds exactly, and why the runs below are set up as they are:

- The global batch is the same set of pairs: the sampler cuts the same 2B positions of the epoch's permutation
  and deals them to the ranks alternately; the gathered batch is a permutation of the single process's, and the
  symmetric InfoNCE over a batch does not depend on the order of its rows.
- The caption loss is a mean over the real tokens of the global batch: each rank divides its summed
  cross-entropy by the mean token count over ranks (esi.models.losses.caption_loss), so the texts here, of
  different lengths on the two ranks, weigh exactly as in the single process.
- Dropout draws different masks for one batch of 2B than for two of B, so the tiny text encoder used here
  has dropout off; whole records are used (no random crop), as crops are drawn per batch.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from esi.train.launch import TrainingFailed, launch_training, training_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import largest_gap, tiny_settings, tiny_text_encoder, weights_after, write_params  # noqa: E402

PER_RANK_BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory, store_dir, ptbxl_dir) -> dict:
    encoder = tiny_text_encoder(tmp_path_factory.getbasetemp() / "tiny-bert-no-dropout", dropout=0.0)
    root = tmp_path_factory.mktemp("ddp")

    def params(name: str, **changes) -> Path:
        settings = tiny_settings(root / name, store_dir, encoder, ptbxl_dir, crop_seconds=None, max_text_length=48,
                                 val_folds=[], schedule="constant", warmup_epochs=0, lr=1e-3, text_lr=1e-4,
                                 max_steps=2, checkpoint_every=1, **changes)
        return write_params(root / f"{name}.yaml", settings)

    return {"root": root, "params": params}


@pytest.fixture(scope="module")
def two_processes(setup) -> dict:
    done = launch_training([setup["params"]("two")], overrides=[f"train_batch_size={PER_RANK_BATCH}"], nproc_per_node=2,
                           stream=False)
    return {"done": done, "run_dir": setup["root"] / "two"}


@pytest.fixture(scope="module")
def two_processes_compiled(setup) -> dict:
    """The two-process run again with torch.compile: what a GPU node runs (there with NCCL and bf16)."""
    done = launch_training([setup["params"]("two-compiled", compile=True)],
                           overrides=[f"train_batch_size={PER_RANK_BATCH}"], nproc_per_node=2, stream=False)
    return {"done": done, "run_dir": setup["root"] / "two-compiled"}


@pytest.fixture(scope="module")
def one_process(setup) -> dict:
    done = launch_training([setup["params"]("one")], overrides=[f"train_batch_size={2 * PER_RANK_BATCH}"],
                           nproc_per_node=1, stream=False)
    return {"done": done, "run_dir": setup["root"] / "one"}


def initial_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model as the engine builds it before the first step (same seed, same config)."""
    from esi.config import from_dict, load_config
    from esi.models.esi_model import ESIConfig, ESIModel
    from esi.train import TrainConfig
    from esi.train.loop import seed_everything

    cfg = load_config(TrainConfig, run_dir / "config.yaml")
    seed_everything(cfg.seed)
    fields = {**cfg.model, "ecg_encoder": cfg.ecg_encoder, "text_encoder": cfg.text_encoder,
              "max_text_length": cfg.max_text_length}
    model = ESIModel(from_dict(ESIConfig, fields))
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_training_command_runs_torchrun_on_a_free_local_port(tmp_path):
    params = write_params(tmp_path / "p.yaml", {"data_root": "/data"})
    command = training_command([params], ["train_epochs=3"], nproc_per_node=4)
    assert command[1:5] == ["-m", "torch.distributed.run", "--nnodes", "1"]
    assert command[command.index("--nproc-per-node") + 1] == "4"
    assert command[command.index("--master-addr") + 1] == "127.0.0.1"
    assert int(command[command.index("--master-port") + 1]) > 0
    assert command[command.index("--max-restarts") + 1] == "0"           # torchrun's default: a lost worker ends it
    restarting = training_command([params], nproc_per_node=4, max_restarts=3)
    assert restarting[restarting.index("--max-restarts") + 1] == "3"
    assert command[-6:] == ["-m", "esi.train", "--config", str(params), "--set", "train_epochs=3"]
    assert training_command([params], use_torchrun=False)[1:] == ["-m", "esi.train", "--config", str(params)]
    with pytest.raises(ValueError, match="multi-node run needs master_addr"):
        training_command([params], nnodes=2, node_rank=1)
    with pytest.raises(ValueError, match="restarts need torchrun"):
        training_command([params], use_torchrun=False, max_restarts=1)


def test_two_processes_run_end_to_end_and_write_one_model(two_processes):
    run_dir = two_processes["run_dir"]
    output = two_processes["done"].stdout
    assert output.count("[esi.train] saved") == 1             # rank 0 alone saves and prints
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == [
        "config.json", "model.safetensors", "preprocessing.json", "text_encoder"]
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["split"], r["step"]) for r in rows] == [("train", "1"), ("train", "2")]


@pytest.mark.parametrize("step", [1, 2])
def test_two_processes_with_batch_b_step_like_one_process_with_batch_2b(two_processes, one_process, step):
    # The texts differ in length, so the ranks hold different numbers of caption tokens.
    with np.load(next((one_process["run_dir"] / "cache").glob("tokens_*.npz"))) as tokens:
        assert len(set(tokens["lengths"].tolist())) > 5
    name, gap = largest_gap(weights_after(two_processes["run_dir"], step), weights_after(one_process["run_dir"], step))
    assert gap < 1e-5, f"{name} differs by {gap:.3g}"


def test_two_processes_log_the_gradient_norm_and_losses_of_one_process(two_processes, one_process):
    # AdamW hides a wrongly scaled gradient from the weights; the logged norm (before clipping) does not.
    def logged(run_dir: Path, column: str) -> list[float]:
        with open(run_dir / "metrics.csv", newline="") as fh:
            return [float(row[column]) for row in csv.DictReader(fh) if row["split"] == "train"]

    for column in ("grad_norm", "loss", "contrastive_loss", "caption_loss"):
        assert logged(two_processes["run_dir"], column) == pytest.approx(logged(one_process["run_dir"], column),
                                                                         rel=1e-4), column


@pytest.mark.slow   # torch.compile in two processes: half a minute on 2 idle cores
@pytest.mark.parametrize("step", [1, 2])
def test_compiled_ddp_takes_the_same_steps_as_eager_ddp(two_processes_compiled, two_processes, step):
    name, gap = largest_gap(weights_after(two_processes_compiled["run_dir"], step),
                            weights_after(two_processes["run_dir"], step))
    assert gap < 1e-5, f"{name} differs by {gap:.3g}"
    # The collectives inside the loss stay eager (esi.models.distributed): none is left unwaited at exit.
    assert "unwaited collective" not in two_processes_compiled["done"].stdout


def test_the_compared_step_moved_the_weights_well_beyond_the_tolerance(one_process):
    # Guards the comparison above from passing trivially: one step changed the ECG encoder by ~lr (1e-3).
    start = initial_weights(one_process["run_dir"])
    after = weights_after(one_process["run_dir"], 1)
    moved = max(float((after[name] - start[name]).abs().max()) for name in after if name.startswith("ecg_encoder."))
    assert moved > 5e-4


def test_a_failed_launch_raises_with_the_end_of_its_output(tmp_path, capsys):
    params = write_params(tmp_path / "bad.yaml", {"data_root": "/data", "epoch": 3})
    with pytest.raises(TrainingFailed) as failure:
        launch_training([params], use_torchrun=False, stream=True)
    assert failure.value.returncode == 2                         # the entry point's status for a bad config
    assert "unknown key 'epoch'" in str(failure.value)
    assert "unknown key 'epoch'" in capsys.readouterr().out      # streamed while it ran
