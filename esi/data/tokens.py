"""Tokenise a corpus once and cache the token ids on disk, so the training loop never runs the tokenizer.

The cache key covers the tokenizer (name, vocabulary size, class), the maximum length and every text, so a
changed dictionary or template produces a new cache file instead of stale tokens.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm


def tokens_cache_key(texts: Sequence[str], tokenizer, max_length: int) -> str:
    h = hashlib.sha1()
    h.update(f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|{len(tokenizer)}|"
             f"{max_length}|{len(texts)}".encode())
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def token_dtype(vocab_size: int) -> type:
    """The smallest unsigned/signed integer type that holds token ids 0 .. vocab_size - 1 (uint16 or int32)."""
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def tokenize_corpus(texts: Sequence[str], tokenizer, max_length: int, cache_dir: str | os.PathLike | None = None,
                    batch_size: int = 2048, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n x max_length, right-padded) and lengths (int32, n) of every text.

    The ids are uint16 when every id of the vocabulary fits (BERT-style vocabularies, ~30k), else int32: at 800k
    texts x 512 tokens that is 0.8 GB instead of 1.6 GB held by every training process.

    tokenizer: a Hugging Face tokenizer (the text encoder's). Texts longer than `max_length` tokens are cut
    (the text composer already trims descriptions first, so cuts are rare and land in descriptions).
    cache_dir: where to keep `tokens_<key>.npz`; None: no cache.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"tokens_{tokens_cache_key(texts, tokenizer, max_length)}.npz"
        if path.exists():
            with np.load(path) as cached:
                return cached["input_ids"], cached["lengths"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(texts), max_length), pad, dtype=token_dtype(len(tokenizer)))
    lengths = np.zeros(len(texts), dtype=np.int32)
    for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="tokenising texts",
                      unit="batch"):
        chunk = list(texts[start:start + batch_size])
        encoded = tokenizer(chunk, truncation=True, max_length=max_length, padding=False)["input_ids"]
        for k, seq in enumerate(encoded):
            ids[start + k, :len(seq)] = seq
            lengths[start + k] = len(seq)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, input_ids=ids, lengths=lengths)
        os.replace(tmp, path)
    return ids, lengths
