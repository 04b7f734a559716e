"""The generation run with the offline extractive backend: outputs, cache, resume, drop-in dictionaries."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from esi.data.statements import StatementDict, load_waveform_dict
from esi.rag.__main__ import main
from esi.rag.config import CQAConfig
from esi.rag.generation import generate
from esi.rag.index import build_index, load_embedding_model
from esi.rag.vocabulary import load_vocabulary, vocabulary_from_strings

SHARED_INDEX_DIR = Path(tempfile.gettempdir()) / "esi-test-cqa-index"  # same content-hashed copy as test_rag_index
STATEMENTS = [
    "Sinus rhythm",
    "SINUS RHYTHM.",
    "*** Sinus rhythm ***",
    "Sinus rhythm with occasional PACs",
    "LBBB",
    "Atrial fibrillation with rapid ventricular response",
    "*** ANTERIOR INFARCT - POSSIBLY ACUTE ***",
    "Baseline wander in lead(s) V3",
    "Lead(s) unsuitable for analysis: V1 V2",
    "*UnconfirmedAnalysis*",
    "Regard as change in view of normal clinical findings",
]


@pytest.fixture(scope="module")
def index():
    cfg = CQAConfig(index_dir=str(SHARED_INDEX_DIR), show_progress=False)
    return build_index(cfg, embed_model=load_embedding_model())


@pytest.fixture
def cfg(tmp_path) -> CQAConfig:
    return CQAConfig(index_dir=str(SHARED_INDEX_DIR), cache_path=str(tmp_path / "cache.jsonl"), show_progress=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_extractive_run_writes_dictionary_and_provenance(index, cfg, tmp_path):
    result = generate(vocabulary_from_strings(STATEMENTS), cfg, tmp_path / "run", index=index)

    descriptions = json.loads((tmp_path / "run" / "waveform_dict.json").read_text())
    # Every spelling of a statement gets the one description of its normal form.
    assert descriptions["SINUS RHYTHM."] == descriptions["*** Sinus rhythm ***"] == descriptions["Sinus rhythm"]
    assert descriptions["Sinus rhythm"].startswith("Sinus rhythm:")
    assert "Left bundle branch block" in descriptions["LBBB"]
    # Compound statements are described finding by finding.
    assert "Premature atrial complex:" in descriptions["Sinus rhythm with occasional PACs"]
    # Non-diagnostic notes are omitted from the dictionary, not given a description.
    assert "Lead(s) unsuitable for analysis: V1 V2" not in descriptions
    assert "*UnconfirmedAnalysis*" not in descriptions

    records = {r["statement"]: r for r in read_jsonl(tmp_path / "run" / "provenance.jsonl")}
    assert set(records) == set(STATEMENTS)
    assert records["*UnconfirmedAnalysis*"]["status"] == "non_diagnostic"
    assert records["*UnconfirmedAnalysis*"]["rule"] == "unconfirmed"
    assert records["Lead(s) unsuitable for analysis: V1 V2"]["rule"] == "lead_quality_note"
    vague = records["Regard as change in view of normal clinical findings"]
    assert vague["status"] == "uncovered" and vague["hits"][0]["score"] < cfg.min_score  # no random passage
    lbbb = records["LBBB"]
    assert lbbb["status"] == "described" and lbbb["backend"] == "extractive"
    assert lbbb["hits"][0] == {**lbbb["hits"][0], "id": "left_bundle_branch_block", "score": 1.0, "match": "alias"}
    assert lbbb["findings"] == ["left_bundle_branch_block"] and lbbb["index_hash"] == index.hash
    assert result.counts() == {"described": 8, "non_diagnostic": 2, "uncovered": 1}
    assert result.ok and result.n_generated == 6  # six distinct normal forms were described


def test_rerun_takes_every_description_from_the_cache(index, cfg, tmp_path):
    vocabulary = vocabulary_from_strings(STATEMENTS)
    first = generate(vocabulary, cfg, tmp_path / "first", index=index)
    second = generate(vocabulary, cfg, tmp_path / "second", index=index)
    assert second.n_generated == 0 and second.n_cached == first.n_generated
    assert second.descriptions == first.descriptions
    assert all(r["cached"] for r in read_jsonl(second.provenance_path) if r["status"] == "described")


def test_a_killed_run_resumes_with_only_the_missing_statements(index, cfg, tmp_path):
    vocabulary = vocabulary_from_strings(["Sinus bradycardia", "Sinus tachycardia", "Left axis deviation",
                                          "Right bundle branch block", "Atrial flutter", "First degree AV block"])
    full = generate(vocabulary, cfg, tmp_path / "full", index=index)
    assert full.n_generated == 6
    # What a kill leaves behind: the first lines flushed, the last one torn mid-write.
    cache = Path(cfg.cache_path)
    lines = cache.read_text().splitlines()
    torn = lines[3][:25]
    cache.write_text("\n".join(lines[:3]) + "\n" + torn)

    with pytest.warns(UserWarning, match="unreadable line"):
        resumed = generate(vocabulary, cfg, tmp_path / "resumed", index=index)
    assert resumed.n_cached == 3 and resumed.n_generated == 3
    assert resumed.descriptions == full.descriptions
    # The new answers were appended after the torn line, each on a whole line of its own.
    lines = cache.read_text().splitlines()
    assert lines[3] == torn and len(lines) == 7
    assert {json.loads(line)["normal"] for line in lines[4:]} <= {s.normal for s in vocabulary}


def test_outputs_load_where_a_waveform_dictionary_is_accepted(index, cfg, tmp_path, esi_dict_path):
    result = generate(vocabulary_from_strings(STATEMENTS), cfg, tmp_path / "run", index=index)
    ours = load_waveform_dict(result.dict_path)
    released = load_waveform_dict(esi_dict_path)
    # Same flat statement -> description format as the paper's release: both are StatementDicts.
    assert isinstance(ours, StatementDict) and isinstance(released, StatementDict)
    assert len(released) == 3862
    assert ours.lookup("sinus rhythm.") == result.descriptions["Sinus rhythm"]
    assert released.lookup("*** ANTERIOR INFARCT - POSSIBLY ACUTE ***").startswith("ST segment elevation")


def test_cli_generate_from_a_scp_statements_file(index, tmp_path, ptbxl_dir, capsys):
    out = tmp_path / "ptbxl"
    code = main(["generate", "--statements", str(ptbxl_dir / "scp_statements.csv"), "--backend", "extractive",
                 "--out", str(out), "--config", "params/cqa.yaml", "--set", f"cqa_index_dir={SHARED_INDEX_DIR}",
                 "--set", f"cqa_cache_path={tmp_path / 'cache.jsonl'}", "--set", "cqa_show_progress=false"])
    assert code == 0
    descriptions = json.loads((out / "waveform_dict.json").read_text())
    assert len(descriptions) == 71  # every PTB-XL statement is described
    records = read_jsonl(out / "provenance.jsonl")
    assert {r["code"] for r in records} >= {"NORM", "CLBBB", "AFIB"}
    assert (out / "cqa_config.yaml").exists() and (out / "summary.json").exists()
    assert "71 statements: 71 described" in capsys.readouterr().out
    assert load_vocabulary(ptbxl_dir / "scp_statements.csv").kind == "ptbxl"


def test_cli_reads_the_flat_cqa_keys_of_any_params_file(index, capsys):
    for params in ("params/cqa.yaml", "params/demo.yaml"):
        code = main(["query", "Left bundle branch block", "-k", "1", "--config", params,
                     "--set", f"cqa_index_dir={SHARED_INDEX_DIR}", "--set", "cqa_show_progress=false"])
        assert code == 0
        assert "1. [1.000 " in capsys.readouterr().out


@pytest.mark.parametrize("item, hint", [("top_k=5", "cqa_top_k"), ("openai.model=llama3", "cqa_openai.model"),
                                        ("train_top_k=5", "cqa_top_k")])
def test_cli_set_refuses_a_key_without_the_cqa_prefix_with_a_did_you_mean(item, hint, capsys):
    code = main(["query", "LBBB", "--config", "params/cqa.yaml", "--set", item])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --set {item}: did you mean {hint}?"), err
