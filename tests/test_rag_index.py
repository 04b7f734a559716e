"""The retrieval index: persisted by content hash, queried with scores, user documents as context."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from esi.rag.config import CQAConfig
from esi.rag.index import build_index, load_embedding_model, query
from esi.rag.knowledge_base import KnowledgeFormatError, default_knowledge_dir, load_knowledge_base, parse_entry
from esi.rag.quality import hit_rate, load_retrieval_set

# The full knowledge-base index is content-hashed, so one copy can serve every test module and every run.
SHARED_INDEX_DIR = Path(tempfile.gettempdir()) / "esi-test-cqa-index"
SMALL_KB = ["conduction/left_bundle_branch_block.md", "conduction/first_degree_av_block.md",
            "rhythm/sinus_rhythm.md", "technical/baseline_wander.md"]


@pytest.fixture(scope="module")
def embed_model():
    return load_embedding_model()


@pytest.fixture(scope="module")
def index(embed_model):
    return build_index(CQAConfig(index_dir=str(SHARED_INDEX_DIR), show_progress=False), embed_model=embed_model)


@pytest.fixture
def small_kb(tmp_path) -> Path:
    """A four-entry copy of the bundled knowledge base, free to edit."""
    for name in SMALL_KB:
        target = tmp_path / "kb" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(default_knowledge_dir() / name, target)
    return tmp_path / "kb"


def test_query_returns_entries_with_scores_best_first(index):
    hits = query(index, "LBBB", k=3)
    assert [h.entry_id for h in hits][0] == "left_bundle_branch_block"
    assert hits[0].score == 1.0 and hits[0].match == "alias"  # an alias of the entry, matched exactly
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert "Waveform criteria" in hits[0].context  # the full entry is what a backend reads

    # A question phrased as waveform features, not as a finding's name, finds the entry by its criteria.
    free_text = query(index, "sawtooth flutter waves in the inferior leads", k=3)
    assert "atrial_flutter" in [h.entry_id for h in free_text]
    assert all(0 < h.score < 1 for h in free_text)


def test_batched_scoring_agrees_with_the_llama_index_retriever(index):
    from llama_index.core.schema import QueryBundle

    embedding = index.embed_queries(["left bundle branch block"])[0]
    theirs = index.llama_retriever(k=5).retrieve(QueryBundle(query_str="left bundle branch block", embedding=embedding))
    ours = index.node_scores([embedding])[0]
    for item in theirs:
        assert ours[index.node_ids.index(item.node.node_id)] == pytest.approx(item.score, abs=1e-5)
    assert sorted(ours, reverse=True)[4] == pytest.approx(theirs[-1].score, abs=1e-5)


def test_batched_query_embeddings_are_llama_index_query_embeddings(index, embed_model):
    from dataclasses import replace

    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    texts = ["left bundle branch block", "LBBB", "sinus rhythm with first degree AV block", "LBBB"]
    for vector, text in zip(index.embed_queries(texts), texts):
        np.testing.assert_allclose(vector, embed_model.get_query_embedding(text), rtol=0, atol=1e-6)
    # A model with a query instruction embeds a query unlike a passage: its queries go one at a time.
    instructed = HuggingFaceEmbedding(model_name=embed_model.model_name, query_instruction="query: ")
    asymmetric = replace(index, embed_model=instructed, _embedding_cache={})
    np.testing.assert_allclose(asymmetric.embed_queries(texts[:1])[0], instructed.get_query_embedding(texts[0]),
                               rtol=0, atol=1e-6)
    assert not asymmetric._queries_embed_as_texts and index._queries_embed_as_texts


def test_index_is_reused_until_a_knowledge_file_changes(small_kb, tmp_path, embed_model):
    cfg = CQAConfig(knowledge_dir=str(small_kb), index_dir=str(tmp_path / "index"), show_progress=False)
    first = build_index(cfg, embed_model=embed_model)
    assert first.rebuilt and len(first.entries) == 4
    assert (first.directory / "manifest.json").exists()

    again = build_index(cfg, embed_model=embed_model)
    assert not again.rebuilt and again.hash == first.hash
    assert query(again, "LBBB", k=1)[0].entry_id == "left_bundle_branch_block"

    entry = small_kb / "technical" / "baseline_wander.md"
    entry.write_text(entry.read_text().replace("aliases: [", "aliases: [isoelectric drift, "))
    changed = build_index(cfg, embed_model=embed_model)
    assert changed.rebuilt and changed.hash != first.hash
    assert query(changed, "isoelectric drift", k=1)[0].match == "alias"


def test_user_documents_are_retrieved_as_context(small_kb, tmp_path, embed_model):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = tmp_path / "my_books"
    docs.mkdir()
    (docs / "notes.md").write_text("# Hypothermia\nOsborn waves are positive deflections at the J point, "
                                   "most visible in V3 and V4, and grow as body temperature falls.\n")
    plt.rcParams["pdf.fonttype"] = 42  # embed real fonts so that the PDF has extractable text
    fig = plt.figure(figsize=(8.5, 11))
    fig.text(0.05, 0.9, "Hyperkalemia first peaks the T waves, then widens the QRS into a sine wave.")
    fig.savefig(docs / "textbook.pdf")
    plt.close(fig)

    cfg = CQAConfig(knowledge_dir=str(small_kb), user_docs=[str(docs)], index_dir=str(tmp_path / "index"),
                    show_progress=False)
    index = build_index(cfg, embed_model=embed_model)
    documents = [h for h in query(index, "peaked T waves from high potassium", k=3) if h.entry_id is None]
    assert documents and documents[0].source.endswith("textbook.pdf")
    assert "sine wave" in documents[0].context
    assert any(h.source.endswith("notes.md") for h in query(index, "Osborn J waves", k=3) if h.entry_id is None)


def test_retrieval_hit_rate_on_the_labelled_set(index):
    examples = load_retrieval_set()
    assert len(examples) >= 150 and {e.source for e in examples} == {"mimic", "ptbxl"}
    result = hit_rate(index, examples, ks=(1, 3))
    print(result)
    assert result.hit_at[3] >= 0.9, result.misses[:10]


def test_malformed_entries_are_rejected_with_file_and_reason(tmp_path):
    path = tmp_path / "rhythm" / "sinus_rhythm.md"
    path.parent.mkdir()
    path.write_text("---\nid: sinus_rhythm\ntitle: Sinus rhythm\n---\n## Summary\nNormal.\n")
    with pytest.raises(KnowledgeFormatError, match=r"sinus_rhythm\.md: front matter lacks category"):
        parse_entry(path)
    path.write_text("---\nid: other\ntitle: Sinus rhythm\ncategory: rhythm\n---\n## Summary\nNormal.\n")
    with pytest.raises(KnowledgeFormatError, match="differs from the file name"):
        load_knowledge_base(tmp_path)
