"""How many pretraining texts fit a token budget (train_max_text_length), by statements per ECG.

    python bench/text_budget.py --dict ../shared/data/esi_mimic_waveform_dict.json
    python bench/text_budget.py --dict D.json --tokenizer michiyasunaga/BioLinkBERT-base   # if in the HF cache

Texts are composed as the pipeline composes them (esi.data.text.compose_text: demographics, findings, one
description per statement), from statements drawn at random from the dictionary, and counted with the text
encoder's tokenizer (special tokens included). The default tokenizer is the bundled MiniLM (offline); its
general-English vocabulary splits medical words into more pieces than BioLinkBERT's PubMed vocabulary, so its
counts are an upper bound on BioLinkBERT's and its shares a lower bound.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from esi.data.statements import load_waveform_dict  # noqa: E402
from esi.data.text import token_budget_table  # noqa: E402
from esi.models.text_encoder import resolve_text_encoder  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dict", required=True, help="statement -> description JSON")
    parser.add_argument("--tokenizer", default="minilm", help="text encoder name or folder (default: bundled MiniLM)")
    parser.add_argument("--statements", type=int, nargs="+", default=list(range(1, 7)), help="statements per text")
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 500, 512],
                        help="token budgets (500: the original ESI code's max_length)")
    parser.add_argument("--n-texts", type=int, default=2000, help="texts per statement count")
    parser.add_argument("--seed", type=int, default=0, help="seed of the statement draws")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    location = resolve_text_encoder(args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(location)
    table = token_budget_table(load_waveform_dict(args.dict), tokenizer, statement_counts=args.statements,
                               budgets=args.budgets, n_texts=args.n_texts, seed=args.seed)
    shown = table.copy()
    for column in [c for c in shown.columns if c.startswith("fits_")]:
        shown[column] = (100 * shown[column]).map(lambda v: f"{v:.1f} %")
    print(f"tokens per text ({args.tokenizer}), texts 'Male, 63 years old. ECG findings: ... <descriptions>' "
          f"of k distinct statements drawn uniformly from {args.dict}, {args.n_texts} per k, seed {args.seed}:")
    print(shown.round(1).to_string())
    if args.tokenizer.lower() in ("minilm", "bundled-minilm", "sentence-transformers/all-minilm-l6-v2"):
        print("MiniLM's general-English vocabulary splits medical words into more pieces than BioLinkBERT's "
              "PubMed vocabulary: these lengths are an upper bound for BioLinkBERT, the shares a lower bound.")


if __name__ == "__main__":
    main()
