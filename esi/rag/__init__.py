"""Cardio Query Assistant: machine ECG statements -> waveform descriptions, grounded in a knowledge base.

    knowledge_base (markdown entries + user documents) -> index (llama-index, local MiniLM embeddings)
    vocabulary (statements, non-diagnostic notes) -> generate (backend: extractive | openai | hf)
    -> waveform_dict.json + provenance.jsonl;  quality: hit@k, coverage, agreement with the paper's dictionary

Typical use (what the notebook and `python -m esi.rag` do):

    cfg = load_cqa_config("params/cqa.yaml")
    index = build_index(cfg)                      # loaded from outputs/cqa/index/<hash>/ when unchanged
    query(index, "LBBB", k=3)                     # -> [Hit(entry_id='left_bundle_branch_block', ...), ...]
    result = generate(load_vocabulary("statements.txt"), cfg, "outputs/cqa/run")

Public names are imported lazily so that `import esi.rag` does not import llama-index.
"""

from __future__ import annotations

from esi._lazy import lazy_exports

_PUBLIC = {
    "CQAConfig": "esi.rag.config",
    "load_cqa_config": "esi.rag.config",
    "KnowledgeEntry": "esi.rag.knowledge_base",
    "load_knowledge_base": "esi.rag.knowledge_base",
    "load_user_documents": "esi.rag.knowledge_base",
    "build_index": "esi.rag.index",
    "query": "esi.rag.index",
    "retrieve": "esi.rag.index",
    "Hit": "esi.rag.index",
    "classify": "esi.rag.vocabulary",
    "load_vocabulary": "esi.rag.vocabulary",
    "vocabulary_from_strings": "esi.rag.vocabulary",
    "make_backend": "esi.rag.backends",
    "generate": "esi.rag.generation",
    "GenerationResult": "esi.rag.generation",
    "quality": "esi.rag.quality",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
