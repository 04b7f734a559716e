"""The generation run: vocabulary in, `waveform_dict.json` and `provenance.jsonl` out.

For each distinct statement (normal form):
1. `classify` it. A non-diagnostic note gets no description (it is OMITTED from waveform_dict.json, not
   mapped to "", so a consumer simply finds no description; the flag and rule are in the provenance).
2. Retrieve its findings. A statement gets a description only if at least one finding's entry scored at
   least `min_score`; otherwise it is reported as "uncovered" (no backend call, no random passage).
3. Ask the backend, with bounded concurrency and retries (exponential backoff on retryable errors).
   Each answer is appended to the on-disk cache as soon as it arrives, keyed by
   (normal form, system prompt, prompt template, backend identity, index hash, top_k, min_score), so a killed
   run resumes where it stopped and an unchanged rerun makes no backend call.
4. A statement whose backend keeps failing is a "rejected" record with its error; the others still finish
   and everything is written.

Every verbatim spelling of a statement maps to the description of its normal form.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from esi.config import save_config
from esi.rag.backends import Backend, BackendError, Request, format_context, make_backend, render_prompt
from esi.rag.config import CQAConfig
from esi.rag.index import CardioIndex, Retrieval, build_index, retrieve
from esi.rag.vocabulary import Vocabulary, classify

DICT_NAME = "waveform_dict.json"
PROVENANCE_NAME = "provenance.jsonl"
SUMMARY_NAME = "summary.json"


class GenerationCache:
    """An append-only JSONL file of finished generations, one JSON object per line, keyed by "key".

    Lines are flushed as they are written, so a killed process loses at most the line it was writing; such
    a torn last line is ignored on the next load (with a warning) and that statement is generated again.

    Args:
        path: the JSONL file (created with its folder on first write).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        bad = []
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad.append(number)
        if bad:
            warnings.warn(f"{self.path}: ignored {len(bad)} unreadable line(s) (e.g. a run killed mid-write): "
                          f"lines {bad[:5]}; those statements will be generated again", stacklevel=3)

    def get(self, key: str) -> dict | None:
        """The finished generation stored under `key`, or None."""
        return self.records.get(key)

    def append(self, record: dict) -> None:
        """Store one finished generation (must hold "key") and flush it to disk."""
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                # A torn line from a killed run must not glue onto this one.
                if f.tell() > 0 and not self._ends_with_newline():
                    f.write("\n")
                f.write(line + "\n")
                f.flush()
            self.records[record["key"]] = record

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __len__(self) -> int:
        return len(self.records)


def cache_key(normal: str, cfg: CQAConfig, backend: Backend, index_hash: str) -> str:
    """The cache key of one generation.

    Args:
        normal: the statement's normal form.
        cfg: the settings; its prompts, top_k and min_score change the answer, so they are part of the key.
        backend: the backend; its `identity()` (name, model, sampling settings) is part of the key.
        index_hash: the index hash (knowledge files, user documents, embedding model, chunking).
    """
    parts = [normal, cfg.system_prompt, cfg.prompt_template, backend.identity(), index_hash, cfg.top_k,
             cfg.min_score]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def call_with_retries(call: Callable[[], str], max_retries: int, backoff_s: float, backoff_max_s: float,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[str, int]:
    """(result, attempts) of `call`, retrying retryable BackendErrors with exponential backoff.

    A non-retryable error, or the last retryable one, is raised with the attempt count as `.attempts`.

    Args:
        call: the backend call (no arguments).
        max_retries: retries after the first attempt.
        backoff_s: wait before the first retry; doubled before each further retry ...
        backoff_max_s: ... up to this many seconds.
        sleep: how to wait (time.sleep; tests pass a recorder).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call(), attempt
        except BackendError as err:
            err.attempts = attempt
            if not err.retryable or attempt > max_retries:
                raise
            sleep(min(backoff_max_s, backoff_s * 2 ** (attempt - 1)))


@dataclass
class GenerationResult:
    """What a run produced. descriptions: verbatim statement -> description (what waveform_dict.json holds).

    records: one provenance record per verbatim statement. failures: the rejected records.
    n_generated: backend calls that succeeded in this run; n_cached: answers reused from the cache.
    """

    descriptions: dict[str, str]
    records: list[dict]
    out_dir: Path
    n_generated: int = 0
    n_cached: int = 0
    failures: list[dict] = field(default_factory=list)
    index_hash: str = ""

    @property
    def dict_path(self) -> Path:
        return self.out_dir / DICT_NAME

    @property
    def provenance_path(self) -> Path:
        return self.out_dir / PROVENANCE_NAME

    def counts(self) -> dict[str, int]:
        """How many verbatim statements ended in each status (described, non_diagnostic, uncovered, rejected)."""
        out: dict[str, int] = {}
        for record in self.records:
            out[record["status"]] = out.get(record["status"], 0) + 1
        return out

    @property
    def ok(self) -> bool:
        return not self.failures


def _write_atomic(path: Path, text: str) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def _findings_used(retrieval: Retrieval, min_score: float) -> list:
    return [hit for hit in retrieval.findings if hit.score >= min_score]


def generate(vocabulary: Vocabulary, cfg: CQAConfig, out_dir: str | os.PathLike,
             index: CardioIndex | None = None, backend: Backend | None = None) -> GenerationResult:
    """Describe every statement of `vocabulary` and write waveform_dict.json, provenance.jsonl, summary.json.

    Args:
        vocabulary: the statements (see `vocabulary.load_vocabulary`).
        cfg: the CQA settings (backend, prompts, retrieval threshold, concurrency, retries, cache path).
        out_dir: where the outputs go (created).
        index: a built index to reuse (else `build_index(cfg)`).
        backend: a backend to reuse (else `make_backend(cfg)`).

    Returns:
        A GenerationResult; `.failures` lists rejected statements (the CLI then exits non-zero).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = index or build_index(cfg)
    owns_backend = backend is None
    backend = backend or make_backend(cfg)
    try:
        return _generate(vocabulary, cfg, out_dir, index, backend)
    finally:
        if owns_backend and hasattr(backend, "close"):
            backend.close()  # e.g. the HTTP client of the openai backend


def _generate(vocabulary: Vocabulary, cfg: CQAConfig, out_dir: Path, index: CardioIndex,
              backend: Backend) -> GenerationResult:
    from tqdm.auto import tqdm

    cache = GenerationCache(cfg.cache_file())

    groups = vocabulary.groups()
    infos = {normal: classify(spellings[0].text) for normal, spellings in groups.items()}
    started = time.perf_counter()
    retrievals = dict(zip(infos, retrieve(index, list(infos.values()), cfg.top_k, progress=cfg.show_progress)))
    retrieval_s = time.perf_counter() - started

    # One outcome per normal form: the cached/generated record, or why there is none.
    outcomes: dict[str, dict] = {}
    jobs: dict[str, tuple[str, Request]] = {}
    for normal, info in infos.items():
        if info.non_diagnostic:
            outcomes[normal] = {"status": "non_diagnostic"}
            continue
        used = _findings_used(retrievals[normal], cfg.min_score)
        if not used:
            outcomes[normal] = {"status": "uncovered"}
            continue
        key = cache_key(normal, cfg, backend, index.hash)
        cached = cache.get(key)
        if cached is not None:
            outcomes[normal] = {**cached, "status": "described", "cached": True}
            continue
        entries = tuple(index.entries[hit.entry_id] for hit in used)
        # User-document chunks join the context only when they are as relevant as a finding must be.
        documents = [d.context for d in retrievals[normal].documents if d.score >= cfg.min_score]
        context = format_context(entries, documents)
        request = Request(statement=normal, entries=entries, system=cfg.system_prompt,
                          prompt=render_prompt(cfg.prompt_template, normal, context))
        jobs[normal] = (key, request)

    def run_one(request: Request) -> tuple[str, int, float]:
        t0 = time.perf_counter()
        text, attempts = call_with_retries(lambda: backend.describe(request), cfg.max_retries, cfg.backoff_s,
                                           cfg.backoff_max_s)
        return text, attempts, time.perf_counter() - t0

    n_generated = 0
    if jobs:
        bar = tqdm(total=len(jobs), desc=f"generating ({backend.name})", unit="statement",
                   disable=not cfg.show_progress)
        with ThreadPoolExecutor(max_workers=cfg.max_concurrency) as pool:
            futures = {pool.submit(run_one, request): normal for normal, (key, request) in jobs.items()}
            try:
                for future in as_completed(futures):
                    normal = futures[future]
                    key = jobs[normal][0]
                    try:
                        text, attempts, seconds = future.result()
                    except Exception as err:  # noqa: BLE001 - any backend failure becomes a recorded rejection
                        outcomes[normal] = {"status": "rejected", "error": f"{type(err).__name__}: {err}",
                                            "attempts": getattr(err, "attempts", 1)}
                    else:
                        record = {"key": key, "normal": normal, "description": text, "backend": backend.name,
                                  "model": backend.model, "attempts": attempts, "generation_s": round(seconds, 4),
                                  "index_hash": index.hash, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                        cache.append(record)
                        outcomes[normal] = {**record, "status": "described", "cached": False}
                        n_generated += 1
                    bar.update(1)
            except KeyboardInterrupt:
                # What is in the cache stays there; the next run resumes from it.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        bar.close()

    result = _assemble(vocabulary, cfg, infos, retrievals, outcomes, index, backend, out_dir)
    result.n_generated = n_generated
    result.n_cached = sum(1 for o in outcomes.values() if o.get("cached"))
    _write_outputs(result, cfg, backend, retrieval_s, vocabulary)
    return result


def _assemble(vocabulary, cfg, infos, retrievals, outcomes, index, backend, out_dir) -> GenerationResult:
    descriptions: dict[str, str] = {}
    records: list[dict] = []
    failures: list[dict] = []
    for statement in vocabulary:
        normal = statement.normal
        info, retrieval, outcome = infos[normal], retrievals[normal], outcomes[normal]
        record = {
            "statement": statement.text,
            "normal": normal,
            "query": info.query,
            "code": statement.code,
            "count": statement.count,
            "status": outcome["status"],
            "non_diagnostic": info.non_diagnostic,
            "rule": info.rule,
            "rule_why": info.rule_why,
            "hits": [hit.to_json() for hit in retrieval.hits],
            "findings": [hit.entry_id for hit in _findings_used(retrieval, cfg.min_score)],
            "documents": [hit.to_json() for hit in retrieval.documents],
            "min_score": cfg.min_score,
            "backend": backend.name,
            "model": backend.model,
            "cached": bool(outcome.get("cached", False)),
            "attempts": outcome.get("attempts"),
            "generation_s": outcome.get("generation_s"),
            "index_hash": index.hash,
            "error": outcome.get("error"),
        }
        if outcome["status"] == "described":
            descriptions[statement.text] = outcome["description"]
            # A cached answer was made by the backend recorded with it (same identity, by the key).
            record["backend"] = outcome.get("backend", backend.name)
            record["model"] = outcome.get("model", backend.model)
        if outcome["status"] == "rejected":
            failures.append(record)
        records.append(record)
    return GenerationResult(descriptions, records, out_dir, failures=failures, index_hash=index.hash)


def _write_outputs(result: GenerationResult, cfg: CQAConfig, backend: Backend, retrieval_s: float,
                   vocabulary: Vocabulary) -> None:
    _write_atomic(result.dict_path, json.dumps(result.descriptions, ensure_ascii=False, indent=1))
    _write_atomic(result.provenance_path,
                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records))
    summary = {
        "vocabulary": vocabulary.source,
        "n_statements": len(vocabulary),
        "n_normal_forms": len(vocabulary.groups()),
        "counts": result.counts(),
        "n_generated": result.n_generated,
        "n_cached": result.n_cached,
        "n_rejected": len(result.failures),
        "backend": backend.name,
        "model": backend.model,
        "index_hash": result.index_hash,
        "retrieval_s": round(retrieval_s, 2),
        "non_diagnostic_policy": "omitted from waveform_dict.json; flagged with its rule in provenance.jsonl",
    }
    _write_atomic(result.out_dir / SUMMARY_NAME, json.dumps(summary, indent=2))
    # The resolved settings, so the run can be repeated; they hold the key's variable NAME, never the key.
    save_config(cfg, result.out_dir / "cqa_config.yaml")
