"""1D ConvNeXt V2 ECG encoder (Woo et al., "ConvNeXt V2", CVPR 2023), laid out like the original ESI's.

    x (B, 12, T)
    stem: Conv1d k4 s4 -> norm                       (B, d0, T/4)
    stage 0: blocks(d0)
    down: norm -> Conv1d k2 s2, stage 1: blocks(d1)  (B, d1, T/8)
    down: norm -> Conv1d k2 s2, stage 2: blocks(d2)  (B, d2, T/16)
    down: norm -> Conv1d k2 s2, stage 3: blocks(d3)  (B, d3, T/32)
    tokens = last stage (B, T/32, d3); pooled = LayerNorm(mean over time) (B, d3)

Block: depthwise conv k7 -> LayerNorm -> Linear 4x -> GELU -> GRN -> Linear -> residual (+ drop path).

The parameter names (downsample_layers.i.j, stages.s.b.*, norm) are the original ESI encoder's, so its
checkpoint loads into `ConvNeXtV2Encoder(downsample_norm="time", remainder="drop")` unchanged (see
esi.models.original).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esi.models.registry import EncoderOutput

DOWNSAMPLE_NORMS = ("channel", "time")
REMAINDERS = ("pad", "drop")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, T) tensor, at each time step (ConvNeXt's "channels_first")."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, 2), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.transpose(1, 2)


class TimeNorm(nn.Module):
    """The original ESI's "channels_first" norm: each channel normalised over time.

    (x - mean_T) / (std_T + eps) with the unbiased std, then an affine of shape (1, C, 1). It removes each
    channel's offset and scale over the whole recording; kept only to load the original checkpoint.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, keepdim=True)
        return (x - mean) / (std + self.eps) * self.weight + self.bias


class GRN(nn.Module):
    """Global Response Normalization on (B, T, C): scale each channel by its L2 norm over time relative to
    the mean over channels. Starts as the identity (gamma = beta = 0)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)  # (B, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random subset of samples."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep  # rescale so the expected output equals eval mode's


class Block(nn.Module):
    """ConvNeXt V2 block on (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, drop_path: float = 0.0, kernel_size: int = 7):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.dwconv(x).transpose(1, 2)  # (B, T, C): norm and linears act on the last axis
        x = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(x)))))
        return residual + self.drop_path(x.transpose(1, 2))


class ConvNeXtV2Encoder(nn.Module):
    """1D ConvNeXt V2 over (batch, leads, time) ECGs.

    depths: blocks per stage, e.g. (2, 2, 6, 2) for atto.
    dims: channels per stage, e.g. (40, 80, 160, 320) for atto; `dim` is dims[-1].
    in_channels: leads in the input (12).
    downsample_norm: norm in the stem and the downsampling layers. "channel" (default): LayerNorm over
        channels at each time step, as the ConvNeXt V2 reference does. "time": the original ESI's norm of
        each channel over time, which discards every channel's amplitude over the recording at each
        downsampling; use it only to load the original checkpoint.
    drop_path_rate: stochastic depth rate of the last block; it grows linearly from 0 over the blocks.
    remainder: what happens to the samples past the last whole multiple of `reduction` (32). "pad"
        (default): zero-pad the end up to a multiple of 32, so every sample is seen and any length >= 1
        works; n_tokens = ceil(T / 32). Zero is the mean level of z-scored input and what the
        convolutions pad with anyway. "drop": as the original, every strided conv drops the trailing
        samples or tokens that do not fill a whole stride; n_tokens = floor(T / 32),
        needs T >= 32.
    kernel_size: depthwise conv kernel of the blocks (7).
    """

    reduction = 32  # stem 4 x three downsamplings by 2

    def __init__(self, depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), in_channels: int = 12,
                 downsample_norm: str = "channel", drop_path_rate: float = 0.0, remainder: str = "pad",
                 kernel_size: int = 7):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt V2 has 4 stages: got depths={tuple(depths)}, dims={tuple(dims)}")
        if downsample_norm not in DOWNSAMPLE_NORMS:
            raise ValueError(f"downsample_norm must be one of {DOWNSAMPLE_NORMS}, got {downsample_norm!r}")
        if remainder not in REMAINDERS:
            raise ValueError(f"remainder must be one of {REMAINDERS}, got {remainder!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.depths, self.dims = tuple(depths), tuple(dims)
        self.in_channels = in_channels
        self.downsample_norm = downsample_norm
        self.remainder = remainder
        self.dim = dims[-1]
        norm = ChannelLayerNorm if downsample_norm == "channel" else TimeNorm

        # Submodule order inside each Sequential matches the original's state-dict names.
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv1d(in_channels, dims[0], 4, stride=4),
                                                              norm(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(norm(dims[i]), nn.Conv1d(dims[i], dims[i + 1], 2, stride=2)))

        n_blocks = sum(depths)
        rates = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # plain floats: meta-safe
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*[Block(dims[i], rates[first + j], kernel_size) for j in range(depth)]))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # ConvNeXt's initialisation: truncated normal (std 0.02) weights, zero biases.
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            hint = ""
            if x.ndim == 3 and x.shape[2] == self.in_channels:
                hint = "; it looks time-first: pass x.transpose(1, 2)"
            raise ValueError(f"expected ECGs of shape (batch, {self.in_channels}, time), got {tuple(x.shape)}{hint}")
        if self.remainder == "drop" and x.shape[2] < self.reduction:
            raise ValueError(f"remainder='drop' needs at least {self.reduction} samples, got {x.shape[2]}")

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """x: (batch, in_channels, time) -> EncoderOutput(tokens (B, n_tokens, dim), pooled (B, dim))."""
        self._check_input(x)
        if self.remainder == "pad" and x.shape[-1] % self.reduction:
            x = F.pad(x, (0, self.reduction - x.shape[-1] % self.reduction))  # (B, C, ceil(T/32) * 32)
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        # x: (B, dim, n_tokens)
        pooled = self.norm(x.mean(dim=-1))
        return EncoderOutput(tokens=x.transpose(1, 2), pooled=pooled)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in_channels, time) -> pooled features (batch, dim)."""
        return self.forward(x).pooled

    def extra_repr(self) -> str:
        return (f"depths={self.depths}, dims={self.dims}, downsample_norm={self.downsample_norm!r}, "
                f"remainder={self.remainder!r}")
