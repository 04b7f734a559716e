"""The ESI model: losses, the causal caption decoder, encoding, captioning, parameter groups, save/load.

A small real model: ConvNeXt V2 atto + the bundled MiniLM, 1000-sample ECGs, batch 4, texts <= 64 tokens.
"""

from __future__ import annotations

import json

import pytest
import torch

from esi.models.caption import beam_search, greedy_search
from esi.models.esi_model import ESIConfig, ESIModel
from esi.models.pretrained import load_ecg_encoder

REPORTS = [
    "sinus rhythm. normal ecg",
    "atrial fibrillation with rapid ventricular response. nonspecific st changes",
    "sinus bradycardia. left ventricular hypertrophy with repolarization abnormality",
    "left bundle branch block",
]


def small_config(**changes) -> ESIConfig:
    settings = dict(ecg_encoder="convnextv2_atto", text_encoder="minilm", max_text_length=64, latent_dim=64,
                    n_queries=8, decoder_depth=2, decoder_heads=4)
    return ESIConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def model() -> ESIModel:
    torch.manual_seed(0)
    return ESIModel(small_config()).eval()  # eval: no dropout, so outputs are comparable


@pytest.fixture(scope="module")
def ecg() -> torch.Tensor:
    return torch.randn(4, 12, 1000, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def texts(model) -> dict[str, torch.Tensor]:
    return model.tokenize(REPORTS)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("esi") / "pretrained")


MADE_UP_HUB_NAME = "no-such-org/made-up-model"


@pytest.fixture(scope="module")
def loaded(saved) -> ESIModel:
    """The saved model loaded back, with config.json naming a hub model that does not exist: loading must
    rebuild the text encoder from the folder's text_encoder/ files and never look the name up."""
    config = json.loads((saved / "config.json").read_text())
    config["text_encoder"] = MADE_UP_HUB_NAME
    (saved / "config.json").write_text(json.dumps(config))
    return ESIModel.from_pretrained(saved)


def test_forward_returns_both_losses_and_their_weighted_sum(model, ecg, texts):
    with torch.no_grad():
        out = model(ecg, **texts)

    assert torch.isfinite(out["contrastive_loss"]) and torch.isfinite(out["caption_loss"])
    torch.testing.assert_close(out["loss"], out["contrastive_loss"] + out["caption_loss"])
    assert out["logits_per_ecg"].shape == (4, 4)
    assert out["caption_logits"].shape == (4, texts["input_ids"].shape[1] - 1, model.text_encoder.vocab_size)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_caption_decoder_never_sees_the_tokens_it_predicts(model, ecg, texts):
    t = 5  # logits at positions <= t predict tokens <= t + 1 from tokens <= t
    changed = texts["input_ids"].clone()
    changed[:, t + 1:] = torch.randint(1000, 2000, changed[:, t + 1:].shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(ecg, texts["input_ids"], texts["attention_mask"])["caption_logits"]
        after = model(ecg, changed, texts["attention_mask"])["caption_logits"]

    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1])
    assert not torch.allclose(after[:, t + 1], before[:, t + 1])  # the change is visible right after t


def test_gradients_reach_both_encoders_the_pooler_and_the_decoder(model, ecg, texts):
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        model(ecg, **texts)["loss"].backward()
    finally:
        model.eval()

    def has_gradient(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    for part in ("ecg_encoder", "text_encoder", "ecg_pooler", "decoder", "ecg_to_latent", "text_to_latent"):
        assert has_gradient(getattr(model, part)), part
    assert model.logit_scale.grad is not None
    model.zero_grad(set_to_none=True)


def test_encode_ecg_gives_unit_latents_or_the_raw_pooled_features(model, ecg):
    with torch.no_grad():
        latents = model.encode_ecg(ecg)
        raw = model.encode_ecg(ecg, raw=True)
        pooled = model.ecg_encoder(ecg).pooled

    assert latents.shape == (4, 64)
    torch.testing.assert_close(latents.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(raw, pooled)  # contrastive_source="encoder"


def test_encode_text_accepts_strings_or_token_ids(model, texts):
    with torch.no_grad():
        from_strings = model.encode_text(REPORTS)
        from_ids = model.encode_text(texts["input_ids"], texts["attention_mask"])
    torch.testing.assert_close(from_strings, from_ids)
    torch.testing.assert_close(from_ids.norm(dim=-1), torch.ones(4))


def test_caption_returns_strings_deterministically_for_greedy_and_beam_search(model, ecg):
    greedy = model.caption(ecg, max_new_tokens=8)
    beam = model.caption(ecg, max_new_tokens=8, num_beams=3)

    assert len(greedy) == len(beam) == 4
    assert all(isinstance(text, str) and text for text in greedy + beam)
    assert model.caption(ecg, max_new_tokens=8) == greedy
    assert model.caption(ecg, max_new_tokens=8, num_beams=3) == beam


def test_beam_search_with_one_beam_is_greedy_search(model, ecg):
    with torch.no_grad():
        _, queries = model._ecg_features(ecg)
    ids = dict(bos_id=model.text_encoder.bos_token_id, eos_id=model.text_encoder.eos_token_id,
               pad_id=model.text_encoder.pad_token_id, max_new_tokens=6)
    torch.testing.assert_close(beam_search(model.decoder, queries, num_beams=1, **ids),
                               greedy_search(model.decoder, queries, **ids))


def test_param_groups_split_pretrained_text_from_new_parts_and_skip_decay_on_norms(model):
    groups = model.param_groups(lr_ecg=1e-3, lr_text=1e-5, weight_decay=0.05)
    by_name = {group["name"]: group for group in groups}
    ids_of = {name: {id(p) for p in group["params"]} for name, group in by_name.items()}
    parameter = dict(model.named_parameters())

    # Every trainable parameter exactly once.
    assert sum(len(ids) for ids in ids_of.values()) == len(set().union(*ids_of.values())) == len(parameter)
    assert by_name["text/decay"]["lr"] == by_name["text/no_decay"]["lr"] == 1e-5
    assert by_name["ecg/decay"]["lr"] == 1e-3 and by_name["ecg/decay"]["weight_decay"] == 0.05
    for name in ("logit_scale", "ecg_encoder.norm.weight", "ecg_encoder.stages.0.0.grn.gamma",
                 "ecg_pooler.query_embedding", "decoder.blocks.0.mlp.0.bias"):
        assert id(parameter[name]) in ids_of["ecg/no_decay"], name
    assert id(parameter["text_encoder.model.embeddings.word_embeddings.weight"]) in ids_of["text/no_decay"]
    assert id(parameter["ecg_encoder.stages.0.0.pwconv1.weight"]) in ids_of["ecg/decay"]
    torch.optim.AdamW(groups)  # accepted as they are


def test_save_and_load_round_trip_gives_identical_outputs(model, saved, loaded, ecg, texts):
    assert {p.name for p in saved.iterdir()} >= {"config.json", "model.safetensors", "text_encoder"}
    assert (saved / "text_encoder" / "config.json").exists() and (saved / "text_encoder" / "tokenizer.json").exists()
    assert not loaded.training
    with torch.no_grad():
        expected, actual = model(ecg, **texts), loaded(ecg, **texts)
    for key in ("loss", "logits_per_ecg", "caption_logits"):
        torch.testing.assert_close(actual[key], expected[key])


def test_loading_reads_the_text_encoder_from_the_folder_not_the_hub(model, loaded):
    assert loaded.config.text_encoder == MADE_UP_HUB_NAME
    assert loaded.text_encoder.pooling == "mean"  # the pooling resolved when the model was built
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(REPORTS), model.encode_text(REPORTS))


def test_load_ecg_encoder_gives_the_same_ecg_features(model, saved, ecg):
    encoder = load_ecg_encoder(saved)
    assert not encoder.training
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode(ecg), model.encode_ecg(ecg, raw=True))


def test_load_ecg_encoder_recognises_an_original_esi_checkpoint(ecg, tmp_path):
    from safetensors.torch import save_file

    from esi.models.convnextv2 import ConvNeXtV2Encoder

    torch.manual_seed(0)
    original = ConvNeXtV2Encoder(downsample_norm="time", remainder="drop").eval()  # atto sizes
    tensors = {f"img_encoder.{k}": v for k, v in original.state_dict().items()}
    tensors["temperature"] = torch.ones(1)  # the rest of the original model is ignored
    save_file(tensors, str(tmp_path / "model.safetensors"))

    encoder = load_ecg_encoder(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode(ecg), original.encode(ecg))


def test_load_ecg_encoder_rejects_other_files_naming_them(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="model.safetensors: neither an ESI model folder"):
        load_ecg_encoder(tmp_path / "model.safetensors")


def test_pooler_query_and_tied_embeddings_variant_round_trips(model, ecg, texts, tmp_path):
    torch.manual_seed(0)
    config = small_config(contrastive_source="pooler", decoder_embeddings="tie")
    variant = ESIModel(config, text_encoder=model.text_encoder).eval()
    assert variant.decoder.token_embedding.weight is variant.text_encoder.word_embeddings.weight

    variant.save_pretrained(tmp_path)
    loaded = ESIModel.from_pretrained(tmp_path)
    assert loaded.decoder.token_embedding.weight is loaded.text_encoder.word_embeddings.weight
    with torch.no_grad():
        torch.testing.assert_close(loaded(ecg, **texts)["loss"], variant(ecg, **texts)["loss"])
        assert variant.encode_ecg(ecg, raw=True).shape == (4, variant.text_encoder.hidden_size)


def test_copied_embeddings_need_the_text_encoder_width(model):
    with pytest.raises(ValueError, match="decoder_dim"):
        ESIModel(small_config(decoder_dim=128), text_encoder=model.text_encoder)


def test_texts_longer_than_max_text_length_are_rejected(model, ecg):
    too_long = torch.ones(4, 65, dtype=torch.long)
    with pytest.raises(ValueError, match="max_text_length=64"):
        model(ecg, too_long, torch.ones_like(too_long))
