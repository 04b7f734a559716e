"""The captioning side of ESI: an attention pooler over the ECG tokens and a causal text decoder.

    ECG tokens (B, N, C) --AttentionPooler--> queries (B, Q, D)
    text ids (B, L) --CaptionDecoder(causal self-attn, cross-attn to queries, FFN) x depth--> logits (B, L, V)

The pooler is CoCa's: Q learned queries attend over the encoder's whole token sequence, so the decoder
reads a fixed-size summary of the ECG rather than one vector repeated. The decoder is its own causal
transformer: position t sees text tokens <= t only. (The original ESI fed the states of a bidirectional BERT
to its caption head, so every position had already seen the token it was asked to predict.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of `x` over `context` (self-attention when context is None).

    dim: width of x and of the output.
    heads: number of heads; must divide dim.
    context_dim: width of the context (default dim).
    dropout: attention dropout in training.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """x: (B, L, dim); context: (B, S, context_dim) or None; causal: position t attends to <= t only."""
        context = x if context is None else context
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        # (B, L, dim) -> (B, heads, L, dim / heads)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).flatten(2))


class AttentionPooler(nn.Module):
    """CoCa's attentional pooler: `n_queries` learned queries attend over a token sequence.

    context_dim: width of the input tokens (the ECG encoder's dim).
    dim: width of the queries and the output.
    n_queries: number of output vectors.
    heads: attention heads; must divide dim.
    """

    def __init__(self, context_dim: int, dim: int, n_queries: int, heads: int):
        super().__init__()
        if n_queries < 1:
            raise ValueError(f"the attention pooler needs at least one query, got {n_queries}")
        self.query_embedding = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.context_norm = nn.LayerNorm(context_dim)
        self.attention = Attention(dim, heads, context_dim=context_dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, context_dim) -> (B, n_queries, dim)."""
        queries = self.query_embedding.expand(tokens.shape[0], -1, -1)
        return self.norm(self.attention(queries, self.context_norm(tokens)))


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: causal self-attention, cross-attention to the ECG, feed-forward.

    dim: model width. heads: attention heads. mlp_ratio: feed-forward width / dim. dropout: residual and
    attention dropout in training.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = Attention(dim, heads, dropout=dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = Attention(dim, heads, dropout=dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ecg: torch.Tensor) -> torch.Tensor:
        """x: (B, L, dim) text states; ecg: (B, Q, dim) pooled ECG queries."""
        x = x + self.dropout(self.self_attention(self.self_norm(x), causal=True))
        x = x + self.dropout(self.cross_attention(self.cross_norm(x), ecg))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class CaptionDecoder(nn.Module):
    """Causal transformer that predicts the next text token given the previous ones and the ECG queries.

    vocab_size: the text tokenizer's vocabulary size.
    dim: model width (the ECG queries must have this width too).
    depth: number of decoder blocks.
    heads: attention heads; must divide dim.
    max_length: longest input sequence (learned position embeddings).
    mlp_ratio: feed-forward width / dim.
    dropout: dropout in training.

    The output projection shares its weight with the token embedding (as GPT-2 does), so the vocabulary
    costs parameters once.
    """

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, max_length: int,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.max_length = max_length
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList([DecoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(self._init_weights)
        self.lm_head.weight = self.token_embedding.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def share_token_embedding(self, embedding: nn.Embedding) -> None:
        """Use `embedding` (e.g. the text encoder's word embeddings) as this decoder's input and output table."""
        if embedding.weight.shape != self.token_embedding.weight.shape:
            raise ValueError(f"cannot share an embedding of shape {tuple(embedding.weight.shape)} with a decoder "
                             f"table of shape {tuple(self.token_embedding.weight.shape)}")
        self.token_embedding = embedding
        self.lm_head.weight = embedding.weight

    def hidden_states(self, input_ids: torch.Tensor, ecg: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, L) tokens so far; ecg: (B, Q, dim). Returns the final-normed states (B, L, dim)."""
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"caption decoder input has {length} tokens, more than its max_length {self.max_length}")
        positions = torch.arange(length, device=input_ids.device)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x, ecg)
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, ecg: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, L) tokens so far; ecg: (B, Q, dim). Returns next-token logits (B, L, vocab)."""
        return self.lm_head(self.hidden_states(input_ids, ecg))

    def next_token_logits(self, input_ids: torch.Tensor, ecg: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) of the token after input_ids (B, L): the vocabulary projection of the last
        position only, which is all generation needs."""
        return self.lm_head(self.hidden_states(input_ids, ecg)[:, -1])


def _never_generated(bos_id: int, eos_id: int, pad_id: int) -> list[int]:
    # The start and padding tokens are never targets in training; an untrained or weak model may still
    # rank them first, which would decode to an empty text. (Tokenizers that pad with eos keep eos.)
    return sorted({bos_id, pad_id} - {eos_id})


@torch.no_grad()
def greedy_search(decoder: CaptionDecoder, ecg: torch.Tensor, bos_id: int, eos_id: int, pad_id: int,
                  max_new_tokens: int) -> torch.Tensor:
    """Most likely next token at each step, until every sequence has produced `eos_id`.

    decoder: the caption decoder (in eval mode).
    ecg: (B, Q, dim) pooled ECG queries.
    bos_id, eos_id, pad_id: start, end and padding tokens; finished sequences continue with pad_id.
        bos_id and pad_id are never generated (they are never training targets).
    max_new_tokens: the most tokens generated after bos_id.

    Returns (B, 1 + generated) token ids, starting with bos_id.
    """
    batch = ecg.shape[0]
    sequences = torch.full((batch, 1), bos_id, dtype=torch.long, device=ecg.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=ecg.device)
    blocked = _never_generated(bos_id, eos_id, pad_id)
    for _ in range(max_new_tokens):
        logits = decoder.next_token_logits(sequences, ecg)
        logits[:, blocked] = float("-inf")
        next_token = logits.argmax(-1)
        next_token = next_token.masked_fill(finished, pad_id)
        sequences = torch.cat([sequences, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if bool(finished.all()):
            break
    return sequences


@torch.no_grad()
def beam_search(decoder: CaptionDecoder, ecg: torch.Tensor, bos_id: int, eos_id: int, pad_id: int,
                max_new_tokens: int, num_beams: int, length_penalty: float = 1.0) -> torch.Tensor:
    """Keep the `num_beams` most likely partial sequences per ECG; return the best at the end.

    decoder, ecg, bos_id, eos_id, pad_id, max_new_tokens: as for `greedy_search`.
    num_beams: beams per ECG (1 is greedy search).
    length_penalty: final ranking is sum log p / length ** length_penalty (0: raw sum, favours short
        captions; 1: mean log-probability per token).

    Returns (B, 1 + generated) token ids, starting with bos_id, padded with pad_id after eos_id.
    """
    batch, vocab = ecg.shape[0], decoder.lm_head.out_features
    if num_beams > vocab:
        raise ValueError(f"num_beams={num_beams} exceeds the vocabulary size {vocab}")
    device = ecg.device
    ecg = ecg.repeat_interleave(num_beams, dim=0)  # (B * K, Q, dim), beams of one ECG adjacent
    sequences = torch.full((batch * num_beams, 1), bos_id, dtype=torch.long, device=device)
    # All beams start identical: only beam 0 may expand at the first step, or the K beams would be copies.
    scores = torch.full((batch, num_beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, num_beams, device=device)
    # A finished beam may only continue with pad, at no cost, so its score stays what it was.
    pad_only = torch.full((vocab,), float("-inf"), device=device)
    pad_only[pad_id] = 0.0
    blocked = _never_generated(bos_id, eos_id, pad_id)
    for _ in range(max_new_tokens):
        logits = decoder.next_token_logits(sequences, ecg).float()
        logits[:, blocked] = float("-inf")
        log_probs = logits.log_softmax(-1).view(batch, num_beams, vocab)
        log_probs = torch.where(finished[..., None], pad_only, log_probs)
        candidates = (scores[..., None] + log_probs).view(batch, num_beams * vocab)
        scores, flat_index = candidates.topk(num_beams, dim=-1)  # (B, K)
        beam, token = flat_index // vocab, flat_index % vocab
        sequences = sequences.view(batch, num_beams, -1)
        sequences = sequences.gather(1, beam[..., None].expand(-1, -1, sequences.shape[-1]))
        sequences = torch.cat([sequences, token[..., None]], dim=-1).view(batch * num_beams, -1)
        was_finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_finished).float()
        finished = was_finished | (token == eos_id)
        if bool(finished.all()):
            break
    ranking = scores / lengths.clamp(min=1.0) ** length_penalty
    best = ranking.argmax(-1)
    return sequences.view(batch, num_beams, -1)[torch.arange(batch, device=device), best]
