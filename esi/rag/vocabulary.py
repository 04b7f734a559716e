"""Statement vocabularies, and what each statement asks the knowledge base.

A vocabulary is the list of distinct statements a corpus uses, read from
- MIMIC-IV-ECG `machine_measurements.csv` (the report_0 .. report_17 columns, with counts),
- PTB-XL `scp_statements.csv` (the `description` column; the SCP code is kept),
- a waveform dictionary JSON (its keys, e.g. the dictionary released with the ESI paper),
- a plain text file (one statement per line).

Carts spell one finding many ways, so statements are grouped by `normalize_statement` (case, asterisks,
edge punctuation): one description serves every spelling, and the map from each verbatim statement to its
normal form is kept.

`classify` decides whether a statement is diagnostic. NON-DIAGNOSTIC statements are notes about the
recording or the analysis, not about the heart, and get no waveform description. The rules (NOTE_RULES) are
phrases; a statement is non-diagnostic when, once every note phrase is removed, no content word is left.
So "Pacemaker rhythm - no further analysis" stays diagnostic (query "pacemaker rhythm") while
"No further analysis due to lack of dominant QRS" is a note. Genuine technical FINDINGS (lead reversal,
baseline wander, artifact, dextrocardia pattern) are not notes: they change the waveform and have entries.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from esi.data.statements import normalize_statement


@dataclass(frozen=True)
class NoteRule:
    """A phrase that marks a statement (or part of it) as a note about the recording or the analysis."""

    name: str
    pattern: re.Pattern
    why: str


def _rule(name: str, why: str, *phrases: str) -> NoteRule:
    return NoteRule(name, re.compile("|".join(f"(?:{p})" for p in phrases)), why)


# Applied to the normal form (lower case). Order matters only for which rule is reported first.
_LEADS = r"(?:[ivx]+|av[rlf]|v\d)\b"
_LEAD_LIST = rf"{_LEADS}(?:\s*(?:,|\s|and)\s*{_LEADS})*"
NOTE_RULES: tuple[NoteRule, ...] = (
    _rule("unconfirmed", "the cart's analysis awaits a physician's confirmation; says nothing about the heart",
          r"\bunconfirmed\s*analysis\b", r"\bunconfirmed( report| interpretation)?\b"),
    _rule("demographics_missing", "age or sex was not entered; a note on how the cart interpreted, not a finding",
          r"\b(?:interpretation|report) made without know(?:ing|ledge of) (?:the )?patient'?s? [a-z/ ]+",
          r"\bage not entered[^.]*", r"\b(?:sex|gender) not entered[^.]*",
          r"\bno interpretation offered because of unknown age[a-z/ ]*"),
    _rule("pediatric_criteria", "names the criteria set the cart used",
          r"\bpediatric (?:criteria used|ecg interpretation)\b"),
    _rule("data_quality_warning", "warns that recording quality may affect the analysis; no waveform finding",
          r"-*\s*warning:?[^.]*(?:data quality|quality)[^.!]*!*", r"\bpoor quality data[^.]*",
          r"\bdata quality may affect [a-z ]+!*", r"\b(?:possible )?measurement error(?: - check data)?",
          r"\bcheck data\b", r"\btechnically unsatisfactory tracing\b", r"\btechnical error\b",
          r"\brecording unsuitable for analysis(?: - please repeat)?", r"\brepeat ecg to exclude [a-z ]+",
          r"\bpacer detection suspended due to external noise(?:\s*-\s*review advised)?"),
    _rule("lead_quality_note", "says which leads the cart could not use; no waveform finding",
          rf"\blead\(?s?\)? unsuitable for analysis:?\s*(?:{_LEAD_LIST})?",
          rf"\b(?:partial )?missing lead\(?s?\)?:?\s*(?:{_LEAD_LIST})?",
          r"\ball 12 leads are missing\b", rf"\blead\(?s?\)?\s*{_LEAD_LIST} were not used for morphology analysis",
          rf"(?:\?|\bpossible)?\s*\bfaulty {_LEADS}\s*-?\s*omitted from analysis",
          r"\bincomplete analysis due to missing data in [a-z ()]+"),
    _rule("analysis_limit", "the cart reports the limits of its own analysis, not a finding",
          # "no further analysis due to paced rhythm" keeps "paced rhythm": only the note itself is removed.
          r"\banalysis error\b",
          r"\bno further (?:rhythm )?analysis(?: attempted| made)?(?:\s*-)?(?: due to| because of)?",
          r"\black of dominant qrs\b", r"\bnot enough leads could be measured\b",
          r"\bif rhythm (?:interpretation is )?(?:is )?(?:correct|confirmed),? (?:the following|report below) "
          r"(?:report )?may (?:not )?be (?:in)?valid", r"\buncertain rhythm:? review\b",
          r"\bdoubt as to suitable beat\(?s?\)?[^.]*", r"\bdominant group printed\b",
          r"\binterpretation is based on unpaced beats\b", r"\bthe report below takes this into account\b",
          r"\binterpretation assumes no reversal\b", r"\brepeat with reversed leads\b",
          r"\binterpret together with clinical data\b", r"\bsummary: none available\b"),
    _rule("comparison", "compares with an earlier ECG; a change over time is not a waveform of this ECG",
          r"\b(?:when )?compared (?:with|to) (?:the )?(?:ecg|tracing|previous|prior|last)\b.*$",
          r"\bsince (?:the )?(?:last|previous|prior) (?:ecg|tracing)\b.*$",
          r"\bno (?:significant )?change (?:since|from|compared)\b.*$", r"\bunchanged from (?:previous|prior)\b.*$"),
    _rule("simulator", "the cart suspects an ECG simulator rather than a patient",
          r"\bsimilar qrs in (?:v|precordial) leads\b[^.]*", r"\bpossible (?:electronic simulator|simulated ecg)\b"),
)

# Words that carry no finding on their own: what may be left of a note once its phrase is removed.
_FILLER = {
    "and", "or", "with", "the", "a", "an", "of", "for", "to", "in", "is", "are", "be", "only", "please", "review",
    "advised", "summary", "report", "below", "may", "see", "note", "interpretation", "analysis", "analysed",
    "analyzed", "ecg", "repeat", "suggests", "appearances", "suggest", "therefore",
}

# Hedges and qualifiers that change how sure the cart is, not what the waveform shows. Removed from the text
# that is embedded for retrieval (the verbatim statement is kept everywhere else).
_HEDGES = [
    r"^\(\d+@\d+\)\s*-?\s*",                      # cart measurement tags: "(9@128) suggests ..."
    r"^summary:\s*", r"\bappearances (?:suggest|of)\b", r"\bcannot rule out\b", r"\bcannot exclude\b",
    r"\bconsider(?:ed)?\b", r"\bprobabl[ey]\b",
    r"\bpossibl[ey]\b", r"\bsuspect(?:ed)?\b", r"\blikely\b", r"\bsuggests?\b", r"\bquestionable\b",
    r"\bborderline\b(?! abnormal| ecg)", r"^\?\s*", r"\s\?\s",
    r"[-,]?\s*age (?:undetermined|indeterminate|indeterm|not determined)\b",
    r"[-,]?\s*of indeterminate age\b",
    r"\b(?:is|are) (?:borderline )?(?:abnormal|borderline)(?: abnormal)?"
    r"(?: for age/?(?:sex|gender)?(?: and (?:sex|gender))?)?$",
    r"\b(?:is|are|may be|probably) (?:a )?normal(?: variant)? for (?:a (?:male|female) of this )?age(?: and race)?\b",
    r"\bmay be a normal variant for (?:a (?:male|female) of this )?age\b",
]
_GRADE = re.compile(r"^(?:summary:\s*)?(abnormal|borderline)$")
_IN_LEADS = re.compile(rf"\s+in\s+lead\(?s?\)?\s*{_LEAD_LIST}")
_ACUTE = re.compile(r"\s*[-,]?\s*(?:possibly |probably |possible |probable )?acute(?:\s*\([a-z]+\))?$")
_HEDGE = re.compile("|".join(f"(?:{h})" for h in _HEDGES))
# Where a compound statement is cut into findings: " with " (but not "consistent with", "compatible with",
# "associated with": those introduce an interpretation of the same finding), "; " and ". ".
_SPLIT = re.compile(r"(?<!consistent)(?<!compatible)(?<!associated)\s+with\s+|;\s*|\.\s+")
# A " with " that introduces a modifier of the rhythm before it, not a second finding.
_MODIFIER = re.compile(r"^(?:rapid|slow|uncontrolled|controlled|moderate|variable|fast)\s+ventricular response\b")


@dataclass(frozen=True)
class StatementInfo:
    """How the assistant reads one statement.

    normal: the lookup key (normalize_statement). query: what is embedded for retrieval (notes and hedges
    removed). segments: the findings of a compound statement ("A with B with C" -> [A, B, C]).
    non_diagnostic: True for a pure note; rule: the first NOTE_RULES name that matched (also for diagnostic
    statements that carry a note beside their finding).
    """

    statement: str
    normal: str
    query: str
    segments: tuple[str, ...]
    non_diagnostic: bool
    rule: str | None

    @property
    def rule_why(self) -> str | None:
        """The documented reason of `rule`."""
        if self.rule == "decoration_only":
            return "only asterisks, dashes or punctuation: no words at all"
        return next((r.why for r in NOTE_RULES if r.name == self.rule), None)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    return text.strip(" .,;:-+/!")


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'/-]*", text) if len(w) > 1 and w not in _FILLER]


# Carts join wall locations with "/", "+" or "and"; the knowledge base names the combined wall.
_LOCATIONS = [
    (re.compile(r"\binferior\s*(?:/|\+|and)\s*lateral\b"), "inferolateral"),
    (re.compile(r"\banterior\s*(?:/|\+|and)\s*lateral\b"), "anterolateral"),
    (re.compile(r"\b(?:ant|anterior)\s*(?:/|\+|and)\s*septal\b"), "anteroseptal"),
    (re.compile(r"\binferior\s*(?:/|\+|and)\s*posterior\b"), "inferoposterior"),
]


def merge_locations(text: str) -> str:
    """'inferior/lateral' -> 'inferolateral', 'ant/septal' -> 'anteroseptal', ... (lower-case text)."""
    for pattern, replacement in _LOCATIONS:
        text = pattern.sub(replacement, text)
    return text


def strip_hedges(text: str) -> str:
    """`text` without hedges ('probable', 'consider', 'age undetermined', ...), tidied.

    A trailing acuity ("anterior infarct - possibly acute", "..., acute (LAD)") loses its hedge but keeps its
    meaning: it becomes a leading "acute" ("acute anterior infarct"), because acute and old infarcts are
    different findings.
    """
    original = text
    text = merge_locations(text)
    # "Baseline wander in lead(s) II,III,aVF": the lead list says where, not what; it only dilutes the query.
    text = _IN_LEADS.sub("", text)
    acute = _ACUTE.search(text)
    if acute and not text.startswith("acute"):
        text = "acute " + text[: acute.start()]
    previous = None
    while previous != text:  # "probable ... - age undetermined" needs more than one pass once tidied
        previous = text
        text = _tidy(_HEDGE.sub(" ", text))
    # A bare grade ("Summary: ABNORMAL", "borderline") names the whole tracing.
    if text in ("", "abnormal", "borderline") and _GRADE.match(original):
        text = _GRADE.match(original).group(1) + " ecg"
    return text


def split_segments(query: str) -> tuple[str, ...]:
    """The findings of a compound statement: split at ' with ', '; ' and '. ' (not inside a modifier)."""
    parts = [p for p in (_tidy(x) for x in _SPLIT.split(query)) if p]
    segments: list[str] = []
    for part in parts:
        if segments and _MODIFIER.match(part):
            segments[-1] = f"{segments[-1]} with {part}"
        else:
            segments.append(part)
    return tuple(segments) or ((query,) if query else ())


def classify(statement: str) -> StatementInfo:
    """Read one verbatim statement: normal form, retrieval query, findings, non-diagnostic flag and rule.

    Args:
        statement: a statement as the cart (or a label set) wrote it.
    """
    normal = normalize_statement(statement)
    if not normal:  # "***", "---": decoration only
        return StatementInfo(statement, normal, "", (), True, "decoration_only")
    text = normal
    matched: list[str] = []
    for rule in NOTE_RULES:
        stripped = rule.pattern.sub(" ", text)
        if stripped != text:
            matched.append(rule.name)
            text = stripped
    remainder = _tidy(text)
    non_diagnostic = bool(matched) and not _content_words(remainder)
    query = "" if non_diagnostic else strip_hedges(remainder if matched else normal)
    if not non_diagnostic and not query:
        query = normal  # the statement was nothing but a hedge; let retrieval judge it
    return StatementInfo(
        statement=statement,
        normal=normal,
        query=query,
        segments=split_segments(query) if query else (),
        non_diagnostic=non_diagnostic,
        rule=matched[0] if matched else None,
    )


@dataclass(frozen=True)
class Statement:
    """One verbatim statement of a vocabulary: how often it occurs and, for PTB-XL, its SCP code."""

    text: str
    count: int = 1
    code: str | None = None

    @property
    def normal(self) -> str:
        return normalize_statement(self.text)


@dataclass
class Vocabulary:
    """The distinct verbatim statements of a source, in source order (most frequent first for MIMIC)."""

    statements: list[Statement]
    source: str
    kind: str
    _by_text: dict[str, Statement] = field(default_factory=dict, repr=False, init=False)

    def __post_init__(self):
        self._by_text = {s.text: s for s in self.statements}

    def __len__(self) -> int:
        return len(self.statements)

    def __iter__(self) -> Iterator[Statement]:
        return iter(self.statements)

    def __contains__(self, text: object) -> bool:
        return text in self._by_text

    def texts(self) -> list[str]:
        """The verbatim statements."""
        return [s.text for s in self.statements]

    def groups(self) -> dict[str, list[Statement]]:
        """normal form -> its verbatim spellings (one description will serve them all)."""
        out: dict[str, list[Statement]] = {}
        for s in self.statements:
            out.setdefault(s.normal, []).append(s)
        return out


def vocabulary_from_strings(statements: Iterable[str], source: str = "<list>", kind: str = "list") -> Vocabulary:
    """A vocabulary from verbatim strings; repeats are counted, blank strings skipped.

    Args:
        statements: verbatim statements in any order.
        source: a name for messages and provenance.
        kind: what the source was ("list", "mimic", "dict", ...).
    """
    counts = Counter(s for s in statements if isinstance(s, str) and s.strip())
    # Counter keeps first-seen order; sort by count, stable, so frequent statements come first.
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    # A decoration-only line ("***") is kept: `classify` flags it non-diagnostic ("decoration_only").
    return Vocabulary([Statement(text, count) for text, count in ordered], source=source, kind=kind)


def _report_columns(columns: Iterable[str]) -> list[str]:
    return [c for c in columns if re.fullmatch(r"report_\d+", str(c))]


def read_machine_measurements(path: Path, chunksize: int = 200_000) -> Vocabulary:
    """The statements of MIMIC-IV-ECG machine_measurements.csv (report_0..report_17), with counts."""
    import pandas as pd
    from tqdm.auto import tqdm

    header = pd.read_csv(path, nrows=0).columns
    columns = _report_columns(header)
    if not columns:
        raise ValueError(f"{path}: no report_0 .. report_17 columns; is this machine_measurements.csv?")
    counts: Counter = Counter()
    reader = pd.read_csv(path, usecols=columns, dtype=str, chunksize=chunksize)
    for chunk in tqdm(reader, desc=f"reading {path.name}", unit="chunk"):
        for column in columns:
            values = chunk[column].dropna().str.strip()
            counts.update(values[values != ""])
    if not counts:
        raise ValueError(f"{path}: the report columns are all empty")
    statements = [Statement(text, count) for text, count in counts.most_common()]
    return Vocabulary(statements, source=str(path), kind="mimic")


def read_scp_statements(path: Path) -> Vocabulary:
    """The PTB-XL statements of scp_statements.csv: description column, SCP code kept."""
    import pandas as pd

    table = pd.read_csv(path, index_col=0)
    if "description" not in table.columns:
        raise ValueError(f"{path}: no 'description' column; is this PTB-XL's scp_statements.csv?")
    statements = []
    for code, description in table["description"].items():
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"{path}: SCP code {code!r} has no description")
        statements.append(Statement(description.strip(), 1, str(code)))
    return Vocabulary(statements, source=str(path), kind="ptbxl")


def read_statement_list(path: Path) -> Vocabulary:
    """One statement per line (blank lines skipped; repeats counted)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    vocabulary = vocabulary_from_strings((line.strip() for line in lines), source=str(path), kind="list")
    if not len(vocabulary):
        raise ValueError(f"{path}: no statement in the file (expected one per line)")
    return vocabulary


def read_dictionary_keys(path: Path) -> Vocabulary:
    """The statements (keys) of a statement -> description JSON dictionary."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of statement -> description")
    return Vocabulary([Statement(k) for k in data], source=str(path), kind="dict")


def load_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """Read a statement vocabulary, detecting the source by name and columns.

    Args:
        path: machine_measurements.csv (any CSV with report_N columns), scp_statements.csv (any CSV with a
            `description` column), a .json statement -> description dictionary, or a text file with one
            statement per line.

    Raises:
        FileNotFoundError, or ValueError naming the file and what it lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statement file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_dictionary_keys(path)
    if suffix in (".csv", ".gz"):
        import pandas as pd

        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
        if _report_columns(header):
            return read_machine_measurements(path)
        if "description" in header:
            return read_scp_statements(path)
        raise ValueError(f"{path}: a CSV needs report_0..report_17 columns (MIMIC-IV-ECG machine_measurements) "
                         f"or a description column (PTB-XL scp_statements); found {', '.join(header[:8])}")
    return read_statement_list(path)
