"""SNOMED-CT table, exact-code labels, class vocabularies, task summaries and length policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esi.data import snomed
from esi.data.challenge_tasks import (CPSC2018_CLASSES, CSN_EXCLUDED_CODES, LENGTH_POLICIES, POLICY_CROP,
                                      known_codes, length_mask, load_challenge_task, select_classes, valid_seconds,
                                      write_summary)
from esi.data.store import fit_length
from oracles import apply_length_policy

# Synthetic #Dx cells: multi-label records, an unknown code (999999), equivalent codes (713427006 = 59118001,
# 733534002 = 164909002, 17338001 = 427172004), a code that contains another as a substring (159118001 is not
# 59118001; 4164889003 is not 164889003), both separators, spaces, empty and missing cells.
DX = [
    "59118001,164889003",
    "713427006; 426783006",
    "159118001",
    "4164889003,999999",
    "733534002",
    "164909002;733534002",
    "17338001, 427172004",
    "",
    None,
    "426783006",
    " 164884008 ",
    "59118001;713427006;164884008",
]
EQUIV = {"713427006": "59118001", "733534002": "164909002", "63593006": "284470004", "17338001": "427172004"}


def reference_codes(cell) -> set[str]:
    """Independent re-implementation: split on both separators, exact strings, merge the four Challenge pairs."""
    if cell is None:
        return set()
    found = set()
    for chunk in str(cell).replace(";", ",").split(","):
        if chunk.strip():
            found.add(EQUIV.get(chunk.strip(), chunk.strip()))
    return found


def reference_matrix(cells, classes) -> np.ndarray:
    return np.array([[int(c in reference_codes(cell)) for c in classes] for cell in cells], dtype=np.uint8)


def test_table_holds_every_challenge_code_and_csn_acronyms():
    table = snomed.snomed_table()
    assert len(table) == 137  # 30 scored + 103 unscored + 4 CSN-only codes
    assert int(table["scored"].sum()) == 30
    assert not table["code"].duplicated().any()
    for code in list(CPSC2018_CLASSES) + list(EQUIV) + list(EQUIV.values()):
        assert code in table.index
    assert snomed.describe_code("164884008")[0] == "VEB"
    assert snomed.describe_code("59118001")[1] == "right bundle branch block"
    assert snomed.describe_code(164889003)[0] == "AF"
    assert table.loc["164889003", "csn_acronym"] == "AFIB"
    assert table.loc["164909002", "csn_acronym"] == "LBBB;LBBBB;LFBBB"
    assert snomed.describe_code("28189009")[0] == "2AVB2"  # CSN-only code, abbreviation from CSN
    assert snomed.describe_code("999999") == ("", "")
    first_line = snomed.TABLE_PATH.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("#") and "evaluation-2021" in first_line and "ConditionNames" in first_line


def test_table_is_a_copy():
    table = snomed.snomed_table()
    table.loc["59118001", "name"] = "changed"
    assert snomed.describe_code("59118001")[1] == "right bundle branch block"


def test_parse_dx_exact_strings():
    assert snomed.parse_dx("59118001, 164889003;426783006") == ["59118001", "164889003", "426783006"]
    assert snomed.parse_dx(" 159118001 ") == ["159118001"]
    assert snomed.parse_dx("59118001,59118001") == ["59118001"]
    assert snomed.parse_dx(None) == [] and snomed.parse_dx(float("nan")) == [] and snomed.parse_dx(" ; ") == []
    assert snomed.parse_dx(59118001.0) == ["59118001"] and snomed.parse_dx(59118001) == ["59118001"]


def test_label_matrix_matches_reference():
    classes = ["59118001", "164889003", "426783006", "164909002", "427172004", "164884008", "159118001"]
    y = snomed.label_matrix(DX, classes)
    assert y.dtype == np.uint8 and y.shape == (len(DX), len(classes))
    np.testing.assert_array_equal(y, reference_matrix(DX, classes))
    # substrings never match: 159118001 is not RBBB, 4164889003 is not AF
    assert y[2].tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert y[3].sum() == 0


def test_label_matrix_without_merging_and_alias_classes():
    y = snomed.label_matrix(DX, ["713427006", "59118001"], merge_equivalents=False)
    assert y[:, 0].tolist() == [int("713427006" in str(c)) for c in DX]
    with pytest.raises(ValueError, match="merged into"):
        snomed.label_matrix(DX, ["713427006"])
    with pytest.raises(ValueError, match="duplicate"):
        snomed.label_matrix(DX, ["59118001", "59118001"])


def test_code_counts_match_reference():
    counts = snomed.code_counts(DX)
    expected: dict[str, int] = {}
    for cell in DX:
        for code in reference_codes(cell):
            expected[code] = expected.get(code, 0) + 1
    assert counts.to_dict() == expected
    assert snomed.canonical_code("733534002") == "164909002" == snomed.canonical_code("164909002")
    assert snomed.canonical_code("17338001") == "427172004" and snomed.canonical_code("164884008") == "164884008"


def synthetic_index(n: int = 400, seed: int = 0, source: str = "ningbo") -> pd.DataFrame:
    """Records with codes of known frequency, some unknown and excluded codes, and a length column."""
    rng = np.random.default_rng(seed)
    pool = {"426783006": 0.4, "164889003": 0.2, "59118001": 0.1, "713427006": 0.05, "17338001": 0.04,
            "427172004": 0.03, "164884008": 0.03, "999999": 0.01, "27885002": 0.06, "159118001": 0.02}
    cells = []
    for _ in range(n):
        codes = [code for code, p in pool.items() if rng.random() < p]
        cells.append((";" if rng.random() < 0.5 else ",").join(codes))
    return pd.DataFrame({"record_id": [f"JS{i + 1:05d}" for i in range(n)], "dx": cells, "source": source,
                         "n_samples_source": rng.choice([2500, 5000, 6000], size=n), "fs_source": 500})


def reference_vocabulary(cells, min_positives, excluded) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cell in cells:
        for code in reference_codes(cell):
            counts[code] = counts.get(code, 0) + 1
    return {code: k for code, k in counts.items() if k >= min_positives and code not in excluded}


@pytest.mark.parametrize("min_positives", [1, 10, 30])
def test_vocabulary_rule(min_positives):
    index = synthetic_index()
    classes = select_classes(index["dx"], "csn", min_positives)
    expected = reference_vocabulary(index["dx"], min_positives, CSN_EXCLUDED_CODES)
    assert set(classes) == set(expected)
    assert [expected[c] for c in classes] == sorted(expected.values(), reverse=True)
    assert "27885002" not in classes  # on CSN's exclusion list
    assert not set(classes) & set(EQUIV)
    # a plain source has no exclusion list
    assert set(select_classes(index["dx"], "georgia", min_positives)) == set(
        reference_vocabulary(index["dx"], min_positives, {}))
    assert select_classes(index["dx"], "cpsc2018", min_positives) == list(CPSC2018_CLASSES)


def test_cpsc2018_classes_and_source_filter():
    index = pd.concat([synthetic_index(50, 1, "cpsc_2018").assign(record_id=lambda t: "A" + t["record_id"].str[2:]),
                       synthetic_index(50, 2, "ningbo")], ignore_index=True)
    task = load_challenge_task(index, "cpsc2018", split="stratified")
    assert task.classes == list(CPSC2018_CLASSES)
    assert task.class_abbreviations[:3] == ["NSR", "AF", "IAVB"]
    assert len(task) == 50 and all(name.startswith("A") for name in task.ecg_ids)
    np.testing.assert_array_equal(task.y, reference_matrix(task.meta["dx"], CPSC2018_CLASSES))
    with pytest.raises(ValueError, match="no records of georgia"):
        load_challenge_task(index, "georgia")


@pytest.mark.parametrize("policy", ["keep", "drop_empty", "drop_unknown"])
def test_unknown_code_policies_and_summary_counts(policy, tmp_path):
    index = synthetic_index()
    task = load_challenge_task(index, "csn", split="stratified", min_positives=10, unknown_codes=policy)
    classes = set(reference_vocabulary(index["dx"], 10, CSN_EXCLUDED_CODES))
    known = known_codes("csn")
    has_class = index["dx"].map(lambda c: bool(reference_codes(c) & classes))
    has_unknown = index["dx"].map(lambda c: any(code not in known for code in snomed.parse_dx(c)))
    if policy == "keep":
        expected_kept = pd.Series(True, index=index.index)
    elif policy == "drop_empty":
        expected_kept = has_class
    else:
        expected_kept = has_class & ~has_unknown
    assert task.ecg_ids.tolist() == index.loc[expected_kept, "record_id"].tolist()
    np.testing.assert_array_equal(task.y, reference_matrix(task.meta["dx"], task.classes))

    summary = task.summary
    records = summary[summary["kind"] == "records"].set_index("name")["count"]
    assert records["total"] == len(index) and records["kept"] == len(task)
    assert records["train"] + records["val"] + records["test"] + records["in no split"] == len(task)
    if policy == "drop_unknown":
        assert records["unknown or excluded code"] == int(has_unknown.sum())
        assert records["no kept class"] == int((~has_class & ~has_unknown).sum())
    else:
        assert records["no kept class"] == int((~has_class).sum())
    kept_classes = summary[(summary["kind"] == "class") & (summary["status"] == "kept")]
    assert kept_classes["code"].tolist() == task.classes
    assert kept_classes["count_kept"].tolist() == task.y.sum(axis=0).tolist()
    rows = summary[summary["kind"] == "class"].set_index("code")
    assert rows.loc["27885002", "status"] == "dropped" and "ecg-fix" in rows.loc["27885002", "reason"]
    assert rows.loc["713427006", "status"] == "merged"
    assert rows.loc["713427006", "count"] == sum("713427006" in str(c) for c in index["dx"])
    if "999999" in rows.index:
        assert rows.loc["999999", "status"] == "dropped" and "fewer than 10" in rows.loc["999999", "reason"]
    path = write_summary(summary, tmp_path / "sub" / "summary.csv")
    assert pd.read_csv(path, dtype={"code": str}).shape == summary.shape


def test_bad_settings_are_one_line_errors():
    index = synthetic_index(30)
    for kwargs, message in [({"split": "random"}, "unknown split preset"),
                            ({"unknown_codes": "ignore"}, "unknown_codes policy"),
                            ({"min_positives": 0}, "min_positives"),
                            ({"length_policy": "trim"}, "length policy")]:
        with pytest.raises(ValueError, match=message):
            load_challenge_task(index, "csn", **kwargs)
    with pytest.raises(ValueError, match="lacks column"):
        load_challenge_task(index.drop(columns="dx"), "csn")


def test_length_mask_and_drop_short_task():
    index = synthetic_index(200)
    np.testing.assert_array_equal(length_mask(index, "drop_short"), index["n_samples_source"].to_numpy() >= 5000)
    assert length_mask(index, "crop_pad").all() and length_mask(index, "merl").all()
    with pytest.raises(ValueError, match="n_samples_source"):
        length_mask(index.drop(columns="n_samples_source"), "drop_short")
    task = load_challenge_task(index, "csn", length_policy="drop_short", split="stratified")
    short = int((index["n_samples_source"] < 5000).sum())
    records = task.summary[task.summary["kind"] == "records"].set_index("name")["count"]
    assert records["shorter than 10 s"] == short and len(task) == len(index) - short


def test_length_policies_are_the_store_crop_and_valid_seconds():
    """The length policies written out in numpy (tests/oracles.py), checked by hand, then the package's path
    against them: the store's crop (`POLICY_CROP` through `fit_length`) and zeros after `valid_seconds`."""
    fs = 10.0  # 10 s frame = 100 samples
    long = np.arange(2 * 130, dtype=np.float32).reshape(2, 130)
    short = np.ones((2, 60), dtype=np.float32)
    out = apply_length_policy(long, fs, "crop_pad", "csn")
    np.testing.assert_array_equal(out, long[:, 15:115])
    np.testing.assert_array_equal(apply_length_policy(long, fs, "drop_short", "csn"), long[:, 15:115])
    padded = apply_length_policy(short, fs, "crop_pad", "csn")
    assert padded.shape == (2, 100) and padded[:, :60].all() and not padded[:, 60:].any()
    with pytest.raises(ValueError, match="shorter than"):
        apply_length_policy(short, fs, "drop_short", "csn")
    merl_cpsc = apply_length_policy(long, fs, "merl", "cpsc2018")
    np.testing.assert_array_equal(merl_cpsc[:, :50], long[:, :50])
    assert not merl_cpsc[:, 50:].any() and merl_cpsc.shape == (2, 100)
    np.testing.assert_array_equal(apply_length_policy(long, fs, "merl", "csn"), long[:, :100])
    assert apply_length_policy(short[0], fs, "merl", "cpsc2018").shape == (100,)
    assert long.shape == (2, 130)  # input untouched

    for policy in LENGTH_POLICIES:
        for dataset in ("cpsc2018", "csn"):
            for signal in (long, long[:, :101], long[:, :100], short):
                if policy == "drop_short" and signal.shape[-1] < 100:
                    continue  # length_mask drops the record
                frame = np.array(fit_length(signal, 100, POLICY_CROP[policy])[0])
                if valid_seconds(policy, dataset) is not None:
                    frame[:, int(round(valid_seconds(policy, dataset) * fs)):] = 0
                np.testing.assert_array_equal(frame, apply_length_policy(signal, fs, policy, dataset))
