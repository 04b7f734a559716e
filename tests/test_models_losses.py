"""The contrastive and caption losses on their own (single process; the multi-process case is in
test_dist_gloo.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from esi.models.losses import (INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, caption_loss, contrastive_loss,
                               logit_scale_value)


def unit_rows(batch: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)


def test_aligned_pairs_give_lower_loss_than_shuffled_pairs():
    ecg = unit_rows(8, 32, seed=0)
    text_aligned = ecg.clone()
    text_shuffled = ecg[torch.roll(torch.arange(8), 1)]
    scale = torch.tensor(1 / 0.07)

    aligned = contrastive_loss(ecg, text_aligned, scale).loss
    shuffled = contrastive_loss(ecg, text_shuffled, scale).loss

    assert aligned < 0.1 < shuffled


def test_loss_is_symmetric_in_ecg_and_text():
    ecg, text = unit_rows(6, 16, seed=1), unit_rows(6, 16, seed=2)
    scale = torch.tensor(10.0)

    forward = contrastive_loss(ecg, text, scale)
    swapped = contrastive_loss(text, ecg, scale)

    torch.testing.assert_close(forward.loss, swapped.loss)
    torch.testing.assert_close(forward.logits_per_ecg, swapped.logits_per_text)


def test_single_process_loss_is_mean_of_both_cross_entropies_with_diagonal_labels():
    ecg, text = unit_rows(5, 16, seed=3), unit_rows(5, 16, seed=4)
    scale = torch.tensor(20.0)

    out = contrastive_loss(ecg, text, scale)

    logits = scale * ecg @ text.T
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert out.labels.tolist() == list(range(5))
    torch.testing.assert_close(out.loss, expected)


def test_logit_scale_starts_at_clip_temperature_and_is_capped_at_100():
    initial = logit_scale_value(torch.tensor(INIT_LOGIT_SCALE))
    torch.testing.assert_close(initial, torch.tensor(1 / 0.07))

    too_large = torch.tensor(math.log(1000.0), requires_grad=True)
    capped = logit_scale_value(too_large)
    capped.backward()
    assert capped.item() == pytest.approx(MAX_LOGIT_SCALE)
    assert too_large.grad.item() == 0.0  # above the cap it stops growing


def test_caption_loss_ignores_padding_positions():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 10, generator=generator)
    targets = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])

    loss = caption_loss(logits, targets, mask)

    # Anything at padded positions changes nothing.
    scrambled = logits.clone()
    scrambled[0, 3] = 100.0
    scrambled[1, 2:] = -100.0
    torch.testing.assert_close(caption_loss(scrambled, targets, mask), loss)
    # And the value is the mean over the five real tokens.
    real = mask.bool()
    torch.testing.assert_close(loss, F.cross_entropy(logits[real], targets[real]))


def test_mismatched_latent_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(unit_rows(4, 8, 0), unit_rows(3, 8, 1), torch.tensor(1.0))
