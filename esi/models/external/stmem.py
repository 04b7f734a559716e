"""ST-MEM's encoder (Na et al., ICLR 2024; bakqui/ST-MEM): a ViT over per-lead patches with lead embeddings.

Weights: `encoder.pth` holding `{"model": ...}` of ST_MEM_ViT (`models/encoder/st_mem_vit.py`; released as
ViT-B/75: width 768, 12 blocks, 12 heads, patch 75, 2,250 samples, 12 leads). Sizes are read from the keys:
width and patch from `to_patch_embedding.2.weight` (width, patch), patches from `pos_embedding`
(1, patches + 2, width), leads from `lead_embeddings.*`, depth/heads/MLP from the blocks (64 channels per head).
A fine-tuned `head` is dropped by name.

Each lead is cut into patches (LayerNorm -> Linear -> LayerNorm), given a position, framed by a SEP token on
each side (with the first and last positions) and given its lead's embedding; all leads' tokens go through the
blocks together; features = LayerNorm of the mean over leads and patches without the SEPs (`forward_encoding`).

Input (`configs/downstream/st_mem.yaml` eval_transforms, `util/dataset.py`, `engine_downstream.py`): Fourier
resampling to 250 Hz; 3 crops of 2,250 samples (9 s) equally spaced over the record; each crop high-passed at
0.67 Hz and low-passed at 40 Hz (5th-order Butterworth, zero-phase) and standardised over leads and samples;
the model's outputs for the crops are averaged (a linear head's average = the head of the mean feature, so the
features here are the crops' mean). Standard lead order. Pretrained on Chapman, Ningbo and CODE-15.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.external.checkpoint import drop_heads, load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.external.prepared import encode_crops
from esi.models.external.vit import TransformerBlock, vit_sizes
from esi.models.registry import EncoderOutput

# Pretrained on Chapman, Ningbo and CODE-15 (ST-MEM, Na et al., ICLR 2024); Chapman + Ningbo are CSN's records.
INPUT = InputSpec(fs=250.0, window_s=None, crop_s=9.0, crops=3, leads=STANDARD_LEADS, normalize="zscore_record",
                  filter="stmem", resample="fourier", source="ST-MEM configs/downstream/st_mem.yaml",
                  pretrained_on=("Chapman", "Ningbo", "CODE-15"))
HEADS = ("head",)


class STMEMViT(nn.Module):
    """x (B, leads, patches * patch), or (B, crops, leads, samples) -> tokens (B, [crops *] leads * patches,
    width) after the last block (SEPs removed), pooled = LayerNorm(mean over leads and patches) [mean of crops].
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, patch: int, patches: int, leads: int):
        super().__init__()
        # Slot 0 of the reference's Sequential is the reshape into patches (no weights).
        self.to_patch_embedding = nn.Sequential(nn.Identity(), nn.LayerNorm(patch), nn.Linear(patch, width),
                                                nn.LayerNorm(width))
        self.pos_embedding = nn.Parameter(torch.zeros(1, patches + 2, width))  # [left SEP, patches, right SEP]
        self.sep_embedding = nn.Parameter(torch.zeros(width))
        self.lead_embeddings = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(leads))
        for i in range(depth):
            self.add_module(f"block{i}", TransformerBlock(width, heads, mlp_dim))
        self.norm = nn.LayerNorm(width)
        self.depth, self.dim, self.patch, self.patches = depth, width, patch, patches

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        if x.ndim == 4:  # crops: encode each, average the pooled features
            return encode_crops(self.forward, x)
        batch, leads, length = x.shape
        if length != self.patch * self.patches or leads > len(self.lead_embeddings):
            raise ValueError(f"ST-MEM takes at most {len(self.lead_embeddings)} leads of {self.patch * self.patches} "
                             f"samples, got {leads} of {length}")
        n = self.patches
        tokens = self.to_patch_embedding(x.reshape(batch, leads, n, self.patch))  # (B, leads, n, width)
        tokens = tokens + self.pos_embedding[:, 1:n + 1].unsqueeze(1)
        sep = self.sep_embedding.expand(batch, leads, 1, self.dim)
        tokens = torch.cat([sep + self.pos_embedding[:, :1].unsqueeze(1), tokens,
                            sep + self.pos_embedding[:, -1:].unsqueeze(1)], dim=2)
        tokens = tokens + torch.stack(list(self.lead_embeddings[:leads]))[None, :, None, :]
        tokens = tokens.reshape(batch, leads * (n + 2), self.dim)
        for i in range(self.depth):
            tokens = getattr(self, f"block{i}")(tokens)
        tokens = tokens.reshape(batch, leads, n + 2, self.dim)[:, :, 1:-1]
        return EncoderOutput(tokens=tokens.reshape(batch, leads * n, self.dim),
                             pooled=self.norm(tokens.mean(dim=(1, 2))))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def build_from_keys(state: dict, label: str = "state_dict") -> STMEMViT:
    """The ST_MEM_ViT whose sizes `state`'s keys describe.

    Raises:
        ValueError: not ST-MEM keys, or a tensor that sets the sizes is missing (naming `label` and the tensor).
    """
    if "sep_embedding" not in state and not any(k.startswith("lead_embeddings.") for k in state):
        raise ValueError(f"{label}: not an ST-MEM encoder (expected sep_embedding and lead_embeddings.*)")
    width, patch = required(state, "to_patch_embedding.2.weight", "STMEMViT", label).shape
    patches = required(state, "pos_embedding", "STMEMViT", label).shape[1] - 2
    depth, heads, mlp_dim = vit_sizes(state, label, "STMEMViT")
    leads = len({m.group(1) for k in state if (m := re.match(r"lead_embeddings\.(\d+)$", k))})
    return STMEMViT(width=width, depth=depth, heads=heads, mlp_dim=mlp_dim, patch=patch, patches=patches,
                    leads=leads)


def load_stmem(source) -> tuple[nn.Module, InputSpec]:
    """ST-MEM's encoder from `source` (its `encoder.pth`, or a state_dict), in eval mode, with its input.

    Raises:
        ValueError: not an ST-MEM encoder, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("model",))
    state = drop_heads(state, HEADS)
    module = build_from_keys(state, label)
    if len(module.lead_embeddings) != len(INPUT.leads):
        raise ValueError(f"{label}: an ST-MEM encoder with {len(module.lead_embeddings)} lead embeddings; the "
                         f"adapter feeds {len(INPUT.leads)} leads")
    return load_strict(module, state, label).eval(), INPUT
