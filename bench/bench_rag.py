"""Cardio Query Assistant: retrieval quality, coverage, agreement with the ESI paper, and speed.

    python bench/bench_rag.py                  # everything, on the bundled knowledge base
    python bench/bench_rag.py --agreement 500  # agreement on a random 500 of the released statements

Quality (goals in brackets):
- hit@1 / hit@3 on esi/rag/eval/retrieval_set.csv [hit@3 >= 0.9], for the full retrieval (query
  normalisation + compound splitting + hybrid name matching) and, as the baseline measured in the same run,
  plain dense retrieval of the normalised statement.
- coverage: share of the released dictionary's 3,862 statements that get a description or a justified
  non-diagnostic flag [>= 95 %], and of PTB-XL's 71 statements [100 %].
- agreement: cosine (MiniLM) between our extractive description and the paper's, per shared statement:
  mean / median, histogram in outputs/cqa/bench/agreement.png.
Speed (ratios against baselines run here): batched scoring vs llama-index's retriever one query at a time;
reading the persisted vector store directly vs llama-index's loader. A generation rerun makes no backend call.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from esi.paths import outputs_dir  # noqa: E402
from esi.rag.config import CQAConfig  # noqa: E402
from esi.rag.generation import generate  # noqa: E402
from esi.rag.index import build_index, retrieve  # noqa: E402
from esi.plots import plot_agreement, save_figure  # noqa: E402
from esi.rag.quality import agreement, coverage, hit_rate, load_retrieval_set  # noqa: E402
from esi.rag.vocabulary import StatementInfo, classify, load_vocabulary, vocabulary_from_strings  # noqa: E402

SHARED = Path(os.environ.get("ESI_SHARED", REPO.parent / "shared"))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def dense_only(index, examples):
    """Baseline: the normal form embedded as it is, no hedge stripping, no splitting, no name matching."""
    index.alias_match = False
    try:
        infos = [StatementInfo(e.statement, classify(e.statement).normal, classify(e.statement).normal,
                               (classify(e.statement).normal,), False, None) for e in examples]
        results = retrieve(index, infos, k=3)
    finally:
        index.alias_match = True
    hits = {1: 0, 3: 0}
    for e, r in zip(examples, results):
        got = [h.entry_id for h in r.hits]
        hits[1] += any(x in got[:1] for x in e.expected)
        hits[3] += any(x in got[:3] for x in e.expected)
    return {k: v / len(examples) for k, v in hits.items()}


def bench_speed(index, cfg, statements: list[str]) -> None:
    from llama_index.core import StorageContext, load_index_from_storage
    from llama_index.core.schema import QueryBundle

    infos = [classify(s) for s in statements]
    queries = list(dict.fromkeys(i.query for i in infos if i.query))
    embeddings = index.embed_queries(queries)  # both sides get the same embeddings: compare scoring only
    retriever = index.llama_retriever(k=24)
    _, t_llama = timed(lambda: [retriever.retrieve(QueryBundle(query_str=q, embedding=e))
                                for q, e in zip(queries, embeddings)])
    _, t_ours = timed(lambda: [index.search(q, 3, scores=row)
                               for q, row in zip(queries, index.node_scores(embeddings))])
    print(f"scoring {len(queries)} queries: llama-index retriever {t_llama:.2f} s, batched {t_ours:.2f} s "
          f"-> {t_llama / t_ours:.1f}x")

    _, t_their_load = timed(lambda: load_index_from_storage(
        StorageContext.from_defaults(persist_dir=str(index.directory)), embed_model=index.embed_model))
    _, t_our_load = timed(build_index, cfg, embed_model=index.embed_model)
    print(f"loading the persisted index: llama-index loader {t_their_load:.2f} s, esi.rag {t_our_load:.2f} s "
          f"-> {t_their_load / t_our_load:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agreement", type=int, default=0,
                        help="agree on a random sample of this many released statements (0 = all)")
    args = parser.parse_args()
    released_path = SHARED / "data" / "esi_mimic_waveform_dict.json"
    released = json.loads(released_path.read_text())
    cfg = CQAConfig(show_progress=True)

    index, seconds = timed(build_index, cfg)
    print(f"index {index.hash[:16]}: {len(index.entries)} entries, {index.n_nodes} nodes, "
          f"{'built' if index.rebuilt else 'loaded'} in {seconds:.1f} s")

    print("\n== retrieval on the labelled set")
    examples = load_retrieval_set()
    full = hit_rate(index, examples, ks=(1, 3))
    base = dense_only(index, examples)
    print(f"dense only (baseline): hit@1 {base[1]:.3f}  hit@3 {base[3]:.3f}")
    print(f"esi.rag retrieval:     hit@1 {full.hit_at[1]:.3f}  hit@3 {full.hit_at[3]:.3f}   "
          f"[goal hit@3 >= 0.9: {'met' if full.hit_at[3] >= 0.9 else 'NOT met'}]")
    print(f"  per source: {full}")
    for statement, expected, got in full.misses:
        print(f"  miss: {statement!r} expected {'|'.join(expected)}, got {got}")

    print("\n== coverage (min_score {:.2f})".format(cfg.min_score))
    mimic = coverage(index, load_vocabulary(released_path), cfg.min_score, progress=True)
    ptbxl = coverage(index, load_vocabulary(SHARED / "data" / "ptbxl" / "scp_statements.csv"), cfg.min_score)
    print(f"released dictionary: {mimic}   [goal >= 95 %: {'met' if mimic.share >= 0.95 else 'NOT met'}]")
    print(f"PTB-XL statements:   {ptbxl}   [goal 100 %: {'met' if ptbxl.share == 1.0 else 'NOT met'}]")
    print("  uncovered examples: " + "; ".join(repr(s) for s in mimic.uncovered[:12]))
    notes = [s for s in released if classify(s).non_diagnostic and released[s].strip()]
    print(f"  the paper's dictionary gives a waveform description to {len(notes)} statements that are "
          f"non-diagnostic notes here, e.g. {notes[0]!r}: {released[notes[0]][:90]!r}...")

    print("\n== agreement with the paper's descriptions (extractive backend)")
    statements = sorted(released)
    if args.agreement:
        statements = random.Random(0).sample(statements, min(args.agreement, len(statements)))
    with tempfile.TemporaryDirectory() as tmp:
        run_cfg = CQAConfig(cache_path=str(Path(tmp) / "cache.jsonl"), show_progress=True)
        first, t_first = timed(generate, vocabulary_from_strings(statements), run_cfg, Path(tmp) / "run", index=index)
        second, t_second = timed(generate, vocabulary_from_strings(statements), run_cfg, Path(tmp) / "rerun",
                                 index=index)
    cosines = agreement(first.descriptions, released, index.embed_model)
    values = list(cosines.values())
    figure = save_figure(plot_agreement(values), outputs_dir() / "cqa" / "bench" / "agreement.png")
    print(f"{len(values)} shared statements: mean cosine {statistics.mean(values):.3f}, "
          f"median {statistics.median(values):.3f} (figure: {figure})")
    print(f"generation: first run {t_first:.2f} s with {first.n_generated} backend calls; rerun {t_second:.2f} s "
          f"with {second.n_generated} backend calls ({second.n_cached} answers from the cache)")

    print("\n== speed")
    bench_speed(index, cfg, [e.statement for e in examples])


if __name__ == "__main__":
    main()
