"""HuBERT-ECG (Coppola et al. 2024; Edoar-do/HuBERT-ECG, models Edoardo-BS/hubert-ecg-*, CC BY-NC 4.0).

The model is transformers' HubertModel (its `HuBERTECG` subclasses it and adds pretraining heads), built here
from the release's config.json with transformers' own class: no remote code runs.

Weights: a folder with `config.json` and `model.safetensors` (the model card's files). The subclass's
pretraining heads `final_proj.*` and `label_embedding.*` are dropped by name. The positional convolution's weight
norm is stored as `weight_g`/`weight_v` by older torch and `parametrizations.weight.original0/1` by newer; both
are accepted and renamed to what this torch builds. Features: the last hidden state averaged over time, as its
classifier (`hubert_ecg_classification.py`, no attention mask) pools it.

Input (`utils.ecg_preprocessing` then `dataset.ECGDataset`, with the README's downsampling_factor 5): FIR
band-pass 0.05-47 Hz, Fourier resampling to 500 Hz, each lead min-maxed onto [-1, 1] over the whole record;
then the first 5 s (2,500 samples), the 12 leads concatenated I..V6 and decimated by 5 into one 6,000-sample
sequence at 100 Hz. Pretrained on 9.1 million ECGs; `pretrained_on` lists the sets of the repository's
figures/metadata folder (not yet checked against the paper's pretraining table).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.external.checkpoint import drop_heads, load_strict
from esi.models.external.inputs import InputSpec
from esi.models.registry import EncoderOutput

# The sets `pretrained_on` lists (PTB-XL, CPSC2018, Chapman and Ningbo among them) come from the repository's
# figures/metadata folder; its README says only "9.1 million 12-lead ECGs from four countries" (checked at 09b0481).
INPUT = InputSpec(fs=500.0, window_s=5.0, leads=STANDARD_LEADS, normalize="minmax_lead_pm1", normalize_scope="record",
                  filter="hubert_ecg", resample="fourier", flatten_decimate=5,
                  source="HuBERT-ECG code/utils.py ecg_preprocessing, code/dataset.py",
                  pretrained_on=("PTB-XL", "CPSC2018", "CPSC2018-extra", "Chapman", "Ningbo", "Georgia", "CODE-15",
                                 "SPH", "Hefei", "MIMIC-IV-ECG", "PTB", "SaMi-Trop"))
HEADS = ("final_proj", "label_embedding")
# Weight-norm parameter names: older torch (weight_norm hook) -> newer (parametrizations).
WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


class HubertECGEncoder(nn.Module):
    """transformers' HubertModel on (B, samples) (or (B, 1, samples)) -> tokens = last hidden state (B, frames,
    hidden), pooled = their mean."""

    def __init__(self, hubert: nn.Module):
        super().__init__()
        self.hubert = hubert
        self.dim = hubert.config.hidden_size

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        tokens = self.hubert(x.reshape(x.shape[0], -1)).last_hidden_state
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def build(config: dict) -> nn.Module:
    """transformers' HubertModel of `config` (a config.json's dict), without HuBERT-ECG's extra keys."""
    from transformers import HubertConfig, HubertModel

    config = {k: v for k, v in config.items() if k not in ("ensemble_length", "vocab_sizes", "model_type",
                                                            "architectures", "auto_map", "transformers_version")}
    return HubertModel(HubertConfig(**config))


def _rename_weight_norm(state: dict, expected: set[str]) -> dict:
    """`state` with weight-norm tensors named as the module names them (old <-> new torch spelling)."""
    renamed = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        if key not in expected and leaf in WEIGHT_NORM_NAMES:
            key = f"{prefix}.{WEIGHT_NORM_NAMES[leaf]}"
        for old, new in WEIGHT_NORM_NAMES.items():
            if key not in expected and key.endswith("." + new):
                key = key[: -len(new)] + old
        renamed[key] = tensor
    return renamed


def load_hubert_ecg(source, config: dict | None = None) -> tuple[nn.Module, InputSpec]:
    """HuBERT-ECG from a folder holding config.json and model.safetensors (or from a state_dict with `config`),
    in eval mode, with its input.

    Raises:
        FileNotFoundError: the folder lacks config.json or model.safetensors.
        ValueError: a tensor missing, unexpected or mis-shaped (naming the file and the tensor).
    """
    if isinstance(source, dict):
        if config is None:
            raise ValueError("load_hubert_ecg: a state_dict needs its config (the release's config.json as a dict)")
        state, label = dict(source), "state_dict"
    else:
        folder = Path(source)
        folder = folder.parent if folder.is_file() else folder
        config_path, weights_path = folder / "config.json", folder / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; HuBERT-ECG loads from its model card's config.json and "
                                        "model.safetensors")
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from err
        from safetensors.torch import load_file

        state, label = load_file(str(weights_path)), str(weights_path)
    hubert = build(config)
    state = drop_heads(state, HEADS)
    state = _rename_weight_norm(state, set(hubert.state_dict()))
    load_strict(hubert, state, label)
    return HubertECGEncoder(hubert).eval(), INPUT
