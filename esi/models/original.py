"""Load the ECG encoder of the original ESI release (Yu, Guo, Sano 2024) from its `model.safetensors`.

The original code saves its whole CoCa-style model as one flat state dict; the ECG encoder is the ConvNeXt V2
under the prefix `img_encoder.`. It maps one to one onto `ConvNeXtV2Encoder(downsample_norm="time",
remainder="drop")`. What the original fed it, and what a caller must reproduce to get the same features:

- 500 Hz, 10 s (5000 samples), 12 leads in the MIMIC-IV-ECG order I, II, III, aVR, aVF, aVL, V1-V6 (aVF BEFORE
  aVL; `ORIGINAL_LEAD_ORDER`). Standard-order input (PTB-XL, `esi.data`) must be permuted first:
  `to_original_lead_order(x)`.
- Each ECG z-scored with ONE mean and ONE std over all its leads and samples (`zscore_whole_ecg`), not per
  lead.
- The original encoder took time-first input (batch, time, 12) and transposed it itself; the encoder
  returned here takes (batch, 12, time) like every encoder of this package.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from esi.data.leads import MIMIC_LEADS, STANDARD_LEADS, lead_indices
from esi.models.convnextv2 import ConvNeXtV2Encoder
from esi.models.registry import CONVNEXTV2_VARIANTS

log = logging.getLogger(__name__)

ENCODER_PREFIX = "img_encoder."
ORIGINAL_LEAD_ORDER: tuple[str, ...] = MIMIC_LEADS
# The original encoder's classification head: saved in the file, never used for features.
_UNUSED_ENCODER_KEYS = ("head.weight", "head.bias")


class OriginalCheckpointError(ValueError):
    """A file that is not a loadable original ESI checkpoint; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OriginalVariant(NamedTuple):
    """The ConvNeXt V2 read off a checkpoint: `name` ("atto", ...; None for a size no variant has)."""

    name: str | None
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    in_channels: int


def detect_original_variant(encoder_state: dict[str, torch.Tensor], path="<state dict>") -> OriginalVariant:
    """Read the ConvNeXt V2 sizes off the original encoder's tensors (keys without the `img_encoder.` prefix).

    encoder_state: the encoder's tensors, e.g. {"downsample_layers.0.0.weight": (d0, 12, 4), ...}.
    path: the file they came from, for error messages.

    dims come from the output channels of the stem and downsampling convs, depths from the block indices
    under `stages.{s}.{b}.`.
    """
    conv_keys = ["downsample_layers.0.0.weight"] + [f"downsample_layers.{i}.1.weight" for i in (1, 2, 3)]
    missing = [ENCODER_PREFIX + k for k in conv_keys if k not in encoder_state]
    if missing:
        raise OriginalCheckpointError(path, "cannot read the ConvNeXt V2 sizes, missing: " + ", ".join(missing))
    dims = tuple(int(encoder_state[k].shape[0]) for k in conv_keys)
    in_channels = int(encoder_state[conv_keys[0]].shape[1])

    block_pattern = re.compile(r"^stages\.(\d+)\.(\d+)\.")
    n_blocks = [0, 0, 0, 0]
    for key in encoder_state:
        match = block_pattern.match(key)
        if match and int(match.group(1)) < 4:
            stage, block = int(match.group(1)), int(match.group(2))
            n_blocks[stage] = max(n_blocks[stage], block + 1)
    depths = tuple(n_blocks)
    name = next((v for v, (d, c) in CONVNEXTV2_VARIANTS.items() if d == depths and c == dims), None)
    return OriginalVariant(name=name, depths=depths, dims=dims, in_channels=in_channels)


def load_original_esi_checkpoint(path: str | os.PathLike, strict_variant: bool = False) -> ConvNeXtV2Encoder:
    """The ECG encoder of an original ESI `model.safetensors`, in eval mode, on the CPU, float32.

    path: the original `model.safetensors` (or the folder holding it).
    strict_variant: raise if the sizes are none of the known ConvNeXt V2 variants (by default such an
        encoder is still built, from the sizes read off the file).

    `encoder.encode(x)` with x of shape (batch, 12, time), prepared as the original did (500 Hz; leads in
    `ORIGINAL_LEAD_ORDER`; one mean/std z-scoring over the whole ECG, see `zscore_whole_ecg`), returns the
    original's pooled features (batch, dim). Only tensors under `img_encoder.` are read; the other parts of
    the ESI model in the file (text encoder, attention pooler, multimodal layers, ...) are ignored. The
    encoder's unused classification head (`img_encoder.head.*`) is skipped. A missing, unexpected or
    mis-shaped tensor under `img_encoder.` raises `OriginalCheckpointError` listing them.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise OriginalCheckpointError(path, "file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise OriginalCheckpointError(path, f"not a readable safetensors file ({err})") from err

    encoder_state = {k[len(ENCODER_PREFIX):]: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)}
    if not encoder_state:
        prefixes = sorted({k.split(".", 1)[0] for k in tensors})
        raise OriginalCheckpointError(path, f"no ECG encoder tensors under {ENCODER_PREFIX!r}; "
                                            f"top-level prefixes found: {', '.join(prefixes) or 'none'}")
    other_prefixes = sorted({k.split(".", 1)[0] for k in tensors if not k.startswith(ENCODER_PREFIX)})
    log.debug("%s: ignoring the non-encoder parts: %s", path, ", ".join(other_prefixes))
    for key in _UNUSED_ENCODER_KEYS:
        encoder_state.pop(key, None)

    variant = detect_original_variant(encoder_state, path)
    if variant.name is None:
        message = f"depths={variant.depths}, dims={variant.dims} match no known ConvNeXt V2 variant"
        if strict_variant:
            raise OriginalCheckpointError(path, message)
        log.warning("%s: %s; building it from these sizes", path, message)
    else:
        log.info("%s: original ESI encoder convnextv2_%s", path, variant.name)

    encoder = ConvNeXtV2Encoder(depths=variant.depths, dims=variant.dims, in_channels=variant.in_channels,
                                downsample_norm="time", remainder="drop")
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(encoder_state))
    unexpected = sorted(set(encoder_state) - set(expected))
    mis_shaped = sorted(f"{ENCODER_PREFIX}{k} {tuple(encoder_state[k].shape)} (expected {tuple(expected[k].shape)})"
                        for k in set(expected) & set(encoder_state) if encoder_state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(ENCODER_PREFIX + k for k in missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(ENCODER_PREFIX + k for k in unexpected))
    if mis_shaped:
        problems.append("wrong shape: " + ", ".join(mis_shaped))
    if problems:
        raise OriginalCheckpointError(path, "the ECG encoder does not match the original ConvNeXt V2 "
                                            f"(depths={variant.depths}, dims={variant.dims}); " + "; ".join(problems))

    encoder.load_state_dict({k: v.float() for k, v in encoder_state.items()})
    return encoder.eval()


def to_original_lead_order(x, leads: Sequence[str] = STANDARD_LEADS):
    """Permute ECGs from `leads` order into `ORIGINAL_LEAD_ORDER` (aVF before aVL).

    x: (..., 12, time) array or tensor, leads on the second-to-last axis.
    leads: the order of x's leads (default: the standard I, II, III, aVR, aVL, aVF, V1-V6).
    """
    index = lead_indices(leads, ORIGINAL_LEAD_ORDER)
    absent = [lead for lead, i in zip(ORIGINAL_LEAD_ORDER, index) if i is None]
    if absent:
        raise ValueError(f"leads {list(leads)} lack {', '.join(absent)}; the original encoder needs all 12")
    if x.shape[-2] != len(leads):
        raise ValueError(f"x has {x.shape[-2]} leads on axis -2 but {len(leads)} lead names were given")
    return x[..., index, :]


def zscore_whole_ecg(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Z-score each ECG with one mean and one std over all its leads and samples, as the original loader did.

    x: (batch, leads, time) or (leads, time) tensor.
    eps: added to the std so a flat ECG gives zeros instead of NaN. (The original's exact std estimator
        and eps are not documented; over 60,000 samples the difference is far below feature precision.)
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + eps)
