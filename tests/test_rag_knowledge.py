"""The Cardio Query Assistant's knowledge base (esi/rag/knowledge) and its labelled retrieval set (esi/rag/eval).

These tests read the markdown and CSV files as data: they check the fixed entry format the retrieval pipeline
parses, that names do not collide, that the base covers every category and every PTB-XL SCP code, and that the
retrieval set is labelled with entries that exist.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

RAG_DIR = Path(__file__).resolve().parents[1] / "esi" / "rag"
KNOWLEDGE_DIR = RAG_DIR / "knowledge"
RETRIEVAL_SET = RAG_DIR / "eval" / "retrieval_set.csv"

CATEGORIES = ("rhythm", "conduction", "axis", "hypertrophy", "ischemia_infarction", "repolarization", "pacing",
              "electrolyte_drug", "technical", "general")
FRONT_MATTER_KEYS = ("id", "title", "category", "aliases")
SECTIONS = ("Summary", "Waveform criteria", "Leads", "Look-alikes")
# A criterion "with numbers": a value followed by the unit it is measured in.
MEASUREMENT = re.compile(r"\d\)?\s*(ms|mm|mV|bpm|degrees|%|Hz|s\b|per minute|/min|mmol/L)")


def entry_paths() -> list[Path]:
    return sorted(p for p in KNOWLEDGE_DIR.glob("*/*.md") if p.name.lower() != "readme.md")


def read_entry(path: Path) -> tuple[dict, dict[str, str]]:
    """(front matter, {section title: body}) of one entry file, failing with the file name on bad format."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.DOTALL)
    assert match, f"{path}: does not start with a '---' front-matter block"
    meta = yaml.safe_load(match.group(1))
    parts = re.split(r"^## (.+)\n", match.group(2), flags=re.MULTILINE)
    assert not parts[0].strip(), f"{path}: text before the first '## ' section"
    sections = {title.strip(): body.strip() for title, body in zip(parts[1::2], parts[2::2])}
    return meta, sections


def normalize_name(name: str) -> str:
    """Case- and punctuation-insensitive form of a name ("Left bundle-branch block" == "left bundle branch block")."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


@pytest.fixture(scope="module")
def entries() -> dict[str, dict]:
    """entry id -> front matter, for every entry file."""
    found = {}
    for path in entry_paths():
        meta, _ = read_entry(path)
        assert meta["id"] not in found, f"{path}: id {meta['id']!r} used twice"
        found[meta["id"]] = meta
    return found


@pytest.fixture(scope="module")
def retrieval_rows() -> list[dict]:
    with RETRIEVAL_SET.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["statement", "expected_id", "source"]
        return list(reader)


@pytest.mark.parametrize("path", entry_paths(), ids=lambda p: p.stem)
def test_entry_has_the_fixed_format(path):
    meta, sections = read_entry(path)
    assert tuple(meta) == FRONT_MATTER_KEYS, f"{path}: front matter keys {tuple(meta)}"
    assert meta["id"] == path.stem, f"{path}: id {meta['id']!r} is not the file name"
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", meta["id"]), f"{path}: id is not snake_case"
    assert meta["category"] == path.parent.name and meta["category"] in CATEGORIES, f"{path}: category"
    assert isinstance(meta["title"], str) and meta["title"].strip(), f"{path}: empty title"
    assert isinstance(meta["aliases"], list) and meta["aliases"], f"{path}: aliases must be a non-empty list"
    assert all(isinstance(a, str) and a.strip() for a in meta["aliases"]), f"{path}: an alias is not text"
    assert tuple(sections) == SECTIONS, f"{path}: sections {tuple(sections)}"
    assert all(sections.values()), f"{path}: an empty section"


@pytest.mark.parametrize("path", entry_paths(), ids=lambda p: p.stem)
def test_waveform_criteria_are_bullets_with_measurements(path):
    _, sections = read_entry(path)
    bullets = [line for line in sections["Waveform criteria"].splitlines() if line.startswith("- ")]
    assert len(bullets) >= 2, f"{path}: fewer than two criteria bullets"
    assert MEASUREMENT.search(sections["Waveform criteria"]), f"{path}: no criterion gives a number with a unit"
    words = sum(len(body.split()) for body in sections.values())
    assert 100 <= words <= 300, f"{path}: {words} words (entries are ~120-250 words)"


def test_names_do_not_collide_across_entries(entries):
    owner: dict[str, str] = {}
    for entry_id, meta in entries.items():
        names = {normalize_name(n) for n in (entry_id, meta["title"], *meta["aliases"])}
        for name in names:
            assert name not in owner, f"{name!r} names both {owner[name]} and {entry_id}"
            owner[name] = entry_id


def test_knowledge_base_is_large_and_covers_every_category(entries):
    assert len(entries) >= 120
    per_category = {c: sum(m["category"] == c for m in entries.values()) for c in CATEGORIES}
    assert all(per_category.values()), f"empty categories: {per_category}"


def test_every_ptbxl_code_is_an_alias_of_exactly_one_entry(entries, ptbxl_dir):
    with (ptbxl_dir / "scp_statements.csv").open(newline="") as f:
        codes = [row[""] for row in csv.DictReader(f)]
    assert len(codes) == 71
    for code in codes:
        owners = [entry_id for entry_id, meta in entries.items() if code in meta["aliases"]]
        assert len(owners) == 1, f"PTB-XL code {code} is an alias of {owners}"


def test_retrieval_set_is_labelled_with_existing_entries(entries, retrieval_rows):
    assert len(retrieval_rows) >= 150
    statements = [row["statement"] for row in retrieval_rows]
    assert len(set(statements)) == len(statements), "a statement appears twice"
    for row in retrieval_rows:
        assert row["source"] in ("mimic", "ptbxl"), row
        expected = row["expected_id"].split("|")
        unknown = [e for e in expected if e not in entries]
        assert not unknown, f"{row['statement']!r} expects unknown entries {unknown}"


def test_retrieval_set_holds_every_ptbxl_statement_with_its_entry(entries, retrieval_rows, ptbxl_dir):
    labelled = {row["statement"]: row["expected_id"].split("|") for row in retrieval_rows if row["source"] == "ptbxl"}
    with (ptbxl_dir / "scp_statements.csv").open(newline="") as f:
        for scp in csv.DictReader(f):
            code, description = scp[""], scp["description"]
            assert description in labelled, f"PTB-XL {code} ({description!r}) is missing from the retrieval set"
            owner = next(entry_id for entry_id, meta in entries.items() if code in meta["aliases"])
            assert owner in labelled[description], f"{description!r} should accept {owner}"


def test_mimic_rows_are_verbatim_statements_of_the_released_dictionary(retrieval_rows, esi_dict_path):
    vocabulary = set(json.loads(esi_dict_path.read_text(encoding="utf-8")))
    mimic = [row["statement"] for row in retrieval_rows if row["source"] == "mimic"]
    assert len(mimic) >= 100
    not_verbatim = [s for s in mimic if s not in vocabulary]
    assert not not_verbatim, f"not verbatim MIMIC-IV-ECG statements: {not_verbatim[:5]}"


def test_retrieval_pipeline_loads_every_entry(entries):
    from esi.rag.knowledge_base import load_knowledge_base

    loaded = load_knowledge_base(KNOWLEDGE_DIR)
    assert sorted(e.id for e in loaded) == sorted(entries)
    lbbb = next(e for e in loaded if e.id == "left_bundle_branch_block")
    assert "CLBBB" in lbbb.aliases and any("120 ms" in c for c in lbbb.criteria())
