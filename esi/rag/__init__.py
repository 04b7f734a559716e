"""Cardio Query Assistant: machine ECG statements -> waveform descriptions, grounded in a knowledge base.

    knowledge_base (markdown entries + user documents) -> index (llama-index, local MiniLM embeddings)
    vocabulary (statements, non-diagnostic notes) -> generate (backend: extractive | openai | hf)
    -> waveform_dict.json + provenance.jsonl;  quality: hit@k, coverage, agreement with the paper's dictionary

Import each name from the module that defines it; this package exports nothing, and llama-index is imported
only inside the functions of `index` that embed, build or load an index, so `import esi.rag` stays light:

    config          CQAConfig, load_cqa_config (params/cqa.yaml)
    knowledge_base  KnowledgeEntry, load_knowledge_base, load_user_documents; knowledge/ holds the entries
    vocabulary      classify (statement or note), load_vocabulary, vocabulary_from_strings
    index           build_index, query, retrieve, Hit
    backends        make_backend: extractive (offline), OpenAI-compatible endpoint, local Hugging Face model
    generation      generate, GenerationResult
    quality         hit_rate (on eval/retrieval_set.csv), coverage, agreement
    __main__        python -m esi.rag {generate,query,build-index}

Typical use (what the notebook and `python -m esi.rag` do):

    from esi.rag.config import load_cqa_config
    from esi.rag.generation import generate
    from esi.rag.index import build_index, query
    from esi.rag.vocabulary import load_vocabulary

    cfg = load_cqa_config("params/demo.yaml")
    index = build_index(cfg)                      # loaded from outputs/cqa/index/<hash>/ when unchanged
    query(index, "LBBB", k=3)                     # -> [Hit(entry_id='left_bundle_branch_block', ...), ...]
    result = generate(load_vocabulary("statements.txt"), cfg, "outputs/cqa/run")
"""
