"""ECG-FM (McKeen et al. 2024, arXiv 2408.05178; bowang-lab/ECG-FM, MIT; weights on Hugging Face wanglab/ecg-fm),
trained with fairseq-signals (Jwoo5/fairseq-signals).

Weights: fairseq checkpoints holding the model's state_dict under "model":
`mimic_iv_ecg_physionet_pretrained.pt` (a Wav2Vec2CMSCModel: the ECG transformer at the top level, plus the
pretraining parts dropped by name in PRETRAINING_HEADS) or `mimic_iv_ecg_finetuned.pt` (an
ECGTransformerClassificationModel: the transformer under `encoder.`, its label head `proj` dropped). The
transformer is fairseq-signals' ECGTransformerModel (esi.models.external.w2v_ecg; released 12 layers of 768,
90.9 M parameters). What no key holds (conv strides, heads, pre/post-norm) comes from the training config:
`config=` (the YAML's `model` section as a dict), else the `<checkpoint stem>.yaml` published beside each
checkpoint; a setting neither gives is fairseq-signals' default, which the pretraining config w2v_cmsc_rlm.yaml
keeps (RELEASED_CONFIG).
A fairseq checkpoint is read with `weights_only=True`: one that pickles objects other than tensors and plain
data must have its "model" entry saved alone first.

Features (ECG-FM `scripts/embs.py` and `notebooks/infer_quickstart.ipynb`, `encoder_out_to_emb`): the
transformer's output summed over time and divided by the count of its non-zero entries (the mean, for a record
without padding), per 5 s segment; a 10 s record's two segments are averaged (the notebook's aggregation of
segment predictions).

Input (fairseq-signals `scripts/preprocess/ecg/preprocess.py`, which made its pretraining data): leads in the
standard order, linear-interpolation resampling to 500 Hz, each lead standardised over the whole record (mean 0,
std 1; a constant lead 0), then non-overlapping 5 s segments (2,500 samples). Here: the first 10 s as two 5 s
segments; a record shorter than 10 s is zero-padded (the reference keeps only its whole segments). Pretrained on
MIMIC-IV-ECG v1.0 and PhysioNet 2021 v1.0.3 (README: "Pretrained on MIMIC-IV-ECG v1.0 and PhysioNet 2021
v1.0.3"), which holds PTB-XL, PTB, CPSC2018, CPSC-Extra, Georgia, INCART, Chapman-Shaoxing and Ningbo.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.external.checkpoint import drop_heads, load_strict, read_state_dict
from esi.models.external.inputs import InputSpec
from esi.models.external.prepared import encode_crops
from esi.models.external.w2v_ecg import ECGTransformer, sizes_from_config
from esi.models.registry import EncoderOutput

INPUT = InputSpec(fs=500.0, window_s=10.0, crop_s=5.0, crops=2, leads=STANDARD_LEADS, normalize="zscore_lead",
                  normalize_scope="record", resample="linear",
                  source="fairseq-signals scripts/preprocess/ecg/preprocess.py; ECG-FM infer_quickstart.ipynb",
                  pretrained_on=("MIMIC-IV-ECG", "PTB-XL", "PTB", "CPSC2018", "CPSC2018-extra", "Georgia", "INCART",
                                 "Chapman", "Ningbo"))
# Wav2Vec2Model's pretraining parts (quantised targets, their projections, the mask embedding).
PRETRAINING_HEADS = ("mask_emb", "quantizer", "input_quantizer", "project_q", "project_inp", "target_glu", "final_proj")
FINETUNED_PREFIX = "encoder."  # ECGTransformerFinetuningModel holds the transformer as `encoder`
FINETUNED_HEADS = ("proj",)  # ECGTransformerClassificationModel's label head
# fairseq-signals' TransformerConfig / ECGTransformerConfig defaults, which w2v_cmsc_rlm.yaml does not change.
RELEASED_CONFIG = {"conv_feature_layers": "[(256, 2, 2)] * 4", "encoder_attention_heads": 12, "layer_norm_first": False}


class ECGFMEncoder(ECGTransformer):
    """fairseq-signals' ECGTransformerModel (its key layout) on x (B, 12, samples) or (B, segments, 12, samples)
    -> tokens (B, [segments *] frames, width), pooled = the tokens' sum over time / their count of non-zero
    entries [mean over segments]."""

    def __init__(self, sizes):
        super().__init__(sizes)
        self.dim = sizes.width

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        if x.ndim == 4:  # segments: encode each, average the pooled features
            return encode_crops(self.forward, x)
        tokens = self.transform(self.embed(x))
        return EncoderOutput(tokens=tokens, pooled=tokens.sum(dim=1) / (tokens != 0).sum(dim=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def read_config(config, source) -> dict:
    """The model settings: `config` (a dict, with or without a "model" level), else the YAML with the checkpoint's
    stem beside it; RELEASED_CONFIG fills in what they leave out."""
    beside = None if isinstance(source, Mapping) else Path(source).with_suffix(".yaml")
    if config is None and beside is not None and beside.is_file():
        import yaml

        config = yaml.safe_load(beside.read_text())
    config = {} if config is None else config
    return {**RELEASED_CONFIG, **config.get("model", config)}


def ecg_transformer_state(state: dict, label: str) -> dict:
    """The ECGTransformerModel's tensors of a pretrained or fine-tuned ECG-FM state_dict, heads dropped by name.

    Raises:
        ValueError: neither layout (naming `label`).
    """
    if any(k.startswith(f"{FINETUNED_PREFIX}feature_extractor.") for k in state):
        # Keys outside `encoder.` other than the head stay as they are, so the strict load names them.
        state = {k.removeprefix(FINETUNED_PREFIX): v for k, v in drop_heads(state, FINETUNED_HEADS).items()}
    elif not any(k.startswith(("feature_extractor.", "conv_pos.")) for k in state):
        raise ValueError(f"{label}: not an ECG-FM (fairseq-signals ECGTransformerModel) checkpoint (expected "
                         "feature_extractor.* or encoder.feature_extractor.*)")
    return drop_heads(state, PRETRAINING_HEADS)


def load_ecg_fm(source, config: dict | None = None) -> tuple[nn.Module, InputSpec]:
    """ECG-FM's ECG transformer from `source` (a pretrained or fine-tuned `.pt`, or a state_dict), in eval mode,
    with its input.

    Args:
        source: the checkpoint (its "model" state_dict is used) or a state_dict.
        config: the training config's model settings; None: the YAML beside `source`, else RELEASED_CONFIG.

    Raises:
        ValueError: not an ECG-FM checkpoint, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("model",))
    state = ecg_transformer_state(state, label)
    sizes = sizes_from_config(state, "", read_config(config, source), "ECGFMEncoder", label)
    return load_strict(ECGFMEncoder(sizes), state, label).eval(), INPUT
