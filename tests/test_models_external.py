"""The field's released encoders (esi.models.external) against their reference repositories' own code.

Each fixture in tests/data/encoders/<name>/ was made by scripts/reference_features.py, which ran the reference
repository's model and loader code (commit in reference.json) with `seeded_state_dict` weights on real PTB-XL
records. Here the same weights are rebuilt in the reference's key layout, loaded strictly through our adapter,
the same records are prepared by `prepare_input`, and the features must match.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from esi.data.reader import read_ecg
from esi.models.external import InputSpec, load_external, prepare_input
from external_weights import read_fixture, seeded_state_dict

# Allowed max |ours - reference|, as a fraction of the reference features' largest magnitude.
RELATIVE_TOLERANCE = 1e-4

# fixture name -> (kind, expected architecture class, feature dim, the tensors the adapter may drop)
ADAPTERS = {
    "merl_resnet18": ("merl", "MERLResNet", 512, r"^(linear|head)\."),
    "merl_vit_tiny": ("merl", "MERLViT", 192, r"^(linear|head)\."),
    "ecgfounder_net1d": ("ecgfounder", "Net1D", 1024, r"^dense\.|^first_bn\.|\.bn[123]\."),
    "stmem_vit_small": ("stmem", "STMEMViT", 384, r"^head\."),  # ST_MEM_ViT at width 384 (released: 768)
    "hubert_ecg_small": ("hubert_ecg", "HubertECGEncoder", 192, r"^(final_proj|label_embedding)\."),
    "ked_xresnet1d101": ("ked", "KEDXResNet1d", 768, r"^$"),  # nothing to drop
    "dbeta_small": ("dbeta", "DBETAEncoder", 192, r"^(ecg_encoder\.mask_emb|language_encoder|multi_modal_language_proj|"
                    r"modality_type_embeddings|multi_modal_(ecg|language)_(layers|pooler)|unimodal_language_pooler|"
                    r"(mlm|mim|itm)_head)(\.|$)"),  # at width 192 (released: 768)
    "ecg_fm_small": ("ecg_fm", "ECGFMEncoder", 192, r"^(mask_emb|quantizer|project_q|final_proj)(\.|$)"),  # width 192
    "heartlang_small": ("heartlang", "HeartLangEncoder", 128, r"^(lm_head|mask_token)(\.|$)"),  # width 128
    "ecg_jepa_small": ("ecg_jepa", "ECGJEPAEncoder", 192, r"^$"),  # MaskTransformer at width 192 (released: 768)
}


def load(name: str, source):
    """load_external for fixture `name` (HuBERT-ECG's state_dicts come with the fixture's config)."""
    meta = fixture_weights(name)[0]
    return load_external(ADAPTERS[name][0], source, **({"config": meta["config"]} if "config" in meta else {}))


def save(name: str, state: dict, folder) -> Path:
    """Write `state` in fixture `name`'s release format; the path to load."""
    meta = fixture_weights(name)[0]
    if "config" in meta:  # the release's config.json beside its weights
        (folder / "config.json").write_text(json.dumps(meta["config"]))
    if ADAPTERS[name][0] == "hubert_ecg":  # a model card folder
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
        return folder / "model.safetensors"
    torch.save(state, folder / "encoder.pth")
    return folder / "encoder.pth"


def ptbxl_records(ptbxl_dir, ids, rate: int = 500) -> np.ndarray:
    """(n, 12, T) millivolts, standard lead order, read by the toolkit's own reader."""
    suffix = "hr" if rate == 500 else "lr"
    return np.stack([read_ecg(ptbxl_dir / f"records{rate}" / f"{i // 1000 * 1000:05d}" / f"{i:05d}_{suffix}").signal
                     for i in ids])


@functools.cache  # the tests only read these (every change below builds a new dict)
def fixture_weights(name: str) -> tuple[dict, dict[str, torch.Tensor], np.ndarray]:
    meta, expected = read_fixture(name)
    return meta, seeded_state_dict(meta["layout"], meta["seed"]), expected


def features(module, spec: InputSpec, ecgs: np.ndarray, fs: float) -> np.ndarray:
    with torch.no_grad():
        return module.encode(torch.from_numpy(prepare_input(ecgs, fs, spec))).numpy()


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_matches_reference_code(name, ptbxl_dir):
    kind, architecture, dim, _ = ADAPTERS[name]
    meta, state, expected = fixture_weights(name)
    module, spec = load(name, state)
    assert type(module).__name__ == architecture and module.dim == dim and not module.training
    ours = features(module, spec, ptbxl_records(ptbxl_dir, meta["ptbxl_records"]), meta["rate"])
    assert ours.shape == expected.shape == (len(meta["ptbxl_records"]), dim)
    scale = float(np.abs(expected).max())
    difference = float(np.abs(ours - expected).max())
    assert difference <= RELATIVE_TOLERANCE * scale, f"{name}: max |diff| {difference:.3g} vs scale {scale:.3g}"
    # The records differ by far more than the tolerance, so matching them is not a matter of any output fitting.
    assert np.abs(expected[0] - expected[1]).max() > 100 * RELATIVE_TOLERANCE * scale


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_loads_from_file_and_drops_only_documented_heads(name, tmp_path):
    kind, _, _, droppable = ADAPTERS[name]
    _, state, _ = fixture_weights(name)
    path = save(name, state, tmp_path)
    module, _ = load_external(kind, path)
    kept = {k.removeprefix("hubert.") for k in module.state_dict()}  # HuBERT-ECG's wrapper holds the HubertModel
    assert kept <= set(state)
    assert all(re.search(droppable, key) for key in set(state) - kept), sorted(set(state) - kept)
    # A refusal names the file and the tensor.
    removed = sorted(kept)[len(kept) // 2]
    path = save(name, {k: v for k, v in state.items() if k != removed}, tmp_path)
    with pytest.raises(ValueError, match=rf"^{path}: .*missing 1 tensor\(s\): {re.escape(removed)}$"):
        load_external(kind, path)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_missing_unexpected_or_misshaped_tensor_is_refused_by_name(name):
    _, _, _, droppable = ADAPTERS[name]
    _, state, _ = fixture_weights(name)
    kept = sorted(k for k in state if not re.search(droppable, k))
    for removed in (kept[0], kept[len(kept) // 3], kept[-1]):  # the first and last also size the architecture
        with pytest.raises(ValueError, match=rf"missing 1 tensor\(s\): {re.escape(removed)}( |$)"):
            load(name, {k: v for k, v in state.items() if k != removed})

    with pytest.raises(ValueError, match=r"unexpected 1 tensor\(s\): stray\.weight$"):
        load(name, {**state, "stray.weight": torch.zeros(3)})

    matrices = sorted(k for k in kept if state[k].ndim >= 2)
    resized = matrices[len(matrices) // 2]  # not one that sizes the architecture (those are first in each block)
    with pytest.raises(ValueError, match=rf"wrong shape of {re.escape(resized)}"):
        load(name, {**state, resized: state[resized][:, :1]})


def test_every_kind_has_a_reference_fixture():
    from esi.models.external import LOADERS

    assert {kind for kind, *_ in ADAPTERS.values()} == set(LOADERS)


def test_merl_input_is_its_loaders(ptbxl_dir):
    """MERL's input: first 5,000 samples at 500 Hz, one min-max over the record, aVF before aVL."""
    _, spec = load_external("merl", fixture_weights("merl_resnet18")[1])
    ecgs = ptbxl_records(ptbxl_dir, [1])
    x = prepare_input(ecgs, 500, spec)
    assert x.shape == (1, 12, 5000) and x.dtype == np.float32
    assert x.min() == pytest.approx(0.0, abs=1e-7) and x.max() == pytest.approx(1.0, abs=1e-6)
    low, high = ecgs.min(), ecgs.max()
    np.testing.assert_allclose(x[0, 4], (ecgs[0, 5] - low) / (high - low), atol=1e-6)  # aVF in slot 4
    # A 2.5 s record is zero-padded to 10 s before the min-max (MERL's CPSC2018 branch).
    short = prepare_input(ecgs[..., :1250], 500, spec)
    assert short.shape == (1, 12, 5000)
    low, high = min(ecgs[..., :1250].min(), 0.0), max(ecgs[..., :1250].max(), 0.0)
    np.testing.assert_allclose(short[0, :, 1250:], -low / (high - low), atol=1e-6)


def test_wrong_input_changes_features_beyond_tolerance(ptbxl_dir):
    """The comparison is sharp enough to see the classic mistakes: leads in the standard order, or z-scoring."""
    meta, state, expected = fixture_weights("merl_resnet18")
    module, spec = load_external("merl", state)
    ecgs = ptbxl_records(ptbxl_dir, meta["ptbxl_records"])
    tolerance = RELATIVE_TOLERANCE * float(np.abs(expected).max())
    for wrong in (InputSpec(500.0, 10.0, spec.leads[:4] + (spec.leads[5], spec.leads[4]) + spec.leads[6:],
                            "minmax_record"),
                  InputSpec(500.0, 10.0, spec.leads, "zscore_record")):
        assert np.abs(features(module, wrong, ecgs, 500) - expected).max() > 10 * tolerance


def test_prepare_input_resamples_to_the_declared_rate(ptbxl_dir):
    """A 100 Hz record is brought to the encoder's 500 Hz, and lands close to the 500 Hz original."""
    _, spec = load_external("merl", fixture_weights("merl_resnet18")[1])
    at_100 = prepare_input(ptbxl_records(ptbxl_dir, [1], rate=100), 100, spec)
    at_500 = prepare_input(ptbxl_records(ptbxl_dir, [1]), 500, spec)
    assert at_100.shape == at_500.shape == (1, 12, 5000)
    assert np.corrcoef(at_100.ravel(), at_500.ravel())[0, 1] > 0.95


def test_prepare_input_refuses_bad_input():
    spec = InputSpec(500.0, 10.0, ("I", "II"), "none")
    with pytest.raises(ValueError, match=r"expected \(n, 12, T\)"):
        prepare_input(np.zeros((2, 8, 100)), 500, spec)
    bad = np.zeros((3, 12, 100))
    bad[2, 0, 5] = np.nan
    with pytest.raises(ValueError, match="record\\(s\\) 2 hold NaN"):
        prepare_input(bad, 500, spec)
    with pytest.raises(ValueError, match="unknown lead"):
        InputSpec(500.0, 10.0, ("I", "X"), "none")


def test_unknown_kind_and_wrong_family_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown external encoder kind 'nope'"):
        load_external("nope", {})
    path = tmp_path / "other.pth"
    torch.save({"encoder.stem.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=rf"{path}: not a MERL ECG encoder"):
        load_external("merl", path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_external("merl", tmp_path / "absent.pth")


def test_ecgfounder_refuses_a_net1d_that_applied_batchnorm(tmp_path):
    """Its BatchNorm tensors are dropped only because use_bn=False never applies them; a Net1D whose BatchNorm
    ran in training (batches counted) is refused rather than silently changed."""
    _, state, _ = fixture_weights("ecgfounder_net1d")
    path = tmp_path / "ecgfounder.pth"
    key = "stage_list.1.block_list.0.bn2.num_batches_tracked"
    torch.save({"state_dict": {**state, key: torch.tensor(1200)}}, path)
    with pytest.raises(ValueError, match=rf"{path}: {re.escape(key)} = 1200: .*use_bn=True"):
        load_external("ecgfounder", path)
    torch.save({"state_dict": {"layer1.0.conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=rf"{path}: not an ECGFounder Net1D"):
        load_external("ecgfounder", path)


def test_ecgfounder_input_is_filtered_and_z_scored(ptbxl_dir):
    _, spec = load_external("ecgfounder", fixture_weights("ecgfounder_net1d")[1])
    assert (spec.fs, spec.n_samples, spec.leads[4], spec.filter) == (500.0, 5000, "aVL", "ecgfounder")
    x = prepare_input(ptbxl_records(ptbxl_dir, [1]), 500, spec)
    assert abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1.0, abs=1e-5)
    unfiltered = prepare_input(ptbxl_records(ptbxl_dir, [1]), 500, InputSpec(500.0, 10.0, spec.leads, "zscore_record"))
    assert np.abs(x - unfiltered).max() > 0.1


def test_stmem_input_is_three_filtered_standardised_crops_at_250_hz(ptbxl_dir):
    _, spec = load_external("stmem", fixture_weights("stmem_vit_small")[1])
    x = prepare_input(ptbxl_records(ptbxl_dir, [1, 2]), 500, spec)
    assert x.shape == (2, 3, 12, 2250)  # 10 s at 250 Hz = 2,500 samples: crops start at 0, 125 and 250
    np.testing.assert_allclose(x.mean(axis=(2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(2, 3)), 1, atol=1e-4)
    # A 60 s record gives crops spread over the whole record; a 5 s record is zero-padded to one crop's length.
    assert prepare_input(np.tile(ptbxl_records(ptbxl_dir, [1]), 6), 500, spec).shape == (1, 3, 12, 2250)
    assert prepare_input(ptbxl_records(ptbxl_dir, [1])[..., :2500], 500, spec).shape == (1, 3, 12, 2250)


def test_stmem_refuses_other_lead_counts_and_lengths():
    _, state, _ = fixture_weights("stmem_vit_small")
    fewer = {k: v for k, v in state.items() if k != "lead_embeddings.11"}
    with pytest.raises(ValueError, match="11 lead embeddings"):
        load_external("stmem", fewer)
    module, _ = load_external("stmem", state)
    with pytest.raises(ValueError, match="2250 samples, got 12 of 2500"):
        module.encode(torch.zeros(1, 12, 2500))


def test_hubert_ecg_input_is_one_flattened_100_hz_sequence(ptbxl_dir):
    _, spec = load("hubert_ecg_small", fixture_weights("hubert_ecg_small")[1])
    ecgs = ptbxl_records(ptbxl_dir, [1, 2])
    x = prepare_input(ecgs, 500, spec)
    assert x.shape == (2, 6000)  # 12 leads x 5 s at 100 Hz, lead after lead
    # Each lead was scaled onto [-1, 1] over the whole 10 s record, before the first 5 s were taken.
    assert -1.1 < x.min() and x.max() < 1.1 and x.max() > 0.5


def test_hubert_ecg_accepts_both_weight_norm_spellings(tmp_path):
    """Older torch saved the positional conv's weight norm as weight_g/weight_v; both load to the same model."""
    _, state, _ = fixture_weights("hubert_ecg_small")
    renames = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}
    old_style = {}
    for key, tensor in state.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        old_style[key] = tensor
    assert any(k.endswith(".weight_g") for k in old_style)
    module, _ = load_external("hubert_ecg", save("hubert_ecg_small", old_style, tmp_path))
    reference, _ = load("hubert_ecg_small", state)
    x = torch.randn(2, 6000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(module.encode(x), reference.encode(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_external("hubert_ecg", tmp_path / "elsewhere")


def test_ked_reads_the_ecg_model_of_its_training_checkpoint(tmp_path, ptbxl_dir):
    """KED's .pt holds the whole model; the encoder is its "ecg_model". Input: 100 Hz, MIMIC order, millivolts."""
    _, state, _ = fixture_weights("ked_xresnet1d101")
    path = tmp_path / "ked.pt"
    torch.save({"ecg_model": state, "model": {"query_embed.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    module, spec = load_external("ked", path)
    assert module.dim == 768 and spec.fs == 100.0 and spec.leads[4] == "aVF" and spec.normalize == "none"
    x = prepare_input(ptbxl_records(ptbxl_dir, [1]), 500, spec)
    assert x.shape == (1, 12, 1000)
    torch.save({"model": {"query_embed.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    with pytest.raises(ValueError, match=rf"{path}: no state_dict of tensors at its top or under 'ecg_model'"):
        load_external("ked", path)
    with pytest.raises(ValueError, match=r"state_dict: not an ECGFM-KED xresnet1d101"):
        load_external("ked", {"query_embed.weight": torch.zeros(2, 2)})


def test_ecg_jepa_input_is_eight_leads_at_250_hz_in_millivolts(ptbxl_dir):
    """ECG-JEPA sees I, II, V1-V6 of the first 10 s, Fourier-resampled to 2,500 samples, not normalised."""
    from scipy.signal import resample

    _, spec = load_external("ecg_jepa", fixture_weights("ecg_jepa_small")[1])
    ecgs = ptbxl_records(ptbxl_dir, [1])
    x = prepare_input(ecgs, 500, spec)
    assert x.shape == (1, 8, 2500) and spec.leads == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    np.testing.assert_allclose(x[0], resample(ecgs[0, [0, 1, 6, 7, 8, 9, 10, 11]], 2500, axis=-1), atol=1e-5)
    with pytest.raises(ValueError, match=r"state_dict: not an ECG-JEPA encoder"):
        load_external("ecg_jepa", {"blocks.0.weight": torch.zeros(2, 2)})


def test_ecg_fm_reads_its_fine_tuned_layout_and_standardises_each_lead(ptbxl_dir):
    """A fine-tuned ECG-FM holds the same transformer under `encoder.` with a label head `proj` (dropped); its
    input is each lead standardised over the record, as two 5 s segments."""
    meta, state, _ = fixture_weights("ecg_fm_small")
    pretrained, spec = load_external("ecg_fm", state, config=meta["config"])
    kept = pretrained.state_dict()
    fine_tuned = {**{f"encoder.{k}": state[k] for k in kept}, "proj.weight": torch.zeros(17, 192),
                  "proj.bias": torch.zeros(17)}
    module, _ = load_external("ecg_fm", fine_tuned, config=meta["config"])
    x = prepare_input(ptbxl_records(ptbxl_dir, [1]), 500, spec)
    assert x.shape == (1, 2, 12, 2500)
    record = np.concatenate([x[0, 0], x[0, 1]], axis=-1)  # the two segments are the record's first 10 s
    np.testing.assert_allclose(record.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(record.std(axis=-1), 1, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(module.encode(torch.from_numpy(x)), pretrained.encode(torch.from_numpy(x)))
    with pytest.raises(ValueError, match=r"unexpected 1 tensor\(s\): classifier\.weight$"):
        load_external("ecg_fm", {**fine_tuned, "classifier.weight": torch.zeros(2)}, config=meta["config"])


def test_dbeta_takes_strides_and_heads_from_its_config(tmp_path):
    """No key holds D-BETA's conv strides or heads: they come from config.json (beside the checkpoint, or given);
    a config whose conv layers do not match the weights is refused."""
    meta, state, _ = fixture_weights("dbeta_small")
    path = save("dbeta_small", state, tmp_path)  # writes the fixture's config.json beside it
    module, spec = load_external("dbeta", path)
    assert module.ecg_encoder.sizes.heads == 4
    assert spec.fs == 500.0 and spec.normalize == "none" and spec.leads[4] == "aVL"
    x = torch.randn(2, 12, 5000, generator=torch.Generator().manual_seed(0))
    two_heads = load_external("dbeta", state, config={**meta["config"]["model"], "encoder_attention_heads": 2})[0]
    with torch.no_grad():
        assert (module.encode(x) - two_heads.encode(x)).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"state_dict: 4 conv layers under ecg_encoder.feature_extractor, but the "
                                         r"config gives 3 strides"):
        load_external("dbeta", state, config={"conv_feature_layers": "[(64, 2, 2)] * 3"})
    with pytest.raises(ValueError, match=r"conv_feature_layers 'import os' is not"):
        load_external("dbeta", state, config={"conv_feature_layers": "import os"})


def test_heartlang_sentence_is_lead_i_heartbeats_word_by_word(ptbxl_dir):
    """HeartLang's words: each beat XQRS finds on lead I, cut from every lead and centred in a 96-sample word,
    lead after lead, tagged with its lead (1-12) and second; zero words (lead 0, second 0) fill 256."""
    from wfdb.processing import xqrs_detect

    module, spec = load_external("heartlang", fixture_weights("heartlang_small")[1])
    x = prepare_input(ptbxl_records(ptbxl_dir, [1]), 500, spec)
    assert x.shape == (1, 12, 1000) and spec.fs == 100.0 and spec.filter == "heartlang"
    words, leads, seconds = (t[0].numpy() for t in module.tokenize(torch.from_numpy(x)))
    qrs = xqrs_detect(sig=x[0, 0], fs=100, verbose=False)
    beats = len(qrs)
    assert words.shape == (256, 96) and 5 < beats < 21
    np.testing.assert_array_equal(leads[:12 * beats], np.repeat(np.arange(1, 13), beats))
    np.testing.assert_array_equal(seconds[:12 * beats], np.tile(qrs // 100 + 1, 12))
    assert not leads[12 * beats:].any() and not seconds[12 * beats:].any() and not words[12 * beats:].any()
    # A beat whose halfway points to its neighbours lie within 48 samples sits at the word's centre, in every lead.
    centred = [i for i in range(1, beats - 1) if qrs[i] - (qrs[i] + qrs[i - 1]) // 2 <= 48
               and (qrs[i] + qrs[i + 1]) // 2 - qrs[i] <= 48]
    assert len(centred) >= beats // 2
    np.testing.assert_array_equal(words[centred, 48], x[0, 0, qrs[centred]])
    np.testing.assert_array_equal(words[[11 * beats + i for i in centred], 48], x[0, 11, qrs[centred]])
    # A fine-tuned ST_ECGFormerClassifier: the same model under `backbone.`, its label head dropped.
    state = fixture_weights("heartlang_small")[1]
    fine_tuned = {**{f"backbone.{k}": v for k, v in state.items()}, "mlp_head.weight": torch.zeros(5, 128),
                  "mlp_head.bias": torch.zeros(5)}
    with torch.no_grad():
        assert torch.equal(load_external("heartlang", fine_tuned)[0].encode(torch.from_numpy(x)),
                           module.encode(torch.from_numpy(x)))
