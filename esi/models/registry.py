"""ECG encoders by name, the output every encoder returns, and parameter counting.

Every encoder takes (batch, 12, time) at any length and returns `EncoderOutput(tokens, pooled)`:
tokens (batch, n_tokens, dim) for attention pooling, pooled (batch, dim) for contrastive and linear-probe
heads. Each encoder also has `.dim` (token and pooled width), `.reduction` (input samples per token) and
`encode(x)` (pooled only).

This module imports neither torch nor a model file at import time (the model files import `EncoderOutput` from
here; `esi.models` exports `create_encoder`); `create_encoder` imports the one it needs.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch
    from torch import nn


class EncoderOutput(NamedTuple):
    """What an ECG encoder returns.

    tokens: (batch, n_tokens, dim) the last stage's features, one per `reduction` input samples.
    pooled: (batch, dim) one vector per ECG.
    """

    tokens: torch.Tensor
    pooled: torch.Tensor


# ConvNeXt V2 variants as (depths, dims): blocks per stage and channels per stage (Woo et al. 2023;
# the same table the original ESI code used, so the original checkpoints map onto these).
CONVNEXTV2_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}

# xresnet1d101 of the PTB-XL benchmark (Strodthoff et al. 2021): bottleneck blocks per stage.
XRESNET1D_VARIANTS: dict[str, tuple[int, ...]] = {
    "xresnet1d101": (3, 4, 23, 3),
}


def list_encoders() -> list[str]:
    """Every name `create_encoder` accepts, smallest ConvNeXt V2 first."""
    return [f"convnextv2_{variant}" for variant in CONVNEXTV2_VARIANTS] + list(XRESNET1D_VARIANTS)


def create_encoder(name: str, **kwargs) -> nn.Module:
    """Build an ECG encoder by name, with random weights.

    name: one of `list_encoders()`, e.g. "convnextv2_atto" or "xresnet1d101".
    kwargs: passed to the encoder's constructor on top of the variant's sizes, e.g. for ConvNeXt V2
        `downsample_norm="time"`, `drop_path_rate=0.1`, `in_channels=12`; for xresnet1d `in_channels`.

    Build on the meta device (`with torch.device("meta"): create_encoder(...)`) to inspect a large
    variant without allocating its weights.
    """
    if name.startswith("convnextv2_") and name[len("convnextv2_"):] in CONVNEXTV2_VARIANTS:
        from esi.models.convnextv2 import ConvNeXtV2Encoder

        depths, dims = CONVNEXTV2_VARIANTS[name[len("convnextv2_"):]]
        return ConvNeXtV2Encoder(**{"depths": depths, "dims": dims, **kwargs})
    if name in XRESNET1D_VARIANTS:
        from esi.models.xresnet1d import XResNet1d

        return XResNet1d(**{"layers": XRESNET1D_VARIANTS[name], **kwargs})
    close = difflib.get_close_matches(name, list_encoders(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown encoder {name!r}{hint}; known: {', '.join(list_encoders())}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in `model` (buffers such as BatchNorm running stats excluded).

    model: any module (also one built on the meta device).
    trainable_only: count only parameters with requires_grad.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
