"""The 12 standard leads, their aliases, and mapping a file's lead order onto the standard order."""

from __future__ import annotations

from typing import Sequence

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                                   "V1", "V2", "V3", "V4", "V5", "V6")

# MIMIC-IV-ECG (and the original ESI loader) store aVF before aVL.
MIMIC_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVF", "aVL",
                                "V1", "V2", "V3", "V4", "V5", "V6")

_ALIASES: dict[str, str] = {}
for _name in STANDARD_LEADS:
    _ALIASES[_name.lower()] = _name
# Roman/arabic numerals and the "D" (Einthoven) spelling used by some European carts.
for _alias, _name in {
    "1": "I", "2": "II", "3": "III", "di": "I", "dii": "II", "diii": "III",
    "d1": "I", "d2": "II", "d3": "III", "lead i": "I", "lead ii": "II", "lead iii": "III",
    "lead1": "I", "lead2": "II", "lead3": "III",
}.items():
    _ALIASES[_alias] = _name


def canonical_lead(name: str) -> str | None:
    """Standard spelling of a lead name ('AVR', 'avr', ' aVR ' -> 'aVR'); None for other channels."""
    key = " ".join(str(name).strip().lower().split())
    if key in _ALIASES:
        return _ALIASES[key]
    compact = key.replace(" ", "").replace("-", "").replace("_", "")
    if compact.startswith("lead"):
        compact = compact[4:]
    return _ALIASES.get(compact)


def lead_indices(file_leads: Sequence[str], wanted: Sequence[str] = STANDARD_LEADS) -> list[int | None]:
    """For each wanted lead, the index of the matching channel in `file_leads` (None if absent).

    Extra channels (Frank leads X/Y/Z, respiration, ...) are simply not selected. If a file holds the same
    lead twice, the first occurrence wins.
    """
    wanted_canon = []
    for w in wanted:
        c = canonical_lead(w)
        if c is None:
            raise ValueError(f"unknown lead name {w!r}; expected one of {', '.join(STANDARD_LEADS)}")
        wanted_canon.append(c)
    position: dict[str, int] = {}
    for i, name in enumerate(file_leads):
        c = canonical_lead(name)
        if c is not None and c not in position:
            position[c] = i
    return [position.get(c) for c in wanted_canon]
