"""Validation after each epoch (loss over every rank's share, ECG->text recall@k) and the final caption samples.

Reading a run back: `validation_table(metrics.csv)` (recall@k against chance), `read_captions(captions.jsonl)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from esi.train.sampling import ResumableBatchSampler


def unwrap(model):
    """The bare model inside DDP and/or torch.compile wrappers."""
    model = getattr(model, "module", model)          # DDP
    return getattr(model, "_orig_mod", model)       # torch.compile


@torch.no_grad()
def retrieval_recall(ecg_latents: torch.Tensor, text_latents: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """ECG->text recall@k for paired rows: the fraction of ECGs whose own text ranks in the top k.

    Latents are L2-normalised inside. Chance level of recall@k is k / n.
    """
    e = torch.nn.functional.normalize(ecg_latents.float(), dim=-1)
    t = torch.nn.functional.normalize(text_latents.float(), dim=-1)
    sims = e @ t.T                                             # (n, n)
    own = sims.diagonal().unsqueeze(1)
    # rank = number of texts scored strictly higher than the true one (ties count in the ECG's favour)
    rank = (sims > own).sum(dim=1)
    n = sims.shape[0]
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks if k <= n}


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


def validation_table(metrics):
    """The last validation row of a metrics table: each ECG->text recall@k next to its chance level k / pool."""
    import pandas as pd

    table = metrics if isinstance(metrics, pd.DataFrame) else pd.read_csv(metrics)
    val = table[table["split"] == "val"]
    if val.empty:
        raise ValueError("no validation row in the metrics: the run has no validation pairs or no finished epoch")
    last = val.iloc[-1]
    pool = float(last.get("retrieval_pool", float("nan")))
    rows = []
    for k in (1, 5, 10):
        key = f"recall@{k}"
        if key in last and pd.notna(last[key]):
            rows.append((key, float(last[key]), min(1.0, k / pool), float(last[key]) / min(1.0, k / pool)))
    out = pd.DataFrame(rows, columns=["metric", "value", "chance", "x chance"]).set_index("metric")
    out.attrs["epoch"], out.attrs["pool"] = float(last["epoch"]), pool
    return out


def read_captions(path: str | os.PathLike) -> list[dict]:
    """The caption samples esi.train wrote (captions.jsonl: store_row, record_id, caption, text)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no caption samples; train_caption_samples must be > 0 and the run must "
                                "have validation pairs")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{path} line {number}: not JSON ({err})") from None
    return rows
