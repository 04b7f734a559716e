"""Protocol A, the PTB-XL benchmark: sliding-window max aggregation, the scaler fitted on training records only, the
benchmark's recipe checked against independent re-implementations of its reference rules (weight_init, fastai v1's
AdamW step and one-cycle schedule, final-epoch scoring, gradual fine-tuning), and the supervised xresnet1d101
trained for one epoch on a small subset of the real records."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from oracles import sliding_windows
from torch import nn

from esi.data.datasets import ECGDataset
from esi.data.ptbxl import load_task
from esi.evaluate.encoders import EncoderSpec, load_encoder
from esi.evaluate.features import ptbxl_store, store_rows
from esi.evaluate.benchmark import (PROTOCOL_FINETUNE, PROTOCOL_SUPERVISED, RECIPES, BenchmarkClassifier,
                                          BenchmarkSettings, OneCycle, aggregate_max, benchmark_optimizer,
                                          benchmark_task, build_classifier, predict_records, recipe_label,
                                          recipe_settings, row_settings, run_benchmark, supervised_spec,
                                          train_benchmark_model, training_phases)
from esi.evaluate.results import CommonSettings
from esi.evaluate.workspace import Workspace
from esi.models.registry import EncoderOutput
from esi.models.xresnet1d import XResNet1d


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict:
    base = tmp_path_factory.getbasetemp() / "evaluate_shared"
    return {"store_dir": base / "stores", "cache_dir": base / "features"}


@pytest.fixture(scope="module")
def store(ptbxl_dir, shared):
    return ptbxl_store(ptbxl_dir, 100, shared["store_dir"], workers=1, progress=False)


@pytest.fixture(scope="module")
def small_task(ptbxl_dir):
    """Superdiagnostic on a small subset: 32 training records, 16 of fold 9, 16 of fold 10."""
    task = load_task(ptbxl_dir, "superdiagnostic")
    keep = np.zeros(len(task), dtype=bool)
    for split, n in (("train", 32), ("val", 16), ("test", 16)):
        keep[np.flatnonzero(task.mask(split))[:n]] = True
    return task.subset(keep)


@pytest.fixture(scope="module")
def trained(small_task, store):
    settings = BenchmarkSettings(epochs=1, batch_size=16)
    encoder = load_encoder(supervised_spec("xresnet1d101", fs=100))
    return benchmark_task(encoder, small_task, store, settings, protocol=PROTOCOL_SUPERVISED,
                          common=CommonSettings(n_boot=20, seed=0), progress=False)


@pytest.fixture(scope="module")
def train_set(store, small_task):
    """Random 2.5 s crops of the 32 training records of `small_task`, with their 5 labels."""
    train = small_task.split("train")
    rows = store_rows(store, train.ecg_ids)
    targets = np.zeros((len(store), train.y.shape[1]), dtype=np.float32)
    targets[rows] = train.y
    return ECGDataset(store, rows, targets=targets, crop=250, crop_mode="random", seed=0)


def tiny_xresnet() -> XResNet1d:
    """An xresnet1d with one small bottleneck per stage: the benchmark's structure (stem, BN, residual), fast."""
    return XResNet1d(layers=(1, 1), stem_channels=(8, 8, 16), width=4, expansion=2)


def tiny_loaded(pretrained: bool, label: str):
    """A LoadedEncoder around `tiny_xresnet` (standard leads, 100 Hz, per-lead z-score)."""
    base = load_encoder(EncoderSpec(kind="random", architecture="convnextv2_atto", fs=100, normalize="per_lead"))
    torch.manual_seed(1 if pretrained else 2)  # different weights, so the pair's scores differ
    return dataclasses.replace(base, module=tiny_xresnet(), label=label, pretrained=pretrained,
                               architecture="tiny_xresnet", encoder_kwargs={})


def tiny_settings(**overrides) -> BenchmarkSettings:
    return BenchmarkSettings(**{"epochs": 1, "finetune_epochs": 1, "batch_size": 16, **overrides})


def params_of(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# --- windows and aggregation -----------------------------------------------------------------------------------


def test_ten_seconds_in_2_5_s_windows_every_1_25_s_are_7_windows_and_the_record_score_is_their_max():
    fs = 100
    record = np.zeros((1, 12, 10 * fs), dtype=np.float32)
    record[0, 0, 640:650] = 5.0  # a burst inside windows 4 and 5 (starts 500 and 625)
    windows = sliding_windows(record, int(2.5 * fs), int(1.25 * fs))
    assert windows.shape == (1, 7, 12, 250)
    burst = windows[..., 0, :].max(-1)  # (1, 7): the burst's height as each window sees it
    np.testing.assert_array_equal(burst[0], [0, 0, 0, 0, 5, 5, 0])
    scores = np.array([[[0.1, 0.9], [0.7, 0.2], [0.3, 0.3]]])  # (records, windows, classes)
    np.testing.assert_array_equal(aggregate_max(scores), [[0.7, 0.9]])
    np.testing.assert_array_equal(aggregate_max(torch.from_numpy(scores)).numpy(), [[0.7, 0.9]])


class WindowMean(nn.Module):
    """A stand-in model whose 'logit' per window is the mean of lead I over the window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(-1, keepdim=True)


def test_record_predictions_are_the_max_over_their_windows(store, small_task):
    rows = store_rows(store, small_task.split("test").ecg_ids[:5])
    dataset = ECGDataset(store, rows, windows=(250, 125))
    predicted = predict_records(WindowMean(), dataset, batch_size=2)
    windows = sliding_windows(store.read(rows), 250, 125)                      # (5, 7, 12, 250)
    window_probs = 1 / (1 + np.exp(-windows[:, :, 0].mean(-1)))                # (5, 7) sigmoid of each window
    expected = window_probs.max(axis=1)
    np.testing.assert_allclose(predicted[:, 0], expected, rtol=1e-5)


# --- recipes ---------------------------------------------------------------------------------------------------


def test_the_default_settings_are_the_benchmark_recipe_and_a_changed_knob_is_custom():
    assert BenchmarkSettings() == recipe_settings("benchmark")
    assert recipe_label(BenchmarkSettings()) == "benchmark"
    esi = recipe_settings("esi")
    assert (esi.init, esi.beta2, esi.selection, esi.finetune_schedule) == ("model", 0.999, "fold9_best", "all_layers")
    assert recipe_label(esi) == "esi"
    changed = BenchmarkSettings(beta2=0.999)
    assert recipe_label(changed) == "custom" and row_settings(changed, PROTOCOL_SUPERVISED) == {"beta2": 0.999}
    # A knob left None is the recipe's: the params' `evaluate_benchmark_lr: null`.
    assert BenchmarkSettings(recipe="esi", lr=None, finetune_lr=None) == esi
    assert row_settings(recipe_settings("esi", epochs=2), PROTOCOL_FINETUNE) == {"epochs": 2}   # all layers: epochs
    # A fine-tuning knob does not change a model trained from scratch.
    assert recipe_label(BenchmarkSettings(finetune_lr=1e-3), PROTOCOL_SUPERVISED) == "benchmark"
    assert recipe_label(BenchmarkSettings(finetune_lr=1e-3), PROTOCOL_FINETUNE) == "custom"
    # The benchmark fine-tunes at fastai_model's default lr, the same 1e-2 as from scratch.
    assert RECIPES["benchmark"]["finetune_lr"] == 1e-2
    with pytest.raises(ValueError, match="selection"):
        BenchmarkSettings(selection="best_on_test")


# --- (a) initialisation ----------------------------------------------------------------------------------------


def test_benchmark_init_resets_every_batchnorm_to_one_and_draws_kaiming_normal_weights():
    encoder = load_encoder(supervised_spec("xresnet1d101", fs=100))
    model = build_classifier(encoder, 5, BenchmarkSettings(), PROTOCOL_SUPERVISED)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) > 100
    for bn in bns:  # the benchmark's weight_init: constant_(weight, 1), constant_(bias, 0)
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    ratios = []
    for layer in layers:
        w = layer.weight.detach()
        fan_in = w[0].numel()  # in_channels x kernel (conv), in_features (linear)
        if w.numel() >= 2000:  # enough draws to estimate the std within a few per cent
            ratios.append(w.std().item() / math.sqrt(2.0 / fan_in))
            assert abs(w.mean().item()) < 0.1 * math.sqrt(2.0 / fan_in)
        if layer.bias is not None:
            assert torch.all(layer.bias == 0)
    assert len(ratios) > 50 and all(abs(r - 1) < 0.08 for r in ratios), ratios


def test_model_init_keeps_the_zero_residual_batchnorm_and_benchmark_init_resets_it_to_one():
    encoder = load_encoder(supervised_spec("xresnet1d101", fs=100))
    for init, expected in (("model", 0.0), ("benchmark", 1.0)):
        model = build_classifier(encoder, 5, BenchmarkSettings(init=init), PROTOCOL_SUPERVISED)
        last_bns = [block.convs[-1][1].weight for stage in model.encoder.stages for block in stage]
        assert len(last_bns) == 33 and all(torch.all(w == expected) for w in last_bns), init


def test_fine_tuning_initialises_only_the_new_head():
    encoder = tiny_loaded(True, "tiny pretrained")
    model = build_classifier(encoder, 3, BenchmarkSettings(), PROTOCOL_FINETUNE)
    for name, tensor in encoder.module.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], tensor)
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert all(torch.all(m.bias == 0) for m in linears)  # Kaiming-normal, zero bias (torch's default bias is not 0)


# --- (b) one optimiser step = fastai v1's true_wd Adam step ---------------------------------------------------


class FastaiOneCycle:
    """fastai 1.0.61's OneCycleScheduler written out: two Schedulers (n += 1, then annealing_cos at n / n_iter),
    values set after each batch for the next; the first batch uses the phase-1 start."""

    def __init__(self, lr_max: float, n: int, moms=(0.95, 0.85), div=25.0, pct_start=0.3):
        a1 = int(n * pct_start)
        self.phases = [(max(1, a1), (lr_max / div, lr_max), moms), (max(1, n - a1), (lr_max, lr_max / div / 1e4),
                                                                     (moms[1], moms[0]))]
        self.idx, self.count = 0, 0
        self.lr, self.mom = lr_max / div, moms[0]

    @staticmethod
    def cos(start, end, pct):
        return end + (start - end) / 2 * (np.cos(np.pi * pct) + 1)

    def on_batch_end(self):
        n_iter, lrs, moms = self.phases[self.idx]
        self.count += 1
        self.lr, self.mom = self.cos(*lrs, self.count / n_iter), self.cos(*moms, self.count / n_iter)
        if self.count >= n_iter:
            self.idx, self.count = self.idx + 1, 0

    def trajectory(self, steps: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(steps):
            out.append((self.lr, self.mom))
            self.on_batch_end()
        return out


def test_our_optimiser_steps_equal_fastai_v1_true_wd_adam_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    reference = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.rand(8, 3, dtype=torch.float64).round()
    settings = BenchmarkSettings(weight_decay=0.3)  # large, so the decay shows
    lr, steps, total = 0.05, 4, 10

    optimizer = benchmark_optimizer([(list(model.parameters()), lr)], settings)
    schedule = OneCycle(optimizer, total)
    for step in range(steps):
        schedule.at(step)
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()

    # fastai v1: OptimWrapper.step multiplies every parameter by 1 - wd * lr, then torch.optim.Adam (pytorch 1.4)
    # steps with betas (mom, 0.99), eps 1e-8, weight_decay 0.
    twin = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p, r in zip(twin.parameters(), reference):
            p.copy_(r)
    m = [torch.zeros_like(p) for p in twin.parameters()]
    v = [torch.zeros_like(p) for p in twin.parameters()]
    for t, (lr_t, mom) in enumerate(FastaiOneCycle(lr, total).trajectory(steps), start=1):
        twin.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(twin(x), y).backward()
        with torch.no_grad():
            for i, p in enumerate(twin.parameters()):
                p.mul_(1 - settings.weight_decay * lr_t)
                m[i] = mom * m[i] + (1 - mom) * p.grad
                v[i] = 0.99 * v[i] + 0.01 * p.grad ** 2
                denom = (v[i] / (1 - 0.99 ** t)).sqrt() + 1e-8
                p.sub_(lr_t / (1 - mom ** t) * m[i] / denom)
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10)  # float64 round-off
    assert optimizer.param_groups[0]["betas"][1] == 0.99 and optimizer.param_groups[0]["eps"] == 1e-8


# --- (c) the one-cycle trajectory ----------------------------------------------------------------------------


@pytest.mark.parametrize("total", [3, 17, 200])
def test_the_one_cycle_lr_and_beta1_follow_fastai_v1_step_by_step(total):
    groups = [([nn.Parameter(torch.zeros(1))], 1e-5), ([nn.Parameter(torch.zeros(1))], 1e-3)]
    optimizer = benchmark_optimizer(groups, BenchmarkSettings())
    schedule = OneCycle(optimizer, total)
    expected = [FastaiOneCycle(g[1], total).trajectory(total) for g in groups]
    for step in range(total):
        schedule.at(step)
        for group, fastai in zip(optimizer.param_groups, expected):
            assert group["lr"] == pytest.approx(fastai[step][0], rel=1e-9), step
            assert group["betas"] == pytest.approx((fastai[step][1], 0.99), rel=1e-9), step
    # For the record: torch's OneCycleLR peaks one step earlier than fastai (at 0.3 * total - 1, not int(0.3 * total)).
    if total == 200:
        peak = int(np.argmax([lr for lr, _ in expected[1]]))
        torch_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3, momentum=0.9)
        torch_sched = torch.optim.lr_scheduler.OneCycleLR(torch_opt, max_lr=1e-3, total_steps=total)
        torch_lrs = []
        for _ in range(total):
            torch_lrs.append(torch_opt.param_groups[0]["lr"])
            torch_opt.step()
            torch_sched.step()
        assert (peak, int(np.argmax(torch_lrs))) == (60, 59)


# --- (d) selection ---------------------------------------------------------------------------------------------


class TinyEncoder(nn.Module):
    """Conv -> BN -> ReLU -> Conv: enough to train, fast."""

    dim = 8

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(12, 8, 9, stride=4), nn.BatchNorm1d(8), nn.ReLU())
        self.body = nn.Conv1d(8, 8, 5, stride=2)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        x = self.body(self.stem(x))
        return EncoderOutput(tokens=x.transpose(1, 2), pooled=x.mean(-1))


def train_tiny(train_set, settings: BenchmarkSettings, scripted: list[float]):
    """Train a seeded tiny classifier 3 epochs; `validate` returns the scripted fold-9 scores and keeps the
    weights it saw."""
    torch.manual_seed(0)
    model = BenchmarkClassifier(TinyEncoder(), 5, hidden=8)
    seen = []

    def validate(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return scripted[len(seen) - 1]

    outcome = train_benchmark_model(model, train_set, settings, validate=validate, progress=False, where="tiny")
    return model, outcome, seen


def assert_same_state(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_final_epoch_scores_the_last_weights_and_fold9_best_the_best(train_set):
    settings = BenchmarkSettings(epochs=3, batch_size=16, lr=1e-2)
    best_model, best, seen = train_tiny(train_set, replace_selection(settings, "fold9_best"), [0.5, 0.9, 0.6])
    assert len(seen) == 3 and best.selected_epoch == 2 and best.val_auroc == 0.9
    assert_same_state(best_model.state_dict(), seen[1])
    with pytest.raises(AssertionError):
        assert_same_state(best_model.state_dict(), seen[2])

    final_model, final, seen_final = train_tiny(train_set, settings, [0.7])
    assert len(seen_final) == 1  # fold 9 scored once, after training, for the notes
    assert final.selected_epoch == 3 and final.val_auroc == 0.7
    assert_same_state(final_model.state_dict(), seen[2])  # the same trajectory's last epoch, not its best
    assert [h["epoch"] for h in final.history] == [1, 2, 3] and "val_macro_auroc" not in final.history[0]


def replace_selection(settings: BenchmarkSettings, selection: str) -> BenchmarkSettings:
    return dataclasses.replace(settings, selection=selection)


def test_the_incomplete_last_batch_is_dropped_unless_it_is_the_only_one(train_set):
    _, outcome, _ = train_tiny(train_set, BenchmarkSettings(epochs=1, batch_size=20), [0.5])
    assert outcome.phases[0]["steps_per_epoch"] == 1 and outcome.notes == ""  # 32 records: 20 kept, 12 dropped
    _, outcome, _ = train_tiny(train_set, BenchmarkSettings(epochs=1, batch_size=64), [0.5])
    assert outcome.phases[0]["steps_per_epoch"] == 1 and "partial batch" in outcome.notes


# --- (e) gradual fine-tuning -----------------------------------------------------------------------------------


def test_gradual_fine_tuning_trains_head_and_encoder_batchnorm_then_three_groups_at_lr_1000_100_10(train_set):
    settings = tiny_settings(finetune_lr=1e-2)
    torch.manual_seed(0)
    model = BenchmarkClassifier(tiny_xresnet(), 5, hidden=8)
    phase1, phase2 = training_phases(model, settings, PROTOCOL_FINETUNE)

    bn_names = {f"encoder.{name}.{p}" for name, m in model.encoder.named_modules()
                if isinstance(m, nn.BatchNorm1d) for p in ("weight", "bias")}
    head_names = {f"head.{n}" for n, _ in model.head.named_parameters()}
    stem_names = {f"encoder.stem.{n}" for n, _ in model.encoder.stem.named_parameters()}
    name_of = {id(p): n for n, p in model.named_parameters()}
    assert {name_of[id(p)] for p in phase1.groups[0][0]} == head_names | bn_names
    assert [{name_of[id(p)] for p in params} for params, _ in phase2.groups] == [
        stem_names, set(name_of.values()) - stem_names - head_names, head_names]
    assert [lr for _, lr in phase2.groups] == pytest.approx([1e-5, 1e-4, 1e-3], rel=1e-9)

    before = params_of(model)
    train_benchmark_model(model, train_set, settings, validate=lambda m: 0.5, phases=[phase1], progress=False)
    after = params_of(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == head_names | bn_names  # frozen encoder convs stay exactly as they were

    outcome = train_benchmark_model(model, train_set, settings, validate=lambda m: 0.5,
                                    phases=training_phases(model, settings, PROTOCOL_FINETUNE), progress=False)
    assert outcome.phases[0]["max_lrs"] == pytest.approx([1e-2], rel=1e-9)
    assert outcome.phases[1]["max_lrs"] == pytest.approx([1e-5, 1e-4, 1e-3], rel=1e-9)
    final = params_of(model)
    assert all(not torch.equal(after[n], final[n]) for n in stem_names)  # phase 2 trains the stem too


# --- (f) non-finite loss ---------------------------------------------------------------------------------------


class NaNEncoder(nn.Module):
    dim = 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        tokens = torch.full((x.shape[0], 3, self.dim), float("nan")) * self.scale
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(1))


def test_a_nan_training_loss_stops_training_naming_encoder_task_and_step(small_task, store):
    encoder = dataclasses.replace(tiny_loaded(True, "broken encoder"), module=NaNEncoder())
    with pytest.raises(FloatingPointError, match=r"broken encoder / superdiagnostic .*epoch 1, step 1"):
        benchmark_task(encoder, small_task, store, tiny_settings(), protocol=PROTOCOL_FINETUNE, progress=False)


# --- (g) rows and end to end -----------------------------------------------------------------------------------


def test_the_scaler_is_fitted_on_the_training_records_only(trained, store, small_task):
    train_rows = store_rows(store, small_task.split("train").ecg_ids)
    train_x = store.read(train_rows).astype(np.float64)
    scaler = trained["scaler"]
    # One mean and one std over all leads and samples of the training records (the benchmark's StandardScaler).
    np.testing.assert_allclose(scaler.mean, np.full(12, train_x.mean()), rtol=1e-6)
    np.testing.assert_allclose(scaler.std, np.full(12, train_x.std()), rtol=1e-6)
    everything = store.read(store_rows(store, small_task.ecg_ids)).astype(np.float64)
    assert not np.isclose(scaler.mean[0], everything.mean(), rtol=1e-6)


def test_supervised_xresnet1d101_trains_one_epoch_and_scores_the_test_fold(trained, small_task):
    rows = trained["rows"]
    assert [r["metric"] for r in rows] == ["macro_auroc", "macro_auprc", "macro_auroc_supported",
                                          "macro_auprc_supported"]
    for row in rows:
        assert row["protocol"] == PROTOCOL_SUPERVISED and row["encoder"] == "xresnet1d101 (supervised)"
        assert (row["split"], row["recipe"], row["selection"], row["subset_draw"]) == (
            "ptbxl_folds_1-8/9/10", "benchmark", "final_epoch", "all")
        assert row["ci_level"] == pytest.approx(0.90)
        assert 0 <= row["value"] <= 1 and row["ci_low"] <= row["value"] <= row["ci_high"]
        assert (row["n_train"], row["n_test"]) == (32, 16)
        assert "scored after the last epoch" in row["notes"] and json.loads(row["settings"]) == {"batch_size": 16,
                                                                                                  "epochs": 1}
    assert trained["y_score"].shape == (16, len(trained["classes"]))
    outcome = trained["outcome"]
    assert outcome.selected_epoch == 1 and len(outcome.history) == 1
    assert outcome.phases[0]["steps_per_epoch"] == 2 and outcome.phases[0]["max_lrs"] == [1e-2]


def test_a_trained_model_serves_as_a_supervised_encoder(trained, tmp_path):
    path = tmp_path / "xresnet.pt"
    torch.save(trained["checkpoint"], path)
    assert (trained["checkpoint"]["recipe"], trained["checkpoint"]["selection"]) == ("benchmark", "final_epoch")
    encoder = load_encoder(EncoderSpec(kind="supervised", path=str(path)))
    assert (encoder.fs, encoder.normalize, encoder.pretrained) == (100.0, "scaler", True)
    np.testing.assert_allclose(encoder.scaler.mean, trained["scaler"].mean)
    trained_weights = trained["model"].encoder.state_dict()
    for name, tensor in encoder.module.state_dict().items():
        torch.testing.assert_close(tensor, trained_weights[name].cpu())


def test_fine_tuning_a_pretrained_encoder_and_its_twin_gives_rows_with_a_paired_p_value(ptbxl_dir, shared, tmp_path):
    workspace = Workspace(tmp_path / "run", ptbxl_dir, store_dir=shared["store_dir"], progress=False)
    encoders = [tiny_loaded(True, "tiny pretrained"), tiny_loaded(False, "tiny random")]
    settings = tiny_settings(tasks=["superdiagnostic"], supervised=[], batch_size=128, save_models=False)
    results = run_benchmark(encoders, workspace, settings, CommonSettings(n_boot=10, significance_resamples=50),
                            random_baselines=False)
    table = results.table
    assert len(table) == 8 and set(table["metric"]) == {"macro_auroc", "macro_auprc", "macro_auroc_supported", "macro_auprc_supported"}
    assert set(table["recipe"]) == {"benchmark"} and set(table["protocol"]) == {PROTOCOL_FINETUNE}
    # Every row says how the encoder was fed: 100 Hz, the recipe's 2.5 s windows, per-lead z-score.
    assert (table[["encoder_fs", "encoder_window_s", "encoder_normalize"]].drop_duplicates().values.tolist()
            == [[100.0, settings.window_s, "per_lead"]])
    pretrained = table[table["encoder"] == "tiny pretrained"]
    assert pretrained["p_value"].between(0, 1).all()
    assert table[table["encoder"] == "tiny random"]["p_value"].isna().all()  # a twin has no twin
    assert (table["settings"] == '{"finetune_epochs": 1}').all()    # gradual: 1 + 1 epochs, the benchmark's 30 + 30
    assert (workspace.predictions_dir / PROTOCOL_FINETUNE / "superdiagnostic").is_dir()
