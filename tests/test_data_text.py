"""Statement normalisation, the released statement -> description dictionary, and composing pretraining texts."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from esi.data import ptbxl
from esi.data.statements import StatementDict, load_waveform_dict, normalize_statement
from esi.data.text import compose_corpus, compose_text, count_words, demographics, ptbxl_text, token_budget_table


@pytest.fixture(scope="module")
def waveform_dict(esi_dict_path) -> StatementDict:
    return load_waveform_dict(esi_dict_path)


@pytest.mark.parametrize("spelling", ["SINUS RHYTHM.", "*** Sinus rhythm ***", "--- Sinus rhythm ---",
                                      "  sinus   rhythm , ", "- Sinus rhythm", "Sinus rhythm!!"])
def test_normalize_statement_gives_one_key_for_every_spelling(spelling):
    assert normalize_statement(spelling) == "sinus rhythm"


def test_normalize_statement_keeps_inner_punctuation():
    assert normalize_statement("*** EXTENSIVE INFARCT *** with possible acute inferior changes") == \
        "extensive infarct with possible acute inferior changes"
    assert normalize_statement("- 2:1 A-V block.") == "2:1 a-v block"
    assert normalize_statement("Sinus rhythm with PAC(s)") == "sinus rhythm with pac(s)"
    assert normalize_statement("? FAULTY V2 - OMITTED FROM ANALYSIS") == "? faulty v2 - omitted from analysis"


def test_released_dictionary_loads_with_its_verbatim_keys(waveform_dict, esi_dict_path):
    raw = json.loads(esi_dict_path.read_text())
    assert len(waveform_dict) == 3862
    assert list(waveform_dict) == list(raw)
    assert waveform_dict.lookup("Sinus rhythm") == raw["Sinus rhythm"]  # exact spelling keeps its own text


@pytest.mark.parametrize("spelling", ["SINUS RHYTHM.", "*** Sinus rhythm ***", "--- sinus rhythm ---"])
def test_unseen_spellings_find_the_sinus_rhythm_description(waveform_dict, esi_dict_path, spelling):
    raw = json.loads(esi_dict_path.read_text())
    assert spelling not in raw
    key = waveform_dict.match(spelling)
    assert normalize_statement(key) == "sinus rhythm"
    assert waveform_dict.lookup(spelling) == raw[key]


def test_decorated_variants_in_the_released_dictionary_share_a_normal_form(waveform_dict, esi_dict_path):
    raw = json.loads(esi_dict_path.read_text())
    variants = ["*** PEDIATRIC CRITERIA USED ***", "--- Pediatric criteria used ---", "PEDIATRIC CRITERIA USED"]
    assert all(v in raw for v in variants)
    assert {normalize_statement(v) for v in variants} == {"pediatric criteria used"}
    # A spelling not in the file gets the first variant's description.
    assert waveform_dict.lookup("Pediatric criteria used.") == raw["*** PEDIATRIC CRITERIA USED ***"]


def test_collisions_keep_the_first_key_and_are_counted():
    descriptions = StatementDict({"Sinus rhythm": "regular P before every QRS",
                                  "SINUS RHYTHM.": "another text",
                                  "sinus rhythm": "regular P before every QRS",   # same text: no collision
                                  "Left axis deviation": "negative QRS in aVF"})
    assert descriptions.n_collisions == 1
    assert descriptions.collisions[0].kept == "Sinus rhythm"
    assert descriptions.collisions[0].other == "SINUS RHYTHM."
    assert descriptions.lookup("*** SINUS RHYTHM ***") == "regular P before every QRS"
    assert descriptions.lookup("SINUS RHYTHM.") == "another text"


def test_released_dictionary_reports_its_collisions(waveform_dict):
    assert waveform_dict.n_collisions == len(waveform_dict.collisions) > 0
    assert waveform_dict.n_normal_forms < len(waveform_dict)


def test_dictionary_file_must_be_one_json_object(tmp_path):
    path = tmp_path / "dict.json"
    path.write_text(json.dumps([["Sinus rhythm", "text"]]))
    with pytest.raises(ValueError, match="expected one JSON object"):
        load_waveform_dict(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_waveform_dict(tmp_path / "missing.json")


def test_demographics_sentence():
    assert demographics("M", 63.9) == "Male, 63 years old."
    assert demographics("female", None) == "Female."
    assert demographics(float("nan"), 40) == "40 years old."
    assert demographics(None, float("nan")) == ""
    with pytest.raises(ValueError, match="unknown gender"):
        demographics("X", 40)


def test_text_is_demographics_findings_then_descriptions(waveform_dict):
    composed = compose_text(["Sinus rhythm", "Left axis deviation"], waveform_dict, gender="M", age=63)
    sinus = " ".join(waveform_dict["Sinus rhythm"].split())
    axis = " ".join(waveform_dict["Left axis deviation"].split())
    assert composed.text == f"Male, 63 years old. ECG findings: Sinus rhythm. Left axis deviation. {sinus} {axis}"
    assert composed.n_matched == 2 and composed.unmatched == [] and not composed.truncated


def test_unknown_statements_are_reported_and_the_ecg_kept(waveform_dict):
    composed = compose_text(["Sinus rhythm", "Cart says something new", "Cart says something new"],
                            waveform_dict, gender="F")
    assert composed.unmatched == ["Cart says something new"]
    assert composed.n_matched == 1
    assert composed.text.startswith("Female. ECG findings: Sinus rhythm. Cart says something new.")


def test_an_ecg_without_statements_still_gets_a_text(waveform_dict):
    assert compose_text([], waveform_dict, age=70).text == "70 years old. ECG findings: none reported."


def test_token_budget_trims_descriptions_last_first_never_findings(waveform_dict):
    statements = ["Sinus rhythm", "Left axis deviation", "Borderline ECG"]
    untrimmed = compose_text(statements, waveform_dict, gender="M", age=63)
    head = "Male, 63 years old. ECG findings: Sinus rhythm. Left axis deviation. Borderline ECG."
    first = " ".join(waveform_dict["Sinus rhythm"].split())
    budget = len(head.split()) + len(first.split()) + 5

    trimmed = compose_text(statements, waveform_dict, gender="M", age=63, max_tokens=budget)
    assert trimmed.truncated and len(trimmed.text.split()) == budget
    assert trimmed.text.startswith(f"{head} {first} ")
    assert untrimmed.text.startswith(trimmed.text)
    # A budget below the findings keeps the findings whole and drops every description.
    assert compose_text(statements, waveform_dict, gender="M", age=63, max_tokens=3).text == head


def test_token_budget_with_a_custom_token_counter(waveform_dict):
    statements = ["Sinus rhythm", "Left axis deviation"]
    composed = compose_text(statements, waveform_dict, max_tokens=400, count_tokens=len)  # 1 token per char
    assert composed.truncated and len(composed.text) <= 400
    assert composed.text.startswith("ECG findings: Sinus rhythm. Left axis deviation. ")


def test_corpus_report_counts_statements_and_keeps_every_ecg(waveform_dict):
    pairs = pd.DataFrame({
        "statements": [["Sinus rhythm", "Normal ECG"], ["SINUS RHYTHM.", "Odd finding"], [],
                       ["Odd finding", "Rare finding"], ["Sinus rhythm", "Normal ECG"]],
        "gender": ["M", "F", None, "F", "M"],
        "age": [63.0, 40.0, float("nan"), 80.0, 63.0],
    })
    texts, report = compose_corpus(pairs, waveform_dict, progress=False)

    assert len(texts) == 5 and texts[0] == texts[4]
    assert texts[2] == "ECG findings: none reported."
    assert (report.n_ecgs, report.n_statements, report.n_matched) == (5, 8, 5)
    assert report.top_unmatched() == [("Odd finding", 2), ("Rare finding", 1)]
    assert report.n_ecgs_fully_matched == 3 and report.n_ecgs_without_statements == 1
    assert report.n_unique_statements == 5 and report.n_unique_unmatched == 2
    assert texts[1] == compose_text(["SINUS RHYTHM.", "Odd finding"], waveform_dict, gender="F", age=40).text


def test_ptbxl_text_of_record_1_holds_its_scp_descriptions_and_report(ptbxl_dir):
    with open(ptbxl_dir / "scp_statements.csv", newline="") as f:
        english = {row[""]: row["description"] for row in csv.DictReader(f)}
    database = ptbxl.load_database(ptbxl_dir)
    composed = ptbxl_text(database.loc[1], ptbxl.load_statements(ptbxl_dir))

    assert composed.text.startswith("Female, 56 years old. ECG findings: ")
    for code in ("NORM", "LVOLT", "SR"):
        assert english[code] in composed.text
    assert composed.text.endswith("Report: sinusrhythmus periphere niederspannung.")
    assert composed.n_matched == 3 and composed.unmatched == []


def test_ptbxl_text_budget_cuts_the_report_only(ptbxl_dir):
    database = ptbxl.load_database(ptbxl_dir)
    statements = ptbxl.load_statements(ptbxl_dir)
    full = ptbxl_text(database.loc[1], statements).text
    without_report = ptbxl_text(database.loc[1], statements, include_report=False).text
    cut = ptbxl_text(database.loc[1], statements, max_tokens=len(without_report.split()) + 2)
    assert cut.truncated and cut.text == without_report + " Report: sinusrhythmus"
    assert full.startswith(cut.text)


def test_ptbxl_age_300_means_over_89(ptbxl_dir):
    row = {"scp_codes": {"SR": 0.0}, "sex": 0, "age": 300.0, "report": ""}
    text = ptbxl_text(row, ptbxl.load_statements(ptbxl_dir)).text
    assert text == "Male, over 89 years old. ECG findings: sinus rhythm."


# --- token budgets (train_max_text_length) --------------------------------------------------------------------


def test_token_budget_table_counts_the_composed_texts():
    # Without demographics: "ECG findings: A. one two" is 5 words, "... B. three four five" 6, both together 9.
    descriptions = {"A": "one two", "B": "three four five"}
    table = token_budget_table(descriptions, count_words, statement_counts=(1, 2), budgets=(5, 9), n_texts=50,
                               seed=0, gender=None, age=None)
    assert list(table.index) == [1, 2] and (table["n_texts"] == 50).all()
    assert 0 < table.at[1, "fits_5"] < 1 and table.at[1, "fits_9"] == 1.0
    assert table.at[2, "fits_5"] == 0.0 and table.at[2, "fits_9"] == 1.0 and table.at[2, "max"] == 9
    assert table.equals(token_budget_table(descriptions, count_words, statement_counts=(1, 2), budgets=(5, 9),
                                           n_texts=50, seed=0, gender=None, age=None))   # seeded
    with pytest.raises(ValueError, match="statement count 3"):
        token_budget_table(descriptions, count_words, statement_counts=(3,))


def test_token_budget_table_on_the_released_dictionary(waveform_dict):
    from transformers import AutoTokenizer

    from esi.models.text_encoder import bundled_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    table = token_budget_table(waveform_dict, tokenizer, statement_counts=range(1, 7), budgets=(256, 512),
                               n_texts=100, seed=0)
    for budget in (256, 512):
        assert table[f"fits_{budget}"].is_monotonic_decreasing   # more statements, fewer texts fit
    assert (table["fits_512"] >= table["fits_256"]).all()
    assert table["p50"].is_monotonic_increasing
    assert table.at[1, "fits_512"] >= 0.99                       # one description nearly always fits
    # Why train_max_text_length is 512: at 256 most texts of three statements lose descriptions, at 512 few do.
    assert table.at[3, "fits_256"] < 0.2 and table.at[3, "fits_512"] > 0.9


def test_token_ids_are_stored_in_16_bits_when_the_vocabulary_fits_and_decode_the_same():
    import numpy as np
    from transformers import AutoTokenizer

    from esi.data.tokens import token_dtype, tokenize_corpus
    from esi.models.text_encoder import bundled_minilm_path

    assert token_dtype(30522) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.int32
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    texts = ["Sinus rhythm. Left bundle branch block.", "Atrial fibrillation with rapid ventricular response."]
    ids, lengths = tokenize_corpus(texts, tokenizer, max_length=32, progress=False)
    assert ids.dtype == np.uint16 and lengths.dtype == np.int32
    expected = tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    assert [ids[i, :n].tolist() for i, n in enumerate(lengths)] == expected
