"""How good the assistant is, measured: retrieval hit@k, coverage of vocabularies, agreement with the paper.

- hit@k on the labelled retrieval set (esi/rag/eval/retrieval_set.csv: statement, expected_id, source;
  expected_id "a|b" means either is right): the share of statements whose expected entry is among the
  first k retrieved.
- coverage of a vocabulary: the share of statements that either get a description (a finding retrieved with
  score >= min_score) or are justified non-diagnostic notes; the rest are listed as uncovered.
- agreement with a reference dictionary (the one released with the ESI paper): cosine similarity between
  our description and theirs for each shared statement, embedded with the same local MiniLM (its
  histogram: esi.plots.plot_agreement).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from esi.rag.index import CardioIndex, retrieve
from esi.rag.knowledge_base import PACKAGE_DIR
from esi.rag.vocabulary import Vocabulary, classify


def default_retrieval_set() -> Path:
    """The labelled retrieval set bundled with the package."""
    return PACKAGE_DIR / "eval" / "retrieval_set.csv"


@dataclass(frozen=True)
class LabelledStatement:
    """One row of the retrieval set: a statement and the entry ids that are a correct answer."""

    statement: str
    expected: tuple[str, ...]
    source: str


def load_retrieval_set(path: str | os.PathLike | None = None) -> list[LabelledStatement]:
    """Read a retrieval set CSV (columns statement, expected_id, source).

    Raises:
        ValueError: a missing column or an empty field, naming the file and row.
    """
    path = Path(path) if path is not None else default_retrieval_set()
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"statement", "expected_id", "source"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for number, row in enumerate(reader, 2):
            statement = (row["statement"] or "").strip()
            expected = tuple(e.strip() for e in (row["expected_id"] or "").split("|") if e.strip())
            if not statement or not expected:
                raise ValueError(f"{path} line {number}: empty statement or expected_id")
            rows.append(LabelledStatement(statement, expected, (row["source"] or "").strip()))
    return rows


@dataclass
class HitRate:
    """hit@k overall and per source; misses: (statement, expected ids, retrieved ids) of hit@max(k) misses."""

    n: int
    hit_at: dict[int, float]
    by_source: dict[str, dict[int, float]]
    misses: list[tuple[str, tuple[str, ...], list[str]]] = field(default_factory=list)

    def __str__(self) -> str:
        overall = ", ".join(f"hit@{k} {v:.3f}" for k, v in self.hit_at.items())
        per = "; ".join(f"{s}: " + ", ".join(f"@{k} {v:.3f}" for k, v in d.items()) for s, d in self.by_source.items())
        return f"{self.n} statements: {overall} ({per})"


def hit_rate(index: CardioIndex, examples: Sequence[LabelledStatement], ks: Sequence[int] = (1, 3),
             progress: bool = False) -> HitRate:
    """hit@k of the index on labelled statements.

    Args:
        index: a built index.
        examples: the labelled statements (see `load_retrieval_set`).
        ks: the cut-offs to report.
        progress: show a progress bar.

    Raises:
        ValueError: an expected id that is not an entry of the index's knowledge base (a labelling error).
    """
    unknown = sorted({e for ex in examples for e in ex.expected if e not in index.entries})
    if unknown:
        raise ValueError(f"retrieval set names entries the knowledge base lacks: {', '.join(unknown[:10])}")
    top = max(ks)
    retrievals = retrieve(index, [classify(ex.statement) for ex in examples], k=top, progress=progress)
    hits = {k: [] for k in ks}
    per_source: dict[str, dict[int, list[bool]]] = {}
    misses = []
    for ex, result in zip(examples, retrievals):
        got = [h.entry_id for h in result.hits]
        for k in ks:
            ok = any(e in got[:k] for e in ex.expected)
            hits[k].append(ok)
            per_source.setdefault(ex.source, {kk: [] for kk in ks})[k].append(ok)
        if not any(e in got[:top] for e in ex.expected):
            misses.append((ex.statement, ex.expected, got))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return HitRate(
        n=len(examples),
        hit_at={k: mean(v) for k, v in hits.items()},
        by_source={s: {k: mean(v) for k, v in d.items()} for s, d in sorted(per_source.items())},
        misses=misses,
    )


@dataclass
class Coverage:
    """How much of a vocabulary the assistant can handle, counted over verbatim statements."""

    n: int
    described: int
    non_diagnostic: int
    uncovered: list[str]

    @property
    def share(self) -> float:
        """(described + non-diagnostic) / all."""
        return (self.described + self.non_diagnostic) / self.n if self.n else 0.0

    def __str__(self) -> str:
        return (f"{self.share:.1%} of {self.n} statements covered ({self.described} described, "
                f"{self.non_diagnostic} non-diagnostic, {len(self.uncovered)} uncovered)")


def coverage(index: CardioIndex, vocabulary: Vocabulary, min_score: float, k: int = 3,
             progress: bool = False) -> Coverage:
    """Which statements of `vocabulary` get a description (a finding with score >= min_score).

    Args:
        index: a built index.
        vocabulary: the statements to cover.
        min_score: the retrieval score a finding needs (cqa_min_score).
        k: entries retrieved per statement.
        progress: show a progress bar.
    """
    groups = vocabulary.groups()
    infos = [classify(spellings[0].text) for spellings in groups.values()]
    results = dict(zip(groups, retrieve(index, infos, k=k, progress=progress)))
    described = non_diagnostic = 0
    uncovered = []
    for statement in vocabulary:
        result = results[statement.normal]
        if result.info.non_diagnostic:
            non_diagnostic += 1
        elif any(hit.score >= min_score for hit in result.findings):
            described += 1
        else:
            uncovered.append(statement.text)
    return Coverage(len(vocabulary), described, non_diagnostic, uncovered)


def agreement(ours: Mapping[str, str], reference: Mapping[str, str], embed_model) -> dict[str, float]:
    """Cosine similarity of our description and the reference's, for each statement both describe.

    Args:
        ours: statement -> description (e.g. a generated waveform_dict.json).
        reference: statement -> description (e.g. the paper's dictionary).
        embed_model: the llama-index embedding model (e.g. `CardioIndex.embed_model`).

    Returns:
        statement -> cosine, for the verbatim statements present and non-empty in both.
    """
    import numpy as np

    shared = [s for s in ours if ours[s] and reference.get(s)]
    if not shared:
        return {}
    a = np.asarray(embed_model.get_text_embedding_batch([ours[s] for s in shared]), dtype=np.float64)
    b = np.asarray(embed_model.get_text_embedding_batch([reference[s] for s in shared]), dtype=np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return dict(zip(shared, (a * b).sum(axis=1).round(4).tolist()))
