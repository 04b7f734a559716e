"""The evaluation entry point:
`python -m esi.evaluate --config params/ptbxl_benchmark.yaml [--set evaluate_<setting>=value ...]`.

What one run does:
  1. resolve the config (params keys `evaluate_*`) and write it to <run_dir>/evaluate_config.yaml;
  2. load every encoder once (plus the random-init twin of each pretrained one);
  3. run the chosen protocols, each on every dataset of `evaluate_datasets` (PTB-XL, CPSC2018, CSN, a Challenge
     source; one `Workspace` each): linear probe (B), the PTB-XL benchmark recipe (A), zero-shot, identification (PTB-XL
     only); each dataset is converted into a store per sampling rate on first use and features are cached under
     <run_dir>/evaluate/; a Challenge dataset's class and record counts go to evaluate/<dataset>_summary.csv;
  4. write the tidy table as <run_dir>/results.csv and results.json, per-class AUROCs as per_class.csv
     (esi.evaluate.results), and the figures the results allow under <run_dir>/figures/ (`make_figures`, drawn
     with esi.plots).

From Python: `result = evaluate(config)`; `result.table` is the tidy DataFrame. The same steps one by one, as
notebook 04 runs them (each protocol is one public `run_*(encoders, workspace, settings, common)` call, its
settings passed whole: `config.probe`, `config.benchmark`, `config.zero_shot`, `config.identification`):

    evaluation = Evaluation.start(config)          # workspaces, encoders, evaluate_config.yaml
    evaluation.run("linear_probe")                 # = run_linear_probe(encoders, workspace, config.probe, ...)
    result = evaluation.finish()                   # results.csv, figures

One protocol alone, without a config:

    workspace = Workspace("outputs/run", "data/ptbxl")
    results = run_linear_probe([EncoderSpec(kind="esi", path="outputs/run/model")], workspace, ProbeSettings())
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from esi.config import ConfigError, save_config
from esi.evaluate.benchmark import run_benchmark
from esi.evaluate.config import PROTOCOLS, EvaluateConfig, load_evaluate_config
from esi.evaluate.datasets import ChallengeDataset, PTBXLDataset
from esi.evaluate.encoders import load_encoders
from esi.evaluate.identification import run_identification
from esi.evaluate.linear_probe import run_linear_probe
from esi.evaluate.results import (RESULTS_CSV, SMOKE_TEST_RECORDS, ProtocolResults, load_predictions, summary,
                                 write_results)
from esi.evaluate.workspace import Workspace
from esi.evaluate.zero_shot import run_zero_shot
from esi.paths import outputs_dir, resolve

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


def dataset_workspaces(config: EvaluateConfig, run_dir: Path, fs_hint: float = 500.0) -> list:
    """One `Workspace` per entry of `config.datasets` (checked before anything runs), sharing the run's folders.

    Args:
        config: the settings.
        run_dir: the run folder.
        fs_hint: the rate of the store a Challenge dataset's task is built from (the first encoder's).
    """
    common = dict(store_dir=resolve(config.store_dir), cache_dir=resolve(config.cache_dir), device=config.device,
                  batch_size=config.batch_size, workers=config.convert_workers or None, progress=config.progress)
    if not config.datasets:
        raise ValueError("evaluate_datasets is empty: name at least one of ptbxl, cpsc2018, csn or a Challenge source")
    workspaces = []
    for dataset in dict.fromkeys(config.datasets):
        if dataset == "ptbxl":
            root = resolve(config.ptbxl_root)
            if root is None or not (root / "ptbxl_database.csv").is_file():
                raise FileNotFoundError(f"evaluate_ptbxl_root: {root} holds no ptbxl_database.csv; point it at the "
                                        "PTB-XL download (the folder with ptbxl_database.csv, records100/, "
                                        "records500/)")
            workspaces.append(Workspace(run_dir, PTBXLDataset(root), **common))
            continue
        key = "csn_root" if dataset == "csn" and config.csn_root else "challenge_root"
        root = resolve(getattr(config, key))
        if root is None or not root.is_dir():
            what = ("ecg-arrhythmia 1.0.0 download (the folder with WFDBRecords/)" if key == "csn_root"
                    else "PhysioNet/CinC Challenge 2020/2021 tree (training/<source>/...)")
            raise FileNotFoundError(f"evaluate_{key}: {root} does not exist; point it at the {what}")
        challenge = ChallengeDataset(
            root, dataset, split=config.challenge_split, length_policy=config.challenge_length_policy,
            min_positives=config.challenge_min_positives, unknown_codes=config.challenge_unknown_codes,
            labels=config.challenge_labels, task_fs=fs_hint)
        challenge.records()     # reads the headers: a dataset the folder does not hold stops here
        workspaces.append(Workspace(run_dir, challenge, **common))
    return workspaces


def run_protocol(protocol: str, config: EvaluateConfig, encoders: Sequence, workspace) -> ProtocolResults | None:
    """One protocol of `config` on one dataset: its `run_*` function with the config's settings, passed whole.

    Args:
        protocol: one of PROTOCOLS.
        config: the settings (`config.probe`, `config.benchmark`, ... and `config.common`).
        encoders: the loaded encoders, each pretrained one with its random-init twin (`load_encoders`).
        workspace: the dataset's workspace (`dataset_workspaces`).

    Returns:
        The protocol's results; None for identification on a dataset without patient ids.
    """
    if protocol == "linear_probe":
        return run_linear_probe(encoders, workspace, config.probe, config.common, random_baselines=False)
    if protocol == "benchmark":
        return run_benchmark(encoders, workspace, config.benchmark, config.common, random_baselines=False)
    if protocol == "zero_shot":        # needs the ESI models' text side: it loads them from their specs
        return run_zero_shot(config.encoders, workspace, config.zero_shot, config.common,
                             random_baselines=config.random_baselines)
    if protocol == "identification":
        if not workspace.dataset.has_patient_ids:
            return None
        return run_identification(encoders, workspace, config.identification, config.common, random_baselines=False)
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


@dataclass
class Evaluation:
    """One evaluation run in steps, as notebook 04 shows them and `evaluate` runs them:

        evaluation = Evaluation.start(config)      # datasets checked, encoders loaded, config written
        evaluation.run("linear_probe")             # one protocol on every dataset; results.csv rewritten
        result = evaluation.finish()               # results, figures

    Each `run` replaces what the same protocol gave before, so one protocol can be run again alone.
    """

    config: EvaluateConfig
    run_dir: Path
    workspaces: list                                   # one per dataset (`dataset_workspaces`)
    encoders: list                                     # loaded, each pretrained one with its random-init twin
    parts: dict = field(default_factory=dict)          # (protocol, dataset) -> ProtocolResults
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, config: EvaluateConfig, run_name: str = "") -> Evaluation:
        """Check every dataset folder (before any work), load the encoders once, write the config to
        <run_dir>/evaluate_config.yaml.

        Args:
            config: the settings (`load_evaluate_config` builds one from params files).
            run_name: names the run folder outputs/<run_name> when `config.out_dir` is empty.
        """
        run_dir = run_directory(config, run_name)
        workspaces = dataset_workspaces(config, run_dir)      # a missing dataset folder stops here, before any work
        encoders = load_encoders(config.encoders, config.device, config.random_baselines)
        for workspace in workspaces:
            if workspace.dataset.task_fs is not None and encoders:
                workspace.dataset.task_fs = encoders[0].fs  # the task is read from a store this run converts anyway
        save_config(config, run_dir / CONFIG_FILE)
        return cls(config, run_dir, workspaces, encoders)

    @property
    def results(self) -> ProtocolResults:
        """Everything run so far, one table (the protocols in the order they ran)."""
        return ProtocolResults.concat(list(self.parts.values()))

    def run(self, protocol: str) -> ProtocolResults | None:
        """Run `protocol` on every dataset (`run_protocol`) and rewrite the results files, so a long run that stops
        late keeps what it finished. None (and nothing runs) when `config.protocols` does not name it.

        Args:
            protocol: one of PROTOCOLS.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        if protocol not in self.config.protocols:
            print(f"[esi.evaluate] {protocol}: not in evaluate_protocols, skipped", flush=True)
            return None
        mine = []
        for workspace in self.workspaces:
            part = run_protocol(protocol, self.config, self.encoders, workspace)
            if part is not None:
                self.parts[(protocol, workspace.dataset.name)] = part
                mine.append(part)
                merged = self.results
                write_results(self.run_dir, merged.table, merged.per_class)
        return ProtocolResults.concat(mine)

    def finish(self) -> EvaluationResult:
        """Write the results of every protocol run, warn about smoke-sized test sets, draw the figures."""
        config, run_dir = self.config, self.run_dir
        merged = self.results
        table, per_class = merged.table, merged.per_class
        write_results(run_dir, table, per_class)
        smoke = table["n_test"] < SMOKE_TEST_RECORDS
        if smoke.any():
            warnings.warn(f"{int(smoke.sum())} result(s) come from small test sets (< {SMOKE_TEST_RECORDS} records): "
                          "a smoke test of the pipeline, not numbers to compare with the literature", stacklevel=2)
        figures = []
        if config.figures and len(table):
            for workspace in self.workspaces:
                figures += make_figures(run_dir, table, per_class,
                                        task=workspace.dataset.task_names([config.figure_task])[0],
                                        encoders=self.encoders, workspace=workspace,
                                        tsne_max_points=config.tsne_max_points,
                                        tsne_iterations=config.tsne_iterations, seed=config.common.seed)
            figures += encoder_comparison_figures(run_dir, table)
            figures = list(dict.fromkeys(figures))
        print(f"[esi.evaluate] {len(table)} results in {time.perf_counter() - self.started:.0f} s -> "
              f"{run_dir / RESULTS_CSV}", flush=True)
        return EvaluationResult(table=table, per_class=per_class, run_dir=run_dir, figures=figures)


def evaluate(config: EvaluateConfig, run_name: str = "") -> EvaluationResult:
    """Run the evaluation `config` describes and write its results; see the module docstring. The same steps as
    notebook 04: `Evaluation.start`, `Evaluation.run` per protocol of `config.protocols`, `Evaluation.finish`.

    Args:
        config: the settings (`load_evaluate_config` builds one from params files).
        run_name: names the run folder outputs/<run_name> when `config.out_dir` is empty.
    """
    evaluation = Evaluation.start(config, run_name)
    for protocol in PROTOCOLS:          # in this order, whatever order evaluate_protocols lists them in
        evaluation.run(protocol)
    return evaluation.finish()


# --- the figures of a run -----------------------------------------------------------------------------------


def make_figures(run_dir: str | Path, table: pd.DataFrame, per_class: pd.DataFrame, *, task: str = "superdiagnostic",
                 encoders=(), workspace=None, tsne_max_points: int = 2000, tsne_iterations: int = 1000,
                 seed: int = 0) -> list[Path]:
    """Draw every figure the run's results allow into <run_dir>/figures/; returns the files written.

    Args:
        run_dir: the run folder (predictions are read from <run_dir>/evaluate/predictions/).
        table: the tidy results table.
        per_class: the per-class AUROC table.
        task: the task of the per-class, ROC and label-fraction figures.
        encoders: `LoadedEncoder`s for the embedding map (the first pretrained one and the first random one).
        workspace: the run's `Workspace` (cached features for the embedding map, drawn when its dataset has a
            `superclass_task`).
        tsne_max_points: t-SNE on at most this many records (a seeded random subset).
        tsne_iterations: t-SNE optimisation steps.
        seed: seed of that subset and of t-SNE.
    """
    # matplotlib is imported only when figures are drawn.
    from esi.plots import (plot_auroc_vs_fraction, plot_cmc, plot_per_class_auroc, plot_roc_curves, plt, save_figure,
                           split_names)

    run_dir = Path(run_dir)
    out = run_dir / "figures"
    written = []

    def save(fig, name):
        written.append(save_figure(fig, out / name))
        plt.close(fig)

    protocols = list(dict.fromkeys(per_class["protocol"])) if len(per_class) else []
    for protocol in protocols:
        rows = per_class[(per_class["protocol"] == protocol) & (per_class["task"] == task)]
        if rows.empty:
            continue
        fraction = float(rows["label_fraction"].max()) if rows["label_fraction"].notna().any() else None
        save(plot_per_class_auroc(per_class, task, protocol, fraction), f"per_class_auroc_{protocol}_{task}.png")

    # ROC curves of one pretrained model (at its largest label fraction) of the first protocol with predictions.
    for protocol in protocols:
        files = sorted((run_dir / "evaluate" / "predictions" / protocol / task).glob("*.npz"))
        chosen = [f for f in files if bool(load_predictions(f).get("pretrained", True))] or files
        if not chosen:
            continue
        pred = max((load_predictions(f) for f in chosen), key=lambda p: float(p.get("label_fraction", 1) or 1))
        names = dict(zip(per_class["class"], per_class["class_name"]))
        title = f"ROC curves: {task}, {protocol.replace('_', ' ')}, {pred['encoder']} ({split_names(table, task)[1]})"
        save(plot_roc_curves(pred["y_true"], pred["y_score"], [str(c) for c in pred["classes"]], names, title),
             f"roc_{protocol}_{task}.png")
        break

    probe = table[(table["protocol"] == "linear_probe") & (table["task"] == task)]
    if len(probe):
        save(plot_auroc_vs_fraction(table, task), f"auroc_vs_label_fraction_{task}.png")

    if workspace is not None and workspace.dataset.superclass_task and encoders:
        chosen = [e for e in encoders if e.pretrained][:1] + [e for e in encoders if not e.pretrained][:1]
        fig = _embedding_figure(workspace, chosen, tsne_max_points, tsne_iterations, seed)
        if fig is not None:
            save(fig, "tsne_superclass.png")

    cmc_files = sorted((run_dir / "evaluate" / "predictions" / "identification").glob("*.npz"))
    if cmc_files:
        curves, n_gallery, n_probes = {}, 1, None
        for f in cmc_files:
            p = load_predictions(f)
            curves[str(p["encoder"])] = p["cmc"]
            n_gallery, n_probes = int(p["n_gallery"]), len(p["ranks"])
        save(plot_cmc(curves, n_gallery, n_probes), "identification_cmc.png")
    return written


def encoder_comparison_figures(run_dir: str | Path, table: pd.DataFrame) -> list[Path]:
    """Encoders side by side, each above its random-init twin (`esi.plots.plot_encoder_comparison`): one figure per
    classification protocol with paired rows, at its largest label fraction, as <run_dir>/figures/
    encoder_comparison_<protocol>.png; returns the files written."""
    from esi.plots import plot_encoder_comparison, plt, save_figure

    paired = table[(table["baseline"].fillna("").astype(str) != "") & (table["metric"] == "macro_auroc")]
    written = []
    for protocol in dict.fromkeys(paired["protocol"]):
        fractions = paired.loc[paired["protocol"] == protocol, "label_fraction"].dropna()
        fraction = float(fractions.max()) if len(fractions) else None
        fig = plot_encoder_comparison(table, protocol, label_fraction=fraction)
        written.append(save_figure(fig, Path(run_dir) / "figures" / f"encoder_comparison_{protocol}.png"))
        plt.close(fig)
    return written


def _embedding_figure(workspace, encoders, max_points: int, iterations: int, seed: int):
    """t-SNE maps of the features of the records of the dataset's `superclass_task` (PTB-XL's superdiagnostic),
    for the given encoders (None if there are none)."""
    from esi.plots import plot_embedding_map

    task = workspace.dataset.task(workspace.dataset.superclass_task)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(task), size=min(max_points, len(task)), replace=False))
    ids = task.ecg_ids[keep]
    labels = superclass_labels(task)[keep]
    coords = {}
    for encoder in encoders:
        features = workspace.features(encoder).take(ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            coords[encoder.label] = tsne_map(features, seed, iterations)
    if not coords:
        return None
    return plot_embedding_map(coords, labels, f"{workspace.dataset.title} records by superclass ({len(ids)} records), "
                                              "frozen features")


def superclass_labels(task) -> np.ndarray:
    """One superclass per record of `task`, e.g. a superdiagnostic `PTBXLTask` ("multiple" for several)."""
    classes = np.asarray(task.classes)
    return np.array([classes[row.astype(bool)][0] if row.sum() == 1 else "multiple" for row in task.y])


def tsne_map(features: np.ndarray, seed: int = 0, iterations: int = 1000) -> np.ndarray:
    """2-D t-SNE coordinates of standardised features.

    Args:
        features: (records, dim).
        seed: t-SNE's random state.
        iterations: optimisation steps (at least 250; 1000 is scikit-learn's default).
    """
    from sklearn.manifold import TSNE

    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    perplexity = float(min(30.0, max(5.0, (len(x) - 1) / 4)))  # perplexity must stay below the number of points
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=max(250, int(iterations))).fit_transform(x)


# --- the command line --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esi.evaluate",
        description="Evaluate ECG encoders on PTB-XL, CPSC2018, CSN or any PhysioNet/CinC Challenge source "
                    "(evaluate_datasets): linear probes (1/10/100 % labels), the PTB-XL benchmark recipe "
                    "(supervised and fine-tuned), zero-shot with text prompts, and patient identification. Writes "
                    "results.csv/json, per_class.csv and figures/ into the run folder.",
        epilog="example: python -m esi.evaluate --config params/ptbxl_benchmark.yaml "
               "--set evaluate_ptbxl_root=/data/ptb-xl --set evaluate_protocols=[linear_probe]")
    parser.add_argument("--config", "-f", action="append", default=[],
                        help="params YAML file (repeatable; later files win); reads the evaluate_* keys and run_name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting with its params key, e.g. --set evaluate_probe_epochs=20 or "
                             "--set run_name=mine (values are YAML: [a, b], true, 0.1); repeatable")
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
