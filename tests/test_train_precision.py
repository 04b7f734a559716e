"""Mixed precision and torch.compile in the pretraining engine, on CPU.

The GPU recipe is bf16 autocast + torch.compile (+ fused AdamW, CUDA only); the original recipe is fp16 autocast
with a gradient scaler. CPU autocast supports both dtypes and Inductor compiles for CPU, so the code paths the
engine takes on a GPU run here too (the speed of those paths is bench/bench_train_gpu.py's business).

Every run below starts from the same seed on the same batches, with a dropout-free tiny text encoder (compiled
code draws dropout masks from a different generator than eager code), and takes two optimizer steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from esi.config import from_dict
from esi.models.esi_model import ESIModel
from esi.train import TrainConfig, train
from esi.train.checkpoint import checkpoint_path, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import largest_gap, read_metrics, tiny_settings, tiny_text_encoder, weights_after  # noqa: E402
from test_train_ddp import initial_weights  # noqa: E402

STEPS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory, store_dir, ptbxl_dir):
    encoder = tiny_text_encoder(tmp_path_factory.getbasetemp() / "tiny-bert-no-dropout", dropout=0.0)
    root = tmp_path_factory.mktemp("precision")
    done: dict[tuple, Path] = {}

    def make(precision: str, compile: bool = False) -> Path:
        key = (precision, compile)
        if key not in done:
            settings = tiny_settings(root / f"{precision}-{'compiled' if compile else 'eager'}", store_dir, encoder,
                                     ptbxl_dir, precision=precision, compile=compile, max_steps=STEPS,
                                     checkpoint_every=1, schedule="constant", warmup_epochs=0, device="cpu")
            done[key] = train(from_dict(TrainConfig, settings)).run_dir
        return done[key]

    return make


def train_losses(run_dir: Path) -> list[float]:
    return [float(row["loss"]) for row in read_metrics(run_dir) if row["split"] == "train"]


def test_bf16_autocast_trains_close_to_fp32(run):
    fp32, bf16 = train_losses(run("fp32")), train_losses(run("bf16"))
    assert len(bf16) == STEPS
    # Same batches and initial weights: bf16 matmuls change the losses by well under a percent.
    for low, full in zip(bf16, fp32):
        assert low == pytest.approx(full, rel=0.02)
    assert low != full                                           # autocast really ran in bf16
    # The weights stay fp32 (autocast casts per operation), and the update points where fp32's does.
    weights = weights_after(run("bf16"), STEPS)
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}
    start = initial_weights(run("fp32"))
    update = lambda w: torch.cat([(w[n] - start[n]).flatten() for n in start if n.startswith("ecg_encoder.")])
    agreement = torch.nn.functional.cosine_similarity(update(weights), update(weights_after(run("fp32"), STEPS)), dim=0)
    assert agreement > 0.9


def test_fp16_uses_a_gradient_scaler_whose_state_is_checkpointed(run):
    run_dir = run("fp16")
    scaler_state = load_checkpoint(checkpoint_path(run_dir / "checkpoints", STEPS))["scaler"]
    assert scaler_state["scale"] > 0                             # an enabled GradScaler saved its state
    rows = [row for row in read_metrics(run_dir) if row["split"] == "train"]
    assert all(float(row["loss_scale"]) > 0 for row in rows)     # and logs its scale
    assert all(torch.isfinite(t).all() for t in weights_after(run_dir, STEPS).values() if t.is_floating_point())
    fp32_rows = read_metrics(run("fp32"))
    assert "loss_scale" not in fp32_rows[0] or not fp32_rows[0]["loss_scale"]


def test_compiled_training_takes_the_same_steps_as_eager_and_saves_plain_weights(run):
    eager, compiled = run("fp32"), run("fp32", compile=True)
    for step in range(1, STEPS + 1):
        name, gap = largest_gap(weights_after(compiled, step), weights_after(eager, step))
        assert gap < 1e-5, f"step {step}: {name} differs by {gap:.3g} between compiled and eager"
    # The checkpoint and the saved model hold the module's own names, not torch.compile's wrapper ones.
    assert not [k for k in weights_after(compiled, STEPS) if "_orig_mod" in k]
    model = ESIModel.from_pretrained(compiled / "model")
    assert model.encode_ecg(torch.zeros(1, 12, 250)).shape == (1, 32)
