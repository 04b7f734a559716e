"""Statement vocabularies and how each statement is read (no embedding model needed)."""

from __future__ import annotations

import csv

import pytest

from esi.rag.vocabulary import classify, load_vocabulary, vocabulary_from_strings


@pytest.mark.parametrize("statement, rule", [
    ("Lead(s) unsuitable for analysis: II aVR V1 V2 V4 V5 V6", "lead_quality_note"),
    ("Missing lead(s): V1 and partial missing lead(s): I,III", "lead_quality_note"),
    ("Lead(s) I,V5 were not used for morphology analysis", "lead_quality_note"),
    ("? FAULTY V2 - OMITTED FROM ANALYSIS", "lead_quality_note"),
    ("*** INTERPRETATION MADE WITHOUT KNOWING PATIENT'S GENDER/AGE ***", "demographics_missing"),
    ("Age not entered, assumed to be 50 years old for purpose of ECG interpretation", "demographics_missing"),
    ("*UnconfirmedAnalysis*", "unconfirmed"),
    ("*** Pediatric criteria used ***", "pediatric_criteria"),
    ("--- Warning: Data quality may affect interpretation ---", "data_quality_warning"),
    ("Analysis error", "analysis_limit"),
    ("When compared with ECG of 03-MAR-2180 12:00, atrial fibrillation has replaced sinus rhythm", "comparison"),
    ("*** similar QRS in V leads - possible electronic simulator ***", "simulator"),
])
def test_notes_about_the_recording_are_non_diagnostic_with_their_rule(statement, rule):
    info = classify(statement)
    assert info.non_diagnostic, statement
    assert info.rule == rule
    assert info.rule_why  # every rule documents why it is not a finding
    assert info.query == "" and info.segments == ()


@pytest.mark.parametrize("statement, query", [
    ("--- Suspect arm lead reversal - only aVF, V1-V6 analyzed ---", "arm lead reversal - only avf, v1-v6 analyzed"),
    ("Baseline wander in lead(s) II,III,aVF", "baseline wander"),
    ("Artifact in lead(s) I,III,aVR,aVL,aVF", "artifact"),
    ("Sequence error: V2,V3 omitted", "sequence error: v2,v3 omitted"),
    ("non-diagnostic T abnormalities", "non-diagnostic t abnormalities"),
])
def test_technical_findings_and_look_alike_wording_stay_diagnostic(statement, query):
    info = classify(statement)
    assert not info.non_diagnostic
    assert info.query == query  # hedges and lead lists dropped, the finding kept


def test_a_note_beside_a_finding_keeps_the_finding():
    info = classify("No further analysis made because of pacemaker rhythm")
    assert not info.non_diagnostic
    assert info.rule == "analysis_limit"
    assert info.query == "pacemaker rhythm"
    assert classify("Appearances suggest dextrocardia: repeat with reversed leads. No further analysis").query == "dextrocardia"


def test_hedges_are_dropped_from_the_query_but_acuity_is_kept():
    assert classify("PROBABLE ANTEROSEPTAL INFARCTION - AGE UNDETERMINED").query == "anteroseptal infarction"
    assert classify("Consider left ventricular hypertrophy").query == "left ventricular hypertrophy"
    assert classify("(9@128) suggests early repolarization").query == "early repolarization"
    assert classify("*** ANTERIOR INFARCT - POSSIBLY ACUTE ***").query == "acute anterior infarct"
    assert classify("Inferior/lateral ST-T changes are borderline abnormal").query == "inferolateral st-t changes"
    assert classify("Summary: BORDERLINE").query == "borderline ecg"


def test_compound_statement_is_split_into_findings():
    info = classify("Atrial fibrillation with rapid ventricular response with PVC(s) or aberrant ventricular conduction.")
    # "with rapid ventricular response" modifies the rhythm; "with PVC(s)" adds a finding.
    assert info.segments == ("atrial fibrillation with rapid ventricular response",
                             "pvc(s) or aberrant ventricular conduction")
    # "consistent with" introduces an interpretation, not a second finding.
    assert len(classify("Inferior T wave changes are consistent with myocardial ischemia").segments) == 1


def test_spellings_share_one_normal_form_and_keep_their_counts():
    vocabulary = vocabulary_from_strings(["SINUS RHYTHM.", "*** Sinus rhythm ***", "Sinus rhythm", "Sinus rhythm", "LBBB"])
    assert len(vocabulary) == 4
    assert {s.text: s.count for s in vocabulary}["Sinus rhythm"] == 2
    groups = vocabulary.groups()
    assert sorted(s.text for s in groups["sinus rhythm"]) == ["*** Sinus rhythm ***", "SINUS RHYTHM.", "Sinus rhythm"]


def test_ptbxl_scp_statements_vocabulary_keeps_the_codes(ptbxl_dir):
    vocabulary = load_vocabulary(ptbxl_dir / "scp_statements.csv")
    assert vocabulary.kind == "ptbxl" and len(vocabulary) == 71
    codes = {s.code: s.text for s in vocabulary}
    assert codes["NORM"] == "normal ECG"
    assert codes["CLBBB"] == "complete left bundle branch block"


def test_machine_measurements_vocabulary_counts_every_report_column(tmp_path):
    # The MIMIC-IV-ECG layout: identifiers, report_0 .. report_17, then measurements.
    path = tmp_path / "machine_measurements.csv"
    columns = ["subject_id", "study_id", "cart_id", "ecg_time"] + [f"report_{i}" for i in range(18)] + ["rr_interval"]
    rows = [
        ["1", "10", "c", "2180-01-01", "Sinus rhythm", "Left axis deviation"] + [""] * 16 + ["800"],
        ["2", "11", "c", "2180-01-02", "Sinus rhythm.", "*** Left axis deviation ***", "Abnormal ECG"] + [""] * 15 + ["700"],
        ["3", "12", "c", "2180-01-03", "Sinus rhythm"] + [""] * 17 + ["900"],
    ]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([columns] + rows)
    vocabulary = load_vocabulary(path)
    assert vocabulary.kind == "mimic"
    counts = {s.text: s.count for s in vocabulary}
    assert counts == {"Sinus rhythm": 2, "Left axis deviation": 1, "Sinus rhythm.": 1,
                      "*** Left axis deviation ***": 1, "Abnormal ECG": 1}
    assert vocabulary.statements[0].text == "Sinus rhythm"  # most frequent first


def test_plain_list_and_released_dictionary_are_vocabularies(tmp_path, esi_dict_path):
    listing = tmp_path / "statements.txt"
    listing.write_text("Sinus rhythm\n\nLBBB\nSinus rhythm\n")
    assert {s.text: s.count for s in load_vocabulary(listing)} == {"Sinus rhythm": 2, "LBBB": 1}
    released = load_vocabulary(esi_dict_path)
    assert released.kind == "dict" and len(released) == 3862


def test_a_csv_of_unknown_layout_is_rejected_with_its_columns(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"other\.csv.*report_0"):
        load_vocabulary(path)
