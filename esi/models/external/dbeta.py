"""D-BETA's ECG encoder (Pham, Saeed, Ma, ICML 2025; manhph2211/D-BETA, CC BY-NC 4.0; weights on Hugging Face
Manhph2211/D-BETA).

Weights: a fairseq-style `.pt` holding the whole ECG-text model under "model" (`models/processor.get_model`),
and the repository's `configs/config.json`. The ECG path kept here: `ecg_encoder` (fairseq-signals'
ECGTransformerModel, esi.models.external.w2v_ecg), `class_embedding`, `multi_modal_ecg_proj` and
`unimodal_ecg_pooler`. Dropped by name, as documented below in HEADS: the pretraining mask embedding (which
get_model itself deletes) and the text, cross-modal and pretraining-head modules, none of which the ECG
features use. What the keys do not fix (conv strides, heads, pre/post-norm) comes from the config: `config=`
(config.json's dict), else a config.json beside the checkpoint; a setting neither gives is the repository's
configs/config.json value (RELEASED_CONFIG).

Features (`models/processor.get_ecg_feats`): the class embedding prepended to the ECG encoder's embedded frames,
the transformer on all of them, `multi_modal_ecg_proj`, then `unimodal_ecg_pooler` (tanh(dense(first token)));
768 in the release.

Input: 500 Hz, 10 s (5,000 samples; the README's example takes the first 5,000 after Fourier resampling), 12
leads in the standard order, in millivolts: config.json sets `normalize` and `filter` false (its ECGDataset's
z-score and neurokit cleaning are off). Pretrained on MIMIC-IV-ECG (`datasets/ecg_text_dataset.py` and
`datasets/n3s.py` index `data/mimic_iv_ecg_index.json`; the .mat preprocessing of those records is not in the
repository, so their lead order is not checked here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.external.checkpoint import drop_heads, load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.external.w2v_ecg import ECGTransformer, sizes_from_config
from esi.models.registry import EncoderOutput

INPUT = InputSpec(fs=500.0, window_s=10.0, leads=STANDARD_LEADS, normalize="none", resample="fourier",
                  source="D-BETA configs/config.json (normalize, filter false), models/processor.py, example.ipynb",
                  pretrained_on=("MIMIC-IV-ECG",))
# Tensors of the released model that the ECG features never use.
HEADS = ("ecg_encoder.mask_emb", "language_encoder", "multi_modal_language_proj", "modality_type_embeddings",
         "multi_modal_ecg_layers", "multi_modal_language_layers", "multi_modal_ecg_pooler",
         "multi_modal_language_pooler", "unimodal_language_pooler", "mlm_head", "mim_head", "itm_head")
# The repository's configs/config.json: the settings no key holds.
RELEASED_CONFIG = {"conv_feature_layers": "[(256, 2, 2)] * 4", "encoder_attention_heads": 12, "layer_norm_first": False}


class DBETAEncoder(nn.Module):
    """x (B, 12, samples) -> tokens (B, 1 + frames, width) after multi_modal_ecg_proj (class token first),
    pooled = tanh(dense(class token))."""

    def __init__(self, ecg_encoder: ECGTransformer, hidden: int):
        super().__init__()
        width = ecg_encoder.sizes.width
        self.ecg_encoder = ecg_encoder
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.multi_modal_ecg_proj = nn.Linear(width, hidden)
        self.unimodal_ecg_pooler = nn.Module()
        self.unimodal_ecg_pooler.dense = nn.Linear(hidden, hidden)
        self.dim = hidden

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        frames = self.ecg_encoder.embed(x)
        cls = self.class_embedding.expand(frames.shape[0], 1, -1)
        tokens = self.multi_modal_ecg_proj(self.ecg_encoder.transform(torch.cat([cls, frames], dim=1)))
        return EncoderOutput(tokens=tokens, pooled=torch.tanh(self.unimodal_ecg_pooler.dense(tokens[:, 0])))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def read_config(config, source) -> dict:
    """The model settings: `config` (config.json's dict, with or without its "model" level), else a config.json
    beside the checkpoint file `source`; RELEASED_CONFIG fills in what they leave out."""
    if config is None and not isinstance(source, Mapping) and (Path(source).parent / "config.json").is_file():
        config = json.loads((Path(source).parent / "config.json").read_text())
    config = {} if config is None else config
    return {**RELEASED_CONFIG, **config.get("model", config)}


def build_from_keys(state: dict, config: dict, label: str = "state_dict") -> DBETAEncoder:
    """The D-BETA ECG path whose sizes `state`'s keys describe, with `config`'s strides, heads and norm order.

    Raises:
        ValueError: not D-BETA keys, or a tensor that sets the sizes is missing (naming `label` and the tensor).
    """
    if "class_embedding" not in state and not any(k.startswith("ecg_encoder.") for k in state):
        raise ValueError(f"{label}: not a D-BETA model (expected class_embedding and ecg_encoder.*)")
    sizes = sizes_from_config(state, "ecg_encoder.", config, "DBETAEncoder", label)
    hidden = required(state, "multi_modal_ecg_proj.weight", "DBETAEncoder", label).shape[0]
    return DBETAEncoder(ECGTransformer(sizes), hidden)


def load_dbeta(source, config: dict | None = None) -> tuple[nn.Module, InputSpec]:
    """D-BETA's ECG encoder from `source` (its `.pt`, or a state_dict), in eval mode, with its input.

    Args:
        source: the checkpoint (its "model" state_dict is used) or a state_dict.
        config: config.json's dict; None: a config.json beside `source`, else the repository's.

    Raises:
        ValueError: not a D-BETA model, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("model",))
    state = drop_heads(state, HEADS)
    module = build_from_keys(state, read_config(config, source), label)
    return load_strict(module, state, label).eval(), INPUT
