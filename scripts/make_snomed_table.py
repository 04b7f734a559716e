"""Regenerate esi/data/snomed_ct.csv from the PhysioNet/CinC Challenge 2021 mapping tables and CSN's acronyms.

Sources (facts only: codes, abbreviations, names):
  - dx_mapping_scored.csv, dx_mapping_unscored.csv: physionetchallenges/evaluation-2021 (BSD 2-Clause),
    commit e2a75fc01f729cb74cc4e853e054ce81e28381fc;
  - ConditionNames_SNOMED-CT.csv of PhysioNet ecg-arrhythmia 1.0.0 (the CSN acronyms), read from a public copy
    (bakiemrebulut/ECG2HRV_analysis, commit d081a5e874ad8c73f36ca6e701fd52f597cbc809), not from PhysioNet itself.

Usage:
    python scripts/make_snomed_table.py SCORED.csv UNSCORED.csv CONDITION_NAMES.csv [--out esi/data/snomed_ct.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HEADER = ("# SNOMED-CT codes of 12-lead ECG labels. Sources: physionetchallenges/evaluation-2021 "
          "dx_mapping_scored.csv + dx_mapping_unscored.csv (commit e2a75fc, BSD-2-Clause; scored=1 for the 30 scored "
          "rows); csn_acronym/csn_name: ecg-arrhythmia 1.0.0 ConditionNames_SNOMED-CT.csv (via the copy in "
          "bakiemrebulut/ECG2HRV_analysis d081a5e; several acronyms may share a code, joined by ';'). "
          "Regenerate with scripts/make_snomed_table.py.\n")


def read_challenge(path: Path, scored: bool) -> pd.DataFrame:
    """One Challenge mapping table as code, abbreviation, name, scored (codes as strings)."""
    table = pd.read_csv(path, dtype={"SNOMEDCTCode": str})
    return pd.DataFrame({"code": table["SNOMEDCTCode"].str.strip(), "abbreviation": table["Abbreviation"].str.strip(),
                         "name": table["Dx"].str.strip(), "scored": int(scored)})


def read_condition_names(path: Path) -> pd.DataFrame:
    """CSN's acronym table grouped by code: csn_acronym and csn_name joined by ';' in file order."""
    table = pd.read_csv(path, dtype=str)
    # The PhysioNet file spells its columns "Acronym Name"/"Full Name"; some copies drop the spaces.
    table.columns = [c.replace(" ", "") for c in table.columns]
    table = table.rename(columns={"AcronymName": "acronym", "FullName": "full_name", "Snomed_CT": "code"})
    table = table.apply(lambda column: column.str.strip())
    grouped = table.groupby("code", sort=False).agg(csn_acronym=("acronym", ";".join),
                                                    csn_name=("full_name", ";".join))
    return grouped.reset_index()


def build(scored: Path, unscored: Path, condition_names: Path) -> pd.DataFrame:
    """The merged table: every Challenge code, plus CSN-only codes (abbreviation/name from CSN, scored 0)."""
    challenge = pd.concat([read_challenge(scored, True), read_challenge(unscored, False)], ignore_index=True)
    duplicated = challenge["code"].duplicated()
    if duplicated.any():
        raise ValueError(f"duplicate codes in the Challenge tables: {challenge.loc[duplicated, 'code'].tolist()}")
    csn = read_condition_names(condition_names)
    table = challenge.merge(csn, on="code", how="outer")
    only_csn = table["abbreviation"].isna()
    table.loc[only_csn, "abbreviation"] = table.loc[only_csn, "csn_acronym"]
    table.loc[only_csn, "name"] = table.loc[only_csn, "csn_name"]
    table["scored"] = table["scored"].fillna(0).astype(int)
    table = table.fillna("")
    order = table["code"].map(int)
    return table.assign(_order=order).sort_values("_order").drop(columns="_order")[
        ["code", "abbreviation", "name", "scored", "csn_acronym", "csn_name"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scored", type=Path)
    parser.add_argument("unscored", type=Path)
    parser.add_argument("condition_names", type=Path)
    parser.add_argument("--out", type=Path, default=Path("esi/data/snomed_ct.csv"))
    args = parser.parse_args()
    table = build(args.scored, args.unscored, args.condition_names)
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        handle.write(HEADER)
        table.to_csv(handle, index=False)
    print(f"wrote {len(table)} codes to {args.out}")


if __name__ == "__main__":
    main()
