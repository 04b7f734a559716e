"""Figures of an evaluation run (PNG under <run_dir>/figures/), drawn from the tables and saved predictions.

    plot_per_class_auroc(per_class, "superdiagnostic", "linear_probe", 1.0)   # bars per class, every encoder
    plot_roc_curves(y_true, y_score, classes, names, title)                  # one model, one task
    plot_auroc_vs_fraction(table, "superdiagnostic")                          # linear probe, CI error bars
    plot_embedding_map(coords_by_encoder, labels)                             # t-SNE, coloured by superclass
    plot_cmc({label: cmc}, n_gallery)                                         # identification

Each function returns a matplotlib figure (saved with esi.plots.save_figure); `make_figures` draws all of them
for a finished run. Pretrained encoders are drawn with solid lines/filled markers, random-init baselines dashed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from esi.plots import plt, save_figure

CHANCE_COLOR = "#888888"


def _is_baseline(label: str) -> bool:
    return label.startswith("random init")


def _encoder_styles(labels: Sequence[str]) -> dict[str, dict]:
    """A colour per encoder; random-init baselines dashed with open markers."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {}
    for i, label in enumerate(labels):
        baseline = _is_baseline(label)
        styles[label] = {"color": colors[i % len(colors)], "linestyle": "--" if baseline else "-",
                         "marker": "o", "markerfacecolor": "white" if baseline else colors[i % len(colors)]}
    return styles


def plot_per_class_auroc(per_class: pd.DataFrame, task: str, protocol: str, label_fraction: float | None = None):
    """Horizontal bars of each class's test AUROC, one bar per encoder, classes sorted by test positives.

    Args:
        per_class: the per-class table (PER_CLASS_COLUMNS).
        task: which task.
        protocol: which protocol ("linear_probe", "zero_shot", ...).
        label_fraction: which label fraction (linear probe); None: any.
    """
    rows = per_class[(per_class["task"] == task) & (per_class["protocol"] == protocol)]
    if label_fraction is not None and rows["label_fraction"].notna().any():
        rows = rows[np.isclose(rows["label_fraction"], label_fraction)]
    # Several seeds: their mean per class.
    rows = (rows.groupby(["encoder", "class", "class_name"], sort=False)
            .agg(auroc=("auroc", "mean"), n_positive_test=("n_positive_test", "first")).reset_index())
    classes = (rows.drop_duplicates("class").sort_values("n_positive_test", ascending=True))
    encoders = list(dict.fromkeys(rows["encoder"]))
    styles = _encoder_styles(encoders)
    height = 0.8 / max(len(encoders), 1)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.45 * len(classes) * max(1, len(encoders) / 2)))
    y = np.arange(len(classes))
    for k, encoder in enumerate(encoders):
        values = rows[rows["encoder"] == encoder].set_index("class")["auroc"].reindex(classes["class"])
        # The first encoder's bar on top of each group.
        ax.barh(y + ((len(encoders) - 1) / 2 - k) * height, values.fillna(0).to_numpy(), height=height,
                color=styles[encoder]["color"], alpha=0.55 if _is_baseline(encoder) else 0.9,
                hatch="//" if _is_baseline(encoder) else None, label=encoder, edgecolor="white")
    unscored = rows.groupby("class", sort=False)["auroc"].apply(lambda a: a.isna().all())
    for j, c in enumerate(classes["class"]):
        if unscored.get(c, False):
            ax.text(0.01, j, "AUROC undefined: no positive (or no negative) test record", fontsize=7,
                    va="center", color=CHANCE_COLOR)
    ax.axvline(0.5, color=CHANCE_COLOR, linestyle=":", linewidth=1, label="chance (0.5)")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{c} – {n} (n={p})" if n != c else f"{c} (n={p})"
                        for c, n, p in zip(classes["class"], classes["class_name"], classes["n_positive_test"])],
                       fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test AUROC (fold 10); n = positive test records")
    fraction = "" if label_fraction is None else f", {label_fraction:.0%} labels"
    ax.set_title(f"Per-class AUROC: {task}, {protocol.replace('_', ' ')}{fraction}", fontsize=10)
    # Below the axes, so that it never hides a bar.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14 - 0.3 / len(classes)), ncol=3,
              frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_roc_curves(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str],
                    names: Mapping[str, str] | None = None, title: str = "ROC curves", max_classes: int = 12):
    """ROC curve of each class of one model on one task (classes without both labels in y_true are skipped).

    Args:
        y_true: (records, classes) multi-hot labels.
        y_score: (records, classes) scores.
        classes: class labels.
        names: label -> readable name for the legend.
        title: the figure title.
        max_classes: draw at most this many classes (the most frequent).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    names = names or {}
    positives = y_true.sum(0)
    usable = [j for j in np.argsort(-positives) if 0 < positives[j] < len(y_true)][:max_classes]
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    for j in usable:
        fpr, tpr, _ = roc_curve(y_true[:, j], y_score[:, j])
        auc = roc_auc_score(y_true[:, j], y_score[:, j])
        label = classes[j] if names.get(classes[j], classes[j]) == classes[j] else f"{classes[j]} ({names[classes[j]]})"
        ax.plot(fpr, tpr, linewidth=1.4, label=f"{label}: AUC {auc:.2f}, n={int(positives[j])}")
    ax.plot([0, 1], [0, 1], color=CHANCE_COLOR, linestyle=":", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# MERL (ICML 2024, ResNet18) linear probe on PTB-XL, macro AUROC at 1 %, 10 % and 100 % of the training labels, as
# published. MERL kept each run's best epoch on the test fold, so these are optimistic; they are drawn beside ours
# only when our subsets are MERL's own draw.
MERL_PUBLISHED = {
    "superdiagnostic": {0.01: 0.824, 0.1: 0.863, 1.0: 0.887},
    "subdiagnostic": {0.01: 0.649, 0.1: 0.806, 1.0: 0.847},
    "form": {0.01: 0.583, 0.1: 0.724, 1.0: 0.797},
    "rhythm": {0.01: 0.533, 0.1: 0.829, 1.0: 0.883},
}


def plot_auroc_vs_fraction(table: pd.DataFrame, task: str, protocol: str = "linear_probe"):
    """Macro AUROC against the fraction of training labels, with bootstrap-interval error bars, per encoder.

    Where the subsets are MERL's draw (`subset_draw` "merl"), MERL's published numbers for the task are drawn as
    grey crosses beside ours.

    Args:
        table: the tidy results table.
        task: which task.
        protocol: the protocol with label fractions (linear_probe).
    """
    rows = table[(table["task"] == task) & (table["protocol"] == protocol) & (table["metric"] == "macro_auroc")]
    draws = set(rows["subset_draw"].dropna()) - {"all", ""} if "subset_draw" in rows else set()
    levels = rows["ci_level"].dropna().unique() if "ci_level" in rows else []
    rows = (rows.groupby(["encoder", "label_fraction"], sort=False)
            .agg(value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean")).reset_index())
    encoders = list(dict.fromkeys(rows["encoder"]))
    styles = _encoder_styles(encoders)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    fractions = sorted(rows["label_fraction"].unique())
    for k, encoder in enumerate(encoders):
        r = rows[rows["encoder"] == encoder].sort_values("label_fraction")
        # Shift each encoder a little sideways (in log space) so that overlapping error bars stay readable.
        x = r["label_fraction"].to_numpy() * (1.06 ** (k - (len(encoders) - 1) / 2))
        err = np.vstack([r["value"] - r["ci_low"], r["ci_high"] - r["value"]]).clip(min=0)
        ax.errorbar(x, r["value"], yerr=err, capsize=3, label=encoder, **styles[encoder])
    ax.set_xscale("log")
    ax.set_xticks(fractions)
    ax.set_xticklabels([f"{f:.0%}" if f >= 0.01 else f"{f:.1%}" for f in fractions])
    ax.minorticks_off()
    if draws == {"merl"} and task in MERL_PUBLISHED:
        published = MERL_PUBLISHED[task]
        ax.plot(list(published), list(published.values()), "x", color=CHANCE_COLOR, markersize=8,
                label="MERL, published (best epoch on test)")
    ax.axhline(0.5, color=CHANCE_COLOR, linestyle=":", linewidth=1, label="chance (0.5)")
    low = min(0.45, float(np.nanmin(rows["ci_low"])) - 0.02) if len(rows) else 0.45
    ax.set_ylim(max(0.0, low), 1.0)
    ax.set_xlabel("labelled training records used (share of folds 1-8, log scale)")
    interval = f"{levels[0]:.0%} bootstrap CI" if len(levels) == 1 else "bootstrap CI"
    ax.set_ylabel(f"macro AUROC on fold 10 ({interval})")
    subsets = {"merl": "MERL's subset draw", "every_class": "every class kept"}
    shown = ", ".join(subsets.get(d, d) for d in sorted(draws))
    ax.set_title(f"Linear probe: {task}" + (f" ({shown})" if shown else ""), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def superclass_labels(task) -> np.ndarray:
    """One superclass per record of `task`, a superdiagnostic `PTBXLTask` ("multiple" for several)."""
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


def plot_embedding_map(coords: Mapping[str, np.ndarray], labels: np.ndarray, title: str = ""):
    """Side-by-side 2-D maps (one per encoder) of the same records, coloured by `labels`.

    Args:
        coords: encoder label -> (records, 2) coordinates (e.g. from `tsne_map`).
        labels: (records,) the class of each record (e.g. `superclass_labels`).
        title: the figure title.
    """
    order = [c for c in ("NORM", "MI", "STTC", "CD", "HYP") if c in set(labels)]
    order += sorted(set(labels) - set(order) - {"multiple"}) + (["multiple"] if "multiple" in set(labels) else [])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(coords), figsize=(5.2 * len(coords), 4.9), squeeze=False)
    for ax, (encoder, xy) in zip(axes[0], coords.items()):
        for k, label in enumerate(order):
            mask = labels == label
            color = "#bbbbbb" if label == "multiple" else colors[k % len(colors)]
            ax.scatter(xy[mask, 0], xy[mask, 1], s=9, color=color, alpha=0.8,
                       label=f"{label} ({int(mask.sum())})", linewidths=0)
        ax.set_title(encoder, fontsize=10)
        ax.set_xlabel("t-SNE 1 (arbitrary units)")
        ax.set_ylabel("t-SNE 2 (arbitrary units)")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(title="superclass (records)", fontsize=8, title_fontsize=8, loc="center left",
                       bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_cmc(curves: Mapping[str, np.ndarray], n_gallery: int, n_probes: int | None = None,
             title: str = "Patient identification (CMC)"):
    """Cumulative match characteristic: identification accuracy against rank, one curve per encoder.

    Args:
        curves: encoder label -> accuracy at ranks 1..R.
        n_gallery: gallery size (the chance curve is rank / n_gallery; ranks beyond it are not drawn).
        n_probes: number of probe records (shown in the title).
        title: the figure title.
    """
    styles = _encoder_styles(list(curves))
    max_rank = min(max(len(c) for c in curves.values()), n_gallery)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, cmc in curves.items():
        cmc = cmc[:max_rank]
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, cmc, label=f"{label} (top-1 {cmc[0]:.2f}, top-5 {cmc[min(4, len(cmc) - 1)]:.2f})",
                markersize=4, **styles[label])
    if n_probes is not None:
        title = f"{title}: {n_probes} probes"
    ranks = np.arange(1, max_rank + 1)
    ax.plot(ranks, np.minimum(ranks / n_gallery, 1.0), color=CHANCE_COLOR, linestyle=":", label="chance")
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ranks if max_rank <= 20 else np.linspace(1, max_rank, 10, dtype=int))
    ax.set_xlabel(f"rank (gallery of {n_gallery} patients)")
    ax.set_ylabel("share of probes identified within rank")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- a whole run --------------------------------------------------------------------------------------------


def _load_predictions(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


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
        workspace: the run's `Workspace` (cached features for the embedding map).
        tsne_max_points: t-SNE on at most this many records (a seeded random subset).
        tsne_iterations: t-SNE optimisation steps.
        seed: seed of that subset and of t-SNE.
    """
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
        chosen = [f for f in files if bool(_load_predictions(f).get("pretrained", True))] or files
        if not chosen:
            continue
        pred = max((_load_predictions(f) for f in chosen), key=lambda p: float(p.get("label_fraction", 1) or 1))
        names = dict(zip(per_class["class"], per_class["class_name"]))
        title = f"ROC curves: {task}, {protocol.replace('_', ' ')}, {pred['encoder']} (fold 10)"
        save(plot_roc_curves(pred["y_true"], pred["y_score"], [str(c) for c in pred["classes"]], names, title),
             f"roc_{protocol}_{task}.png")
        break

    probe = table[(table["protocol"] == "linear_probe") & (table["task"] == task)]
    if len(probe):
        save(plot_auroc_vs_fraction(table, task), f"auroc_vs_label_fraction_{task}.png")

    if workspace is not None and encoders:
        chosen = [e for e in encoders if e.pretrained][:1] + [e for e in encoders if not e.pretrained][:1]
        fig = _embedding_figure(workspace, chosen, tsne_max_points, tsne_iterations, seed)
        if fig is not None:
            save(fig, "tsne_superclass.png")

    cmc_files = sorted((run_dir / "evaluate" / "predictions" / "identification").glob("*.npz"))
    if cmc_files:
        curves, n_gallery, n_probes = {}, 1, None
        for f in cmc_files:
            p = _load_predictions(f)
            curves[str(p["encoder"])] = p["cmc"]
            n_gallery, n_probes = int(p["n_gallery"]), len(p["ranks"])
        save(plot_cmc(curves, n_gallery, n_probes), "identification_cmc.png")
    return written


def _embedding_figure(workspace, encoders, max_points: int, iterations: int, seed: int):
    """t-SNE maps of the superdiagnostic records' features, for the given encoders (None if there are none)."""
    task = workspace.task("superdiagnostic")
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
    return plot_embedding_map(coords, labels, f"PTB-XL records by superclass ({len(ids)} records), frozen features")
