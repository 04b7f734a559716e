"""Importing the original ESI checkpoint: features equal a straightforward re-implementation of the original.

`OriginalEncoder` below is written from shared/reference/original_esi_checkpoint.md alone, as test code:
time-first input, the "channels_first" norm over time with the unbiased std, LayerNorm over channels in the
blocks, GRN, final LayerNorm on the mean over time, and the unused head. Its random weights are saved under
`img_encoder.` in a real safetensors file next to dummy tensors for every other key of the original layout.
"""

from __future__ import annotations

import ast
import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from esi.data.leads import STANDARD_LEADS
from esi.models.original import (ORIGINAL_LEAD_ORDER, OriginalCheckpointError, detect_original_variant,
                                 load_original_esi_checkpoint, to_original_lead_order, zscore_whole_ecg)

ATTO = ((2, 2, 6, 2), (40, 80, 160, 320))
FEMTO = ((2, 2, 6, 2), (48, 96, 192, 384))


class ChannelsFirstNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, c, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1))

    def forward(self, x):  # (B, C, T): each channel over time
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return (x - mean) / (std + 1e-6) * self.weight + self.bias


class GRN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, c))
        self.beta = nn.Parameter(torch.zeros(1, 1, c))

    def forward(self, x):  # (B, T, C)
        gx = torch.norm(x, p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class OriginalBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dwconv = nn.Conv1d(d, d, kernel_size=7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.pwconv1 = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.grn = GRN(4 * d)
        self.pwconv2 = nn.Linear(4 * d, d)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 2, 1)


class OriginalEncoder(nn.Module):
    def __init__(self, depths, dims):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv1d(12, dims[0], kernel_size=4, stride=4),
                                                              ChannelsFirstNorm(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(ChannelsFirstNorm(dims[i]),
                                                        nn.Conv1d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList([nn.Sequential(*[OriginalBlock(dims[i]) for _ in range(depths[i])])
                                     for i in range(4)])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], 5)

    def features(self, x):  # x: (B, time, 12), time-first as the original's data loader gave it
        x = x.transpose(1, 2)
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
        return self.norm(x.mean(-1))


def random_original_encoder(depths, dims, seed=0):
    """The original encoder with every parameter moved off its initial value (GRN gammas are 0 at init)."""
    torch.manual_seed(seed)
    encoder = OriginalEncoder(depths, dims)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return encoder.eval()


def original_layout(shared_dir):
    """{name: shape} of every tensor in the original atto checkpoint."""
    listing = shared_dir / "reference" / "original_esi_checkpoint_keys_atto.txt"
    rows = (line.split("\t") for line in listing.read_text().splitlines())
    return {name: tuple(ast.literal_eval(shape)) for name, shape in rows}


def save_checkpoint(path, encoder, other_tensors):
    tensors = {f"img_encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    tensors.update(other_tensors)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def atto_checkpoint(tmp_path_factory, shared_dir):
    """A full original-layout atto checkpoint: the reference encoder plus dummies for everything else."""
    reference = random_original_encoder(*ATTO)
    layout = original_layout(shared_dir)
    # The reference implementation has exactly the original's encoder tensors.
    ours = {f"img_encoder.{k}": tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == {k: v for k, v in layout.items() if k.startswith("img_encoder.")}
    others = {k: torch.zeros(shape) for k, shape in layout.items() if not k.startswith("img_encoder.")}
    path = save_checkpoint(tmp_path_factory.mktemp("original") / "model.safetensors", reference, others)
    return path, reference


@pytest.mark.parametrize("length", [5000, 2500, 1000, 1251])
def test_imported_atto_gives_the_original_features(atto_checkpoint, length):
    path, reference = atto_checkpoint
    encoder = load_original_esi_checkpoint(path)
    assert not encoder.training
    torch.manual_seed(length)
    x = torch.randn(2, 12, length)  # (batch, leads, time), already in the original's lead order and scaling
    with torch.no_grad():
        expected = reference.features(x.transpose(1, 2))
        assert torch.allclose(encoder.encode(x), expected, atol=1e-4, rtol=0)


def test_loading_a_folder_reads_its_model_safetensors(atto_checkpoint):
    path, _ = atto_checkpoint
    assert load_original_esi_checkpoint(path.parent).dims == ATTO[1]


def test_other_parts_of_the_model_are_reported_at_debug_level(atto_checkpoint, caplog):
    path, _ = atto_checkpoint
    with caplog.at_level(logging.DEBUG, logger="esi.models.original"):
        load_original_esi_checkpoint(path)
    assert "pretrained_text_encoder" in caplog.text and "img_attn_pool" in caplog.text


def test_femto_is_detected_from_the_shapes(tmp_path):
    reference = random_original_encoder(*FEMTO, seed=1)
    path = save_checkpoint(tmp_path / "model.safetensors", reference, {"temperature": torch.ones(1)})
    encoder = load_original_esi_checkpoint(path)
    assert (encoder.depths, encoder.dims) == FEMTO
    x = torch.randn(1, 12, 640)
    with torch.no_grad():
        assert torch.allclose(encoder.encode(x), reference.features(x.transpose(1, 2)), atol=1e-4, rtol=0)


def test_detect_original_variant_names_the_variant():
    state = random_original_encoder(*FEMTO).state_dict()
    variant = detect_original_variant(state)
    assert (variant.name, variant.depths, variant.dims, variant.in_channels) == ("femto", *FEMTO, 12)


def test_a_missing_encoder_tensor_is_named(tmp_path):
    state = {f"img_encoder.{k}": v for k, v in random_original_encoder(*ATTO).state_dict().items()}
    del state["img_encoder.stages.2.3.grn.gamma"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(OriginalCheckpointError, match=r"missing: img_encoder\.stages\.2\.3\.grn\.gamma"):
        load_original_esi_checkpoint(tmp_path / "model.safetensors")


def test_an_unexpected_encoder_tensor_is_named(tmp_path):
    state = {f"img_encoder.{k}": v for k, v in random_original_encoder(*ATTO).state_dict().items()}
    state["img_encoder.stages.0.0.layer_scale"] = torch.ones(40)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(OriginalCheckpointError, match=r"unexpected: img_encoder\.stages\.0\.0\.layer_scale"):
        load_original_esi_checkpoint(tmp_path / "model.safetensors")


def test_a_mis_shaped_encoder_tensor_is_named(tmp_path):
    state = {f"img_encoder.{k}": v for k, v in random_original_encoder(*ATTO).state_dict().items()}
    state["img_encoder.stages.1.0.dwconv.weight"] = torch.zeros(80, 1, 5)  # kernel 5 instead of 7
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(OriginalCheckpointError, match=r"wrong shape: img_encoder\.stages\.1\.0\.dwconv\.weight"):
        load_original_esi_checkpoint(tmp_path / "model.safetensors")


def test_sizes_of_no_known_variant_load_unless_strict(tmp_path):
    reference = random_original_encoder((1, 1, 2, 1), (8, 16, 32, 64))
    path = save_checkpoint(tmp_path / "model.safetensors", reference, {})
    encoder = load_original_esi_checkpoint(path)
    x = torch.randn(1, 12, 320)
    with torch.no_grad():
        assert torch.allclose(encoder.encode(x), reference.features(x.transpose(1, 2)), atol=1e-4, rtol=0)
    with pytest.raises(OriginalCheckpointError, match="match no known ConvNeXt V2 variant"):
        load_original_esi_checkpoint(path, strict_variant=True)


def test_a_file_without_an_ecg_encoder_is_rejected(tmp_path):
    save_file({"temperature": torch.ones(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(OriginalCheckpointError, match="no ECG encoder tensors"):
        load_original_esi_checkpoint(tmp_path / "model.safetensors")


def test_standard_order_is_permuted_into_the_original_lead_order():
    assert ORIGINAL_LEAD_ORDER[4:6] == ("aVF", "aVL")
    x = torch.arange(12.0).reshape(1, 12, 1).expand(2, 12, 7)  # lead i holds the value i
    reordered = to_original_lead_order(x)
    expected = [float(STANDARD_LEADS.index(lead)) for lead in ORIGINAL_LEAD_ORDER]
    assert reordered[0, :, 0].tolist() == expected == [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]


def test_zscore_uses_one_mean_and_std_over_the_whole_ecg():
    x = torch.randn(2, 12, 5000) * torch.linspace(0.1, 3.0, 12).reshape(1, 12, 1) + 0.5
    z = zscore_whole_ecg(x)
    assert torch.allclose(z.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2)), torch.ones(2), atol=1e-5)
    # One scale for all leads: the ratio between lead amplitudes is kept.
    assert torch.allclose(z[:, 11].std(dim=-1) / z[:, 0].std(dim=-1), torch.full((2,), 30.0), rtol=0.05)
