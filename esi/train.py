"""ESI pretraining: `python -m esi.train --config params/....yaml [--set key=value ...]`.

The same command runs as one process, under `torchrun --nproc-per-node N` (one or many nodes) and under
SLURM (`srun python -m esi.train ...`): the distributed context is read from the environment (esi.dist).

What one run does, in order:
  1. resolve the config (params keys `train_*`) and write it to <out_dir>/config.yaml;
  2. convert the dataset into an ECG store if needed (rank 0; resumable), pair ECGs with their texts, split;
  3. tokenise every text once (cached under <out_dir>/cache/);
  4. build the model, AdamW with parameter groups, the schedule, autocast/scaler, optional torch.compile;
  5. resume from the newest checkpoint if any (`resume: auto`);
  6. train: gradient accumulation and clipping, metrics to metrics.csv + TensorBoard, a checkpoint every
     `checkpoint_every` optimizer steps and at each epoch end, validation loss and ECG->text recall@1/5/10
     after each epoch;
  7. save the final model with save_pretrained to <out_dir>/model/ and a few caption samples.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from esi import dist
from esi.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from esi.config import ConfigError, load_config, save_config
from esi.metrics import MetricsLogger, retrieval_recall
from esi.paths import resolve
from esi.sampling import ResumableBatchSampler
from esi.schedules import build_scheduler


@dataclass
class TrainConfig:
    """Pretraining settings (params keys `train_<field>`). Paths are relative to the repository root.

    Data
      out_dir: run folder: config.yaml, checkpoints/, metrics.csv, tb/, model/, cache/.
      corpus: "mimic" (MIMIC-IV-ECG layout: record_list.csv, machine_measurements.csv, files/) or "ptbxl".
      data_root: the dataset folder.
      patients: MIMIC-IV patients table (csv/csv.gz) for age and sex; optional.
      store_dir: the ECG store to use or create; default <out_dir>/store.
      waveform_dict: statement -> description JSON (CQA output or the paper's file); MIMIC texts only.
      fs, seconds: sampling rate (Hz) and length (s) of the stored ECGs.
      crop_seconds: train on random crops of this length (None: the whole record); validation uses centre crops.
      normalize: "global" (one mean/std over all leads of a record, as the original) or "per_lead".
      augment: light augmentation (amplitude scaling, noise, baseline wander) during training.
      val_fraction: MIMIC: share of subjects held out for validation.
      train_folds, val_folds: PTB-XL folds of each split (fold 10 is the test fold: never use it here).
      max_records: use only the first N records of the record list (smoke runs); None: all.
      max_words: word budget of each text (descriptions trimmed first); None: none.
      convert_workers: processes for the one-off conversion (None: all cores).
      num_workers: DataLoader worker processes.
    Model
      ecg_encoder: encoder name (convnextv2_atto ... convnextv2_large, xresnet1d101).
      ecg_encoder_kwargs: extra encoder arguments, e.g. {drop_path_rate: 0.1}.
      text_encoder: Hugging Face name, local folder, or "minilm" (bundled, offline).
      max_text_length: tokens per text, special tokens included.
      model: further ESIConfig fields (latent_dim, n_queries, decoder_depth, caption_weight, local_loss, ...).
    Optimisation
      epochs, batch_size (per process), grad_accum (micro-batches per optimizer step).
      lr: learning rate of the ECG encoder and all new heads; text_lr: of the pretrained text encoder.
      weight_decay: AdamW decay (not applied to norms, biases, embeddings, the logit scale).
      schedule: "paper_step" (warm-up, then x0.1 every 10 epochs: the original README), "cosine", "constant".
      warmup_epochs, min_lr_factor (cosine floor as a fraction of lr).
      clip_grad: max gradient norm (None: no clipping).
      precision: "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16" (fp16 uses a grad scaler).
      compile: torch.compile the model.
      device: "auto", "cpu", "cuda".
      seed: seeds model init, data order, crops and augmentation.
    Bookkeeping
      checkpoint_every: optimizer steps between checkpoints (and one at every epoch end).
      keep_checkpoints: how many recent checkpoints to keep.
      resume: "auto" (newest checkpoint in out_dir if any), "none" (start over), or a checkpoint path.
      log_every: optimizer steps between train metric rows.
      val_retrieval_pool: at most this many validation pairs in the recall@k pool (chance = k / pool).
      max_steps: stop after this many optimizer steps in total (None: run all epochs).
      tensorboard, progress: TensorBoard logs, progress bars.
      caption_samples: validation ECGs to caption at the end (written to captions.jsonl).
    """

    out_dir: str = "outputs/esi"
    corpus: Literal["mimic", "ptbxl"] = "mimic"
    data_root: str = ""
    patients: str | None = None
    store_dir: str | None = None
    waveform_dict: str | None = None
    fs: float = 500.0
    seconds: float = 10.0
    crop_seconds: float | None = None
    normalize: Literal["global", "per_lead"] = "global"
    augment: bool = False
    val_fraction: float = 0.05
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    val_folds: list[int] = field(default_factory=lambda: [9])
    max_records: int | None = None
    max_words: int | None = None
    convert_workers: int | None = None
    num_workers: int = 0
    ecg_encoder: str = "convnextv2_base"
    ecg_encoder_kwargs: dict = field(default_factory=dict)
    text_encoder: str = "michiyasunaga/BioLinkBERT-base"
    max_text_length: int = 256
    model: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 48
    grad_accum: int = 1
    lr: float = 1e-4
    text_lr: float = 1e-5
    weight_decay: float = 0.05
    schedule: Literal["paper_step", "cosine", "constant"] = "cosine"
    warmup_epochs: float = 5.0
    min_lr_factor: float = 0.01
    clip_grad: float | None = 1.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    resume: str = "auto"
    log_every: int = 10
    val_retrieval_pool: int = 1000
    max_steps: int | None = None
    tensorboard: bool = True
    progress: bool = True
    caption_samples: int = 4


class NonFiniteBatchError(RuntimeError):
    """A batch (or its loss) contains NaN/inf; the message names the records involved."""


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    val_metrics: dict


# --------------------------------------------------------------------------------------------------------
# data


TEXT_WIDTH_MULTIPLE = 8


class PairDataset(torch.utils.data.Dataset):
    """Store rows of an `ECGDataset` with their token ids; `dataset[list]` returns a whole batch."""

    def __init__(self, ecgs, input_ids: np.ndarray, lengths: np.ndarray):
        self.ecgs = ecgs
        self.input_ids = input_ids
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.ecgs)

    def set_epoch(self, epoch: int) -> None:
        self.ecgs.set_epoch(epoch)

    def __getitem__(self, positions):
        batch = self.ecgs.fetch(positions)
        rows = batch["index"].numpy()
        # Pad to the longest text of the batch only, rounded up to a multiple of 8: tensor cores want it, and
        # torch.compile then meets a handful of text widths instead of one per length.
        longest = max(2, int(self.lengths[rows].max()))
        width = min(self.input_ids.shape[1], -(-longest // TEXT_WIDTH_MULTIPLE) * TEXT_WIDTH_MULTIPLE)
        ids = torch.from_numpy(self.input_ids[rows, :width].astype(np.int64))
        mask = (torch.arange(width)[None, :] < torch.from_numpy(self.lengths[rows].astype(np.int64))[:, None])
        batch["input_ids"] = ids
        batch["attention_mask"] = mask.long()
        return batch


def _identity(batch):
    return batch


def _loader(dataset, sampler, num_workers: int, pin: bool):
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity,
                                       num_workers=num_workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------------------
# helpers


def pick_device(name: str, ctx) -> torch.device:
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


def _records_of(store, rows) -> str:
    ids = store.index["record_id"].iloc[np.asarray(rows)].astype(str).tolist()
    return ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")


def check_finite_batch(batch: dict, store) -> None:
    """Raise NonFiniteBatchError naming the records whose ECG holds NaN/inf."""
    bad = ~torch.isfinite(batch["ecg"]).flatten(1).all(dim=1)
    if bad.any():
        rows = batch["index"][bad].numpy()
        raise NonFiniteBatchError(f"non-finite ECG values in record(s) {_records_of(store, rows)} "
                                  f"of store {store.path}")


def corpus_arguments(cfg: TrainConfig, progress: bool | None = None) -> dict:
    """The `esi.data.corpus.build_corpus` arguments of this config: the one place that maps train_* settings
    onto the corpus, so a notebook that explores the data reads exactly the store and texts training will."""
    if not cfg.data_root:
        raise ConfigError("train_data_root is empty: point it at a MIMIC-IV-ECG or PTB-XL folder")
    root = resolve(cfg.data_root)
    if not root.exists():
        raise FileNotFoundError(f"train_data_root: {root} does not exist")
    return dict(kind=cfg.corpus, root=root,
                store_dir=resolve(cfg.store_dir) if cfg.store_dir else resolve(cfg.out_dir) / "store",
                fs=cfg.fs, seconds=cfg.seconds,
                waveform_dict=resolve(cfg.waveform_dict) if cfg.waveform_dict else None,
                patients=resolve(cfg.patients) if cfg.patients else None, val_fraction=cfg.val_fraction,
                train_folds=cfg.train_folds, val_folds=cfg.val_folds, max_words=cfg.max_words,
                limit=cfg.max_records, workers=cfg.convert_workers,
                progress=cfg.progress if progress is None else progress)


def unwrap(model):
    model = getattr(model, "module", model)          # DDP
    return getattr(model, "_orig_mod", model)       # torch.compile


# --------------------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def validate(model, dataset, rows_count: int, batch_size: int, ctx, device, amp_dtype, pool: int) -> dict:
    """Validation loss over equal shares of every rank and ECG->text recall@k on the first `pool` pairs."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    sampler = ResumableBatchSampler(rows_count, batch_size, ctx.rank, ctx.world_size, shuffle=False,
                                    drop_last=True)
    sums = torch.zeros(4, device=device)   # loss, contrastive, caption, batches
    for positions in sampler:
        batch = dataset[positions]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = net(batch["ecg"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device))
        sums += torch.stack([out["loss"].float(), out["contrastive_loss"].float(),
                             out["caption_loss"].float(), torch.ones((), device=device)])
    if ctx.distributed:
        torch.distributed.all_reduce(sums)
    metrics = {}
    if sums[3] > 0:
        metrics = {"loss": float(sums[0] / sums[3]), "contrastive_loss": float(sums[1] / sums[3]),
                   "caption_loss": float(sums[2] / sums[3])}
    # Retrieval on rank 0 over a fixed pool (the same pairs every epoch, so curves are comparable).
    if ctx.is_main:
        n = min(pool, rows_count)
        ecg_lat, text_lat = [], []
        for start in range(0, n, batch_size):
            batch = dataset[list(range(start, min(n, start + batch_size)))]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                ecg_lat.append(net.encode_ecg(batch["ecg"].to(device)).float())
                text_lat.append(net.encode_text(batch["input_ids"].to(device),
                                                batch["attention_mask"].to(device)).float())
        if n >= 2:
            metrics.update(retrieval_recall(torch.cat(ecg_lat), torch.cat(text_lat)))
            metrics["retrieval_pool"] = n
    net.train(was_training)
    return metrics


# --------------------------------------------------------------------------------------------------------
# the run


def model_config(cfg: TrainConfig):
    """The `ESIConfig` a run builds: `cfg.model` (e.g. init_logit_scale) plus the encoder and length settings.

    Unknown or mistyped keys of `model` raise a ConfigError naming train_model.<key>.
    """
    from esi.config import from_dict
    from esi.models.esi_model import ESIConfig

    fields = dict(cfg.model)
    fields.update(ecg_encoder=cfg.ecg_encoder, ecg_encoder_kwargs=dict(cfg.ecg_encoder_kwargs),
                  text_encoder=cfg.text_encoder, max_text_length=cfg.max_text_length)
    return from_dict(ESIConfig, fields, where="train_model")


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) pretraining as configured; returns where the model was saved and the last val metrics."""
    from esi.data.corpus import build_corpus
    from esi.data.datasets import ECGDataset
    from esi.data.tokens import tokenize_corpus
    from esi.models.esi_model import ESIModel

    ctx = dist.init_distributed()
    device = pick_device(cfg.device, ctx)
    amp_dtype = autocast_dtype(cfg.precision, device)
    run_dir = resolve(cfg.out_dir)
    ckpt_dir = run_dir / "checkpoints"
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    # -- data: rank 0 converts first, the others then open the finished store
    corpus_args = corpus_arguments(cfg, progress=cfg.progress and ctx.is_main)
    if ctx.is_main:
        corpus = build_corpus(**corpus_args)
    dist.barrier()
    if not ctx.is_main:
        corpus = build_corpus(**corpus_args)
    if ctx.is_main:
        print(f"[esi.train] corpus: {corpus.summary()}", flush=True)

    # -- model (same seed on every rank; DDP also broadcasts rank 0's weights)
    seed_everything(cfg.seed)
    model = ESIModel(model_config(cfg)).to(device)

    # -- tokens, once (rank 0 writes the cache)
    cache_dir = run_dir / "cache"
    if ctx.is_main:
        input_ids, lengths = tokenize_corpus(corpus.texts, model.tokenizer, cfg.max_text_length, cache_dir,
                                             progress=cfg.progress)
    dist.barrier()
    if not ctx.is_main:
        input_ids, lengths = tokenize_corpus(corpus.texts, model.tokenizer, cfg.max_text_length, cache_dir,
                                             progress=False)

    store = corpus.store
    crop = int(round(cfg.crop_seconds * store.fs)) if cfg.crop_seconds else None
    train_ecgs = ECGDataset(store, corpus.rows["train"], normalize=cfg.normalize, crop=crop, crop_mode="random",
                            augment=cfg.augment, seed=cfg.seed)
    val_ecgs = ECGDataset(store, corpus.rows["val"], normalize=cfg.normalize, crop=crop, crop_mode="center",
                          seed=cfg.seed)
    train_set = PairDataset(train_ecgs, input_ids, lengths)
    val_set = PairDataset(val_ecgs, input_ids, lengths)
    sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, ctx.rank, ctx.world_size, shuffle=True,
                                    seed=cfg.seed)
    if len(sampler) < cfg.grad_accum:
        raise ValueError(f"{len(train_set)} training pairs give {len(sampler)} batches of {cfg.batch_size} x "
                         f"{ctx.world_size} ranks: fewer than grad_accum={cfg.grad_accum}; lower the batch size")
    steps_per_epoch = len(sampler) // cfg.grad_accum

    # -- optimisation
    groups = model.param_groups(cfg.lr, cfg.text_lr, cfg.weight_decay)
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, cfg.epochs, cfg.warmup_epochs,
                                min_lr_factor=cfg.min_lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    # -- resume
    step, start_epoch, start_batch = 0, 0, 0
    resume_from = None
    if cfg.resume == "auto":
        resume_from = latest_checkpoint(ckpt_dir)
    elif cfg.resume not in ("none", ""):
        resume_from = resolve(cfg.resume)
        if not resume_from.exists():
            raise FileNotFoundError(f"train_resume: checkpoint not found: {resume_from}")
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
        set_rng_state(state["rng"])
        if ctx.is_main:
            print(f"[esi.train] resumed from {resume_from} (step {step}, epoch {start_epoch}, "
                  f"batch {start_batch})", flush=True)

    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    logger = MetricsLogger(run_dir, enabled=ctx.is_main, tensorboard=cfg.tensorboard,
                           resume_step=step if resume_from is not None else None)
    kill_at = int(os.environ.get("ESI_TEST_KILL_AT_STEP", "0"))   # tests: SIGKILL ourselves after this step

    def checkpoint(epoch: int, batch: int) -> None:
        if ctx.is_main:
            save_checkpoint(ckpt_dir, step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "batch": batch, "config": asdict(cfg),
            }, keep_last=cfg.keep_checkpoints)
        dist.barrier()

    val_metrics: dict = {}
    done = cfg.max_steps is not None and step >= cfg.max_steps
    net.train()
    from tqdm.auto import tqdm
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        first_batch = start_batch if epoch == start_epoch else 0
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, first_batch)
        loader = _loader(train_set, sampler, cfg.num_workers, pin=device.type == "cuda")
        bar = tqdm(total=steps_per_epoch, initial=first_batch // cfg.grad_accum, disable=not (cfg.progress and ctx.is_main),
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", dynamic_ncols=True)
        window_pairs, window_start = 0, time.perf_counter()
        running = {}
        for batch_index, batch in enumerate(loader, start=first_batch):
            check_finite_batch(batch, store)
            ecg = batch["ecg"].to(device, non_blocking=True)
            ids = batch["input_ids"].to(device, non_blocking=True)
            mask = batch["attention_mask"].to(device, non_blocking=True)
            boundary = (batch_index + 1) % cfg.grad_accum == 0
            sync = contextlib.nullcontext() if (boundary or not ctx.distributed) else net.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = net(ecg, ids, mask)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise NonFiniteBatchError(
                        f"non-finite loss {loss.item()} at step {step}, epoch {epoch}; batch records: "
                        f"{_records_of(store, batch['index'].numpy())}")
                scaler.scale(loss / cfg.grad_accum).backward()
            for key in ("loss", "contrastive_loss", "caption_loss"):
                running[key] = running.get(key, 0.0) + float(out[key].detach()) / cfg.grad_accum
            window_pairs += len(ecg) * ctx.world_size
            if not boundary:
                continue
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
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
                scheduler.step()
            step += 1
            elapsed = time.perf_counter() - window_start
            pairs_per_s = window_pairs / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{running['loss']:.3f}", pairs_s=f"{pairs_per_s:.0f}")
            if step % cfg.log_every == 0 or step == 1:
                # Every rank reaches this step together; log the mean over ranks, not rank 0's share.
                keys = sorted(running)
                means = dist.mean_over_ranks(torch.tensor([running[k] for k in keys], device=device))
                running = dict(zip(keys, means.tolist()))
                logger.log("train", step, epoch + (batch_index + 1) / len(sampler), {
                    **running, "lr": lr, "grad_norm": float(grad_norm),
                    "logit_scale": float(out["logit_scale"].detach()), "pairs_per_s": pairs_per_s,
                    **({"loss_scale": scaler.get_scale()} if scaler.is_enabled() else {})})
            running = {}
            window_pairs, window_start = 0, time.perf_counter()
            end_of_epoch = batch_index + 1 >= steps_per_epoch * cfg.grad_accum
            if step % cfg.checkpoint_every == 0 and not end_of_epoch:
                checkpoint(epoch, batch_index + 1)
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                done = True
                if not end_of_epoch and step % cfg.checkpoint_every != 0:
                    checkpoint(epoch, batch_index + 1)   # so a longer run can continue from here
                break
            if end_of_epoch:
                break
        bar.close()
        if not done or (batch_index + 1 >= steps_per_epoch * cfg.grad_accum):
            if len(val_set):
                val_metrics = validate(net, val_set, len(val_set), cfg.batch_size, ctx, device, amp_dtype,
                                       cfg.val_retrieval_pool)
                logger.log("val", step, epoch + 1, val_metrics)
                if ctx.is_main:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in val_metrics.items())
                    print(f"[esi.train] epoch {epoch + 1}: validation {shown}", flush=True)
            checkpoint(epoch + 1, 0)
    logger.close()

    model_dir = run_dir / "model"
    if ctx.is_main:
        model.save_pretrained(model_dir)
        preprocessing = {"fs": store.fs, "length": store.length, "seconds": cfg.seconds,
                         "crop_seconds": cfg.crop_seconds, "normalize": cfg.normalize, "leads": list(store.leads)}
        (model_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2))
        if cfg.caption_samples and len(val_set):
            write_caption_samples(model, val_set, min(cfg.caption_samples, len(val_set)), corpus, device,
                                  run_dir / "captions.jsonl")
        print(f"[esi.train] saved {model_dir}", flush=True)
    dist.barrier()
    return TrainResult(run_dir=run_dir, model_dir=model_dir, steps=step, val_metrics=val_metrics)


@torch.no_grad()
def write_caption_samples(model, val_set, n: int, corpus, device, path: Path) -> None:
    """Greedy captions of the first `n` validation ECGs next to their true texts (JSON lines)."""
    model.eval()
    batch = val_set[list(range(n))]
    captions = model.caption(batch["ecg"].to(device), max_new_tokens=min(48, model.config.max_text_length - 1))
    rows = batch["index"].numpy()
    with open(path, "w") as fh:
        for row, caption in zip(rows, captions):
            fh.write(json.dumps({"store_row": int(row),
                                 "record_id": str(corpus.store.index["record_id"].iloc[row]),
                                 "caption": caption, "text": corpus.texts[row]}) + "\n")


# --------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esi.train",
        description="ESI pretraining. Runs alone, under torchrun, or under SLURM (srun). Settings are the "
                    "train_* keys of the params files; see TrainConfig in esi/train.py for every one.")
    parser.add_argument("--config", "-f", action="append", default=[], metavar="YAML",
                        help="params file(s); later files override earlier ones")
    parser.add_argument("--set", "-p", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set epochs=3 (key without the train_ prefix)")
    return parser


def main(argv: Sequence[str] | None = None) -> TrainResult:
    args = build_parser().parse_args(argv)
    files = [resolve(f) for f in args.config]
    cfg = load_config(TrainConfig, files, [s.removeprefix("train_") for s in args.set], section="train")
    try:
        return train(cfg)
    finally:
        dist.destroy_distributed()


if __name__ == "__main__":
    main()
