"""The two pretraining losses: ECG-text contrastive (InfoNCE) and captioning (next-token cross-entropy).

Contrastive negatives come from every rank by default. Each rank gathers all ranks' latents (with their
gradients) and scores its own rows against the whole global batch; its positives sit at its offset in
the gathered batch (labels = arange(local_batch) + rank offset). The original ESI code used per-GPU
negatives only, and the CoCa code it copied kept labels = arange(local_batch) even after gathering,
which points every rank but rank 0 at the wrong column. `local_loss=True` keeps the per-rank behaviour
for comparison runs.

The caption loss is a mean over the real tokens of the global batch: each rank divides its summed
cross-entropy by the mean token count over ranks, so texts of different lengths on different ranks weigh
as they would in one process.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from esi.models import distributed as dist

INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
MAX_LOGIT_SCALE = 100.0  # CLIP's cap: logits never scaled by more than 100


class ContrastiveOutput(NamedTuple):
    """loss: scalar, mean of the ECG->text and text->ECG cross-entropies over this rank's rows.
    logits_per_ecg: (local_batch, global_batch) this rank's ECGs scored against every text.
    logits_per_text: (local_batch, global_batch) this rank's texts scored against every ECG.
    labels: (local_batch,) the column of each row's positive.
    """

    loss: torch.Tensor
    logits_per_ecg: torch.Tensor
    logits_per_text: torch.Tensor
    labels: torch.Tensor


def logit_scale_value(log_scale: torch.Tensor, max_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """exp(log_scale) capped at `max_scale`; above the cap the gradient is zero, so it stops growing.

    log_scale: the learnable scalar (log of the inverse temperature).
    max_scale: the cap (CLIP uses 100).
    """
    return log_scale.exp().clamp(max=max_scale)


def contrastive_loss(
    ecg_latents: torch.Tensor,
    text_latents: torch.Tensor,
    logit_scale: torch.Tensor,
    local_loss: bool = False,
) -> ContrastiveOutput:
    """Symmetric InfoNCE between paired ECG and text latents.

    ecg_latents: (batch, latent) L2-normalised ECG latents of this rank; row i pairs with text row i.
    text_latents: (batch, latent) L2-normalised text latents of this rank.
    logit_scale: scalar multiplier of the cosine similarities (already exponentiated and clamped).
    local_loss: score against this rank's batch only (the original ESI behaviour) instead of the global
        batch gathered from all ranks. Irrelevant for a single process.

    Under DDP the mean over ranks of this loss equals the single-process loss on the concatenated batch,
    and, because DDP averages gradients, so do the gradients.
    """
    if ecg_latents.shape != text_latents.shape:
        raise ValueError(f"ECG latents {tuple(ecg_latents.shape)} and text latents "
                         f"{tuple(text_latents.shape)} must have the same shape")
    local_batch = ecg_latents.shape[0]
    if local_loss or dist.get_world_size() == 1:
        all_ecg, all_text, offset = ecg_latents, text_latents, 0
    else:
        sizes = dist.all_gather_sizes(local_batch, device=ecg_latents.device)
        # One collective for both: the latents are concatenated along the feature axis.
        both = dist.all_gather_with_grad(torch.cat([ecg_latents, text_latents], dim=1), sizes=sizes)
        all_ecg, all_text = both.split(ecg_latents.shape[1], dim=1)
        offset = sum(sizes[: dist.get_rank()])
    logits_per_ecg = logit_scale * ecg_latents @ all_text.T
    logits_per_text = logit_scale * text_latents @ all_ecg.T
    labels = torch.arange(local_batch, device=ecg_latents.device) + offset
    loss = (F.cross_entropy(logits_per_ecg, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    return ContrastiveOutput(loss, logits_per_ecg, logits_per_text, labels)


def caption_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor,
                 across_ranks: bool = True) -> torch.Tensor:
    """Next-token cross-entropy averaged over real (non-padding) target tokens.

    logits: (batch, length, vocab) the decoder's predictions, position t predicting target t.
    target_ids: (batch, length) the tokens to predict (the text shifted left by one).
    target_mask: (batch, length) 1 for real tokens, 0 for padding; padded positions add nothing.
    across_ranks: under DDP, divide this rank's summed loss by the mean real-token count of all ranks
        (one small all-reduce, no gradient) rather than by its own count. DDP averages the ranks'
        gradients, so every token of the global batch then weighs the same, exactly as in one process
        on the concatenated batch, whatever the text lengths on each rank. The value a rank returns is
        its share of the global mean (the mean over ranks is the global mean). Every rank must call this
        together. False: each rank averages its own tokens. Irrelevant for a single process.

    A batch whose targets are all padding gives NaN (there is nothing to average); tokenised texts always
    hold at least the end-of-text token, so this only happens with broken input.
    """
    if logits.shape[:2] != target_ids.shape or target_ids.shape != target_mask.shape:
        raise ValueError(f"caption logits {tuple(logits.shape)}, targets {tuple(target_ids.shape)} and mask "
                         f"{tuple(target_mask.shape)} do not line up")
    targets = target_ids.masked_fill(target_mask == 0, -100)
    summed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                             ignore_index=-100, reduction="sum")
    tokens = (target_mask != 0).sum().float()
    if across_ranks:
        tokens = dist.mean_over_ranks(tokens)
    return summed / tokens
