"""fairseq-signals' ECGTransformerModel (a wav2vec 2.0 encoder over 12-lead ECGs), in its key layout.

D-BETA (`models/transformer.py`, copied from fairseq-signals) and ECG-FM (fairseq-signals
`models/ecg_transformer.py`) share it: a convolutional feature extractor (`feature_extractor.conv_layers.<i>.0`,
no bias; GroupNorm with one group per channel after the first convolution in "default" mode, a LayerNorm after
each in "layer_norm" mode; GELU), LayerNorm over its channels (`layer_norm`), a projection to the transformer's
width (`post_extract_proj`, when the widths differ), plus a weight-normed grouped convolutional position
embedding (`conv_pos.pos_conv.0`, weight_g/weight_v over dim 2, last sample dropped when its kernel is even,
GELU), then `encoder`: a LayerNorm (before the layers when they are post-norm, after them when pre-norm) and
`encoder.layers.<i>` (fairseq MultiheadAttention with separate q/k/v projections, then fc1-GELU-fc2).

Sizes are read from the keys; what no key holds (strides, heads, pre- or post-norm) comes from the family's
config. Dropouts are identities (the encoders are used in eval mode).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from esi.models.external.checkpoint import required

LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm (torch's default)
# How a weight-normed convolution's (magnitude, direction) are named: torch's older weight_norm hook, or the newer
# parametrization (which fairseq-signals uses where torch has it). The module takes the checkpoint's spelling.
WEIGHT_NORM_KEYS = {"hook": ("weight_g", "weight_v"),
                    "parametrization": ("parametrizations.weight.original0", "parametrizations.weight.original1")}


@dataclass(frozen=True)
class W2VSizes:
    """What an ECGTransformerModel's keys and config fix: conv (channels, kernel, stride) per layer, input
    leads, conv bias, extractor mode, width, FFN width, layers, heads, pre-norm, position conv kernel/groups and
    the spelling of its weight norm (a key of WEIGHT_NORM_KEYS)."""

    conv: tuple[tuple[int, int, int], ...]
    in_d: int
    conv_bias: bool
    extractor_mode: str
    width: int
    ffn: int
    layers: int
    heads: int
    layer_norm_first: bool
    conv_pos: int
    conv_pos_groups: int
    weight_norm: str


class ConvBlock(nn.Module):
    """Conv1d -> (GroupNorm | LayerNorm over channels) -> GELU, in fairseq's Sequential slots 0 and 2."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, bias: bool, norm: str):
        super().__init__()
        self.add_module("0", nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=bias))
        if norm == "group":  # Fp32GroupNorm(dim, dim): one group per channel
            self.add_module("2", nn.GroupNorm(n_out, n_out, eps=LAYER_NORM_EPS))
        elif norm == "layer":  # Sequential(TransposeLast, Fp32LayerNorm, TransposeLast): slot 1 holds the norm
            self.add_module("2", nn.Module())
            self.get_submodule("2").add_module("1", nn.LayerNorm(n_out, eps=LAYER_NORM_EPS))
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.get_submodule("0")(x)
        if self.norm == "group":
            x = self.get_submodule("2")(x)
        elif self.norm == "layer":
            x = self.get_submodule("2.1")(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class ConvPosition(nn.Module):
    """fairseq's weight-normed grouped Conv1d position embedding: GELU(conv(x)), its last sample dropped when the
    kernel is even (SamePad). Keys: `pos_conv.0.bias` and the weight norm's two tensors, as `spelling` names them
    (WEIGHT_NORM_KEYS)."""

    def __init__(self, width: int, kernel: int, groups: int, spelling: str):
        super().__init__()
        self.pos_conv = nn.Module()
        conv = nn.Module()
        self.names = WEIGHT_NORM_KEYS[spelling]
        for name, value in zip(self.names, (torch.ones(1, 1, kernel), torch.zeros(width, width // groups, kernel))):
            *parents, leaf = name.split(".")
            owner = conv
            for parent in parents:
                if not hasattr(owner, parent):
                    owner.add_module(parent, nn.Module())
                owner = getattr(owner, parent)
            owner.register_parameter(leaf, nn.Parameter(value))
        conv.bias = nn.Parameter(torch.zeros(width))
        self.pos_conv.add_module("0", conv)
        self.kernel, self.groups = kernel, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, width) -> (B, T, width)
        conv = self.pos_conv.get_submodule("0")
        g, v = (conv.get_parameter(name) for name in self.names)
        # weight_norm(dim=2): each kernel tap's (out, in) slice scaled to norm g.
        weight = v * (g / torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        y = F.conv1d(x.transpose(1, 2), weight, conv.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class EncoderLayer(nn.Module):
    """fairseq TransformerEncoderLayer: self-attention and fc1-GELU-fc2, each with a residual, LayerNorm after
    (post-norm) or before (pre-norm)."""

    def __init__(self, width: int, ffn: int, heads: int, layer_norm_first: bool):
        super().__init__()
        self.self_attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            self.self_attn.add_module(name, nn.Linear(width, width))
        self.self_attn_layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(width, ffn)
        self.fc2 = nn.Linear(ffn, width)
        self.final_layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.heads, self.layer_norm_first = heads, layer_norm_first

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, width = x.shape
        attn = self.self_attn
        q, k, v = (p(x).reshape(batch, n, self.heads, -1).transpose(1, 2)
                   for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        return attn.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.attend(self.self_attn_layer_norm(x))
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.attend(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class ECGTransformer(nn.Module):
    """fairseq-signals' ECGTransformerModel without its pretraining parts.

    `embed(x)`: (B, leads, samples) -> (B, frames, width), the input of the transformer (get_embeddings);
    `transform(tokens)`: the transformer encoder on them (get_output).
    """

    def __init__(self, sizes: W2VSizes):
        super().__init__()
        self.feature_extractor = nn.Module()
        norm = {"default": ["group"] + ["none"] * (len(sizes.conv) - 1),
                "layer_norm": ["layer"] * len(sizes.conv)}[sizes.extractor_mode]
        n_in, blocks = sizes.in_d, []
        for (channels, kernel, stride), block_norm in zip(sizes.conv, norm):
            blocks.append(ConvBlock(n_in, channels, kernel, stride, sizes.conv_bias, block_norm))
            n_in = channels
        self.feature_extractor.conv_layers = nn.ModuleList(blocks)
        self.layer_norm = nn.LayerNorm(n_in, eps=LAYER_NORM_EPS)
        self.post_extract_proj = nn.Linear(n_in, sizes.width) if n_in != sizes.width else None
        self.conv_pos = ConvPosition(sizes.width, sizes.conv_pos, sizes.conv_pos_groups, sizes.weight_norm)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(sizes.width, sizes.ffn, sizes.heads, sizes.layer_norm_first)
                                            for _ in range(sizes.layers))
        self.encoder.layer_norm = nn.LayerNorm(sizes.width, eps=LAYER_NORM_EPS)
        self.sizes = sizes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.feature_extractor.conv_layers:
            x = block(x)
        x = self.layer_norm(x.transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return x + self.conv_pos(x)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sizes.layer_norm_first:
            x = self.encoder.layer_norm(x)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.encoder.layer_norm(x) if self.sizes.layer_norm_first else x


def sizes_from_keys(state: dict, prefix: str, strides: list[int], heads: int, layer_norm_first: bool,
                    family: str, label: str) -> W2VSizes:
    """The W2VSizes of the ECGTransformerModel under `prefix` in `state`; strides, heads and pre-norm from the
    config (no key holds them).

    Raises:
        ValueError: a tensor that sets the sizes is missing, or the config's strides do not match the conv
            layers (naming `label`).
    """
    conv_key = re.escape(prefix) + r"feature_extractor\.conv_layers\.(\d+)\.0\.weight"
    count = 1 + max((int(m.group(1)) for k in state if (m := re.fullmatch(conv_key, k))), default=-1)
    if count > len(strides):
        raise ValueError(f"{label}: {count} conv layers under {prefix}feature_extractor, but the config gives "
                         f"{len(strides)} strides")
    weights = [required(state, f"{prefix}feature_extractor.conv_layers.{i}.0.weight", family, label)
               for i in range(len(strides))]
    conv = tuple((w.shape[0], w.shape[2], stride) for w, stride in zip(weights, strides))
    position = f"{prefix}conv_pos.pos_conv.0."
    spelling = next((name for name, keys in WEIGHT_NORM_KEYS.items() if any(position + k in state for k in keys)),
                    "hook")
    weight_v = required(state, position + WEIGHT_NORM_KEYS[spelling][1], family, label)
    width = weight_v.shape[0]
    ffn = required(state, f"{prefix}encoder.layers.0.fc1.weight", family, label).shape[0]
    layers = len({m.group(1) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))})
    layer_mode = f"{prefix}feature_extractor.conv_layers.0.2.1.weight" in state
    return W2VSizes(conv=conv, in_d=weights[0].shape[1],
                    conv_bias=f"{prefix}feature_extractor.conv_layers.0.0.bias" in state,
                    extractor_mode="layer_norm" if layer_mode else "default", width=width, ffn=ffn, layers=layers,
                    heads=heads, layer_norm_first=layer_norm_first, conv_pos=weight_v.shape[2],
                    conv_pos_groups=width // weight_v.shape[1], weight_norm=spelling)


def conv_strides(spec: str, label: str) -> list[int]:
    """The strides of a fairseq `conv_feature_layers` string ("[(256, 2, 2)] * 4 + [(512, 3, 1)]"), read without
    evaluating code.

    Raises:
        ValueError: a term that is not `[(dim, kernel, stride), ...]` optionally times an integer.
    """
    strides = []
    for term in spec.split("+"):
        layers, _, times = term.partition("*")
        try:
            parsed, repeat = ast.literal_eval(layers.strip()), int(times) if times.strip() else 1
            strides += [int(stride) for _, _, stride in parsed] * repeat
        except (ValueError, SyntaxError, TypeError) as err:
            raise ValueError(f"{label}: conv_feature_layers {spec!r} is not [(dim, kernel, stride), ...] * n") from err
    return strides


def sizes_from_config(state: dict, prefix: str, config: dict, family: str, label: str) -> W2VSizes:
    """sizes_from_keys with the strides, heads and pre-norm of a fairseq model config (`conv_feature_layers`,
    `encoder_attention_heads`, `layer_norm_first`; the caller fills in what its config leaves out)."""
    return sizes_from_keys(state, prefix, conv_strides(config["conv_feature_layers"], label),
                           heads=int(config["encoder_attention_heads"]),
                           layer_norm_first=bool(config["layer_norm_first"]), family=family, label=label)
