"""Loading Hugging Face text encoders offline: the bundled MiniLM, saved folders, and a clear fast failure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from esi.models.text_encoder import (TextEncoder, TextEncoderNotAvailable, bundled_minilm_path, load_text_encoder,
                                     resolve_text_encoder, text_encoder_from_files)

TEXTS = ["sinus rhythm. normal ecg", "atrial fibrillation with rapid ventricular response"]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return load_text_encoder("minilm").eval()


@pytest.mark.parametrize("name", ["minilm", "bundled-minilm", "sentence-transformers/all-MiniLM-L6-v2"])
def test_minilm_names_resolve_to_the_bundled_folder(name):
    folder = Path(resolve_text_encoder(name))
    assert folder == bundled_minilm_path()
    assert (folder / "config.json").exists()


def test_minilm_pools_by_mean_over_real_tokens(minilm):
    batch = minilm.tokenize(TEXTS, max_length=64)
    with torch.no_grad():
        out = minilm(**batch)

    assert minilm.pooling == "mean"  # read from the sentence-transformers pooling config
    assert out.tokens.shape == (2, batch["input_ids"].shape[1], 384)
    # The shorter text is padded; its pooled vector averages its real tokens only.
    n_real = int(batch["attention_mask"][0].sum())
    assert n_real < batch["input_ids"].shape[1]
    torch.testing.assert_close(out.pooled[0], out.tokens[0, :n_real].mean(0))


def test_cls_pooling_returns_the_first_token_state(minilm):
    cls_encoder = TextEncoder(minilm.model, minilm.tokenizer, pooling="cls", name="minilm").eval()
    batch = cls_encoder.tokenize(TEXTS, max_length=64)
    with torch.no_grad():
        out = cls_encoder(**batch)
    torch.testing.assert_close(out.pooled, out.tokens[:, 0])


def test_tokenize_truncates_to_max_length_and_keeps_start_and_end_tokens(minilm):
    batch = minilm.tokenize(" ".join(["wide qrs complex"] * 50), max_length=16)
    ids = batch["input_ids"][0]
    assert ids.shape == (16,)
    assert ids[0] == minilm.bos_token_id and ids[-1] == minilm.eos_token_id


def test_saved_files_rebuild_the_same_architecture_and_tokenizer_offline(minilm, tmp_path):
    minilm.save_files(tmp_path / "text_encoder")
    rebuilt = text_encoder_from_files(tmp_path / "text_encoder", pooling="mean", name="minilm")
    rebuilt.load_state_dict(minilm.state_dict())
    rebuilt.eval()

    batch = minilm.tokenize(TEXTS, max_length=64)
    torch.testing.assert_close(rebuilt.tokenize(TEXTS, max_length=64)["input_ids"], batch["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**batch).pooled, minilm(**batch).pooled)


def test_unknown_hub_model_offline_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "no-such-org/made-up-ecg-text-model"
    start = time.perf_counter()
    with pytest.raises(TextEncoderNotAvailable) as info:
        load_text_encoder(name)
    elapsed = time.perf_counter() - start

    message = str(info.value)
    assert name in message
    assert f"huggingface-cli download {name}" in message and f"hf download {name}" in message
    assert "local folder" in message
    assert elapsed < 10.0, f"offline failure took {elapsed:.1f} s; it must not retry the network"


def test_folder_without_config_is_rejected_naming_the_folder(tmp_path):
    with pytest.raises(TextEncoderNotAvailable, match=str(tmp_path)):
        resolve_text_encoder(tmp_path)
