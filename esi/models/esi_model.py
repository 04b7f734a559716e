"""ESI: an ECG encoder and a pretrained text encoder trained together, CoCa style.

    ecg (B, 12, T) --ECG encoder--> tokens (B, N, C), pooled (B, C)
        tokens --AttentionPooler--> queries (B, Q(+1), D)
        contrastive ECG feature: pooled (contrastive_source="encoder") or query 0 ("pooler")
        --> Linear --> L2 norm --> ecg latent (B, latent_dim)
    text ids (B, L) --text encoder (bidirectional)--> pooled (B, H) --> Linear --> L2 norm --> text latent
    contrastive loss: symmetric InfoNCE of ecg vs text latents, negatives from all ranks
    caption loss: CaptionDecoder(text ids[:, :-1], ECG queries) predicts text ids[:, 1:] (causal)
    loss = contrastive_weight * contrastive + caption_weight * caption

A trained model is saved the Hugging Face way (config.json + model.safetensors) with the text encoder's
config and tokenizer in text_encoder/, so loading it never needs the hub.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from esi.config import from_dict, to_dict
from esi.models.caption import AttentionPooler, CaptionDecoder, beam_search, greedy_search
from esi.models.losses import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, caption_loss, contrastive_loss, logit_scale_value
from esi.models.registry import create_encoder
from esi.models.text_encoder import (PAPER_TEXT_ENCODER, TextEncoder, load_text_encoder,
                                     text_encoder_from_files)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_ENCODER_DIR = "text_encoder"
MODEL_TYPE = "esi"


@dataclasses.dataclass
class ESIConfig:
    """Everything that defines an ESI model's architecture and losses.

    ecg_encoder: encoder name for `esi.models.create_encoder` (e.g. "convnextv2_base", "xresnet1d101").
    ecg_encoder_kwargs: extra constructor arguments of the encoder (e.g. {"drop_path_rate": 0.1}).
    text_encoder: Hugging Face hub name, local folder, or "minilm" (bundled, offline).
    text_pooling: "auto" (mean for sentence-transformers models such as MiniLM, [CLS] otherwise), "cls", "mean".
    max_text_length: the most tokens per text, special tokens included.
    latent_dim: width of the shared ECG-text latent space.
    contrastive_source: the ECG vector projected to the latent: "encoder" (the encoder's pooled vector, the
        one downstream tasks use) or "pooler" (a dedicated attention-pooler query, as CoCa).
    n_queries: attention-pooler queries the caption decoder reads (one more is added for "pooler").
    decoder_dim: caption decoder width; None uses the text encoder's hidden size (needed to copy or tie
        its word embeddings).
    decoder_depth, decoder_heads, decoder_mlp_ratio, decoder_dropout: caption decoder blocks, attention
        heads, feed-forward width / dim, dropout.
    decoder_embeddings: the decoder's token embeddings: "copy" (initialised from the text encoder's word
        embeddings, trained separately), "tie" (the same parameter), or "random".
    contrastive_weight, caption_weight: loss weights.
    init_logit_scale: initial log of the contrastive inverse temperature (log(1/0.07)).
    max_logit_scale: cap of the inverse temperature (100).
    local_loss: contrastive negatives from this rank's batch only (the original ESI behaviour) instead of
        the global batch over all ranks.
    """

    ecg_encoder: str = "convnextv2_base"
    ecg_encoder_kwargs: dict = dataclasses.field(default_factory=dict)
    text_encoder: str = PAPER_TEXT_ENCODER
    text_pooling: Literal["auto", "cls", "mean"] = "auto"
    max_text_length: int = 256
    latent_dim: int = 768  # the original ESI's latent width
    contrastive_source: Literal["encoder", "pooler"] = "encoder"
    n_queries: int = 64
    decoder_dim: int | None = None
    decoder_depth: int = 4
    decoder_heads: int = 8
    decoder_mlp_ratio: float = 4.0
    decoder_dropout: float = 0.0
    decoder_embeddings: Literal["copy", "tie", "random"] = "copy"
    contrastive_weight: float = 1.0
    caption_weight: float = 1.0
    init_logit_scale: float = INIT_LOGIT_SCALE
    max_logit_scale: float = MAX_LOGIT_SCALE
    local_loss: bool = False


def _no_weight_decay(name: str, parameter: nn.Parameter, module: nn.Module) -> bool:
    """Norm scales/shifts, biases, the logit scale and embedding tables are not decayed.

    Anything with at most one dimension of size > 1 is a per-channel scale or shift: LayerNorm weights (C,),
    the original-style norm (1, C, 1), ConvNeXt V2's GRN (1, 1, C), biases and the scalar logit scale.
    """
    if sum(size > 1 for size in parameter.shape) <= 1:
        return True
    if isinstance(module, nn.Embedding):
        return True
    return "embedding" in name.rsplit(".", 1)[-1]


class ESIModel(nn.Module):
    """The ESI pretraining model.

    config: the architecture and losses (`ESIConfig`).
    text_encoder: an already built `TextEncoder`; default: loaded from `config.text_encoder` with
        pretrained weights (`from_pretrained` passes one rebuilt from the checkpoint's files instead).
    """

    def __init__(self, config: ESIConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config
        self.ecg_encoder = create_encoder(config.ecg_encoder, **config.ecg_encoder_kwargs)
        if text_encoder is None:
            text_encoder = load_text_encoder(config.text_encoder, config.text_pooling)
        self.text_encoder = text_encoder

        hidden = self.text_encoder.hidden_size
        positions = getattr(self.text_encoder.model.config, "max_position_embeddings", None)
        if positions is not None and config.max_text_length > positions:
            raise ValueError(f"max_text_length={config.max_text_length} exceeds the {positions} positions of the "
                             f"text encoder {config.text_encoder!r}")
        decoder_dim = config.decoder_dim or hidden
        if config.decoder_embeddings != "random" and decoder_dim != hidden:
            raise ValueError(f"decoder_embeddings={config.decoder_embeddings!r} needs decoder_dim equal to the text "
                             f"encoder's hidden size {hidden} (got {decoder_dim}); set decoder_dim: null or "
                             "decoder_embeddings: random")
        with_contrastive_query = config.contrastive_source == "pooler"
        self.ecg_pooler = AttentionPooler(self.ecg_encoder.dim, decoder_dim,
                                          config.n_queries + int(with_contrastive_query), config.decoder_heads)
        ecg_feature_dim = decoder_dim if with_contrastive_query else self.ecg_encoder.dim
        self.ecg_to_latent = nn.Linear(ecg_feature_dim, config.latent_dim, bias=False)
        self.text_to_latent = nn.Linear(hidden, config.latent_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.decoder = CaptionDecoder(self.text_encoder.vocab_size, decoder_dim, config.decoder_depth,
                                      config.decoder_heads, config.max_text_length, config.decoder_mlp_ratio,
                                      config.decoder_dropout)
        if config.decoder_embeddings == "copy":
            with torch.no_grad():
                self.decoder.token_embedding.weight.copy_(self.text_encoder.word_embeddings.weight)
        elif config.decoder_embeddings == "tie":
            self.decoder.share_token_embedding(self.text_encoder.word_embeddings)

    @property
    def tokenizer(self):
        """The text encoder's tokenizer (use it, or `tokenize`, to prepare `input_ids`)."""
        return self.text_encoder.tokenizer

    def tokenize(self, texts: str | list[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask for `texts`, cut at `config.max_text_length` tokens.

        texts: one string or a list of strings.
        """
        return self.text_encoder.tokenize(texts, self.config.max_text_length)

    # ---- encoding -------------------------------------------------------------------------------------

    def _ecg_features(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(contrastive feature (B, F), caption queries (B, n_queries, D)) for ECGs (B, 12, T)."""
        encoded = self.ecg_encoder(ecg)
        queries = self.ecg_pooler(encoded.tokens)  # (B, Q(+1), D)
        if self.config.contrastive_source == "pooler":
            return queries[:, 0], queries[:, 1:]
        return encoded.pooled, queries

    def encode_ecg(self, ecg: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """ECG embeddings.

        ecg: (batch, 12, time) as the ECG encoder expects.
        raw: return the contrastive ECG feature before the latent projection (the encoder's pooled vector,
            or the pooler's contrastive query), un-normalised; default: the L2-normalised latent.
        """
        feature, _ = self._ecg_features(ecg)
        if raw:
            return feature
        return F.normalize(self.ecg_to_latent(feature), dim=-1)

    def encode_text(self, text: torch.Tensor | str | list[str], attention_mask: torch.Tensor | None = None,
                    raw: bool = False) -> torch.Tensor:
        """Text embeddings.

        text: token ids (batch, length), or one string / a list of strings (tokenised with `tokenize`).
        attention_mask: (batch, length) for token ids; default: every token is real.
        raw: return the text encoder's pooled vector; default: the L2-normalised latent.
        """
        if not torch.is_tensor(text):
            batch = self.tokenize(text)
            device = self.logit_scale.device
            text, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        elif attention_mask is None:
            attention_mask = torch.ones_like(text)
        pooled = self.text_encoder(text, attention_mask).pooled
        if raw:
            return pooled
        return F.normalize(self.text_to_latent(pooled), dim=-1)

    # ---- training -------------------------------------------------------------------------------------

    def forward(self, ecg: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """Both losses for a batch of ECG-text pairs.

        ecg: (batch, 12, time).
        input_ids: (batch, length) tokenised texts, each starting with the tokenizer's start token ([CLS])
            and ending with its end token ([SEP]), right-padded; length <= config.max_text_length.
        attention_mask: (batch, length) 1 for real tokens, 0 for padding.

        Returns a dict: loss (weighted sum), contrastive_loss, caption_loss, logits_per_ecg and
        logits_per_text ((batch, global batch) scaled similarities), contrastive_labels (column of each
        row's positive), ecg_latents, text_latents, logit_scale (the clamped multiplier), caption_logits
        ((batch, length - 1, vocab), position t predicting input_ids[:, t + 1]).
        """
        if input_ids.shape[1] > self.config.max_text_length:
            raise ValueError(f"texts of {input_ids.shape[1]} tokens exceed max_text_length="
                             f"{self.config.max_text_length}; tokenise with truncation (model.tokenize)")
        if input_ids.shape[1] < 2:
            raise ValueError("texts need at least two tokens (start and end) for the caption loss")
        ecg_feature, ecg_queries = self._ecg_features(ecg)
        ecg_latents = F.normalize(self.ecg_to_latent(ecg_feature), dim=-1)
        text_latents = F.normalize(self.text_to_latent(self.text_encoder(input_ids, attention_mask).pooled), dim=-1)
        logit_scale = logit_scale_value(self.logit_scale, self.config.max_logit_scale)
        contrastive = contrastive_loss(ecg_latents, text_latents, logit_scale, local_loss=self.config.local_loss)

        # Teacher forcing: the decoder reads tokens 0..L-2 and predicts tokens 1..L-1.
        caption_logits = self.decoder(input_ids[:, :-1], ecg_queries)
        captioning = caption_loss(caption_logits, input_ids[:, 1:], attention_mask[:, 1:])

        loss = self.config.contrastive_weight * contrastive.loss + self.config.caption_weight * captioning
        return {
            "loss": loss,
            "contrastive_loss": contrastive.loss,
            "caption_loss": captioning,
            "logits_per_ecg": contrastive.logits_per_ecg,
            "logits_per_text": contrastive.logits_per_text,
            "contrastive_labels": contrastive.labels,
            "ecg_latents": ecg_latents,
            "text_latents": text_latents,
            "logit_scale": logit_scale,
            "caption_logits": caption_logits,
        }

    def param_groups(self, lr_ecg: float, lr_text: float, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups: what trains from scratch vs the pretrained text encoder, each with and
        without weight decay.

        lr_ecg: learning rate of the ECG encoder and every new head (pooler, projections, decoder, logit scale).
        lr_text: learning rate of the pretrained text encoder (usually smaller).
        weight_decay: decay of matrices and conv kernels; norms, biases, the logit scale and embedding
            tables get none.

        Returns dicts for `torch.optim.AdamW(groups)`, each with "params", "lr", "weight_decay" and a
        "name" for logging; empty groups are left out. A parameter shared by two modules (tied
        embeddings) appears once.
        """
        modules = dict(self.named_modules())
        groups = {
            (part, decay): []
            for part in ("ecg", "text") for decay in (True, False)
        }
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            module = modules[name.rsplit(".", 1)[0]] if "." in name else self
            part = "text" if name.startswith("text_encoder.") else "ecg"
            groups[(part, not _no_weight_decay(name, parameter, module))].append(parameter)
        lrs = {"ecg": lr_ecg, "text": lr_text}
        return [
            {"params": params, "lr": lrs[part], "weight_decay": weight_decay if decay else 0.0,
             "name": f"{part}/{'decay' if decay else 'no_decay'}"}
            for (part, decay), params in groups.items() if params
        ]

    # ---- captioning -----------------------------------------------------------------------------------

    @torch.no_grad()
    def caption(self, ecg: torch.Tensor, max_new_tokens: int | None = None, num_beams: int = 1,
                length_penalty: float = 1.0) -> list[str]:
        """Generate one text per ECG (greedy search, or beam search with num_beams > 1).

        ecg: (batch, 12, time).
        max_new_tokens: the most tokens generated per text; default and maximum: max_text_length - 1.
        num_beams: 1 for greedy search, more for beam search.
        length_penalty: beam search ranks finished texts by sum log p / length ** length_penalty.

        Runs in eval mode (dropout off) and restores the previous mode; deterministic for a given model.
        """
        limit = self.config.max_text_length - 1
        max_new_tokens = limit if max_new_tokens is None else max_new_tokens
        if not 1 <= max_new_tokens <= limit:
            raise ValueError(f"max_new_tokens must be in 1..{limit} (max_text_length - 1), got {max_new_tokens}")
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        was_training = self.training
        self.eval()
        try:
            _, queries = self._ecg_features(ecg)
            ids = dict(bos_id=self.text_encoder.bos_token_id, eos_id=self.text_encoder.eos_token_id,
                       pad_id=self.text_encoder.pad_token_id, max_new_tokens=max_new_tokens)
            if num_beams == 1:
                tokens = greedy_search(self.decoder, queries, **ids)
            else:
                tokens = beam_search(self.decoder, queries, num_beams=num_beams, length_penalty=length_penalty, **ids)
        finally:
            self.train(was_training)
        return self.tokenizer.batch_decode(tokens.tolist(), skip_special_tokens=True)

    # ---- saving and loading ---------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors and text_encoder/ (its HF config and tokenizer) to `directory`.

        directory: created if missing; existing files of the same names are replaced.

        The weights file is written under a temporary name and renamed, so an interrupted save never
        leaves a truncated model.safetensors. Returns the directory.
        """
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Store the pooling actually used, so loading does not need to inspect the original model again.
        config = dataclasses.replace(self.config, text_pooling=self.text_encoder.pooling)
        (directory / CONFIG_NAME).write_text(json.dumps({"model_type": MODEL_TYPE, **to_dict(config)}, indent=2))
        self.text_encoder.save_files(directory / TEXT_ENCODER_DIR)
        temporary = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
        # save_model (not save_file) because tied embeddings share storage; it stores such tensors once.
        save_model(self, str(temporary), metadata={"format": "pt", "model_type": MODEL_TYPE})
        os.replace(temporary, directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "ESIModel":
        """Load a model written by `save_pretrained`, in eval mode; never contacts the hub.

        directory: the folder holding config.json, model.safetensors and text_encoder/.
        device: where to put the weights.
        """
        from safetensors.torch import load_model

        directory = Path(directory)
        config = read_esi_config(directory)
        text_encoder = text_encoder_from_files(directory / TEXT_ENCODER_DIR, config.text_pooling, config.text_encoder)
        model = cls(config, text_encoder=text_encoder)
        weights = directory / WEIGHTS_NAME
        if not weights.exists():
            raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")
        missing, unexpected = load_model(model, str(weights), strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights}: does not match the model of its config.json; "
                             f"missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'}")
        return model.to(device).eval()


def read_esi_config(directory: str | os.PathLike) -> ESIConfig:
    """The `ESIConfig` stored in `directory`/config.json by `ESIModel.save_pretrained`.

    directory: a saved ESI model folder.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; {directory} is not a saved ESI model")
    data = json.loads(path.read_text())
    model_type = data.pop("model_type", None)
    if model_type != MODEL_TYPE:
        raise ValueError(f"{path}: model_type is {model_type!r}, expected {MODEL_TYPE!r}")
    return from_dict(ESIConfig, data, where=str(path))
