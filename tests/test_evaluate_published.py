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


def test_our_rows_stand_beside_the_published_value_of_the_same_task_and_fraction():
    import numpy as np
    import pandas as pd

    from esi.evaluate.published import beside_published

    def row(dataset, task, protocol, fraction, encoder, value, metric="macro_auroc", seed=0):
        return {"dataset": dataset, "task": task, "protocol": protocol, "split": "s", "subset_draw": "merl",
                "label_fraction": fraction, "encoder": encoder, "metric": metric, "value": value,
                "ci_low": value - 0.1, "ci_high": value + 0.1, "seed": seed}

    table = pd.DataFrame([
        row("cpsc2018", "cpsc2018", "linear_probe", 0.01, "ESI", 0.70, seed=0),
        row("cpsc2018", "cpsc2018", "linear_probe", 0.01, "ESI", 0.80, seed=1),   # two seeds: their mean
        row("cpsc2018", "cpsc2018", "linear_probe", 0.01, "ESI", 0.50, metric="macro_auprc"),
        row("cpsc2018", "cpsc2018", "linear_probe", 0.5, "ESI", 0.90),           # a fraction nobody publishes
        row("csn", "csn", "zero_shot", np.nan, "ESI", 0.60),
        row("ptbxl", "rhythm", "benchmark_finetune", 1.0, "ESI", 0.95),          # not a published protocol
        row("ptbxl", "rhythm", "linear_probe", 1.0, "ESI (random init)", 0.55),
    ])
    out = beside_published(table)
    assert list(out["task"]) == ["cpsc2018", "cpsc2018", "csn", "rhythm"]
    first = out.iloc[0]
    assert first["value"] == pytest.approx(0.75) and first["ci_low"] == pytest.approx(0.65)
    assert first["MERL (published)"] == pytest.approx(0.7033)
    assert first["HeartLang (published)"] == pytest.approx(0.6044)
    assert np.isnan(out.iloc[1]["MERL (published)"]) and np.isnan(out.iloc[1]["HeartLang (published)"])
    assert out.iloc[2]["MERL (published)"] == pytest.approx(0.744) and np.isnan(out.iloc[2]["HeartLang (published)"])
    assert out.iloc[3]["HeartLang (published)"] == pytest.approx(0.9034)
    assert beside_published(table[table["protocol"] == "benchmark_finetune"]).empty
