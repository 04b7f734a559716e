"""Command line of the Cardio Query Assistant.

    python -m esi.rag generate --statements FILE --out DIR [--backend extractive|openai|hf]
                               [--config params/cqa.yaml ...] [--set cqa_<setting>=value ...]
    python -m esi.rag query "Left bundle branch block" [-k 3] [--config ...] [--set ...]
    python -m esi.rag build-index [--config ...] [--set ...]

--config reads the cqa_* keys of any params file (params/cqa.yaml, params/demo.yaml); --set overrides one with
its params key and a YAML value: --set cqa_top_k=5, --set cqa_openai.model=llama3 (one entry of a mapping).

FILE: one statement per line, a MIMIC-IV-ECG machine_measurements.csv, a PTB-XL scp_statements.csv, or a
statement -> description JSON (its keys). `generate` exits with status 1 when any statement was rejected by
the backend (everything else is still written).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m esi.rag", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="params file(s) with cqa_* keys, later ones win (e.g. params/cqa.yaml)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one setting with its params key, e.g. --set cqa_top_k=5 "
                             "--set cqa_openai.model=llama3")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", parents=[common], help="write DIR/waveform_dict.json and provenance")
    gen.add_argument("--statements", required=True, help="statement file (see above)")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--backend", choices=["extractive", "openai", "hf"], help="overrides cqa_backend")

    ask = sub.add_parser("query", parents=[common], help="print the passages retrieved for a statement")
    ask.add_argument("text", help="a statement or question")
    ask.add_argument("-k", type=int, default=None, help="how many entries (default: cqa_top_k)")

    sub.add_parser("build-index", parents=[common], help="build or load the index; print its hash and size")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from esi.config import ConfigError
    from esi.rag.config import load_cqa_config

    overrides = list(args.overrides)
    if getattr(args, "backend", None):
        overrides.append(f"cqa_backend={args.backend}")
    try:
        cfg = load_cqa_config(args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from esi.rag.knowledge_base import KnowledgeFormatError

    try:
        return _run(args, cfg)
    except (FileNotFoundError, KnowledgeFormatError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args, cfg) -> int:
    from esi.rag.index import build_index, query

    if args.command == "build-index":
        index = build_index(cfg)
        state = "built" if index.rebuilt else "loaded (sources unchanged)"
        print(f"index {index.hash[:16]} {state}: {len(index.entries)} entries, {index.n_nodes} nodes, "
              f"at {index.directory}")
        return 0

    if args.command == "query":
        from esi.rag.vocabulary import classify

        info = classify(args.text)
        if info.non_diagnostic:
            print(f"note: a non-diagnostic statement (rule {info.rule}: {info.rule_why}); generation gives it no "
                  "description. Closest passages anyway:")
        index = build_index(cfg)
        hits = query(index, args.text, k=args.k or cfg.top_k)
        if not hits:
            print("nothing retrieved")
        for rank, hit in enumerate(hits, 1):
            weak = hit.entry_id is not None and hit.score < cfg.min_score
            covered = f"  (below min_score {cfg.min_score})" if weak else ""
            label = hit.entry_id or "document"
            print(f"{rank}. [{hit.score:.3f} {hit.match}] {label}: {hit.title}{covered}")
            print("   " + hit.context[:400].replace("\n", "\n   "))
        return 0

    from esi.rag.generation import generate
    from esi.rag.vocabulary import load_vocabulary

    try:
        vocabulary = load_vocabulary(args.statements)
    except ValueError as err:  # a statement file of unknown layout
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = generate(vocabulary, cfg, args.out)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
    print(f"{len(vocabulary)} statements: {counts}; {result.n_generated} generated, {result.n_cached} from cache")
    print(f"wrote {result.dict_path} and {result.provenance_path}")
    if result.failures:
        print(f"{len(result.failures)} statement(s) rejected by the {cfg.backend} backend:", file=sys.stderr)
        for record in result.failures[:20]:
            print(f"  {record['statement']!r}: {record['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
