"""The evaluation entry point: `python -m esi.evaluate --config params/ptbxl_benchmark.yaml [--set key=value ...]`.

What one run does:
  1. resolve the config (params keys `evaluate_*`) and write it to <run_dir>/evaluate_config.yaml;
  2. load every encoder once (plus the random-init twin of each pretrained one);
  3. run the chosen protocols: linear probe (B), PTB-XL benchmark (A), zero-shot, identification; PTB-XL is
     converted into a store per sampling rate on first use and features are cached under <run_dir>/evaluate/;
  4. write the tidy table as <run_dir>/results.csv and results.json, per-class AUROCs as per_class.csv, and the
     figures under <run_dir>/figures/.

From Python (a notebook): `result = evaluate(config)`; `result.table` is the tidy DataFrame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from esi.config import ConfigError, save_config
from esi.evaluate.config import EvaluateConfig, load_evaluate_config
from esi.evaluate.features import PER_CLASS_COLUMNS, RESULT_COLUMNS, SMOKE_TEST_RECORDS, Workspace
from esi.paths import outputs_dir, resolve

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
PER_CLASS_CSV = "per_class.csv"
CONFIG_FILE = "evaluate_config.yaml"


@dataclass
class EvaluationResult:
    """table: the tidy results (RESULT_COLUMNS); per_class: per-class AUROCs; run_dir; figures: PNGs written."""

    table: pd.DataFrame
    per_class: pd.DataFrame
    run_dir: Path
    figures: list[Path] = field(default_factory=list)


def run_directory(config: EvaluateConfig, run_name: str = "") -> Path:
    """The run folder: `config.out_dir` if set, else outputs/<run_name>, else outputs/evaluate."""
    return resolve(config.out_dir) if config.out_dir else outputs_dir() / (run_name or "evaluate")


def evaluate(config: EvaluateConfig, run_name: str = "") -> EvaluationResult:
    """Run the evaluation `config` describes and write its results; see the module docstring.

    Args:
        config: the settings (`load_evaluate_config` builds one from params files).
        run_name: names the run folder outputs/<run_name> when config.out_dir is empty.
    """
    from esi.evaluate.encoders import load_encoders
    from esi.evaluate.figures import make_figures
    from esi.evaluate.identification import identification_results
    from esi.evaluate.linear_probe import linear_probe_results
    from esi.evaluate.ptbxl_benchmark import benchmark_results, recipe_settings
    from esi.evaluate.zero_shot import zero_shot_results

    started = time.perf_counter()
    ptbxl_root = resolve(config.ptbxl_root)
    if ptbxl_root is None or not (ptbxl_root / "ptbxl_database.csv").is_file():
        raise FileNotFoundError(f"evaluate_ptbxl_root: {ptbxl_root} holds no ptbxl_database.csv; point it at the "
                                "PTB-XL download (the folder with ptbxl_database.csv, records100/, records500/)")
    run_dir = run_directory(config, run_name)
    save_config(config, run_dir / CONFIG_FILE)
    workspace = Workspace(run_dir, ptbxl_root, store_dir=resolve(config.store_dir),
                          cache_dir=resolve(config.cache_dir), device=config.device,
                          batch_size=config.batch_size, workers=config.convert_workers or None,
                          progress=config.progress)
    encoders = load_encoders(config.encoders, config.device, config.random_baselines)
    parts = []

    def finished(part) -> None:
        # Results are rewritten after every protocol, so a long run that stops late keeps what it finished.
        parts.append(part)
        write_results(run_dir, *_merge(parts))

    if "linear_probe" in config.protocols:
        finished(linear_probe_results(
            encoders, workspace, config.probe_tasks, config.probe_fractions, seeds=config.probe_seeds,
            epochs=config.probe_epochs, lr=config.probe_lr, weight_decays=config.probe_weight_decays,
            draw=config.probe_subset_draw, n_boot=config.n_boot, ci_level=config.ci_level,
            significance_resamples=config.significance_resamples, min_samples=config.min_samples,
            random_baselines=False))
    if "benchmark" in config.protocols:
        overrides = {"selection": config.benchmark_selection, "lr": config.benchmark_lr,
                     "finetune_lr": config.benchmark_finetune_lr, "weight_decay": config.benchmark_weight_decay}
        settings = recipe_settings(
            config.benchmark_recipe, **{k: v for k, v in overrides.items() if v is not None},
            epochs=config.benchmark_epochs, finetune_epochs=config.benchmark_finetune_epochs,
            batch_size=config.benchmark_batch_size, window_s=config.benchmark_window_s,
            stride_s=config.benchmark_stride_s, dropout=config.benchmark_dropout,
            train_fraction=config.benchmark_train_fraction, subset_draw=config.probe_subset_draw, seed=config.seed,
            n_boot=config.n_boot, ci_level=config.ci_level, significance_resamples=config.significance_resamples,
            num_workers=config.benchmark_loader_workers)
        finished(benchmark_results(
            encoders if config.benchmark_finetune else [], workspace, config.benchmark_tasks,
            supervised=config.benchmark_supervised, supervised_fs=config.benchmark_supervised_fs, settings=settings,
            min_samples=config.min_samples, random_baselines=False, save_models=config.benchmark_save_models))
    if "zero_shot" in config.protocols:
        finished(zero_shot_results(
            config.encoders, workspace, config.zero_shot_tasks, waveform_dict=config.zero_shot_waveform_dict or None,
            templates=config.zero_shot_templates, no_description_template=config.zero_shot_no_description_template,
            names=config.zero_shot_class_names, folds=config.zero_shot_folds, n_boot=config.n_boot,
            ci_level=config.ci_level, significance_resamples=config.significance_resamples, seed=config.seed,
            min_samples=config.min_samples, random_baselines=config.random_baselines))
    if "identification" in config.protocols:
        finished(identification_results(
            encoders, workspace, folds=config.identification_folds or None, max_rank=config.identification_max_rank,
            n_boot=config.n_boot, seed=config.seed, random_baselines=False, level=config.ci_level,
            significance_resamples=config.significance_resamples))

    table, per_class = _merge(parts)
    write_results(run_dir, table, per_class)
    smoke = table["notes"].astype(str).str.contains("smoke-sized")
    if smoke.any():
        warnings.warn(f"{int(smoke.sum())} result(s) come from small test sets (< {SMOKE_TEST_RECORDS} records): a "
                      "smoke test of the pipeline, not numbers to compare with the literature", stacklevel=2)
    figures = []
    if config.figures and len(table):
        figures = make_figures(run_dir, table, per_class, task=config.figure_task, encoders=encoders,
                               workspace=workspace, tsne_max_points=config.tsne_max_points,
                               tsne_iterations=config.tsne_iterations, seed=config.seed)
    print(f"[esi.evaluate] {len(table)} results in {time.perf_counter() - started:.0f} s -> {run_dir / RESULTS_CSV}",
          flush=True)
    return EvaluationResult(table=table, per_class=per_class, run_dir=run_dir, figures=figures)


def _merge(parts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results and per-class tables of several protocols, one below the other."""
    table = pd.concat([p.table for p in parts if len(p.table)] or [pd.DataFrame(columns=list(RESULT_COLUMNS))],
                      ignore_index=True)
    per_class = pd.concat([p.per_class for p in parts if len(p.per_class)]
                          or [pd.DataFrame(columns=list(PER_CLASS_COLUMNS))], ignore_index=True)
    return table, per_class


def write_results(run_dir: Path, table: pd.DataFrame, per_class: pd.DataFrame) -> None:
    """Write the tidy `table` as results.csv and results.json (a list of row objects; NaN as null) and the
    `per_class` table as per_class.csv, in `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / RESULTS_CSV, index=False)
    records = json.loads(table.to_json(orient="records"))  # pandas writes NaN as null: valid JSON
    (run_dir / RESULTS_JSON).write_text(json.dumps(records, indent=2) + "\n")
    per_class.to_csv(run_dir / PER_CLASS_CSV, index=False)


def summary(table: pd.DataFrame) -> str:
    """A compact text table of the results (value [ci_low, ci_high]) for the terminal."""
    if table.empty:
        return "(no results)"
    shown = table.assign(fraction=table["label_fraction"].map(lambda f: "" if pd.isna(f) else f"{f:g}"),
                         result=[f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                                 zip(table["value"], table["ci_low"], table["ci_high"])])
    return shown[["protocol", "task", "fraction", "encoder", "metric", "result", "n_test"]].to_string(index=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esi.evaluate",
        description="Evaluate ECG encoders on PTB-XL: linear probes (1/10/100 % labels), the PTB-XL benchmark "
                    "(supervised and fine-tuned), zero-shot with text prompts, and patient identification. Writes "
                    "results.csv/json, per_class.csv and figures/ into the run folder.",
        epilog="example: python -m esi.evaluate --config params/ptbxl_benchmark.yaml "
               "--set evaluate_ptbxl_root=/data/ptb-xl --set evaluate_protocols=[linear_probe]")
    parser.add_argument("--config", "-f", action="append", default=[],
                        help="params YAML file (repeatable; later files win); reads the evaluate_* keys and run_name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set evaluate_probe_epochs=20 (the evaluate_ prefix is "
                             "optional; values are YAML: [a, b], true, 0.1); repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> EvaluationResult:
    """The command line (`argv`: its arguments; default sys.argv). Exits with status 2 on a bad config or input."""
    args = build_parser().parse_args(argv)
    try:
        config, run_name = load_evaluate_config(args.config, args.overrides)
        result = evaluate(config, run_name)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary(result.table))
    if result.figures:
        print(f"figures: {result.run_dir / 'figures'}")
    return result
