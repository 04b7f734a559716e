"""ECGFounder's encoder (Li et al. 2025; PKUDigitalHealth/ECGFounder): Net1D, a 1D RegNet-like CNN.

Weights: a `.pth` holding `{"state_dict": ...}` of Net1D (`net1d.py`), built by `finetune_model.py` with
in_channels 12, base_filters 64, filter_list (64, 160, 160, 400, 400, 1024, 1024), m_blocks_list
(2, 2, 2, 3, 3, 4, 4), kernel_size 16, stride 2, groups_width 16, ratio 1, use_bn=False, use_do=False. The widths,
block counts and kernel are read from the keys; the stride (2) and use_bn=False are that builder's settings.
Dropped by name: `dense.*` (its 150-class head, which its fine-tuning code drops too) and the BatchNorm tensors
(`first_bn`, `bn1`-`bn3`) that Net1D always creates but use_bn=False never applies.
Features: the last stage averaged over time (1024), Net1D's `deep_features`.

Input (`dataset.py`, which its README says must be followed): 500 Hz, 10 s (5,000 samples), standard lead order
(its loader reorders MIMIC-ordered files into I, II, III, aVR, aVL, aVF, V1-V6), `util.filter_bandpass`
(50 Hz notch, 0.67-40 Hz band-pass, minus a 0.4 s median baseline), then one z-score over all leads and samples
(+1e-8). Pretrained on HEEDB (Harvard-Emory ECG Database).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.external.checkpoint import load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.registry import EncoderOutput

# Pretrained on the Harvard-Emory ECG Database (HEEDB): ECGFounder (Li et al., arXiv 2410.04133), its data section.
INPUT = InputSpec(fs=500.0, window_s=10.0, leads=STANDARD_LEADS, normalize="zscore_record", filter="ecgfounder",
                  source="ECGFounder dataset.py, util.filter_bandpass", pretrained_on=("HEEDB",))
HEAD = "dense"  # the 150-label classifier
UNUSED_BATCHNORM = re.compile(r"(^first_bn|\.bn[123])\.")  # created by Net1D, never applied with use_bn=False
STRIDE = 2  # every stage downsamples by 2 (finetune_model.py)
GROUP_WIDTH = 16  # channels per group of the k-conv: out_channels // groups_width groups


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad the time axis so a conv of `kernel`/`stride` gives ceil(T / stride) outputs (the extra sample on
    the right), as Net1D's MyConv1dPadSame and MyMaxPool1dPadSame do."""
    length = x.shape[-1]
    total = max(0, (-(-length // stride) - 1) * stride + kernel - length)
    return F.pad(x, (total // 2, total - total // 2))


class SameConv(nn.Module):
    """Conv1d with 'same' zero padding (key layout `<name>.conv.weight`, as Net1D's)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(same_pad(x, self.conv.kernel_size[0], self.conv.stride[0]))


class Block(nn.Module):
    """swish -> 1x1 conv -> swish -> grouped k conv (stride) -> swish -> 1x1 conv, squeeze-excitation gate, plus
    the identity (max-pooled when the block strides, zero channels added on both sides when it widens). The very
    first block of the network starts at its first conv (no swish before it)."""

    def __init__(self, in_channels: int, out_channels: int, middle: int, kernel: int, stride: int, groups: int,
                 first: bool):
        super().__init__()
        self.conv1 = SameConv(in_channels, middle, 1)
        self.conv2 = SameConv(middle, middle, kernel, stride=stride, groups=groups)
        self.conv3 = SameConv(middle, out_channels, 1)
        self.se_fc1 = nn.Linear(out_channels, out_channels // 2)
        self.se_fc2 = nn.Linear(out_channels // 2, out_channels)
        self.stride, self.first = stride, first
        self.widen = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x if self.first else F.silu(x))
        out = self.conv3(F.silu(self.conv2(F.silu(out))))
        gate = torch.sigmoid(self.se_fc2(F.silu(self.se_fc1(out.mean(dim=-1)))))
        out = out * gate[..., None]
        if self.stride > 1:
            # Net1D pads with zeros (not -inf) before the max-pool: an odd length's last window sees a 0.
            x = F.max_pool1d(same_pad(x, self.stride, self.stride), self.stride)
        if self.widen:
            x = F.pad(x.transpose(1, 2), (self.widen // 2, self.widen - self.widen // 2)).transpose(1, 2)
        return out + x


class Net1D(nn.Module):
    """First conv (stride 2, swish), then stages of blocks, the first block of each with stride 2.

    x (B, 12, T) -> tokens = last stage (B, T / 2^(1 + stages), dim), pooled = their mean (dim = last width).
    """

    def __init__(self, base_filters: int, widths: tuple[int, ...], blocks: tuple[int, ...], kernel: int,
                 first_kernel: int, middles: tuple[int, ...], in_channels: int = 12):
        super().__init__()
        self.first_conv = SameConv(in_channels, base_filters, first_kernel, stride=2)
        self.stage_list = nn.ModuleList()
        channels = base_filters
        for stage, (width, n_blocks, middle) in enumerate(zip(widths, blocks, middles)):
            stage_module = nn.Module()
            stage_module.block_list = nn.ModuleList(
                Block(channels if k == 0 else width, width, middle, kernel, STRIDE if k == 0 else 1,
                      width // GROUP_WIDTH, first=stage == 0 and k == 0) for k in range(n_blocks))
            self.stage_list.append(stage_module)
            channels = width
        self.dim = channels

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        x = F.silu(self.first_conv(x))
        for stage in self.stage_list:
            for block in stage.block_list:
                x = block(x)
        return EncoderOutput(tokens=x.transpose(1, 2), pooled=x.mean(dim=-1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def build_from_keys(state: dict, label: str = "state_dict") -> Net1D:
    """The Net1D whose widths, block counts and kernels `state`'s keys describe.

    Raises:
        ValueError: not Net1D keys, or a tensor that sets the sizes is missing (naming `label` and the tensor).
    """
    if not any(k.startswith("stage_list.") for k in state):
        raise ValueError(f"{label}: not an ECGFounder Net1D (expected stage_list.* and first_conv.conv.weight)")
    stages = sorted({int(m.group(1)) for k in state if (m := re.match(r"stage_list\.(\d+)\.", k))})
    widths, blocks, middles = [], [], []
    for s in range(max(stages) + 1):
        first_block = f"stage_list.{s}.block_list.0"
        widths.append(required(state, f"{first_block}.conv3.conv.weight", "Net1D", label).shape[0])
        middles.append(required(state, f"{first_block}.conv1.conv.weight", "Net1D", label).shape[0])
        blocks.append(len({m.group(1) for k in state if (m := re.match(rf"stage_list\.{s}\.block_list\.(\d+)\.", k))}))
    first = required(state, "first_conv.conv.weight", "Net1D", label)
    kernel = required(state, "stage_list.0.block_list.0.conv2.conv.weight", "Net1D", label).shape[-1]
    return Net1D(base_filters=first.shape[0], widths=tuple(widths), blocks=tuple(blocks), kernel=kernel,
                 first_kernel=first.shape[-1], middles=tuple(middles))


def load_ecgfounder(source) -> tuple[nn.Module, InputSpec]:
    """ECGFounder's Net1D from `source` (its `.pth`, or a state_dict), in eval mode, with its input.

    Raises:
        ValueError: not a Net1D checkpoint, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("state_dict",))
    # A BatchNorm that ever ran in training counted its batches: then this Net1D applied BatchNorm, and
    # dropping its tensors would change the model.
    used = [k for k, v in state.items() if UNUSED_BATCHNORM.search(k) and k.endswith("num_batches_tracked")
            and int(v.max()) > 0]
    if used:
        raise ValueError(f"{label}: {used[0]} = {int(state[used[0]].max())}: this Net1D was trained with BatchNorm "
                         "(use_bn=True), which ECGFounder's release does not use; not supported")
    state = {k: v for k, v in state.items()
             if not (k == HEAD or k.startswith(HEAD + ".") or UNUSED_BATCHNORM.search(k))}
    module = build_from_keys(state, label)
    return load_strict(module, state, label).eval(), INPUT
