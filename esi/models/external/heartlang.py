"""HeartLang (Jin et al., ICLR 2025; PKUDigitalHealth/HeartLang, MIT; weights on Hugging Face
PKUDigitalHealth/HeartLang): a transformer over "ECG sentences" of heartbeat "words".

Weights: the masked-sentence pretraining checkpoint, its ST_ECGFormer state_dict under "model"
(`modeling_pretrain.HeartLang`: width 768, 12 blocks, 8 heads of 64, MLP 1,024, 256 tokens of 96 samples). The
masked-word prediction head `lm_head` and the mask token `mask_token` (unused without a mask) are dropped by name;
a fine-tuned ST_ECGFormerClassifier's `backbone.*` is read as the same model, its `mlp_head` dropped.
Sizes are read from the keys: width and word length from `token_embed.tokenConv.weight`, sentence length from
`pos_embed`, depth, heads (64 channels each) and MLP from the blocks.

The heartbeat tokenizer (`QRSTokenizer.py` at a08afd8, lead I detection, which the maintainers made match the
paper in May 2025, issue #2): XQRS (wfdb.processing.xqrs_detect) finds the beats on lead I; each beat cut from
every lead (from halfway to the previous beat to halfway to the next, at most 96 samples, centred on the QRS in
a 96-sample word); words ordered lead by lead, with their lead (1-12) and second (QRS sample // 100 + 1);
zero words (lead 0, second 0) pad the sentence to 256 words, or it is cut at 256.

Features (`modeling_finetune.ST_ECGFormerClassifier`): the class token after the final LayerNorm (768).

Input (`datasets/dataset_preprocess/MIMIC-IV/mimic_preprocess.py`, which made its pretraining data, with
`is_norm=False`): Fourier resampling to 100 Hz, standard lead order, 5th-order Butterworth band-pass 0.67-40 Hz
(zero-phase), no normalisation: millivolts; 10 s (1,000 samples) per sentence. Pretrained on MIMIC-IV-ECG
(README, "Prepare Pre-training Data").
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.external.checkpoint import drop_heads, load_strict, read_state_dict, required
from esi.models.external.inputs import InputSpec
from esi.models.registry import EncoderOutput

INPUT = InputSpec(fs=100.0, window_s=10.0, leads=STANDARD_LEADS, normalize="none", filter="heartlang",
                  resample="fourier", source="HeartLang datasets/dataset_preprocess/MIMIC-IV/mimic_preprocess.py",
                  pretrained_on=("MIMIC-IV-ECG",))
HEADS = ("lm_head", "mask_token")
FINETUNED_PREFIX = "backbone."  # ST_ECGFormerClassifier holds the ST_ECGFormer as `backbone`
FINETUNED_HEADS = ("mlp_head",)  # and its label head as `mlp_head`
HEAD_DIM = 64  # channels per attention head: modeling_pretrain's dim_head default, which its builders keep
SECOND_SAMPLES = 100  # QRSTokenizer.assign_time_blocks: a word's time index is its QRS sample // 100 + 1
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the reference uses


def heartbeat_sentence(ecg: np.ndarray, fs: float, words: int, word_len: int) -> tuple[np.ndarray, ...]:
    """QRSTokenizer's sentence of one ECG (leads, samples): (words, word_len) beats, their leads, their seconds.

    Args:
        ecg: one record, leads in the tokenizer's order (lead I first: the beats are found on it).
        fs: its rate (Hz).
        words: the sentence length (longer sentences are cut, shorter ones padded with zero words).
        word_len: samples per word.
    """
    from wfdb.processing import xqrs_detect

    leads, length = ecg.shape
    qrs = np.asarray(xqrs_detect(sig=ecg[0], fs=fs, verbose=False), dtype=np.int64)
    half = word_len // 2
    beats = []
    for i, center in enumerate(qrs):  # QRSTokenizer.extract_qrs_segments, one window for all leads
        start = max(center - half, 0) if i == 0 else (qrs[i] + qrs[i - 1]) // 2
        if i == len(qrs) - 1 and i > 0:
            end = min(center + half, length)
        elif i == 0 and len(qrs) == 1:
            end = min(start + word_len, length)
        else:
            end = (qrs[i] + qrs[i + 1]) // 2
        start, end = max(start, 0), min(end, length)
        if end - start > word_len:
            start = max(center - half, 0)
            end = min(start + word_len, length)
        offset = max(half - (center - start), 0)
        stop = offset + (end - start)
        if stop > word_len:
            end -= stop - word_len
            stop = word_len
        beats.append((start, end, offset, stop))
    sentence = np.zeros((leads * len(qrs), word_len), dtype=ecg.dtype)
    for lead in range(leads):
        for j, (start, end, offset, stop) in enumerate(beats):
            sentence[lead * len(qrs) + j, offset:stop] = ecg[lead, start:end]
    lead_of = np.repeat(np.arange(1, leads + 1), len(qrs))
    second_of = np.tile(qrs // SECOND_SAMPLES + 1, leads)
    kept = min(words, len(sentence))
    padded = np.zeros((words, word_len), dtype=ecg.dtype), np.zeros(words, np.int64), np.zeros(words, np.int64)
    padded[0][:kept], padded[1][:kept], padded[2][:kept] = sentence[:kept], lead_of[:kept], second_of[:kept]
    return padded


class HeartLangBlock(nn.Module):
    """ST_ECGFormer's layer in its key layout: `0` = attention (norm, to_qkv without bias, to_out.0), `1` = MLP
    (net.0 LayerNorm, net.1, GELU, net.4), each pre-norm with a residual."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        attention, mlp = nn.Module(), nn.Module()
        attention.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        attention.to_qkv = nn.Linear(width, 3 * heads * HEAD_DIM, bias=False)
        attention.to_out = nn.Sequential(nn.Linear(heads * HEAD_DIM, width))
        # Slots 2, 3 and 5 of the reference's Sequential are GELU and dropouts (no weights); slot 4 keeps its index.
        mlp.net = nn.Sequential(nn.LayerNorm(width, eps=LAYER_NORM_EPS), nn.Linear(width, mlp_dim), nn.GELU(),
                                nn.Identity(), nn.Linear(mlp_dim, width))
        self.add_module("0", attention)
        self.add_module("1", mlp)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention, mlp = self.get_submodule("0"), self.get_submodule("1")
        batch, n, _ = x.shape
        q, k, v = (t.reshape(batch, n, self.heads, HEAD_DIM).transpose(1, 2)
                   for t in attention.to_qkv(attention.norm(x)).chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, -1)
        x = x + attention.to_out(attended)
        return x + mlp.net(x)


class HeartLangEncoder(nn.Module):
    """x (B, 12, samples) at INPUT.fs -> heartbeat sentences -> tokens (B, 1 + words, width) after the final
    LayerNorm (class token first), pooled = the class token."""

    def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, words: int, word_len: int):
        super().__init__()
        self.token_embed = nn.Module()
        self.token_embed.tokenConv = nn.Conv1d(word_len, width, kernel_size=3, padding=1, padding_mode="circular",
                                               bias=False)
        self.cls_token = nn.Parameter(torch.zeros(width))
        self.pos_embed = nn.Parameter(torch.zeros(1, words + 1, width))
        self.spa_embed, self.tem_embed = nn.Module(), nn.Module()
        self.spa_embed.embed = nn.Embedding(16, width)  # lead 1-12, 0 for padding
        self.tem_embed.embed = nn.Embedding(16, width)  # second 1-10, 0 for padding
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(HeartLangBlock(width, heads, mlp_dim) for _ in range(depth))
        self.norm_layer = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.dim, self.words, self.word_len = width, words, word_len

    def tokenize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, leads, samples) -> words (B, words, word_len), their leads and seconds (B, words)."""
        sentences = [heartbeat_sentence(ecg, INPUT.fs, self.words, self.word_len) for ecg in x.detach().cpu().numpy()]
        return tuple(torch.from_numpy(np.stack(part)).to(x.device) for part in zip(*sentences))

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        words, leads, seconds = self.tokenize(x)
        tokens = self.token_embed.tokenConv(words.to(x.dtype).transpose(1, 2)).transpose(1, 2)
        tokens = tokens + self.spa_embed.embed(leads) + self.tem_embed.embed(seconds)
        tokens = torch.cat([self.cls_token.expand(len(tokens), 1, -1), tokens], dim=1) + self.pos_embed
        for layer in self.transformer.layers:
            tokens = layer(tokens)
        tokens = self.norm_layer(tokens)
        return EncoderOutput(tokens=tokens, pooled=tokens[:, 0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).pooled


def build_from_keys(state: dict, label: str = "state_dict") -> HeartLangEncoder:
    """The ST_ECGFormer whose sizes `state`'s keys describe.

    Raises:
        ValueError: not HeartLang keys, or a tensor that sets the sizes is missing (naming `label` and the tensor).
    """
    if "token_embed.tokenConv.weight" not in state and not any(k.startswith("tem_embed.") for k in state):
        raise ValueError(f"{label}: not a HeartLang ST_ECGFormer (expected token_embed.* and tem_embed.*)")
    width, word_len, _ = required(state, "token_embed.tokenConv.weight", "HeartLangEncoder", label).shape
    words = required(state, "pos_embed", "HeartLangEncoder", label).shape[1] - 1
    qkv = required(state, "transformer.layers.0.0.to_qkv.weight", "HeartLangEncoder", label).shape[0]
    mlp_dim = required(state, "transformer.layers.0.1.net.1.weight", "HeartLangEncoder", label).shape[0]
    depth = len({m.group(1) for k in state if (m := re.match(r"transformer\.layers\.(\d+)\.", k))})
    return HeartLangEncoder(width=width, depth=depth, heads=qkv // 3 // HEAD_DIM, mlp_dim=mlp_dim, words=words,
                            word_len=word_len)


def load_heartlang(source) -> tuple[nn.Module, InputSpec]:
    """HeartLang's ST_ECGFormer from `source` (its pretraining or fine-tuning `.pth`, or a state_dict), in eval
    mode, with its input.

    Raises:
        ValueError: not a HeartLang model, or a tensor missing, unexpected or mis-shaped (naming it).
    """
    state, label = read_state_dict(source, containers=("model", "module"))
    if any(k.startswith(FINETUNED_PREFIX) for k in state):
        state = {k.removeprefix(FINETUNED_PREFIX): v for k, v in drop_heads(state, FINETUNED_HEADS).items()}
    state = drop_heads(state, HEADS)
    return load_strict(build_from_keys(state, label), state, label).eval(), INPUT
