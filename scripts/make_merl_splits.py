"""Regenerate esi/data/merl_splits.csv.gz: MERL's record -> split assignment for CPSC2018 and CSN.

Source: cheliu-computation/MERL-ICML2024 (MIT licence, (c) 2024 Che Liu), finetune/data_split/icbeb/icbeb_{train,val,
test}.csv (record name in `filename`, e.g. A6729) and finetune/data_split/chapman/chapman_{train,val,test}.csv (record
name = file stem of `ecg_path`, e.g. /chapman/WFDBRecords/18/186/JS18048.mat -> JS18048). Only the record names and
their split are kept; MERL's label columns are not.

Usage:
    python scripts/make_merl_splits.py /work/.mirror/cheliu-computation+MERL-ICML2024/repo \
        [--out esi/data/merl_splits.csv.gz] [--label-report]

`--label-report` also prints, for CSN, how many cells of each MERL label column differ from exact acronym matching
of the same table's `diagnose` column (MERL built its columns by substring matching).
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
from pathlib import Path, PurePosixPath

import pandas as pd

SPLITS = ("train", "val", "test")
# dataset name used by esi -> (MERL's folder, its column holding the record, how to turn it into a record name)
DATASETS = {
    "cpsc2018": ("icbeb", "filename", lambda value: str(value).strip()),
    "csn": ("chapman", "ecg_path", lambda value: PurePosixPath(str(value).strip()).stem),
}


def git_commit(repo: Path) -> str:
    """The commit the tables are read from (HEAD of the mirror)."""
    return subprocess.check_output(["git", "-C", str(repo), "rev-parse", "HEAD"], text=True).strip()


def read_table(repo: Path, folder: str, split: str) -> pd.DataFrame:
    """One of MERL's split tables, read from the repository's HEAD (a bare or normal git directory)."""
    text = subprocess.check_output(["git", "-C", str(repo), "show", f"HEAD:finetune/data_split/{folder}/"
                                    f"{folder}_{split}.csv"], text=True)
    return pd.read_csv(io.StringIO(text))


def build(repo: Path) -> pd.DataFrame:
    """dataset, record, split for every record of MERL's CPSC2018 (icbeb) and CSN (chapman) tables."""
    rows = []
    for dataset, (folder, column, to_name) in DATASETS.items():
        for split in SPLITS:
            table = read_table(repo, folder, split)
            rows.append(pd.DataFrame({"dataset": dataset, "record": table[column].map(to_name), "split": split}))
    result = pd.concat(rows, ignore_index=True)
    duplicated = result.duplicated(["dataset", "record"])
    if duplicated.any():
        raise ValueError(f"records in several MERL splits: {result.loc[duplicated, 'record'].tolist()[:5]}")
    return result


def label_report(repo: Path) -> pd.DataFrame:
    """Per MERL CSN label column: cells that differ from exact acronym match of `diagnose`, and in which direction."""
    table = pd.concat([read_table(repo, "chapman", split) for split in SPLITS], ignore_index=True)
    acronyms = table["diagnose"].map(lambda text: {a.strip() for a in str(text).split(",")})
    rows = []
    for column in table.columns[3:]:
        exact = acronyms.map(lambda found: int(column in found))
        merl = table[column].astype(int)
        rows.append({"column": column, "merl_positives": int(merl.sum()), "exact_positives": int(exact.sum()),
                     "extra_in_merl": int(((merl == 1) & (exact == 0)).sum()),
                     "missing_in_merl": int(((merl == 0) & (exact == 1)).sum())})
    all_acronyms = sorted(set().union(*acronyms))
    without_column = [a for a in all_acronyms if a not in table.columns[3:]]
    print(f"acronyms in `diagnose` without a MERL column: {without_column}")
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="git directory of cheliu-computation/MERL-ICML2024")
    parser.add_argument("--out", type=Path, default=Path("esi/data/merl_splits.csv.gz"))
    parser.add_argument("--label-report", action="store_true")
    args = parser.parse_args()
    commit = git_commit(args.repo)
    table = build(args.repo)
    header = (f"# MERL's CPSC2018 (icbeb) and CSN (chapman) record splits, from cheliu-computation/MERL-ICML2024 "
              f"commit {commit}, finetune/data_split/ (MIT licence, (c) 2024 Che Liu). "
              "Regenerate with scripts/make_merl_splits.py.\n")
    # mtime=0 keeps the gzip bytes identical between runs on the same tables.
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(header.encode())
        handle.write(table.to_csv(index=False).encode())
    print(f"wrote {len(table)} records to {args.out}:")
    print(table.groupby(["dataset", "split"]).size().to_string())
    if args.label_report:
        print(label_report(args.repo).to_string(index=False))


if __name__ == "__main__":
    main()
