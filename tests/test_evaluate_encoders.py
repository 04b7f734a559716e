"""Encoder specs: the original ESI release fed as it was pretrained (500 Hz, one z-score per ECG, MIMIC lead
order), random-init twins, and spec validation in params files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from esi.config import ConfigError
from esi.data.leads import MIMIC_LEADS
from esi.evaluate.config import load_evaluate_config
from esi.evaluate.encoders import EncoderSpec, load_encoder, random_twin, with_random_baselines
from esi.evaluate.features import store_rows
from esi.evaluate.workspace import Workspace
from esi.models.convnextv2 import ConvNeXtV2Encoder
from esi.models.original import to_original_lead_order, zscore_whole_ecg


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict:
    base = tmp_path_factory.getbasetemp() / "evaluate_shared"
    return {"store_dir": base / "stores", "cache_dir": base / "features"}


@pytest.fixture(scope="module")
def original_file(tmp_path_factory):
    """A file in the original release's layout: a ConvNeXt V2 atto under `img_encoder.`, plus other parts."""
    torch.manual_seed(3)
    encoder = ConvNeXtV2Encoder(downsample_norm="time", remainder="drop")
    tensors = {f"img_encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    tensors["img_encoder.head.weight"] = torch.zeros(5, 320)  # the original's unused classification head
    tensors["temperature"] = torch.tensor(1.0)
    path = tmp_path_factory.mktemp("original") / "model.safetensors"
    save_file(tensors, str(path))
    return path


def test_the_original_release_is_fed_at_500_hz_globally_z_scored_in_mimic_lead_order(original_file, ptbxl_dir,
                                                                                      shared, tmp_path):
    encoder = load_encoder(EncoderSpec(kind="original", path=str(original_file)))
    assert (encoder.fs, encoder.normalize, encoder.leads) == (500.0, "global", MIMIC_LEADS)
    workspace = Workspace(tmp_path, ptbxl_dir, workers=1, progress=False, **shared)
    ids = np.array([1, 2, 3])
    features = workspace.features(encoder, ecg_ids=ids).take(ids)
    # The reference: the models package's own helpers for the original's input, applied to the stored mV.
    store = workspace.dataset.store(500)
    x = torch.from_numpy(store.read(store_rows(store, ids)))
    with torch.inference_mode():
        expected = encoder.module.encode(zscore_whole_ecg(to_original_lead_order(x))).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-4)


def test_the_random_twin_of_the_original_has_its_architecture_and_input_but_not_its_weights(original_file):
    spec = EncoderSpec(kind="original", path=str(original_file), name="original ESI")
    twin = random_twin(spec)
    assert (twin.kind, twin.architecture, twin.fs, twin.normalize, twin.lead_order) == (
        "random", "convnextv2_atto", 500.0, "global", "mimic")
    pretrained, baseline = load_encoder(spec), load_encoder(twin)
    assert baseline.module.downsample_norm == "time" and baseline.module.dims == pretrained.module.dims
    assert baseline.identity != pretrained.identity
    assert [s.name for s in with_random_baselines([spec])] == ["original ESI", "random init (convnextv2_atto)"]
    assert len(with_random_baselines([spec, twin])) == 2  # an already listed baseline is not added twice


def test_specs_that_cannot_work_are_rejected_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="needs an architecture"):
        EncoderSpec(kind="random")
    with pytest.raises(ValueError, match="needs a path"):
        EncoderSpec(kind="esi")
    with pytest.raises(ValueError, match="set fs and normalize"):
        load_encoder(EncoderSpec(kind="random", architecture="convnextv2_atto"))
    params = tmp_path / "p.yaml"
    params.write_text("evaluate_encoders:\n  - {kind: random, architecture: convnextv2_atto, rate: 100}\n")
    with pytest.raises(ConfigError, match="unknown key 'rate'"):
        load_evaluate_config(params)


# --- the field's released encoders, wired into the protocols ----------------------------------------------------

def tiny_merl_vit() -> torch.nn.Module:
    """A MERL ViT of MERL's own layout (64 channels, one block, 50 patches of 100 samples: 5,000 at 500 Hz): small
    enough to encode the 500 shared PTB-XL records in a second."""
    from esi.models.external.merl import MERLViT
    from esi.models.external.prepared import random_init

    return random_init(MERLViT(width=64, depth=1, heads=1, mlp_dim=128, patch=100, patches=50), seed=19)


def tiny_factory(path: str = ""):
    """A `kind: python` factory: (module, InputSpec), here MERL's ViT fed at 100 Hz, 5 s, per-lead [-1, 1]."""
    from esi.data.leads import STANDARD_LEADS
    from esi.models.external import InputSpec
    from esi.models.external.merl import MERLViT

    torch.manual_seed(5)
    module = MERLViT(width=64, depth=1, heads=1, mlp_dim=128, patch=10, patches=50)
    return module, InputSpec(fs=100.0, window_s=5.0, leads=STANDARD_LEADS, normalize="minmax_lead_pm1",
                             pretrained_on=("PTB-XL",))


@pytest.fixture(scope="module")
def merl_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("merl") / "vit_tiny_best_encoder.pth"
    torch.save(tiny_merl_vit().state_dict(), path)
    return path


def test_an_external_encoder_runs_the_linear_probe_and_identification_beside_its_random_twin(merl_file, ptbxl_dir,
                                                                                            shared, tmp_path):
    from esi.evaluate.identification import run_identification
    from esi.evaluate.linear_probe import run_linear_probe
    from esi.models.external import prepare_input

    workspace = Workspace(tmp_path, ptbxl_dir, workers=1, progress=False, **shared)
    spec = EncoderSpec(kind="merl", path=str(merl_file), name="MERL tiny")
    probe = run_linear_probe([spec], workspace, tasks=["superdiagnostic"], fractions=[1.0], epochs=2, n_boot=10,
                             significance_resamples=20).table
    ident = run_identification([spec], workspace, n_boot=10, significance_resamples=20).table
    for table in (probe, ident):
        assert set(table["encoder"]) == {"MERL tiny", "random init (MERL MERLViT)"}
        assert (table["encoder_fs"] == 500.0).all() and (table["encoder_window_s"] == 10.0).all()
        assert (table["encoder_normalize"] == "minmax_record").all()
        assert (table["pretraining_overlap"] == "").all()        # MIMIC-IV-ECG holds no PTB-XL record
        assert table.loc[table["encoder"] == "MERL tiny", "p_value"].notna().any()
    # The comparison figure pairs them from the rows alone (the paired test's note names the twin).
    from esi.plots import plot_encoder_comparison, plt

    figure = plot_encoder_comparison(probe)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["MERL tiny", "random-init twin"]
    plt.close(figure)
    # The features the protocols used are LoadedEncoder.features: the adapter's declared input, then the net.
    encoder = load_encoder(spec)
    ids = np.array([1, 2, 9])
    cached = workspace.features(encoder).take(ids)
    store = workspace.dataset.store(500)
    expected = encoder.module.net.encode(torch.from_numpy(prepare_input(store.read(store_rows(store, ids)), 500,
                                                                        encoder.input)))
    np.testing.assert_allclose(cached, expected.detach().numpy(), atol=1e-5)


def test_an_external_encoder_is_fine_tuned_by_the_benchmark_recipe_on_its_own_window(merl_file, ptbxl_dir, shared,
                                                                                       tmp_path):
    from esi.evaluate.benchmark import PROTOCOL_FINETUNE, run_benchmark

    workspace = Workspace(tmp_path, ptbxl_dir, workers=1, progress=False, **shared)
    spec = EncoderSpec(kind="merl", path=str(merl_file), name="MERL tiny")
    table = run_benchmark([spec], workspace, tasks=["superdiagnostic"], supervised=[], epochs=1, finetune_epochs=1,
                          batch_size=64, save_models=False, n_boot=10, significance_resamples=20).table
    assert set(table["protocol"]) == {PROTOCOL_FINETUNE}
    assert set(table["encoder"]) == {"MERL tiny", "random init (MERL MERLViT)"}
    assert (table["encoder_window_s"] == 10.0).all() and table["value"].between(0, 1).all()
    assert table.loc[table["encoder"] == "MERL tiny", "p_value"].notna().any()


def test_a_python_factory_is_fed_its_declared_input_and_flagged_where_it_saw_the_test_set(ptbxl_dir):
    from esi.evaluate.results import ProtocolResults, result_row

    spec = EncoderSpec(kind="python", factory="test_evaluate_encoders:tiny_factory", name="mine")
    encoder, twin = load_encoder(spec), load_encoder(random_twin(spec))
    assert encoder.input.fs == 100.0 and encoder.dim == 64 and twin.architecture == encoder.architecture
    assert twin.identity != encoder.identity and not twin.pretrained
    x = np.random.default_rng(0).normal(size=(2, 12, 5000)).astype(np.float32)     # 10 s at 500 Hz
    assert encoder.features(x, 500).shape == (2, 64)
    at_100 = x[..., ::5]                                                            # 10 s at its own 100 Hz
    np.testing.assert_allclose(encoder.features(at_100, 100), encoder.features(at_100[..., :500], 100),
                               atol=1e-6)                                           # it sees the first 5 s only
    rows = [result_row("superdiagnostic", "linear_probe", "mine", "macro_auroc", 0.8, n_test=2198)]
    table = ProtocolResults.from_rows(rows, [], encoders=[encoder]).table
    assert table.loc[0, "pretraining_overlap"] == "PTB-XL" and not table.loc[0, "comparable"]
    assert table.loc[0, "why_not"].startswith("the encoder was pretrained on PTB-XL")
    assert (table.loc[0, "encoder_fs"], table.loc[0, "encoder_window_s"]) == (100.0, 5.0)


def test_external_specs_that_cannot_work_name_the_file_and_the_tensor(merl_file, tmp_path):
    with pytest.raises(ValueError, match="encoder kind must be one of .*merl.*got 'merl2'"):
        EncoderSpec(kind="merl2", path="x.pth")
    with pytest.raises(ValueError, match="needs factory"):
        EncoderSpec(kind="python", factory="no_colon")
    with pytest.raises(ValueError, match="remove fs, normalize and lead_order"):
        EncoderSpec(kind="merl", path="x.pth", fs=100)
    with pytest.raises(ValueError, match="cannot import no_such_module"):
        load_encoder(EncoderSpec(kind="python", factory="no_such_module:make"))
    with pytest.raises(ValueError, match=rf"{merl_file}: not an ECGFounder Net1D"):
        load_encoder(EncoderSpec(kind="ecgfounder", path=str(merl_file)))        # a checkpoint of another family
    state = torch.load(merl_file, weights_only=True)
    del state["block0.attn.fn.to_out.0.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=rf"^{broken}: .*missing 1 tensor\(s\): block0\.attn\.fn\.to_out\.0\.weight$"):
        load_encoder(EncoderSpec(kind="merl", path=str(broken)))


def test_every_released_family_has_a_readable_name_in_its_rows():
    from esi.evaluate.encoders import EXTERNAL_KINDS, KIND_TITLES

    assert set(EXTERNAL_KINDS) <= set(KIND_TITLES)      # else its random twin's row reads "random init (dbeta ...)"


def test_features_leave_the_callers_ecgs_as_they_were():
    # normalisation works in place on the prepared copy; at the encoder's own rate and length that copy used to be
    # the caller's array itself
    encoder = load_encoder(EncoderSpec(kind="random", architecture="convnextv2_atto", fs=100, normalize="per_lead"))
    x = np.random.default_rng(0).normal(size=(2, 12, 1000)).astype(np.float32)
    before = x.copy()
    first = encoder.features(x, 100)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(encoder.features(x, 100), first)
