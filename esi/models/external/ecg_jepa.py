"""ECG-JEPA's encoder (Kim 2024, arXiv 2410.08559; sehunfromdaegu/ECG_JEPA, MIT).

Weights: the `.pth` of its README's Google Drive links (random or multi-block masking), holding the encoder's
state_dict under "encoder" (`models.load_encoder`; released at width 768, 12 blocks, 16 heads). A transformer
over patches of 50 samples of each of 8 leads (`ecg_jepa.MaskTransformer`): `W_P` embeds each patch, the
position table `pos_embed` (leads * patches, width; fixed sin-cos in the release, stored in the state_dict) is
added before every block, and attention is restricted to tokens of the same lead or the same time patch (its
`_cross_attention_mask`). Sizes are read from the keys: width and patch from `W_P.weight`, leads from
`pos_embed` (50 patches of 2,500 samples, as `representation` asserts), depth and MLP from the blocks; heads =
width / 48 (the release's 768 / 16; no key holds it). No head to drop.

Features (`MaskTransformer.representation`, what `linear_probe_utils.precompute_features` probes): the final
LayerNorm's tokens averaged over leads and patches (768).

Input (`ecg_data.waves_ptbxl` and `waves_cpsc`, `get_ecg_data`): the first 10 s at 500 Hz, Fourier-resampled
to 2,500 samples (250 Hz), leads I, II, V1-V6, in millivolts: no filter, no normalisation. Pretrained on
PhysioNet ecg-arrhythmia 1.0.0 (Chapman-Shaoxing and Ningbo: the CSN data) and CODE-15 (README, "Pretraining").
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from esi.models.external.checkpoint import load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.registry import EncoderOutput

INPUT = InputSpec(fs=250.0, window_s=10.0, leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"), normalize="none",
                  resample="fourier", source="ECG_JEPA ecg_data.py waves_ptbxl / get_ecg_data",
                  pretrained_on=("Chapman", "Ningbo", "CODE-15"))
HEAD_DIM = 48  # channels per attention head: models.load_encoder builds width 768 with 16 heads
PATCHES = 50  # patches per lead: representation() takes 2,500 samples in patches of 50
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the reference uses


class JEPABlock(nn.Module):
    """timm-style pre-norm block in ECG-JEPA's key layout: x + attn(norm1(x), mask), then x + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, mlp_dim: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.attn.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(width, mlp_dim)
        self.mlp.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, n, width = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(batch, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.attn.proj(attended.transpose(1, 2).reshape(batch, n, width))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ECGJEPAEncoder(nn.Module):
    """x (B, leads, patches * patch) -> tokens (B, leads * patches, width) after the final LayerNorm, pooled =
    their mean."""

    def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, patch: int, leads: int, qkv_bias: bool):
        super().__init__()
        self.W_P = nn.Linear(patch, width)
        self.pos_embed = nn.Parameter(torch.zeros(leads * PATCHES, width), requires_grad=False)
        self.encoder_blocks = nn.Module()
        self.encoder_blocks.blocks = nn.ModuleList(JEPABlock(width, heads, mlp_dim, qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.dim, self.patch, self.leads = width, patch, leads
        self.register_buffer("allowed", self.cross_attention_mask(leads), persistent=False)

    @staticmethod
    def cross_attention_mask(leads: int) -> torch.Tensor:
        """(leads * patches)^2 booleans: token i may attend to token j if both are of one lead or one patch."""
        lead = torch.arange(leads * PATCHES) // PATCHES
        patch = torch.arange(leads * PATCHES) % PATCHES
        return (lead[:, None] == lead[None, :]) | (patch[:, None] == patch[None, :])

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        batch, leads, length = x.shape
        if leads != self.leads or length != PATCHES * self.patch:
            raise ValueError(f"ECG-JEPA takes {self.leads} leads of {PATCHES * self.patch} samples, got {leads} of "
                             f"{length}")
        tokens = self.W_P(x.reshape(batch, leads * PATCHES, self.patch))
        for block in self.encoder_blocks.blocks:
            tokens = block(tokens + self.pos_embed, self.allowed)
        tokens = self.norm(tokens)
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def build_from_keys(state: dict, label: str = "state_dict") -> ECGJEPAEncoder:
    """The MaskTransformer whose sizes `state`'s keys describe.

    Raises:
        ValueError: not ECG-JEPA keys, or a tensor that sets the sizes is missing (naming `label` and the tensor).
    """
    if "W_P.weight" not in state and not any(k.startswith("encoder_blocks.") for k in state):
        raise ValueError(f"{label}: not an ECG-JEPA encoder (expected W_P.* and encoder_blocks.*)")
    width, patch = required(state, "W_P.weight", "ECGJEPAEncoder", label).shape
    positions = required(state, "pos_embed", "ECGJEPAEncoder", label).shape[0]
    mlp_dim = required(state, "encoder_blocks.blocks.0.mlp.fc1.weight", "ECGJEPAEncoder", label).shape[0]
    depth = len({m.group(1) for k in state if (m := re.match(r"encoder_blocks\.blocks\.(\d+)\.", k))})
    if width % HEAD_DIM or positions % PATCHES:
        raise ValueError(f"{label}: an ECG-JEPA encoder of width {width} and {positions} positions; the adapter "
                         f"knows {HEAD_DIM} channels per head and {PATCHES} patches per lead")
    return ECGJEPAEncoder(width=width, depth=depth, heads=width // HEAD_DIM, mlp_dim=mlp_dim, patch=patch,
                          leads=positions // PATCHES, qkv_bias="encoder_blocks.blocks.0.attn.qkv.bias" in state)


def load_ecg_jepa(source) -> tuple[nn.Module, InputSpec]:
    """ECG-JEPA's encoder from `source` (its `.pth`, or a state_dict), in eval mode, with its input.

    Raises:
        ValueError: not an ECG-JEPA encoder, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("encoder",))
    module = build_from_keys(state, label)
    if module.leads != len(INPUT.leads) or module.patch * PATCHES != INPUT.n_samples:
        raise ValueError(f"{label}: an ECG-JEPA encoder of {module.leads} leads x {module.patch * PATCHES} samples; "
                         f"the adapter feeds {len(INPUT.leads)} x {INPUT.n_samples}")
    return load_strict(module, state, label).eval(), INPUT
