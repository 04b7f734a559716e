"""The pre-norm transformer block that MERL's and ST-MEM's ViTs share (both adapted from lucidrains'
vit-pytorch `vit_1d`), in their key layout: `attn.norm`, `attn.fn.to_qkv`, `attn.fn.to_out.0`, `ff.norm`,
`ff.fn.net.0`, `ff.fn.net.3`.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from esi.models.external.checkpoint import required

HEAD_DIM = 64  # channels per attention head: neither repository's model builders change it


class TransformerBlock(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)) with GELU; attention scaled by 1/sqrt(64)."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        inner = heads * HEAD_DIM
        self.heads = heads
        self.attn = nn.Module()
        self.attn.norm = nn.LayerNorm(width)
        self.attn.fn = nn.Module()
        self.attn.fn.to_qkv = nn.Linear(width, 3 * inner)
        self.attn.fn.to_out = nn.Sequential(nn.Linear(inner, width))
        self.ff = nn.Module()
        self.ff.norm = nn.LayerNorm(width)
        self.ff.fn = nn.Module()
        # Slots 2 and 4 of the reference's Sequential are dropouts (no weights); slot 3 keeps its index.
        self.ff.fn.net = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Identity(), nn.Linear(mlp_dim, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape
        q, k, v = self.attn.fn.to_qkv(self.attn.norm(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, n, self.heads, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.attn.fn.to_out(attended.transpose(1, 2).reshape(batch, n, -1))
        return x + self.ff.fn.net(self.ff.norm(x))


def vit_sizes(state: dict, label: str, family: str) -> tuple[int, int, int]:
    """(depth, heads, mlp_dim) of a ViT from its `block{i}.*` keys.

    Raises:
        ValueError: block0's attention or MLP weights are missing (naming `label` and the tensor).
    """
    qkv = required(state, "block0.attn.fn.to_qkv.weight", family, label).shape[0]
    mlp_dim = required(state, "block0.ff.fn.net.0.weight", family, label).shape[0]
    depth = len({m.group(1) for k in state if (m := re.match(r"block(\d+)\.", k))})
    return depth, qkv // 3 // HEAD_DIM, mlp_dim
