"""The published numbers in README.md are the ones esi.evaluate.published holds (and draws in its figures)."""

import re
from pathlib import Path

import pytest

from esi.evaluate.published import FRACTIONS, LINEAR_PROBE, SOURCES, ZERO_SHOT, linear_probe_curve

README = Path(__file__).resolve().parents[1] / "README.md"
PTBXL_TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")  # the README's column order


def readme_row(section: str, paper: str) -> list[str]:
    """The cells of the first table row of README `section` whose first cell starts with `paper`."""
    text = README.read_text()
    body = text[text.index(f"### {section}"):]
    body = body[:body.index("\n### ", 1)]
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(paper):
            return cells[1:]
    raise AssertionError(f"README section {section!r} has no row for {paper}")


def numbers(cell: str) -> tuple[float, ...]:
    return tuple(float(x) for x in re.findall(r"\d+\.\d+", cell))


@pytest.mark.parametrize("paper", sorted(LINEAR_PROBE))
def test_readme_shows_the_published_ptbxl_and_challenge_numbers(paper):
    ptbxl = readme_row("Published numbers to compare with", paper)
    assert [numbers(c) for c in ptbxl] == [LINEAR_PROBE[paper][t] for t in PTBXL_TASKS]
    challenge = readme_row("CPSC2018 and CSN beside the literature", paper)
    assert numbers(challenge[0]) == LINEAR_PROBE[paper]["cpsc2018"]
    assert numbers(challenge[1]) == LINEAR_PROBE[paper]["csn"]
    zero_shot = ZERO_SHOT.get(paper)
    assert numbers(challenge[2]) == ((zero_shot["cpsc2018"], zero_shot["csn"]) if zero_shot else ())
    assert paper in SOURCES and "commit" in SOURCES[paper]


def test_curves_are_fractions_to_auroc_in_0_1():
    assert linear_probe_curve("MERL", "cpsc2018") == dict(zip(FRACTIONS, (0.7033, 0.8532, 0.9057)))
    assert linear_probe_curve("MERL", "georgia") is None and linear_probe_curve("MELP", "csn") is None
    for tasks in LINEAR_PROBE.values():
        assert set(tasks) == {*PTBXL_TASKS, "cpsc2018", "csn"}
        assert all(len(v) == len(FRACTIONS) and all(0 < x < 100 for x in v) for v in tasks.values())


def _row(**changes) -> dict:
    """A linear-probe row produced as MERL's CPSC2018 1 % number was (test-split maximum, MERL's draw, its
    tables and input length), with `changes` applied."""
    row = {"dataset": "cpsc2018", "task": "cpsc2018", "protocol": "linear_probe", "split": "merl_tables_records",
           "length_policy": "merl", "recipe": "esi_probe", "selection": "test_max", "subset_draw": "merl",
           "label_fraction": 0.01, "encoder": "ESI", "metric": "macro_auroc", "value": 0.7, "ci_low": 0.6,
           "ci_high": 0.8, "p_value": float("nan"), "n_test": 1376, "seed": 0}
    return {**row, **changes}


def test_a_row_made_as_merls_number_was_is_comparable_to_it():
    from esi.evaluate.published import comparability

    assert comparability(_row(), "MERL") == (True, "")
    assert comparability(_row(dataset="csn", task="csn", labels="merl_released", n_test=4620), "MERL") == (True, "")
    assert comparability(_row(label_fraction=1.0, selection="fold9_best"), "HeartLang") == (True, "")


@pytest.mark.parametrize("changes, paper, reason", [
    ({"selection": "fold9_best"}, "MERL", "selection fold9_best: MERL used test_max"),
    ({"label_fraction": 1.0}, "HeartLang", "selection test_max: HeartLang used fold9_best"),
    ({"subset_draw": "every_class"}, "MERL", "subset draw every_class: not MERL's records"),
    ({"seed": 2}, "MERL", "seed 2: the subset is drawn with random_state 42 + seed"),
    ({"selection": "fold9_best"}, "HeartLang", "HeartLang drew its own 1 %/10 % subsets"),
    ({"dataset": "csn", "task": "csn", "n_test": 4620}, "MERL", "CSN labels are exact SNOMED codes"),
    ({"split": "stratified_70/10/20_records"}, "MERL", "split stratified_70/10/20_records is not MERL's"),
    ({"length_policy": "crop_pad"}, "MERL", "length policy crop_pad: MERL fed the first 5 s"),
    ({"n_test": 64}, "MERL", "smoke-sized test set (64 records)"),
    ({"pretraining_overlap": "PhysioNet 2021"}, "MERL", "the encoder was pretrained on PhysioNet 2021"),
    ({"label_fraction": 0.5}, "MERL", "MERL publishes no number for this metric, protocol, task and label fraction"),
    ({"dataset": "ptbxl", "task": "rhythm", "protocol": "benchmark_supervised", "split": "ptbxl_folds_1-8/9/10",
      "selection": "final_epoch", "encoder": "xresnet1d101 (supervised)", "label_fraction": 1.0, "n_test": 2198},
     "PTB-XL benchmark", "published on PTB-XL v1.0.1 (2,203 fold-10 records); this row scored 2,198 records"),
])
def test_each_reason_a_row_is_not_comparable_is_named(changes, paper, reason):
    from esi.evaluate.published import comparability

    ok, why = comparability(_row(**changes), paper)
    assert not ok and reason in why


def test_our_rows_stand_beside_each_published_value_with_whether_they_are_comparable():
    import numpy as np
    import pandas as pd

    from esi.evaluate.published import beside_published, with_comparability

    table = pd.DataFrame([
        _row(seed=0, value=0.70, ci_low=0.6), _row(seed=1, value=0.80, ci_low=0.7),   # two seeds: their mean
        _row(metric="macro_auprc", value=0.5),
        _row(label_fraction=0.5),                                       # a fraction nobody publishes
        _row(dataset="csn", task="csn", protocol="zero_shot", label_fraction=np.nan, selection="none",
             split="merl_tables_records:test", n_test=4620, value=0.6),
        _row(dataset="ptbxl", task="rhythm", protocol="benchmark_finetune", label_fraction=1.0),
        _row(dataset="ptbxl", task="rhythm", label_fraction=1.0, selection="fold9_best", encoder="random init",
             split="ptbxl_folds_1-8/9/10", n_test=2198, value=0.55),
    ])
    out = beside_published(table)
    assert list(zip(out["task"], out["paper"])) == [("cpsc2018", "MERL"), ("cpsc2018", "HeartLang"), ("csn", "MERL"),
                                                    ("rhythm", "MERL"), ("rhythm", "HeartLang")]
    first = out.iloc[0]
    assert first["value"] == pytest.approx(0.75) and first["ci_low"] == pytest.approx(0.65)
    assert first["published"] == pytest.approx(0.7033) and not first["comparable"]
    assert "seed 1" in first["why_not"]
    assert out.iloc[1]["published"] == pytest.approx(0.6044)
    assert out.iloc[2]["published"] == pytest.approx(0.744) and "CSN labels" in out.iloc[2]["why_not"]
    assert out.iloc[4]["published"] == pytest.approx(0.9034) and out.iloc[4]["comparable"]
    assert beside_published(table[table["protocol"] == "benchmark_finetune"]).empty
    flagged = with_comparability(table)
    assert flagged["comparable"].tolist() == [True, False, False, False, False, False, True]
    assert flagged["why_not"].iloc[1].startswith("MERL: seed 1")
    assert flagged["why_not"].iloc[3] == "no published number for this metric, protocol, task and label fraction"


def test_an_encoder_pretrained_on_the_test_datasets_records_is_flagged_and_never_comparable():
    import pandas as pd

    from esi.evaluate.published import pretraining_overlap, with_comparability

    stmem = ("Chapman", "Ningbo", "CODE-15")
    assert pretraining_overlap("csn", stmem) == "Chapman, Ningbo"
    assert pretraining_overlap("cpsc2018", stmem) == pretraining_overlap("ptbxl", ("MIMIC-IV-ECG",)) == ""
    assert pretraining_overlap("ptbxl", ("PhysioNet 2021",)) == "PhysioNet 2021"        # ECG-FM's pretraining set
    table = with_comparability(pd.DataFrame([_row(), _row(pretraining_overlap="CPSC2018"),
                                             _row(label_fraction=0.5, pretraining_overlap="CPSC2018")]))
    assert table["comparable"].tolist() == [True, False, False]
    assert "MERL: the encoder was pretrained on CPSC2018" in table.loc[1, "why_not"]
    assert table.loc[2, "why_not"].startswith("the encoder was pretrained on CPSC2018")
