"""Quality measures: coverage of real vocabularies and agreement with the ESI paper's descriptions.

The full-size figures (all 3,862 released statements) are measured by bench/bench_rag.py; these tests use
PTB-XL's 71 statements and a fixed sample of the released dictionary to stay fast.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest

from esi.rag.config import CQAConfig
from esi.rag.generation import generate
from esi.rag.index import build_index, load_embedding_model
from esi.plots import plot_agreement
from esi.rag.quality import agreement, coverage
from esi.rag.vocabulary import load_vocabulary, vocabulary_from_strings

SHARED_INDEX_DIR = Path(tempfile.gettempdir()) / "esi-test-cqa-index"  # same content-hashed copy as test_rag_index


@pytest.fixture(scope="module")
def cfg() -> CQAConfig:
    return CQAConfig(index_dir=str(SHARED_INDEX_DIR), show_progress=False)


@pytest.fixture(scope="module")
def index(cfg):
    return build_index(cfg, embed_model=load_embedding_model())


@pytest.fixture(scope="module")
def released(esi_dict_path) -> dict[str, str]:
    return json.loads(esi_dict_path.read_text())


def test_every_ptbxl_statement_gets_a_description(index, cfg, ptbxl_dir):
    result = coverage(index, load_vocabulary(ptbxl_dir / "scp_statements.csv"), cfg.min_score)
    assert result.n == 71
    assert result.share == 1.0, result.uncovered


def test_released_vocabulary_is_covered_or_justified(index, cfg, released):
    sample = random.Random(0).sample(sorted(released), 250)
    result = coverage(index, vocabulary_from_strings(sample), cfg.min_score)
    print(result)
    assert result.non_diagnostic > 0  # the release holds notes such as "Lead(s) unsuitable for analysis: ..."
    assert result.share >= 0.95, result.uncovered[:20]


def test_agreement_with_the_released_descriptions(index, cfg, released, tmp_path):
    sample = random.Random(1).sample(sorted(released), 20)
    cfg_run = CQAConfig(index_dir=cfg.index_dir, cache_path=str(tmp_path / "cache.jsonl"), show_progress=False)
    ours = generate(vocabulary_from_strings(sample), cfg_run, tmp_path / "run", index=index).descriptions
    cosines = agreement(ours, released, index.embed_model)
    assert set(cosines) == {s for s in ours if s in released} and len(cosines) >= 10
    assert all(-1.0 <= c <= 1.0 for c in cosines.values())

    # Our description of a statement is closer to the paper's description of the SAME statement than to
    # its description of another one: the agreement measure tells statements apart.
    statements = sorted(cosines)
    shifted = {s: released[statements[(i + 1) % len(statements)]] for i, s in enumerate(statements)}
    mismatched = agreement({s: ours[s] for s in statements}, shifted, index.embed_model)
    matched_mean = sum(cosines.values()) / len(cosines)
    assert matched_mean > sum(mismatched.values()) / len(mismatched) + 0.1

    figure = plot_agreement(list(cosines.values()))
    bars = figure.axes[0].patches
    assert sum(bar.get_height() for bar in bars) == len(cosines)      # every statement counted once
    assert f"n={len(cosines)}" in figure.axes[0].get_legend().get_texts()[0].get_text()
