"""One pretraining run: `train(cfg)` sets up, then loops over epochs (train_one_epoch, validate, checkpoint).

What a run does, in order:
  1. join the process group (torchrun/SLURM or none), pick the device; stop if the checkpoint to resume was written
     under settings that shape the result (checkpoint.RESUME_MAY_CHANGE lists those that may change); write
     <out_dir>/config.yaml (train_resume none: remove an earlier run's checkpoints first);
  2. convert the dataset into an ECG store if needed (rank 0; resumable), pair ECGs with their texts, split;
  3. build the model, tokenise every text once (cached under <out_dir>/cache/);
  4. AdamW with parameter groups, the schedule, autocast/scaler; resume from the newest checkpoint (`resume: auto`);
     DDP and torch.compile around the model;
  5. each epoch: gradient accumulation and clipping, metrics to metrics.csv + TensorBoard, a checkpoint every
     `checkpoint_every` optimizer steps; then validation loss and ECG->text recall@1/5/10, and a checkpoint;
  6. save the final model with save_pretrained to <out_dir>/model/ and a few caption samples.

The objects the loop updates (model, optimizer, step count, ...) travel in one `Run`, which `train` builds once and
hands to each stage.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from esi.config import ConfigError, save_config
from esi.models.distributed import mean_over_ranks
from esi.paths import resolve
from esi.train.checkpoint import (check_same_settings, load_checkpoint, remove_checkpoints, resume_path,
                                  save_checkpoint, set_rng_state)
from esi.train.config import TrainConfig, model_config
from esi.train.data import (NonFiniteBatchError, PairDataset, check_finite_batch, load_corpus, load_tokens,
                            make_loader, pair_datasets, records_of)
from esi.train.distributed import DistContext, barrier, init_distributed
from esi.train.logger import MetricsLogger
from esi.train.sampling import ResumableBatchSampler
from esi.train.schedules import build_scheduler
from esi.train.validation import validate, write_caption_samples


@dataclass
class TrainResult:
    """Where a finished run lives, its optimizer steps in total, and its last validation metrics ({} if none)."""

    run_dir: Path
    model_dir: Path
    steps: int
    val_metrics: dict


@dataclass
class Run:
    """The objects of one run that the loop's stages read and update."""

    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    amp_dtype: torch.dtype | None              # autocast dtype; None: plain fp32
    run_dir: Path
    model: torch.nn.Module                     # the bare ESIModel: checkpoints and the final save read it
    net: torch.nn.Module                       # what the loop calls: `model`, inside DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    logger: MetricsLogger
    store: object                              # the ECG store; error messages name its records
    step: int = 0                              # optimizer steps done

    def max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) pretraining as configured; returns where the model was saved and the last val metrics."""
    from esi.models.esi_model import ESIModel

    ctx = init_distributed()
    device = pick_device(cfg.device, ctx)
    amp_dtype = autocast_dtype(cfg.precision, device)
    run_dir = resolve(cfg.out_dir)
    # Before any work: a checkpoint written under other settings stops the run (naming them), and config.yaml is
    # written only once it is known to describe the folder's model.
    checkpoint = resume_path(cfg.resume, run_dir / "checkpoints")
    if checkpoint is not None:
        check_same_settings(checkpoint, asdict(cfg), asdict(TrainConfig()))
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.resume in ("none", "") and (removed := remove_checkpoints(run_dir / "checkpoints")):
            # starting over: an older run's checkpoints must never be resumed under this run's settings
            print(f"[esi.train] train_resume none: removed {removed} checkpoint(s) of an earlier run in {run_dir}",
                  flush=True)
        save_config(cfg, run_dir / "config.yaml")

    # -- data and model (same seed on every rank; DDP also broadcasts rank 0's weights)
    corpus = load_corpus(cfg, ctx)
    seed_everything(cfg.seed)
    model = ESIModel(model_config(cfg)).to(device)
    input_ids, lengths = load_tokens(cfg, ctx, corpus.texts, model.tokenizer, run_dir / "cache")
    train_set, val_set = pair_datasets(cfg, corpus, input_ids, lengths)
    sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, ctx.rank, ctx.world_size, shuffle=True,
                                    seed=cfg.seed)
    if len(sampler) < cfg.grad_accum:
        raise ConfigError(f"{len(train_set)} training pairs give {len(sampler)} batches of {cfg.batch_size} x "
                          f"{ctx.world_size} ranks: fewer than grad_accum={cfg.grad_accum}; lower the batch size")

    # -- optimisation, resumption, wrappers
    optimizer, scheduler, scaler = build_optimization(cfg, model, device, amp_dtype, len(sampler) // cfg.grad_accum)
    step, start_epoch, start_batch = 0, 0, 0
    if checkpoint is not None:
        step, start_epoch, start_batch = restore(checkpoint, model, optimizer, scheduler, scaler, ctx)
    net = wrap(model, cfg, ctx, device)
    logger = MetricsLogger(run_dir, enabled=ctx.is_main, tensorboard=cfg.tensorboard,
                           resume_step=step if checkpoint is not None else None)
    run = Run(cfg, ctx, device, amp_dtype, run_dir, model, net, optimizer, scheduler, scaler, logger, corpus.store,
              step)

    # -- the loop
    val_metrics: dict = {}
    net.train()
    for epoch in range(start_epoch, cfg.epochs):
        if run.max_steps_reached():
            break
        if not train_one_epoch(run, train_set, sampler, epoch, start_batch if epoch == start_epoch else 0):
            break   # max_steps stopped the epoch part-way: no validation (its checkpoint is written)
        if len(val_set):
            val_metrics = validate(run.net, val_set, len(val_set), cfg.batch_size, ctx, device, amp_dtype,
                                   cfg.val_retrieval_pool)
            logger.log("val", run.step, epoch + 1, val_metrics)
            if ctx.is_main:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in val_metrics.items())
                print(f"[esi.train] epoch {epoch + 1}: validation {shown}", flush=True)
        save_training_checkpoint(run, epoch + 1, 0)
    logger.close()

    model_dir = save_model(run, corpus, val_set)
    barrier()
    return TrainResult(run_dir=run_dir, model_dir=model_dir, steps=run.step, val_metrics=val_metrics)


# --------------------------------------------------------------------------------------------------------
# one epoch


def train_one_epoch(run: Run, train_set: PairDataset, sampler: ResumableBatchSampler, epoch: int,
                    first_batch: int) -> bool:
    """The optimizer steps of `epoch`, from micro-batch `first_batch` on (a resumed run starts mid-epoch).

    Logs every `log_every` steps and checkpoints every `checkpoint_every` steps (the epoch-end checkpoint is the
    caller's, after validation). Returns True when the epoch ran to its end, False when `max_steps` stopped it.
    """
    cfg = run.cfg
    steps_per_epoch = len(sampler) // cfg.grad_accum   # micro-batches left over after the last full step are skipped
    train_set.set_epoch(epoch)
    sampler.set_epoch(epoch, first_batch)
    loader = make_loader(train_set, sampler, cfg.num_workers, pin=run.device.type == "cuda")
    bar = tqdm(total=steps_per_epoch, initial=first_batch // cfg.grad_accum, unit="step", dynamic_ncols=True,
               disable=not (cfg.progress and run.ctx.is_main), desc=f"epoch {epoch + 1}/{cfg.epochs}")
    running: dict[str, float] = {}
    window_pairs, window_start = 0, time.perf_counter()
    complete = True
    for batch_index, batch in enumerate(loader, start=first_batch):
        boundary = (batch_index + 1) % cfg.grad_accum == 0
        out = forward_backward(run, batch, epoch, sync=boundary)
        for key in ("loss", "contrastive_loss", "caption_loss"):
            running[key] = running.get(key, 0.0) + float(out[key].detach()) / cfg.grad_accum
        window_pairs += len(batch["ecg"]) * run.ctx.world_size
        if not boundary:
            continue
        lr, grad_norm = optimizer_step(run)
        pairs_per_s = window_pairs / max(time.perf_counter() - window_start, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{running['loss']:.3f}", pairs_s=f"{pairs_per_s:.0f}")
        if run.step % cfg.log_every == 0 or run.step == 1:
            log_train_step(run, running, out, lr, grad_norm, pairs_per_s, epoch + (batch_index + 1) / len(sampler))
        running = {}
        window_pairs, window_start = 0, time.perf_counter()
        end_of_epoch = batch_index + 1 >= steps_per_epoch * cfg.grad_accum
        if run.step % cfg.checkpoint_every == 0 and not end_of_epoch:
            save_training_checkpoint(run, epoch, batch_index + 1)
        if run.max_steps_reached():
            if not end_of_epoch and run.step % cfg.checkpoint_every != 0:
                save_training_checkpoint(run, epoch, batch_index + 1)   # so a longer run can continue from here
            complete = end_of_epoch
            break
        if end_of_epoch:
            break
    bar.close()
    return complete


def forward_backward(run: Run, batch: dict, epoch: int, sync: bool) -> dict:
    """Forward and backward of one micro-batch. Under DDP the gradients are all-reduced only when `sync` (the
    last micro-batch of an optimizer step). A NaN/inf in the ECGs or the loss raises NonFiniteBatchError."""
    device = run.device
    check_finite_batch(batch, run.store)
    ecg = batch["ecg"].to(device, non_blocking=True)
    ids = batch["input_ids"].to(device, non_blocking=True)
    mask = batch["attention_mask"].to(device, non_blocking=True)
    no_sync = contextlib.nullcontext() if (sync or not run.ctx.distributed) else run.net.no_sync()
    with no_sync:
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            out = run.net(ecg, ids, mask)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteBatchError(
                f"non-finite loss {loss.item()} at step {run.step}, epoch {epoch}; batch records: "
                f"{records_of(run.store, batch['index'].numpy())}")
        run.scaler.scale(loss / run.cfg.grad_accum).backward()
    return out


def optimizer_step(run: Run) -> tuple[float, torch.Tensor]:
    """Clip, step the optimizer (through the grad scaler) and the schedule, count the step.

    Returns the learning rate this step used and the gradient norm before clipping (NaN without clipping).
    """
    optimizer, scaler = run.optimizer, run.scaler
    if run.cfg.clip_grad:
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad)
    else:
        grad_norm = torch.tensor(float("nan"))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    lr = optimizer.param_groups[0]["lr"]   # the rate this step used (scheduler.step sets the next one)
    with warnings.catch_warnings():
        # fp16: the scaler skips the optimizer on steps with inf/NaN gradients (while it finds its scale).
        # The schedule still advances: it counts batches, so resumption and epochs stay aligned.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        run.scheduler.step()
    run.step += 1
    return lr, grad_norm


def log_train_step(run: Run, losses: dict, out: dict, lr: float, grad_norm: torch.Tensor, pairs_per_s: float,
                   epoch: float) -> None:
    """One train row of metrics.csv. Every rank reaches this step together: the losses are means over ranks,
    not rank 0's share."""
    keys = sorted(losses)
    means = mean_over_ranks(torch.tensor([losses[k] for k in keys], device=run.device))
    run.logger.log("train", run.step, epoch, {
        **dict(zip(keys, means.tolist())), "lr": lr, "grad_norm": float(grad_norm),
        "logit_scale": float(out["logit_scale"].detach()), "pairs_per_s": pairs_per_s,
        **({"loss_scale": run.scaler.get_scale()} if run.scaler.is_enabled() else {})})


# --------------------------------------------------------------------------------------------------------
# checkpoints and the final model


def save_training_checkpoint(run: Run, epoch: int, batch: int) -> None:
    """Rank 0 saves all a resumed run needs to continue after micro-batch `batch` of `epoch`; every rank waits."""
    if run.ctx.is_main:
        save_checkpoint(run.run_dir / "checkpoints", run.step, {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "epoch": epoch, "batch": batch, "config": asdict(run.cfg),
        }, keep_last=run.cfg.keep_checkpoints)
    barrier()


def restore(path: Path, model, optimizer, scheduler, scaler, ctx: DistContext) -> tuple[int, int, int]:
    """Load checkpoint `path` into the run's objects and the RNGs; returns (step, epoch, batch) to continue from."""
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    if ctx.is_main:
        print(f"[esi.train] resumed from {path} (step {state['step']}, epoch {state['epoch']}, "
              f"batch {state['batch']})", flush=True)
    return state["step"], state["epoch"], state["batch"]


def save_model(run: Run, corpus, val_set: PairDataset) -> Path:
    """Rank 0 writes <run>/model (save_pretrained + preprocessing.json) and a few caption samples."""
    model_dir = run.run_dir / "model"
    if run.ctx.is_main:
        cfg, store = run.cfg, corpus.store
        run.model.save_pretrained(model_dir)
        preprocessing = {"fs": store.fs, "length": store.length, "seconds": cfg.seconds,
                         "crop_seconds": cfg.crop_seconds, "normalize": cfg.normalize, "leads": list(store.leads)}
        (model_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2))
        if cfg.caption_samples and len(val_set):
            write_caption_samples(run.model, val_set, min(cfg.caption_samples, len(val_set)), corpus, run.device,
                                  run.run_dir / "captions.jsonl")
        print(f"[esi.train] saved {model_dir}", flush=True)
    return model_dir


# --------------------------------------------------------------------------------------------------------
# set-up helpers


def pick_device(name: str, ctx: DistContext) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train_device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        torch.cuda.set_device(ctx.local_rank)
        # The few float32 matmuls left under autocast (losses, projections) may use TF32 tensor cores; the
        # ECG length is fixed within a run, so cuDNN may pick its convolution algorithms once by timing them.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", ctx.local_rank)
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_optimization(cfg: TrainConfig, model, device: torch.device, amp_dtype: torch.dtype | None,
                       steps_per_epoch: int):
    """(AdamW over the model's parameter groups, the LR schedule, the grad scaler: enabled for fp16 only)."""
    groups = model.param_groups(cfg.lr, cfg.text_lr, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, cfg.epochs, cfg.warmup_epochs,
                                min_lr_factor=cfg.min_lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return optimizer, scheduler, scaler


def wrap(model, cfg: TrainConfig, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """What the loop calls: `model` inside DDP when distributed, then compiled when `cfg.compile`."""
    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net
