"""The tidy results of an evaluation: how every protocol scores a model into rows, and how a run's tables are
merged, written and shown.

    out = classification_rows("superdiagnostic", "linear_probe", "ESI", classes, y_true, y_score,
                              split=PTBXL_SPLIT, recipe="esi_probe", selection="fold9_best")  # AUROC/AUPRC rows
    results = ProtocolResults.from_rows(out["rows"], out["per_class"])
    write_results(run_dir, results.table, results.per_class)                  # results.csv/json, per_class.csv
    results_pivot(results.table)                                              # one column per encoder

One row of the table (RESULT_COLUMNS) is one number: a task, a protocol, an encoder, a metric, its bootstrap
interval and the p-value against the encoder's random-init twin, with what produced it (split, recipe,
selection, subset draw, and in `settings` every other setting of its protocol that differs from the default, as
JSON) and the notes a reader needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from esi.data.ptbxl import PTBXLTask
from esi.evaluate.metrics import (SUPPORTED_MIN_POSITIVES, bootstrap_metrics, holm, n_rare_classes, paired_test,
                                 per_class_auroc, per_class_average_precision, scorable, supported)
from esi.evaluate.published import pretraining_overlap, with_comparability

RESULT_COLUMNS = ("dataset", "task", "protocol", "split", "length_policy", "labels", "recipe", "selection", "subset_draw",
                  "label_fraction", "encoder", "encoder_fs", "encoder_window_s", "encoder_normalize",
                  "pretraining_overlap", "metric", "value", "ci_low", "ci_high", "ci_level", "p_value", "p_value_holm",
                  "baseline", "n_test", "n_train", "n_rare_classes", "seed", "comparable", "why_not", "settings", "notes")
PER_CLASS_COLUMNS = ("dataset", "task", "protocol", "recipe", "label_fraction", "encoder", "seed", "class",
                     "class_name", "auroc", "auprc", "n_positive_test")
# What a row of a PTB-XL protocol says in the dataset, length_policy and labels columns (every record is 10 s; labels
# are the SCP statements of the benchmark's task).
PTBXL_CONTEXT = {"dataset": "ptbxl", "length_policy": "ptbxl_10s", "labels": "ptbxl_scp_statements"}
# The macro metrics every classification protocol reports (AUPRC beside AUROC: the field's practice for
# imbalanced labels), each also over the supported classes only (>= SUPPORTED_MIN_POSITIVES test positives).
CLASSIFICATION_METRICS = ("macro_auroc", "macro_auprc")
SUPPORTED_METRICS = tuple(f"{m}_supported" for m in CLASSIFICATION_METRICS)
# The PTB-XL benchmark's split: stratified folds 1-8 train, 9 validates, 10 is scored (patient-disjoint).
PTBXL_SPLIT = PTBXLTask.split_label


def fold_split(folds) -> str:
    """The split name of rows scored on PTB-XL `folds` with nothing trained ("ptbxl_fold_10"; None: all folds)."""
    if not folds:
        return "ptbxl_all_folds"
    return "ptbxl_fold" + ("s_" if len(folds) > 1 else "_") + ",".join(str(int(f)) for f in folds)


# PTB-XL's fold 10 holds 2,198 records; with fewer than this many, results are a smoke test, not a benchmark.
SMOKE_TEST_RECORDS = 500

# The PTB-XL tasks a protocol is asked for (another dataset has one task, itself: `Workspace.task_names`).
Task = Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]


@dataclass
class CommonSettings:
    """What every protocol shares: its intervals, paired tests, seed and classes (params keys `evaluate_<field>`)."""

    n_boot: int = 100                     # bootstrap resamples of the test records for every interval
    ci_level: float = 0.90                # coverage of every interval (0.90: the benchmark's 5th-95th percentiles)
    # random swaps of the paired permutation test of each pretrained encoder against its random-init twin (p_value)
    significance_resamples: int = 1000
    seed: int = 0                         # seed of subsets, heads, crops and bootstraps
    # PTB-XL: keep classes occurring in more than this many records (the benchmark: 0); as the benchmark's
    # select_data, every task but `diagnostic` applies it
    min_samples: int = 0


def settings_json(settings: Mapping) -> str:
    """The results' `settings` column: the settings that made a row and differ from its protocol's defaults, as
    one JSON object with sorted keys ("{}": the defaults)."""
    return json.dumps(dict(settings), sort_keys=True, default=str)


def changed_settings(settings, defaults, names: Sequence[str]) -> dict:
    """{name: value} of the fields `names` where `settings` differs from `defaults` (two settings dataclasses)."""
    return {name: getattr(settings, name) for name in names if getattr(settings, name) != getattr(defaults, name)}


def smoke_note(n_test: int) -> str:
    """The note every result scored on only `n_test` < SMOKE_TEST_RECORDS records carries ("" otherwise)."""
    if n_test < SMOKE_TEST_RECORDS:
        return (f"smoke-sized: {n_test} test records (< {SMOKE_TEST_RECORDS}; PTB-XL fold 10 has 2,198), "
                "not comparable to published numbers")
    return ""


# The note of a model whose test scores are the same for every record in every class: it ranks nothing (its
# AUROC is 0.5 by construction, with a zero-width interval), typically a smoke-sized run stopped too early.
CONSTANT_SCORES = "constant scores: the model did not learn to rank the test records (train longer)"


def constant_scores_note(y_score: np.ndarray) -> str:
    """CONSTANT_SCORES when every column of `y_score` holds one value ("" otherwise)."""
    return CONSTANT_SCORES if len(y_score) and bool((np.ptp(y_score, axis=0) == 0).all()) else ""


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def result_row(task: str, protocol: str, encoder: str, metric: str, value: float, ci_low: float = float("nan"),
               ci_high: float = float("nan"), *, split: str = "", recipe: str = "", selection: str = "",
               subset_draw: str = "", ci_level: float = float("nan"), p_value: float = float("nan"),
               label_fraction: float = float("nan"), n_test: int = 0, n_train: int = 0, seed: int | None = None,
               n_rare: int | None = None, notes: str = "", size_note: bool = True, dataset: str = "",
               length_policy: str = "", labels: str = "", settings: Mapping | None = None) -> dict:
    """One row of the tidy results table (RESULT_COLUMNS).

    Args:
        task, protocol, encoder, metric: what was measured, how, on which encoder.
        value, ci_low, ci_high: the result and its bootstrap interval.
        split: which records trained, selected and were scored (e.g. PTBXL_SPLIT, the official folds).
        recipe: the named training recipe that produced it ("benchmark", "esi", ...; "" where nothing is trained).
        selection: how the scored model was chosen ("final_epoch", "fold9_best", "none").
        subset_draw: how a label fraction of the training records was drawn ("merl", "every_class", "all").
        ci_level: coverage of [ci_low, ci_high] (0.90: the benchmark's 5th-95th percentiles).
        p_value: paired permutation test against the encoder's random-init twin on the same test records (NaN: no
            twin). The table's `p_value_holm` (Holm-adjusted over all its p-values) is set by `adjust_p_values`.
        label_fraction: share of the training labels used (NaN where none are used).
        n_test, n_train: records scored and records trained on.
        seed: the seed of the run.
        n_rare: macro rows: how many averaged classes have < SUPPORTED_MIN_POSITIVES test positives (None: not a
            macro over classes).
    The table's `comparable` and `why_not` (against the published numbers, `esi.evaluate.published`) are set
    with `p_value_holm` when rows become a table (`ProtocolResults`).
        notes: facts a reader needs (model selection, coverage, ...).
        size_note: prefix the smoke-size note when n_test < SMOKE_TEST_RECORDS (protocols with another notion of
            size, such as identification's probes, write their own).
        dataset, length_policy, labels: which benchmark, how its records were brought to 10 s and which rule made
            its labels ("exact" SNOMED codes, "merl_released", "ecgfix"; PTB-XL's SCP statements); "" lets
            `ProtocolResults.from_rows` fill in the workspace's.
        settings: the protocol's settings that produced the row where they differ from its defaults (the
            `settings` column, JSON; see `settings_json`); `recipe` names the preset they make.
    """
    return {"dataset": dataset, "task": task, "protocol": protocol, "split": split, "length_policy": length_policy,
            "labels": labels,
            "recipe": recipe, "selection": selection, "subset_draw": subset_draw, "label_fraction": label_fraction,
            "encoder": encoder, "encoder_fs": float("nan"), "encoder_window_s": float("nan"), "encoder_normalize": "",
            "pretraining_overlap": "",  # set from the encoder by `ProtocolResults.from_rows(..., encoders=)`
            "metric": metric, "value": float(value),
            "ci_low": float(ci_low), "ci_high": float(ci_high), "ci_level": float(ci_level),
            "p_value": float(p_value), "p_value_holm": float("nan"), "baseline": "", "n_test": int(n_test),
            "n_train": int(n_train),
            "n_rare_classes": n_rare, "seed": seed, "comparable": False, "why_not": "",
            "settings": settings_json(settings or {}), "notes": join_notes(smoke_note(n_test) if size_note else "", notes)}


def unscorable_note(y_true: np.ndarray, classes) -> str:
    """The note naming the classes that cannot be scored on these test labels (no positive or no negative)."""
    left_out = [c for c, ok in zip(classes, scorable(y_true)) if not ok]
    if not left_out:
        return ""
    shown = ", ".join(left_out[:8]) + (", ..." if len(left_out) > 8 else "")
    return (f"{len(left_out)} of {len(classes)} class(es) not scorable on the test records (no positive or no "
            f"negative), left out of the macro means: {shown}")


def classification_rows(task: str, protocol: str, encoder: str, classes, y_true: np.ndarray, y_score: np.ndarray, *,
                        split: str, recipe: str, selection: str, subset_draw: str = "",
                        label_fraction: float = float("nan"),
                        n_train: int = 0, seed: int = 0, n_boot: int = 100, ci_level: float = 0.90,
                        notes: str = "", names=None, settings: Mapping | None = None) -> dict:
    """Score one model's test predictions: macro AUROC and AUPRC rows with bootstrap intervals (over all scorable
    classes, and over the supported ones only), per-class rows.

    Every classification protocol ends here, so every one reports the same metrics the same way: a non-finite
    score is an error naming the encoder, task and class (never a class quietly left out), classes without
    both labels on the test set are named in the notes, and all metrics share the same resamples. Every macro
    row counts its rare classes (< SUPPORTED_MIN_POSITIVES test positives): a resample can never let a class with
    2 positives look much worse than it does, so intervals and p-values lean on such classes more than they
    should; the `_supported` rows show the macro without them (ecg-fix's practice).

    Args:
        task, protocol, encoder: as in the results table.
        classes: class labels, aligned with the columns of y_true and y_score.
        y_true, y_score: (records, classes) test labels and scores.
        split, recipe, selection, subset_draw, label_fraction, n_train, seed, settings: as in `result_row`.
        n_boot: bootstrap resamples of the test records (drawn with `seed`).
        ci_level: coverage of the interval.
        notes: the protocol's own notes.
        names: class label -> English name for the per-class rows.

    Returns:
        {"rows": [macro_auroc, macro_auprc, macro_auroc_supported, macro_auprc_supported rows],
         "per_class": per-class rows}.
    """
    where = f"{encoder} / {task} / {protocol}"
    y_true = np.asarray(y_true)
    common = dict(split=split, recipe=recipe, selection=selection, subset_draw=subset_draw,
                  label_fraction=label_fraction, n_test=len(y_true), n_train=n_train, seed=seed, settings=settings)
    results = bootstrap_metrics(y_true, y_score, metrics=CLASSIFICATION_METRICS, n_boot=n_boot, level=ci_level,
                                seed=seed, classes=list(classes), where=where)
    n_rare = n_rare_classes(y_true)
    notes = join_notes(constant_scores_note(y_score), unscorable_note(y_true, classes), notes)
    rows = [result_row(task, protocol, encoder, metric, r.value, r.low, r.high, ci_level=r.level, n_rare=n_rare,
                       notes=notes, **common)
            for metric, r in results.items()]
    keep = supported(y_true)
    note = (f"over the {int(keep.sum())} class(es) with >= {SUPPORTED_MIN_POSITIVES} test positives "
            f"({n_rare} rare class(es) left out)")
    if keep.any():
        kept = bootstrap_metrics(y_true[:, keep], np.asarray(y_score)[:, keep], metrics=CLASSIFICATION_METRICS,
                                 n_boot=n_boot, level=ci_level, seed=seed,
                                 classes=[c for c, k in zip(classes, keep) if k], where=where)
        rows += [result_row(task, protocol, encoder, f"{metric}_supported", r.value, r.low, r.high,
                            ci_level=r.level, n_rare=0, notes=join_notes(note, notes), **common)
                 for metric, r in kept.items()]
    else:
        rows += [result_row(task, protocol, encoder, f"{metric}_supported", float("nan"), ci_level=ci_level, n_rare=0,
                            notes=join_notes(f"no class has >= {SUPPORTED_MIN_POSITIVES} test positives", notes),
                            **common)
                 for metric in CLASSIFICATION_METRICS]
    aucs, aps = per_class_auroc(y_true, y_score), per_class_average_precision(y_true, y_score)
    names = names or {}
    per_class = [{"task": task, "protocol": protocol, "recipe": recipe, "label_fraction": label_fraction,
                  "encoder": encoder, "seed": seed, "class": c, "class_name": names.get(c, c), "auroc": float(a),
                  "auprc": float(ap), "n_positive_test": int(y_true[:, j].sum())}
                 for j, (c, a, ap) in enumerate(zip(classes, aucs, aps))]
    return {"rows": rows, "per_class": per_class}


def save_predictions(path: Path, y_true: np.ndarray, y_score: np.ndarray, classes, ecg_ids, **extra) -> Path:
    """Write one model's test-set scores (for figures and later analysis) as npz at `path`.

    Args:
        path: the .npz file (folders created).
        y_true: (records, classes) labels; y_score: (records, classes) scores.
        classes: class labels; ecg_ids: (records,) the records.
        extra: further named values stored alongside (encoder, label_fraction, seed, pretrained, ...).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, y_true=np.asarray(y_true, dtype=np.uint8), y_score=np.asarray(y_score, dtype=np.float32),
                 classes=np.asarray(list(classes)).astype(str), ecg_ids=_plain_array(ecg_ids),
                 **{k: _plain_array(v) for k, v in extra.items()})
    return path


def _plain_array(values) -> np.ndarray:
    """An array npz stores without pickling: record names (object arrays) as strings, PTB-XL ecg_ids as int64."""
    array = np.asarray(values)
    if array.dtype == object:
        return array.astype(str)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array


def load_predictions(path: Path) -> dict:
    """The arrays `save_predictions` (or the identification protocol) wrote at `path`, by name."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def attach_p_values(outputs: list[dict], twins: dict[str, str], n_resamples: int = 1000, seed: int = 0) -> None:
    """Set `p_value` on the rows of every pretrained model from a paired test against its random-init twin.

    The twin's output must score the same test records under the same key (task, fraction, seed, ...); the test
    (`paired_test`, a permutation test that swaps the two models' scores record by record) sees their
    difference on the same records, not the spread of either alone. Rows without a value (a `_supported` row with
    no supported class) get none.

    Args:
        outputs: one dict per scored model: "encoder" (label), "key" (anything hashable naming the comparison
            cell), "rows" (its result rows, changed in place), "y_true", "y_score".
        twins: pretrained label -> twin label (`esi.evaluate.encoders.twin_labels`).
        n_resamples: random swaps of the permutation test.
        seed: seed of the swaps.
    """
    by_cell = {(o["key"], o["encoder"]): o for o in outputs}
    for out in outputs:
        base = by_cell.get((out["key"], twins.get(out["encoder"])))
        if base is None:
            continue
        if not np.array_equal(out["y_true"], base["y_true"]):
            raise ValueError(f"{out['encoder']} and its twin {base['encoder']} were scored on different test "
                             f"records ({out['key']}); a paired test needs the same records")
        for row in out["rows"]:
            if np.isnan(row["value"]):
                continue
            test = paired_test(out["y_true"], out["y_score"], base["y_score"], metric=row["metric"],
                               n_permutations=n_resamples, seed=seed)
            row["p_value"], row["baseline"] = test.p_value, base["encoder"]
            row["notes"] = join_notes(row["notes"], f"p vs {base['encoder']}: paired permutation test over the "
                                                    f"same {len(out['y_true'])} test records "
                                                    f"({test.n_permutations} swaps), difference {test.delta:+.3f}")


def finish_table(table: pd.DataFrame) -> pd.DataFrame:
    """The columns computed over a whole results table: `p_value_holm`, and `comparable` / `why_not`.

    `p_value_holm` is Holm's adjustment over every p-value in the table (one family per table): a raw `p_value`
    answers "is this one encoder different from its twin on this one task and metric?"; the adjusted one keeps the
    chance of any false "different" in the whole table at or below alpha. `comparable` says whether a published
    number was produced the way the row was (`esi.evaluate.published.with_comparability`; `why_not` says why not).
    """
    if table.empty:
        return table
    table = table.assign(p_value_holm=holm(table["p_value"].to_numpy(dtype=np.float64)))
    return with_comparability(table)


def encoder_columns(encoder, dataset: str) -> dict:
    """A row's encoder_fs, encoder_window_s, encoder_normalize (the input `encoder` is fed) and
    pretraining_overlap (the pretraining sets of `encoder` that hold records of `dataset`)."""
    return {**encoder.input_columns(),
            "pretraining_overlap": pretraining_overlap(dataset, getattr(encoder, "pretrained_on", ()))}


@dataclass
class ProtocolResults:
    """What a protocol returns: the tidy results (RESULT_COLUMNS) and per-class AUROCs (PER_CLASS_COLUMNS)."""

    table: pd.DataFrame
    per_class: pd.DataFrame

    @classmethod
    def from_rows(cls, rows: list[dict], per_class_rows: list[dict], dataset: str = PTBXL_CONTEXT["dataset"],
                  length_policy: str = PTBXL_CONTEXT["length_policy"],
                  labels: str = PTBXL_CONTEXT["labels"], encoders=()) -> ProtocolResults:
        """Both tables from lists of row dicts (`result_row` and `per_class_rows` output).

        Args:
            rows, per_class_rows: the rows.
            dataset: the `dataset` column of rows that do not set it ("ptbxl", "cpsc2018", "csn", ...).
            length_policy: the `length_policy` column of rows that do not set it (how records were brought to
                the 10 s frame; PTB-XL's are all 10 s).
            labels: the `labels` column of rows that do not set it (the rule that made the task's labels).
            encoders: the `LoadedEncoder`s that produced the rows: each row of one gets its input (`encoder_fs`,
                `encoder_window_s`, `encoder_normalize`) and `pretraining_overlap` with the row's dataset, where
                the row leaves them unset (the benchmark sets the window its model saw).
        """
        context = {"dataset": dataset, "length_policy": length_policy, "labels": labels}
        rows = [{**row, **{k: v for k, v in context.items() if not row.get(k)}} for row in rows]
        by_label = {e.label: e for e in encoders}
        rows = [{**row, **{k: v for k, v in encoder_columns(by_label[row["encoder"]], row["dataset"]).items()
                           if pd.isna(row.get(k)) or row.get(k) == ""}}    # a protocol's own value stays
                if row["encoder"] in by_label else row for row in rows]
        per_class_rows = [{**row, "dataset": row.get("dataset") or dataset} for row in per_class_rows]
        return cls(finish_table(pd.DataFrame(rows, columns=list(RESULT_COLUMNS))),
                   pd.DataFrame(per_class_rows, columns=list(PER_CLASS_COLUMNS)))

    @classmethod
    def concat(cls, parts: Sequence[ProtocolResults]) -> ProtocolResults:
        """The results of several protocols, one below the other (empty tables with the columns if none)."""
        table = pd.concat([p.table for p in parts if len(p.table)] or [pd.DataFrame(columns=list(RESULT_COLUMNS))],
                          ignore_index=True)
        table = finish_table(table)                                      # one family: the whole table
        per_class = pd.concat([p.per_class for p in parts if len(p.per_class)]
                              or [pd.DataFrame(columns=list(PER_CLASS_COLUMNS))], ignore_index=True)
        return cls(table, per_class)


# --- a run's tables: written, printed, pivoted --------------------------------------------------------------

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
PER_CLASS_CSV = "per_class.csv"


def write_results(run_dir: Path, table: pd.DataFrame, per_class: pd.DataFrame) -> None:
    """Write the tidy `table` as results.csv and results.json (a list of row objects; NaN as null) and the
    `per_class` table as per_class.csv, in `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / RESULTS_CSV, index=False)
    records = json.loads(table.to_json(orient="records"))  # pandas writes NaN as null: valid JSON
    (run_dir / RESULTS_JSON).write_text(json.dumps(records, indent=2) + "\n")
    per_class.to_csv(run_dir / PER_CLASS_CSV, index=False)


def _fraction_text(fraction) -> str:
    return "" if pd.isna(fraction) else f"{fraction:g}"


def _interval_texts(table: pd.DataFrame) -> list[str]:
    """"value [ci_low, ci_high]" of every row."""
    return [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(table["value"], table["ci_low"], table["ci_high"])]


def summary(table: pd.DataFrame) -> str:
    """A compact text table of the results (value [ci_low, ci_high]) for the terminal."""
    if table.empty:
        return "(no results)"
    shown = table.assign(fraction=table["label_fraction"].map(_fraction_text), result=_interval_texts(table))
    columns = ["dataset", "protocol", "task", "fraction", "encoder", "metric", "result", "n_test"]
    return shown[[c for c in columns if c in shown]].to_string(index=False)


def results_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """The tidy results as one row per (protocol, recipe, task, label fraction, metric; and dataset when the table
    holds several) and one column per encoder.

    Cells read "value [ci_low, ci_high]", followed by "p=..." (paired test against the random-init twin) where the
    row has one, and by "(constant scores: did not learn)" for a model that scored every record alike.
    """
    if table.empty:
        return pd.DataFrame()
    p_values = table["p_value"] if "p_value" in table else pd.Series(float("nan"), index=table.index)
    notes = table["notes"].fillna("") if "notes" in table else pd.Series("", index=table.index)
    shown = table.assign(result=[text + ("" if pd.isna(p) else f" p={p:.2g}")
                                 + (" (constant scores: did not learn)" if CONSTANT_SCORES in note else "")
                                 for text, p, note in zip(_interval_texts(table), p_values, notes)],
                         fraction=table["label_fraction"].map(_fraction_text),
                         recipe=table["recipe"].fillna("") if "recipe" in table else "")
    keys = ["protocol", "recipe", "task", "fraction", "metric"]
    if "dataset" in shown and shown["dataset"].nunique() > 1:    # several benchmarks: which one is a row's
        keys = ["dataset", *keys]
    pivot = shown.pivot_table(index=keys, columns="encoder", values="result", aggfunc="first", sort=False)
    pivot.columns.name = None
    return pivot.fillna("")       # an encoder a protocol does not run (e.g. the supervised baseline) shows blank
