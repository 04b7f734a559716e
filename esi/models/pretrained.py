"""Just the ECG encoder of a pretrained model, for downstream work (linear probes, fine-tuning, features).

    from esi.models.pretrained import load_ecg_encoder
    encoder = load_ecg_encoder("outputs/run/pretrained")   # eval mode
    features = encoder.encode(x)                            # x (batch, 12, time) -> (batch, dim)

Reads the architecture from config.json and only the tensors under `ecg_encoder.` from model.safetensors
(safetensors reads tensors lazily, so the text encoder and decoder are never loaded). A `model.safetensors`
of the original ESI release (encoder under `img_encoder.`) is recognised and handed to
`esi.models.original.load_original_esi_checkpoint`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from esi.models.esi_model import CONFIG_NAME, MODEL_TYPE, WEIGHTS_NAME, read_esi_config
from esi.models.registry import create_encoder

ECG_ENCODER_PREFIX = "ecg_encoder."
ORIGINAL_ENCODER_PREFIX = "img_encoder."


def _is_esi_folder(directory: Path) -> bool:
    config = directory / CONFIG_NAME
    if not config.exists():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except json.JSONDecodeError as err:
        raise ValueError(f"{config}: not valid JSON ({err})") from err


def load_ecg_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The ECG encoder of a saved ESI model, in eval mode.

    path: a folder written by `ESIModel.save_pretrained` (or its model.safetensors), or an original ESI
        release's model.safetensors (or its folder).
    device: where to put the encoder.

    The encoder takes (batch, 12, time) and returns tokens and pooled features; `encoder.encode(x)` gives
    the pooled features (batch, dim), the same as `ESIModel.encode_ecg(x, raw=True)` with the default
    contrastive_source="encoder".
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    directory, weights = (path, path / WEIGHTS_NAME) if path.is_dir() else (path.parent, path)
    if not weights.exists():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")

    if not _is_esi_folder(directory):
        with safe_open(str(weights), framework="pt") as handle:
            is_original = any(key.startswith(ORIGINAL_ENCODER_PREFIX) for key in handle.keys())
        if is_original:
            from esi.models.original import load_original_esi_checkpoint

            return load_original_esi_checkpoint(weights).to(device)
        raise ValueError(f"{weights}: neither an ESI model folder (no {CONFIG_NAME} with model_type "
                         f"{MODEL_TYPE!r} beside it) nor an original ESI checkpoint (no {ORIGINAL_ENCODER_PREFIX} "
                         "tensors)")

    config = read_esi_config(directory)
    encoder = create_encoder(config.ecg_encoder, **config.ecg_encoder_kwargs)
    with safe_open(str(weights), framework="pt") as handle:
        state = {key[len(ECG_ENCODER_PREFIX):]: handle.get_tensor(key)
                 for key in handle.keys() if key.startswith(ECG_ENCODER_PREFIX)}
    if not state:
        raise ValueError(f"{weights}: no tensors under {ECG_ENCODER_PREFIX!r}")
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes that do not fit the configured encoder
        raise ValueError(f"{weights}: the ECG encoder tensors do not fit {config.ecg_encoder!r}: {err}") from err
    if missing or unexpected:
        raise ValueError(f"{weights}: the ECG encoder tensors do not match {config.ecg_encoder!r} of {CONFIG_NAME}; "
                         f"missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'}")
    return encoder.to(device).eval()
