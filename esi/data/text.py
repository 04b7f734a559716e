"""The pretraining text of each ECG, composed the ESI paper's way.

    <demographics> ECG findings: <statement>. <statement>. <description of statement 1> <description of 2> ...

e.g. "Male, 63 years old. ECG findings: Sinus rhythm. Left axis deviation. The potential ECG waveform for ..."

- demographics: "Male, 63 years old." / "Female." / "63 years old." (parts omitted when unknown);
- findings: every machine statement in report order, as the cart wrote it;
- descriptions: the waveform description of each distinct statement found in a statement -> description
  dictionary (`esi.data.statements.StatementDict`, matched by verbatim spelling, then by normal form).

A statement without a description is counted and reported, and its ECG keeps its text: the original ESI code
silently dropped every ECG with one unknown statement. Under a token budget, descriptions are trimmed or dropped,
last ones first; demographics and findings are never cut.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from esi.data.statements import StatementDict

FINDINGS_HEADER = "ECG findings:"
NO_FINDINGS = "none reported."
PTBXL_REPORT_HEADER = "Report:"
# PTB-XL writes age 300 for every patient older than 89.
PTBXL_CENSORED_AGE = 300

_GENDERS = {"m": "Male", "male": "Male", "f": "Female", "female": "Female"}
_SENTENCE_END = (".", "!", "?")

TokenCounter = Callable[[str], int]


def count_words(text: str) -> int:
    """The default token count: whitespace-separated words."""
    return len(text.split())


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def demographics(gender: str | None = None, age: float | str | None = None) -> str:
    """The demographic sentence: "Male, 63 years old.", "Female.", "63 years old." or "" when both unknown.

    Args:
        gender: "M"/"F"/"male"/"female" (any case); None or NaN when unknown.
        age: years (rounded down to whole years), or a ready phrase such as "over 89"; None or NaN when unknown.
    """
    parts = []
    if not _missing(gender):
        key = str(gender).strip().lower()
        if key not in _GENDERS:
            raise ValueError(f"unknown gender {gender!r}; expected M, F, male or female (or None)")
        parts.append(_GENDERS[key])
    if not _missing(age):
        if isinstance(age, str):
            parts.append(f"{age.strip()} years old")
        else:
            if age < 0:
                raise ValueError(f"age must be >= 0, got {age}")
            parts.append(f"{int(math.floor(age))} years old")
    return (", ".join(parts) + ".") if parts else ""


def _as_sentence(statement: str) -> str:
    statement = " ".join(statement.split())
    return statement if statement.endswith(_SENTENCE_END) else statement + "."


def findings(statements: Sequence[str]) -> str:
    """"ECG findings: Sinus rhythm. Normal ECG." -- every statement, in order, each closed by a period."""
    body = " ".join(_as_sentence(s) for s in statements if s.strip())
    return f"{FINDINGS_HEADER} {body or NO_FINDINGS}"


def _fit(fixed: str, extras: Sequence[str], max_tokens: int | None, count_tokens: TokenCounter,
         extra_words: Sequence[int] | None = None) -> tuple[str, bool]:
    """`fixed` followed by as much of `extras` as fits in `max_tokens`; (text, whether anything was cut).

    Extras are kept in order; the first one that does not fit is trimmed to its longest fitting word prefix and
    the rest dropped. `fixed` is always kept whole, even when it alone is over budget. `extra_words` (the word
    count of each extra) lets the default word counter skip re-counting the joined text.
    """
    def joined(pieces: Sequence[str]) -> str:
        return " ".join(p for p in (fixed, *pieces) if p)

    if max_tokens is None or not extras:
        return joined(extras), False
    if count_tokens is count_words:
        # Word counts add up exactly over space-joined pieces: fit by arithmetic, no re-counting.
        sizes = list(extra_words) if extra_words is not None else [count_words(e) for e in extras]
        budget = max_tokens - count_words(fixed)
        kept = []
        for extra, size in zip(extras, sizes):
            if size > budget:
                if budget > 0:
                    kept.append(" ".join(extra.split()[:budget]))
                return joined(kept), True
            kept.append(extra)
            budget -= size
        return joined(kept), False

    full = joined(extras)
    if count_tokens(full) <= max_tokens:
        return full, False
    # Token counts grow with every added piece, so binary searches find the longest fitting prefix with
    # O(log n) calls of a possibly slow tokenizer.
    low, high = 0, len(extras)  # extras[:low] fits, extras[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        if count_tokens(joined(extras[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle
    kept = list(extras[:low])
    words = extras[low].split()
    low_w, high_w = 0, len(words)
    while high_w - low_w > 1:
        middle = (low_w + high_w) // 2
        if count_tokens(joined(kept + [" ".join(words[:middle])])) <= max_tokens:
            low_w = middle
        else:
            high_w = middle
    if low_w > 0:
        kept.append(" ".join(words[:low_w]))
    return joined(kept), True


@dataclass(frozen=True)
class ComposedText:
    """One ECG's pretraining text and how its statements were matched.

    Attributes:
        text: the composed text.
        n_matched: statements (occurrences) that have a description.
        unmatched: distinct statements without a description, in report order.
        truncated: True when the token budget trimmed or dropped descriptions.
    """

    text: str
    n_matched: int
    unmatched: list[str] = field(default_factory=list)
    truncated: bool = False


def compose_text(statements: Sequence[str], descriptions: StatementDict | Mapping[str, str] | None = None,
                 gender: str | None = None, age: float | str | None = None, max_tokens: int | None = None,
                 count_tokens: TokenCounter | None = None) -> ComposedText:
    """Compose one ECG's pretraining text: demographics, "ECG findings:" + statements, then their descriptions.

    Args:
        statements: the machine statements in report order (verbatim; may be empty).
        descriptions: statement -> waveform description; a plain mapping is wrapped in a `StatementDict`
            (normalised matching). None: no descriptions, every statement counts as unmatched.
        gender: "M"/"F"/"male"/"female" or None/NaN when unknown.
        age: age in years, a phrase like "over 89", or None/NaN when unknown.
        max_tokens: token budget of the whole text; descriptions are trimmed/dropped (last first) to fit it.
            Demographics and findings are always kept whole, so a text may exceed a budget they alone exceed.
        count_tokens: text -> token count (e.g. `lambda t: len(tokenizer(t).input_ids)`); default: words.

    Returns:
        A `ComposedText`.
    """
    if descriptions is not None and not isinstance(descriptions, StatementDict):
        descriptions = StatementDict(descriptions)
    matched = _match(statements, descriptions)
    return _compose(matched, demographics(gender, age), max_tokens, count_tokens or count_words)


@dataclass(frozen=True)
class _Matched:
    """The demographics-independent part of a text: findings, descriptions and match counts."""

    findings: str
    descriptions: list[str]
    description_words: list[int]
    n_matched: int
    unmatched: list[str]


def _match(statements: Sequence[str], descriptions: StatementDict | None,
           cleaned: dict[str, tuple[str, int]] | None = None) -> _Matched:
    """Match statements to descriptions. `cleaned` memoises each key's one-line description and word count."""
    cleaned = {} if cleaned is None else cleaned
    statements = [s for s in statements if isinstance(s, str) and s.strip()]
    extras, sizes, seen_keys, unmatched = [], [], set(), []
    n_matched = 0
    for statement in statements:
        key = descriptions.match(statement) if descriptions is not None else None
        if key is None:
            if statement not in unmatched:
                unmatched.append(statement)
            continue
        n_matched += 1
        if key not in seen_keys:  # a statement repeated in one report is described once
            seen_keys.add(key)
            if key not in cleaned:
                words = descriptions[key].split()
                cleaned[key] = (" ".join(words), len(words))
            extras.append(cleaned[key][0])
            sizes.append(cleaned[key][1])
    return _Matched(findings(statements), extras, sizes, n_matched, unmatched)


def _compose(matched: _Matched, demographic: str, max_tokens: int | None,
             count_tokens: TokenCounter) -> ComposedText:
    fixed = " ".join(p for p in (demographic, matched.findings) if p)
    text, truncated = _fit(fixed, matched.descriptions, max_tokens, count_tokens, matched.description_words)
    return ComposedText(text=text, n_matched=matched.n_matched, unmatched=list(matched.unmatched),
                        truncated=truncated)


@dataclass
class CorpusReport:
    """How the statements of a corpus matched the description dictionary.

    Attributes:
        n_ecgs: ECGs composed (every input row; none is dropped).
        n_statements: statement occurrences.
        n_matched: occurrences with a description.
        n_unique_statements: distinct statements (verbatim).
        n_unique_unmatched: distinct statements without a description.
        n_ecgs_fully_matched: ECGs whose every statement has a description (ECGs without statements included).
        n_ecgs_without_statements: ECGs with no statement at all (their text says "none reported").
        n_truncated: ECGs whose descriptions were trimmed to the token budget.
        unmatched_counts: occurrences of every unmatched statement.
    """

    n_ecgs: int = 0
    n_statements: int = 0
    n_matched: int = 0
    n_unique_statements: int = 0
    n_unique_unmatched: int = 0
    n_ecgs_fully_matched: int = 0
    n_ecgs_without_statements: int = 0
    n_truncated: int = 0
    unmatched_counts: Counter = field(default_factory=Counter)

    @property
    def match_rate(self) -> float:
        """Fraction of statement occurrences with a description (1.0 for a corpus without statements)."""
        return self.n_matched / self.n_statements if self.n_statements else 1.0

    def top_unmatched(self, k: int = 20) -> list[tuple[str, int]]:
        """The `k` most frequent unmatched statements with their occurrence counts."""
        return self.unmatched_counts.most_common(k)

    def summary(self, k: int = 10) -> str:
        """A few human-readable lines: counts, match rate, the `k` most frequent unmatched statements."""
        lines = [f"{self.n_ecgs} ECGs, {self.n_statements} statements ({self.n_unique_statements} distinct): "
                 f"{self.match_rate:.1%} matched; {self.n_unique_unmatched} distinct statements without a "
                 f"description; {self.n_ecgs_fully_matched} ECGs fully matched, {self.n_ecgs_without_statements} "
                 f"without statements, {self.n_truncated} truncated to the token budget."]
        lines += [f"  {count:>8}  {statement}" for statement, count in self.top_unmatched(k)]
        return "\n".join(lines)


def compose_corpus(pairs: pd.DataFrame, descriptions: StatementDict | Mapping[str, str] | None,
                   max_tokens: int | None = None, count_tokens: TokenCounter | None = None,
                   statements_column: str = "statements", gender_column: str | None = "gender",
                   age_column: str | None = "age", progress: bool = True) -> tuple[list[str], CorpusReport]:
    """Compose the pretraining text of every ECG of a pairs table (e.g. `esi.data.mimic.load_pairs` output).

    Each distinct (statements, demographics) combination is composed once, so a corpus of 800k ECGs with many
    repeated reports is fast, and repeated texts share one string object.

    Args:
        pairs: one row per ECG, with a column of statement lists (and optionally gender and age columns).
        descriptions: statement -> description dictionary (see `compose_text`), or None.
        max_tokens: token budget per text (see `compose_text`).
        count_tokens: text -> token count; default: whitespace words.
        statements_column: column of statement lists.
        gender_column: column of genders, or None to leave gender out (also left out if the column is absent).
        age_column: column of ages, or None to leave age out (also left out if the column is absent).
        progress: show a tqdm progress bar.

    Returns:
        (texts, report): texts in the row order of `pairs` (one per row, none dropped) and a `CorpusReport`.
    """
    if statements_column not in pairs.columns:
        raise ValueError(f"pairs table has no {statements_column!r} column; columns: {', '.join(pairs.columns)}")
    if descriptions is not None and not isinstance(descriptions, StatementDict):
        descriptions = StatementDict(descriptions)
    n = len(pairs)
    statement_lists = pairs[statements_column].tolist()
    genders = pairs[gender_column].tolist() if gender_column in pairs.columns else [None] * n
    ages = pairs[age_column].tolist() if age_column in pairs.columns else [None] * n

    report = CorpusReport(n_ecgs=n)
    count_tokens = count_tokens or count_words
    matched_by_statements: dict[tuple, _Matched] = {}
    cleaned: dict[str, tuple[str, int]] = {}
    composed_by_key: dict[tuple, ComposedText] = {}
    texts: list[str] = []
    for statements, gender, age in tqdm(zip(statement_lists, genders, ages), total=n, disable=not progress,
                                        desc="composing texts", unit="ECG"):
        if not isinstance(statements, (list, tuple)):
            raise ValueError(f"{statements_column} must hold lists of statements, got {statements!r}")
        statements = tuple(statements)
        demographic = demographics(gender, age)
        composed = composed_by_key.get((statements, demographic))
        if composed is None:
            matched = matched_by_statements.get(statements)
            if matched is None:
                matched = matched_by_statements[statements] = _match(statements, descriptions, cleaned)
            composed = composed_by_key[(statements, demographic)] = _compose(matched, demographic, max_tokens,
                                                                              count_tokens)
        texts.append(composed.text)
        report.n_matched += composed.n_matched
        report.n_truncated += composed.truncated

    # Statement counts per distinct statement list, weighted by how many ECGs share it.
    seen_statements: set[str] = set()
    ecgs_per_statements = Counter(tuple(s) for s in statement_lists)
    for statements, n_ecgs in ecgs_per_statements.items():
        present = [s for s in statements if isinstance(s, str) and s.strip()]
        unmatched = set(matched_by_statements[statements].unmatched)
        report.n_statements += n_ecgs * len(present)
        report.n_ecgs_without_statements += n_ecgs * (not present)
        report.n_ecgs_fully_matched += n_ecgs * (not unmatched)
        seen_statements.update(present)
        for statement in present:
            if statement in unmatched:
                report.unmatched_counts[statement] += n_ecgs
    report.n_unique_statements = len(seen_statements)
    report.n_unique_unmatched = len(report.unmatched_counts)
    return texts, report


def ptbxl_text(row: pd.Series | Mapping, statements_table: pd.DataFrame, include_report: bool = True,
               max_tokens: int | None = None, count_tokens: TokenCounter | None = None) -> ComposedText:
    """The pretraining text of one PTB-XL record: demographics, its SCP statements in English, its report.

    "Female, 56 years old. ECG findings: normal ECG. low QRS voltages .... sinus rhythm. Report: sinusrhythmus
    periphere niederspannung." The findings are the `description` column of scp_statements.csv for each key of
    the record's `scp_codes` (in the database's order). The free-text report is mostly German (PTB-XL was
    recorded in Germany; some reports are English or machine-generated) and is kept as written. Under a token
    budget, the report is trimmed; demographics and findings are not.

    Args:
        row: one row of `esi.data.ptbxl.load_database` (needs scp_codes, sex, age, report).
        statements_table: `esi.data.ptbxl.load_statements` output.
        include_report: append the free-text report.
        max_tokens: token budget of the whole text (only the report is cut to fit).
        count_tokens: text -> token count; default: whitespace words.

    Returns:
        A `ComposedText`; codes missing from `statements_table` are listed in `unmatched` (and written as codes).
    """
    codes = row["scp_codes"]
    if not isinstance(codes, Mapping):
        raise ValueError(f"ecg_id {getattr(row, 'name', '?')}: scp_codes must be a parsed dict (use "
                         f"esi.data.ptbxl.load_database), got {codes!r}")
    english, unmatched = [], []
    for code in codes:
        if code in statements_table.index and isinstance(statements_table.at[code, "description"], str):
            english.append(statements_table.at[code, "description"])
        else:
            english.append(code)
            unmatched.append(code)

    sex = row.get("sex")
    # PTB-XL codes sex as 0 = male, 1 = female.
    if not _missing(sex) and sex not in (0, 1):
        raise ValueError(f"ecg_id {getattr(row, 'name', '?')}: sex must be 0 (male) or 1 (female), got {sex!r}")
    gender = None if _missing(sex) else ("male", "female")[int(sex)]
    age = row.get("age")
    if not _missing(age) and age >= PTBXL_CENSORED_AGE:
        age = "over 89"
    fixed = " ".join(p for p in (demographics(gender, age), findings(english)) if p)
    report = str(row.get("report") or "").strip() if include_report else ""
    extras = [f"{PTBXL_REPORT_HEADER} {_as_sentence(report)}"] if report else []
    text, truncated = _fit(fixed, extras, max_tokens, count_tokens or count_words)
    if text.endswith(" " + PTBXL_REPORT_HEADER):  # the budget left no word of the report: drop its header too
        text = text[: -len(PTBXL_REPORT_HEADER) - 1]
    return ComposedText(text=text, n_matched=len(english) - len(unmatched), unmatched=unmatched, truncated=truncated)


def _token_counts(texts: list[str], tokenizer) -> list[int]:
    """Tokens per text, special tokens included: a batched Hugging Face tokenizer, or a text -> count callable."""
    if hasattr(tokenizer, "model_max_length"):
        import transformers

        # Untruncated lengths over model_max_length are the point here, not a mistake worth a warning.
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        try:
            encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        finally:
            transformers.logging.set_verbosity(verbosity)
        return [len(ids) for ids in encoded]
    return [int(tokenizer(text)) for text in texts]


def token_budget_table(descriptions: StatementDict | Mapping[str, str], tokenizer,
                       statement_counts: Sequence[int] = range(1, 7), budgets: Sequence[int] = (256, 512),
                       n_texts: int = 2000, seed: int = 0, gender: str | None = "M",
                       age: float | str | None = 63,
                       percentiles: Sequence[float] = (50, 90, 99)) -> pd.DataFrame:
    """Share of pretraining texts that fit a token budget, by number of statements per ECG.

    For each count k, `n_texts` reports of k distinct statements are drawn uniformly (seeded) from the
    dictionary's keys and composed by `compose_text` (the pipeline's texts, without a budget), with the
    demographics `gender`/`age`. Statements are drawn uniformly over the vocabulary, not by how often the carts
    write them, so the table describes the dictionary's descriptions rather than one corpus.

    Args:
        descriptions: statement -> description dictionary (e.g. `load_waveform_dict` of the released file).
        tokenizer: a Hugging Face tokenizer (counted with special tokens, as training tokenises), or a
            text -> token count callable.
        statement_counts: statements per text, one row each.
        budgets: token budgets (e.g. train_max_text_length values) to test.
        n_texts: texts drawn per statement count.
        seed: seed of the draws.
        gender, age: the demographics prefix of every text.
        percentiles: token-length percentiles reported.

    Returns:
        One row per statement count (index "statements"): n_texts, fits_<budget> (share of texts of at most
        `budget` tokens, 0..1) for each budget, mean and p<q> token lengths, and max.
    """
    import numpy as np

    if not isinstance(descriptions, StatementDict):
        descriptions = StatementDict(descriptions)
    keys = list(descriptions)
    rng = np.random.default_rng(seed)
    rows = []
    for k in statement_counts:
        if not 1 <= k <= len(keys):
            raise ValueError(f"statement count {k} must be in 1..{len(keys)} (the dictionary's statements)")
        texts = [compose_text([keys[i] for i in rng.choice(len(keys), size=k, replace=False)], descriptions,
                              gender=gender, age=age).text
                 for _ in range(n_texts)]
        lengths = np.array(_token_counts(texts, tokenizer))
        row = {"statements": k, "n_texts": n_texts}
        row.update({f"fits_{b}": float((lengths <= b).mean()) for b in budgets})
        row["mean"] = float(lengths.mean())
        row.update({f"p{q:g}": float(np.percentile(lengths, q)) for q in percentiles})
        row["max"] = int(lengths.max())
        rows.append(row)
    return pd.DataFrame(rows).set_index("statements")


def token_lengths(texts, text_encoder: str, sample: int | None = None, seed: int = 0):
    """Tokens per text (special tokens included) with the text encoder's own tokenizer.

    Args:
        texts: the composed texts ("" entries are skipped).
        text_encoder: the TrainConfig text_encoder (hub name, local folder or "minilm").
        sample: tokenise at most this many texts, drawn at random (None: all).
        seed: seed of that draw.

    Returns:
        int array of token counts.
    """
    import numpy as np
    from transformers import AutoTokenizer

    from esi.models.text_encoder import resolve_text_encoder

    texts = [t for t in texts if t]
    if sample is not None and len(texts) > sample:
        pick = np.random.default_rng(seed).choice(len(texts), size=sample, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder(text_encoder))
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])
