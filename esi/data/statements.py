"""Machine statements and their waveform descriptions.

ECG carts write the same finding many ways: "SINUS RHYTHM", "Sinus rhythm.", "*** Sinus rhythm ***",
"--- Sinus rhythm ---". `normalize_statement` maps all of them to one key ("sinus rhythm") so that one
description serves every spelling. `StatementDict` holds a statement -> description dictionary (the
format released with the original ESI paper: one flat JSON object) and looks statements up first by their
verbatim spelling, then by their normal form.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Characters that decorate a statement without changing its meaning when they sit at either end:
# "*** ... ***", "--- ... ---", "- 2:1 A-V block", trailing "." / "," / ";" / ":" / "!!".
# Brackets and "?" are kept: "PAC(s)" and "? FAULTY V2" mean something with them.
_EDGE_CHARS = ".,;:!*-\u2010\u2011\u2012\u2013\u2014\u2015=_~#"
_ASTERISKS = re.compile(r"\*+")


def normalize_statement(statement: str) -> str:
    """The lookup key of a machine statement: one spelling for "SINUS RHYTHM.", "*** Sinus rhythm ***", ...

    Case-folds, removes every asterisk (cart emphasis, e.g. "*** EXTENSIVE INFARCT *** with ..."), strips
    surrounding whitespace and decoration (periods, commas, semicolons, colons, "!", dashes, "=", "_", "~", "#")
    from both ends, and collapses internal whitespace to single spaces. Punctuation inside the statement
    ("A-V block", "Sinus bradycardia - consider ...") is kept.

    Args:
        statement: one statement as the cart wrote it.

    Returns:
        The normal form; "" for a statement made only of decoration.
    """
    if not isinstance(statement, str):
        raise TypeError(f"a statement must be a string, got {type(statement).__name__}: {statement!r}")
    text = _ASTERISKS.sub(" ", statement)
    text = " ".join(text.split())
    # Strip decoration and the spaces it leaves ("- 2:1 A-V block" -> "2:1 A-V block") until stable.
    text = text.strip(_EDGE_CHARS + " ")
    return " ".join(text.casefold().split())


@dataclass(frozen=True)
class Collision:
    """Two verbatim keys with the same normal form but different descriptions.

    `kept` serves the normal form (it came first in the source); `other` is still found by its exact spelling.
    """

    normal: str
    kept: str
    other: str


class StatementDict(Mapping[str, str]):
    """A statement -> description dictionary with spelling-tolerant lookup.

    Behaves as a read-only mapping over the verbatim keys. `lookup`/`match` find a statement by its exact
    spelling first (so every verbatim key keeps its own description), then by its normal form. When several
    verbatim keys share a normal form with different descriptions, the first one in source order serves that
    normal form; the others are listed in `collisions` (and counted in `n_collisions`).

    Args:
        descriptions: verbatim statement -> description (non-empty strings).
        source: where the dictionary came from, used in error messages.
    """

    def __init__(self, descriptions: Mapping[str, str], source: str | os.PathLike | None = None):
        self.source = str(source) if source is not None else "<dict>"
        self._descriptions: dict[str, str] = {}
        self._by_normal: dict[str, str] = {}
        self.collisions: list[Collision] = []
        for key, description in descriptions.items():
            if not isinstance(key, str) or not isinstance(description, str):
                raise ValueError(f"{self.source}: entry {key!r} must map a string to a string, "
                                 f"got {type(description).__name__}")
            normal = normalize_statement(key)
            if not normal:
                raise ValueError(f"{self.source}: statement {key!r} is empty once normalised")
            self._descriptions[key] = description
            kept = self._by_normal.setdefault(normal, key)
            if kept != key and self._descriptions[kept] != description:
                self.collisions.append(Collision(normal, kept, key))

    @property
    def n_collisions(self) -> int:
        """How many verbatim keys lost their normal form to an earlier key with a different description."""
        return len(self.collisions)

    @property
    def n_normal_forms(self) -> int:
        """How many distinct normal forms the dictionary covers."""
        return len(self._by_normal)

    def match(self, statement: str) -> str | None:
        """The verbatim key that describes `statement` (exact spelling first, then normal form), or None."""
        if statement in self._descriptions:
            return statement
        return self._by_normal.get(normalize_statement(statement))

    def lookup(self, statement: str) -> str | None:
        """The description of `statement` (exact spelling first, then normal form), or None if unknown."""
        key = self.match(statement)
        return None if key is None else self._descriptions[key]

    def __getitem__(self, statement: str) -> str:
        description = self.lookup(statement)
        if description is None:
            raise KeyError(statement)
        return description

    def __contains__(self, statement: object) -> bool:
        return isinstance(statement, str) and self.match(statement) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._descriptions)

    def __len__(self) -> int:
        return len(self._descriptions)

    def __repr__(self) -> str:
        return (f"StatementDict({len(self)} statements, {self.n_normal_forms} normal forms, "
                f"{self.n_collisions} collisions, source={self.source!r})")


def load_waveform_dict(path: str | os.PathLike) -> StatementDict:
    """Load a statement -> waveform-description dictionary saved as one flat JSON object.

    This is the format released with the original ESI paper (e.g. `esi_mimic_waveform_dict.json`:
    {"Sinus rhythm": "The potential ECG waveform ...", ...}).

    Args:
        path: the JSON file.

    Returns:
        A `StatementDict` over the file's entries, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"waveform dictionary not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected one JSON object of statement -> description, "
                         f"got {type(data).__name__}")
    return StatementDict(data, source=path)
