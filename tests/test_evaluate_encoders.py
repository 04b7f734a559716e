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
