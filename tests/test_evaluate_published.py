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
