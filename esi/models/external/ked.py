"""ECGFM-KED's ECG encoder (Tian et al., Cell Reports Medicine 2024; control-spiderman/ECGFM-KED): an xresnet1d101
of its own widths.

Weights: the `.pt` of its trainer (`main_mimiciv.py`; released on Zenodo 14881564), whose `"ecg_model"` entry is
the state_dict of `models/xresnet1d_101.xresnet1d101(input_channels=12, kernel_size=5)` without a head. Unlike the
PTB-XL benchmark's xresnet1d101 (esi.models.xresnet1d: 64 channels per stage), its stages have 64, 128, 128 and 192
bottleneck channels (x4: 256, 512, 512, 768 out). Each block registers its convolutions twice (`convs` and
`convpath.0`, one module under two names), so every block tensor appears under both keys, as here. Blocks per
stage are read from the keys. Features: the last stage averaged over time (768), the `ecg_features_pool` its
contrastive loss aligns with text (`engine/train_fg.py`).

Input (`dataset/ecgDataset.MimicivDataset`): MIMIC-IV-ECG records as stored (lead order I, II, III, aVR, aVF, aVL,
V1-V6), 10 s Fourier-resampled from 500 to 100 Hz (1,000 samples), NaN set to 0, no filter, no normalisation
(millivolts). Pretrained on MIMIC-IV-ECG.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from esi.data.leads import MIMIC_LEADS
from esi.models.external.checkpoint import load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.registry import EncoderOutput

# Pretrained on MIMIC-IV-ECG: the released .pt is main_mimiciv.py's (ECGFM-KED, Tian et al. 2024). The README's
# own pretraining recipe (main.py, at 02c97e5) reads the PTB-XL it prepares: such a model would overlap PTB-XL.
INPUT = InputSpec(fs=100.0, window_s=10.0, leads=MIMIC_LEADS, normalize="none", resample="fourier",
                  source="ECGFM-KED dataset/ecgDataset.py MimicivDataset", pretrained_on=("MIMIC-IV-ECG",))
STEM = (32, 32, 64)  # stem channels (kernel 5, the first with stride 2)
EXPANSION = 4


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv1d (no bias, padding (k-1)//2) -> BatchNorm (-> ReLU): keys `0.weight`, `1.*`."""
    layers = [nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
              nn.BatchNorm1d(out_channels)]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


class Bottleneck(nn.Module):
    """1x1 -> k (stride) -> 1x1 x4 convs, each with BN; identity: avg-pool (k2, ceil) when strided, then a 1x1
    conv + BN when the width changes; ReLU of the sum."""

    def __init__(self, in_channels: int, width: int, stride: int, kernel: int):
        super().__init__()
        out_channels = width * EXPANSION
        self.convs = nn.Sequential(conv_bn(in_channels, width, 1), conv_bn(width, width, kernel, stride=stride),
                                   conv_bn(width, out_channels, 1, relu=False))
        self.convpath = nn.Sequential(self.convs)  # the same module again: KED's checkpoints hold both names
        identity = [nn.AvgPool1d(2, ceil_mode=True)] if stride != 1 else []
        if in_channels != out_channels:
            identity.append(conv_bn(in_channels, out_channels, 1, relu=False))
        self.idpath = nn.Sequential(*identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.convs(x) + self.idpath(x))


class KEDXResNet1d(nn.Sequential):
    """Stem (3 conv-BN-ReLU), max-pool k3 s2, four bottleneck stages (the later three with stride 2); keys are
    the Sequential's indices as in KED's. x (B, 12, T) -> tokens (B, ceil(T/32), 768), pooled = their mean."""

    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...] = (64, 128, 128, 192), kernel: int = 5,
                 in_channels: int = 12):
        channels = (in_channels, *STEM)
        layers = [conv_bn(channels[i], channels[i + 1], 5, stride=2 if i == 0 else 1) for i in range(3)]
        layers.append(nn.MaxPool1d(3, stride=2, padding=1))
        previous = STEM[-1]
        for stage, (n_blocks, width) in enumerate(zip(blocks, widths)):
            stage_blocks = []
            for k in range(n_blocks):
                stage_blocks.append(Bottleneck(previous, width, 2 if stage and not k else 1, kernel))
                previous = width * EXPANSION
            layers.append(nn.Sequential(*stage_blocks))
        super().__init__(*layers)
        self.dim = previous

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        for layer in self:
            x = layer(x)
        return EncoderOutput(tokens=x.transpose(1, 2), pooled=x.mean(dim=-1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def build_from_keys(state: dict, label: str = "state_dict") -> KEDXResNet1d:
    """The KED xresnet1d whose blocks per stage and widths `state`'s keys describe (stages are Sequential
    indices 4-7).

    Raises:
        ValueError: not KED's xresnet1d keys, or a tensor that sets the sizes is missing (naming it).
    """
    if not any(re.match(r"4\.0\.convs\.", k) for k in state):
        raise ValueError(f"{label}: not an ECGFM-KED xresnet1d101 (expected 4.0.convs.* under 'ecg_model')")
    blocks = tuple(len({m.group(1) for k in state if (m := re.match(rf"{i}\.(\d+)\.", k))}) for i in range(4, 8))
    widths = tuple(required(state, f"{i}.0.convs.0.0.weight", "KEDXResNet1d", label).shape[0] for i in range(4, 8))
    kernel = required(state, "4.0.convs.1.0.weight", "KEDXResNet1d", label).shape[-1]
    return KEDXResNet1d(blocks, widths, kernel)


def load_ked(source) -> tuple[nn.Module, InputSpec]:
    """ECGFM-KED's ECG encoder from `source` (its `.pt`, whose "ecg_model" is read, or a state_dict), in eval mode,
    with its input.

    Raises:
        ValueError: not KED's xresnet1d, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("ecg_model",))
    module = build_from_keys(state, label)
    return load_strict(module, state, label).eval(), INPUT
