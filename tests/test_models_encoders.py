"""The ECG encoders: registry, parameter counts, shapes at any length, gradients, norms, determinism."""

from __future__ import annotations

import ast
import math

import pytest
import torch

from esi.models import create_encoder
from esi.models.convnextv2 import ChannelLayerNorm, ConvNeXtV2Encoder, TimeNorm
from esi.models.registry import EncoderOutput, count_parameters, list_encoders

# Depths and dims of every ConvNeXt V2 variant, written out from shared/reference/original_esi_checkpoint.md
# (not read from esi.models, so a typo there shows up here).
VARIANTS = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}


def convnextv2_parameter_count(depths, dims, in_channels=12):
    """Parameters of a 1D ConvNeXt V2 encoder without head, counted layer by layer."""
    stem = in_channels * dims[0] * 4 + dims[0] + 2 * dims[0]  # conv k4 (+bias), norm
    downsampling = sum(2 * dims[i] + dims[i] * dims[i + 1] * 2 + dims[i + 1] for i in range(3))  # norm, conv k2
    # block: dwconv 7d+d, LayerNorm 2d, Linear d->4d 4d^2+4d, GRN 2*4d, Linear 4d->d 4d^2+d
    blocks = sum(depth * (8 * d * d + 23 * d) for depth, d in zip(depths, dims))
    return stem + downsampling + blocks + 2 * dims[-1]  # final LayerNorm


def xresnet1d101_parameter_count():
    """Parameters of the benchmark's xresnet1d101 backbone (convs without bias, BN weight + bias)."""
    stem = (12 * 32 * 5 + 2 * 32) + (32 * 32 * 5 + 2 * 32) + (32 * 64 * 5 + 2 * 64)

    def bottleneck(c_in):
        convs = (c_in * 64 + 2 * 64) + (64 * 64 * 5 + 2 * 64) + (64 * 256 + 2 * 256)
        projection = c_in * 256 + 2 * 256 if c_in != 256 else 0  # only where the channel count changes
        return convs + projection

    return stem + bottleneck(64) + (3 + 4 + 23 + 3 - 1) * bottleneck(256)


@pytest.fixture(scope="module")
def small_encoders():
    """One atto and one xresnet1d101 in eval mode, built once for the shape tests."""
    return {name: create_encoder(name).eval() for name in ("convnextv2_atto", "xresnet1d101")}


def test_list_encoders_names_every_variant_and_xresnet():
    assert list_encoders() == [f"convnextv2_{v}" for v in VARIANTS] + ["xresnet1d101"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_convnextv2_parameter_count_matches_formula(variant):
    # The meta device builds even `large` without allocating its weights.
    with torch.device("meta"):
        encoder = create_encoder(f"convnextv2_{variant}")
    depths, dims = VARIANTS[variant]
    assert (encoder.depths, encoder.dims, encoder.dim) == (depths, dims, dims[-1])
    assert count_parameters(encoder) == convnextv2_parameter_count(depths, dims)


def test_atto_parameter_count_equals_original_checkpoint_listing(shared_dir):
    listing = shared_dir / "reference" / "original_esi_checkpoint_keys_atto.txt"
    expected = 0
    for line in listing.read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith("img_encoder.") and not name.startswith("img_encoder.head."):
            expected += math.prod(ast.literal_eval(shape))
    assert count_parameters(create_encoder("convnextv2_atto")) == expected


def test_xresnet1d101_parameter_count_matches_formula():
    assert count_parameters(create_encoder("xresnet1d101")) == xresnet1d101_parameter_count()


def test_xresnet1d101_every_stage_outputs_256_channels(small_encoders):
    encoder = small_encoders["xresnet1d101"]
    widths = []
    with torch.no_grad():
        x = encoder.stem(torch.randn(1, 12, 1000))
        for stage in encoder.stages:
            x = stage(x)
            widths.append(x.shape[1])
    assert widths == [256, 256, 256, 256] and encoder.dim == 256


def test_xresnet1d101_residual_branches_start_at_zero_unless_the_benchmark_recipe_reinitialises_them():
    from esi.evaluate.benchmark import benchmark_weight_init

    encoder = create_encoder("xresnet1d101")
    last_bn_weights = [block.convs[-1][1].weight for stage in encoder.stages for block in stage]
    assert len(last_bn_weights) == 33
    # The model's own initialisation (kept by Protocol A's "esi" recipe): each block starts as the identity.
    assert all(torch.all(w == 0) for w in last_bn_weights)
    # The PTB-XL benchmark applies its weight_init after building the model: every BatchNorm weight back to 1.
    encoder.apply(benchmark_weight_init)
    assert all(torch.all(w == 1) for w in last_bn_weights)


@pytest.mark.parametrize("name", ["convnextv2_atto", "xresnet1d101"])
@pytest.mark.parametrize("length", [1000, 2500, 5000, 1250, 999])
def test_output_shapes_at_any_length(small_encoders, name, length):
    encoder = small_encoders[name]
    with torch.no_grad():
        out = encoder(torch.randn(2, 12, length))
    assert isinstance(out, EncoderOutput)
    assert encoder.reduction == 32
    assert out.tokens.shape == (2, math.ceil(length / 32), encoder.dim)
    assert out.pooled.shape == (2, encoder.dim)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("variant", ["femto", "pico", "nano", "tiny"])  # base, large: counted on meta only
def test_larger_variants_run_on_a_short_input(variant):
    encoder = create_encoder(f"convnextv2_{variant}").eval()
    with torch.no_grad():
        pooled = encoder.encode(torch.randn(1, 12, 100))
    assert pooled.shape == (1, VARIANTS[variant][1][-1])


def test_encode_returns_the_pooled_output(small_encoders):
    encoder = small_encoders["convnextv2_atto"]
    x = torch.randn(2, 12, 640)
    with torch.no_grad():
        assert torch.equal(encoder.encode(x), encoder(x).pooled)


def test_pad_sees_the_last_samples_drop_ignores_them():
    torch.manual_seed(0)
    padded = create_encoder("convnextv2_atto", remainder="pad").eval()
    dropping = create_encoder("convnextv2_atto", remainder="drop").eval()
    dropping.load_state_dict(padded.state_dict())
    x = torch.randn(1, 12, 1003)  # 1003 = 250 * 4 + 3: the stem of "drop" never sees the last 3 samples
    x_changed = x.clone()
    x_changed[..., -3:] += 1.0
    with torch.no_grad():
        assert dropping(x).tokens.shape[1] == 31  # floor at every stride: 1003 -> 250 -> 125 -> 62 -> 31
        assert torch.equal(dropping.encode(x), dropping.encode(x_changed))
        assert not torch.allclose(padded.encode(x), padded.encode(x_changed))


def test_drop_remainder_rejects_inputs_shorter_than_the_reduction():
    encoder = create_encoder("convnextv2_atto", remainder="drop")
    with pytest.raises(ValueError, match="at least 32 samples"):
        encoder(torch.randn(1, 12, 31))


def test_time_first_input_is_rejected_with_a_hint():
    encoder = create_encoder("convnextv2_atto")
    with pytest.raises(ValueError, match="time-first"):
        encoder(torch.randn(2, 5000, 12))


def test_unknown_encoder_name_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'convnextv2_atto'"):
        create_encoder("convnext_atto")


@pytest.mark.parametrize("name", ["convnextv2_atto", "xresnet1d101"])
def test_gradients_reach_every_parameter_and_the_input(name):
    torch.manual_seed(0)
    encoder = create_encoder(name).train()
    x = torch.randn(2, 12, 500, requires_grad=True)
    out = encoder(x)
    # A fixed random projection of both outputs: a plain sum of a LayerNorm output would be ~constant.
    loss = (out.pooled * torch.randn_like(out.pooled)).sum() + (out.tokens * torch.randn_like(out.tokens)).sum()
    loss.backward()
    no_grad = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert x.grad.abs().sum() > 0


def test_eval_mode_is_deterministic_and_drop_path_is_random_in_training():
    torch.manual_seed(0)
    encoder = create_encoder("convnextv2_atto", drop_path_rate=0.5)
    x = torch.randn(4, 12, 512)
    with torch.no_grad():
        encoder.eval()
        assert torch.equal(encoder.encode(x), encoder.encode(x))
        encoder.train()
        assert not torch.equal(encoder.encode(x), encoder.encode(x))


def test_time_norm_normalises_each_channel_over_time():
    x = torch.randn(3, 8, 50) * 5 + 2
    y = TimeNorm(8)(x)
    assert torch.allclose(y.mean(dim=-1), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(y.std(dim=-1), torch.ones(3, 8), atol=1e-5)


def test_channel_norm_normalises_the_channels_at_each_time_step():
    x = torch.randn(3, 8, 50) * 5 + 2
    y = ChannelLayerNorm(8)(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(3, 50), atol=1e-5)
    assert torch.allclose(y.var(dim=1, unbiased=False), torch.ones(3, 50), atol=1e-3)


def test_time_and_channel_downsample_norms_give_different_features():
    torch.manual_seed(0)
    channel = ConvNeXtV2Encoder(downsample_norm="channel").eval()
    torch.manual_seed(0)
    time = ConvNeXtV2Encoder(downsample_norm="time").eval()
    # Same random convs and linears (same seed, same order); only the norms differ.
    assert torch.equal(channel.stages[2][0].pwconv1.weight, time.stages[2][0].pwconv1.weight)
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        assert not torch.allclose(channel.encode(x), time.encode(x), atol=1e-3)
