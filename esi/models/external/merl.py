"""MERL's ECG encoders (Liu et al., ICML 2024; cheliu-computation/MERL-ICML2024, MIT): 1D ResNet and ViT.

Weights: the trainer saves the ECG encoder alone as a plain state_dict (`*_best_encoder.pth`,
`*_final_encoder.pth`: `utils/utils_trainer.py`). The architecture is recognised from the keys:
- ResNet (`utils/resnet1d.py`): `layer1.0.conv1.weight` ...; BasicBlock (ResNet18/34) or Bottleneck
  (`conv3`, ResNet50/101), blocks per stage counted from the keys. Features: layer4 averaged over time
  (512 for ResNet18), what MERL's linear probe reads. The encoder's `linear` (a 10-class layer its
  pretraining never uses) is dropped by name.
- ViT (`utils/vit1d.py`): `to_patch_embedding.weight` (width, 12, patch), `pos_embedding` (1, patches, width),
  `block{i}.*`; every MERL ViT has 64 channels per head (esi.models.external.vit). Features: `forward_encoding`
  = mean of the tokens, then LayerNorm (192 for ViT-tiny). A fine-tuned `head` is dropped by name.

Input (`finetune/finetune_dataset.py`, PTB-XL branch): 500 Hz, the first 5,000 samples, one min-max over all
leads and samples (+1e-8), then aVL and aVF swapped into MIMIC-IV-ECG's order (I, II, III, aVR, aVF, aVL, V1-V6).
A shorter record is zero-padded to 5,000 before the min-max (its CPSC2018 branch). Pretrained on MIMIC-IV-ECG.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from esi.data.leads import MIMIC_LEADS
from esi.models.external.checkpoint import drop_heads, load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.external.vit import TransformerBlock, vit_sizes
from esi.models.registry import EncoderOutput

# Pretrained on MIMIC-IV-ECG alone: MERL (arXiv 2403.06659) and its README ("We pre-trained MERL on MIMIC-IV-ECG").
INPUT = InputSpec(fs=500.0, window_s=10.0, leads=MIMIC_LEADS, normalize="minmax_record",
                  source="MERL-ICML2024 finetune/finetune_dataset.py", pretrained_on=("MIMIC-IV-ECG",))
HEADS = ("linear", "head")  # ResNet's unused 10-class layer; a ViT's fine-tuning head


class ResidualBlock(nn.Module):
    """MERL's ResNet block: two k3 convs (basic) or 1-3-1 convs x4 (bottleneck), each with BN; the shortcut is a
    1x1 conv + BN when the stride or the width changes. The stride sits on the k3 conv."""

    def __init__(self, in_channels: int, width: int, stride: int, bottleneck: bool):
        super().__init__()
        self.bottleneck = bottleneck
        out_channels = width * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv1d(in_channels, width, 1, bias=False)
            self.conv2 = nn.Conv1d(width, width, 3, stride=stride, padding=1, bias=False)
            self.conv3 = nn.Conv1d(width, out_channels, 1, bias=False)
            self.bn3 = nn.BatchNorm1d(out_channels)
        else:
            self.conv1 = nn.Conv1d(in_channels, width, 3, stride=stride, padding=1, bias=False)
            self.conv2 = nn.Conv1d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.bn2 = nn.BatchNorm1d(width)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm1d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(F.relu(out)))
        return F.relu(out + self.shortcut(x))


class MERLResNet(nn.Module):
    """Stem (k7 s2 conv, BN, ReLU; no max-pool) and four stages of widths 64-512, the later three with stride 2.

    x (B, 12, T) -> tokens = layer4 (B, ceil(T/16), dim), pooled = their mean (dim = 512, x4 for bottlenecks).
    """

    def __init__(self, blocks: tuple[int, ...], bottleneck: bool, in_channels: int = 12):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm1d(64)
        channels = 64
        for stage, (n_blocks, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for k in range(n_blocks):
                layers.append(ResidualBlock(channels, width, 2 if stage and not k else 1, bottleneck))
                channels = width * (4 if bottleneck else 1)
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))
        self.dim = channels
        self.blocks = tuple(blocks)
        self.bottleneck = bottleneck

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return EncoderOutput(tokens=x.transpose(1, 2), pooled=x.mean(dim=-1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


class MERLViT(nn.Module):
    """Non-overlapping conv patches (no bias) + learned positions, pre-norm blocks, mean of tokens, LayerNorm.

    x (B, 12, patches * patch) -> tokens (B, patches, width) after the last block, pooled = LayerNorm(mean).
    The learned positions fix the length: 5,000 samples for MERL's checkpoints.
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, patch: int, patches: int,
                 in_channels: int = 12):
        super().__init__()
        self.to_patch_embedding = nn.Conv1d(in_channels, width, patch, stride=patch, bias=False)
        self.pos_embedding = nn.Parameter(torch.zeros(1, patches, width))
        for i in range(depth):
            self.add_module(f"block{i}", TransformerBlock(width, heads, mlp_dim))
        self.norm = nn.LayerNorm(width)
        self.depth, self.dim, self.patch, self.patches = depth, width, patch, patches

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        if x.shape[-1] != self.patch * self.patches:
            raise ValueError(f"MERL ViT takes {self.patch * self.patches} samples (its learned positions), "
                             f"got {x.shape[-1]}")
        x = self.to_patch_embedding(x).transpose(1, 2) + self.pos_embedding
        for i in range(self.depth):
            x = getattr(self, f"block{i}")(x)
        return EncoderOutput(tokens=x, pooled=self.norm(x.mean(dim=1)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def _count(state: dict, pattern: str) -> int:
    """How many distinct indices `(\\d+)` in `pattern` the keys hold."""
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def build_from_keys(state: dict, label: str = "state_dict") -> nn.Module:
    """The MERL encoder (ResNet or ViT) whose architecture `state`'s keys and shapes describe.

    Raises:
        ValueError: the keys are of neither MERL encoder, or a tensor that sets the sizes is missing (naming
            `label` and the tensor).
    """
    if any(k.startswith("layer1.") for k in state):
        blocks = tuple(_count(state, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
        return MERLResNet(blocks, bottleneck=any(k.startswith("layer1.0.conv3.") for k in state))
    if "pos_embedding" in state or any(k.startswith("block0.") for k in state):
        width, _, patch = required(state, "to_patch_embedding.weight", "MERLViT", label).shape  # 12 leads: checked
        depth, heads, mlp_dim = vit_sizes(state, label, "MERLViT")
        patches = required(state, "pos_embedding", "MERLViT", label).shape[1]
        return MERLViT(width=width, depth=depth, heads=heads, mlp_dim=mlp_dim, patch=patch, patches=patches)
    raise ValueError(f"{label}: not a MERL ECG encoder (expected layer1.* for its ResNet or pos_embedding and "
                     "block0.* for its ViT)")


def load_merl(source) -> tuple[nn.Module, InputSpec]:
    """MERL's ECG encoder from `source` (a `*_encoder.pth` path or its state_dict), in eval mode, with its input.

    Raises:
        ValueError: not a MERL encoder, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source)
    state = drop_heads(state, HEADS)
    module = build_from_keys(state, label)
    return load_strict(module, state, label).eval(), INPUT
