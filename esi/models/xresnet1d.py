"""xresnet1d101, the strongest supervised model of the PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021).

    x (B, 12, T)
    stem: 3 x (Conv1d k5 -> BN -> ReLU), 12 -> 32 -> 32 -> 64, the first with stride 2   (B, 64, T/2)
    max-pool k3 s2                                                                       (B, 64, T/4)
    stage 1: bottlenecks, stride 1                                                       (B, 256, T/4)
    stages 2-4: bottlenecks, the first with stride 2                                     (B, 256, T/32)
    tokens = last stage (B, T/32, 256); pooled = mean over time (B, 256)

Every stage has 64 bottleneck channels and expansion 4, so every stage outputs 256 channels. As in the
benchmark's code, the identity path of a block holds an average pool (k2 s2) when the block strides and a
1x1 conv + BN when the channel count changes (only the first block of stage 1: 64 -> 256), and the last BN
of every residual branch starts at zero so each block starts as the identity. Every stride rounds up
(ceil), so any length >= 1 works and n_tokens = ceil(T / 32).
The benchmark's classification head (concat pooling, BN/Dropout/Linear) is left to the caller.
"""

from __future__ import annotations

import torch
from torch import nn

from esi.models.registry import EncoderOutput


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True,
            zero_bn: bool = False) -> nn.Sequential:
    """Conv1d (no bias, 'same' padding) -> BatchNorm (-> ReLU). zero_bn starts the BN's scale at 0."""
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    bn = nn.BatchNorm1d(out_channels)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    nn.init.constant_(bn.bias, 1e-3)  # the benchmark's (fastai's) BN bias initialisation
    layers = [conv, bn] + ([nn.ReLU(inplace=True)] if relu else [])
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 conv -> k conv (with the stride) -> 1x1 conv, each with BN, plus the identity path; then ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1,
                 kernel_size: int = 5):
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn(in_channels, mid_channels, 1),
            conv_bn(mid_channels, mid_channels, kernel_size, stride=stride),
            conv_bn(mid_channels, out_channels, 1, relu=False, zero_bn=True),
        )
        identity = []
        if stride != 1:
            identity.append(nn.AvgPool1d(stride, ceil_mode=True))  # ceil like the strided conv's output
        if in_channels != out_channels:
            identity.append(conv_bn(in_channels, out_channels, 1, relu=False))
        self.identity = nn.Sequential(*identity)  # empty Sequential = identity
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.identity(x))


class XResNet1d(nn.Module):
    """1D xresnet with bottleneck blocks, as in the PTB-XL benchmark.

    layers: bottleneck blocks per stage; (3, 4, 23, 3) is xresnet1d101.
    in_channels: leads in the input (12).
    stem_channels: output channels of the three stem convs.
    width: bottleneck (middle) channels of every stage.
    expansion: a stage outputs width * expansion channels; `dim` = 256 by default.
    kernel_size: kernel of the stem convs and of the middle conv of every bottleneck.
    """

    def __init__(self, layers=(3, 4, 23, 3), in_channels: int = 12, stem_channels=(32, 32, 64), width: int = 64,
                 expansion: int = 4, kernel_size: int = 5):
        super().__init__()
        self.in_channels = in_channels
        self.layers = tuple(layers)
        self.dim = width * expansion
        self.reduction = 2 * 2 * 2 ** (len(layers) - 1)  # stem stride, max-pool, one stride 2 per later stage

        sizes = [in_channels, *stem_channels]
        stem_convs = [conv_bn(sizes[i], sizes[i + 1], kernel_size, stride=2 if i == 0 else 1)
                      for i in range(len(stem_channels))]
        self.stem = nn.Sequential(*stem_convs, nn.MaxPool1d(kernel_size=3, stride=2, padding=1))
        self.stages = nn.ModuleList()
        channels = stem_channels[-1]
        for i, n_blocks in enumerate(layers):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Bottleneck(channels, width, self.dim, stride=stride, kernel_size=kernel_size))
                channels = self.dim
            self.stages.append(nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """x: (batch, in_channels, time) -> EncoderOutput(tokens (B, n_tokens, dim), pooled (B, dim))."""
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            time_first = x.ndim == 3 and x.shape[2] == self.in_channels
            hint = "; it looks time-first: pass x.transpose(1, 2)" if time_first else ""
            raise ValueError(f"expected ECGs of shape (batch, {self.in_channels}, time), got {tuple(x.shape)}{hint}")
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        # x: (B, dim, n_tokens)
        return EncoderOutput(tokens=x.transpose(1, 2), pooled=x.mean(dim=-1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in_channels, time) -> pooled features (batch, dim)."""
        return self.forward(x).pooled
