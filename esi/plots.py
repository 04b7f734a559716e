"""Every figure of ESI (the notebooks' and an evaluation run's), drawn from arrays and tables the caller already has.

Each `plot_*` function draws onto a new matplotlib figure and returns it; `save_figure` writes it as PNG (in a
notebook, `esi.notebook.show` saves and displays it). Nothing here reads a dataset or computes a result: the
callers (the notebooks, with helpers beside their subjects such as esi.data.corpus.statement_frequencies or
esi.beats.class_beats; esi.evaluate.run.make_figures) load, count, score and embed, then pass what is to be drawn.

    ECGs         plot_ecg_paper, plot_ecg_with_text (02), plot_caption_sample (03)
    01 CQA       plot_cqa_coverage, plot_agreement
    02 data      plot_statement_frequencies, plot_token_lengths, plot_store_overview, plot_average_beats
    03 training  plot_training_curves
    04 results   plot_results_summary, plot_per_class_auroc, plot_roc_curves, plot_auroc_vs_fraction,
                 plot_embedding_map (t-SNE), plot_cmc (identification)

Which evaluation figures a run draws, from its tables and saved predictions, is decided by
`esi.evaluate.run.make_figures`. In the evaluation figures pretrained encoders are drawn with solid lines and
filled markers, random-init baselines dashed.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from esi.data.leads import STANDARD_LEADS

# Standard ECG paper: 25 mm/s, 10 mm/mV; minor grid 1 mm (0.04 s, 0.1 mV), major grid 5 mm (0.2 s, 0.5 mV).
PAPER_SPEED_MM_S = 25.0
PAPER_GAIN_MM_MV = 10.0
_GRID_MAJOR = "#e8a0a0"
_GRID_MINOR = "#f6d5d5"
_TRACE = "#111111"
# Characters per title line that fit the width of an ECG-paper figure (10.4 s at 25 mm/s) at font size 10.
TITLE_WIDTH = 115
# The statuses a CQA run gives each statement (esi.rag.generation), in the order the coverage panel shows them.
CQA_STATUSES = ("described", "non_diagnostic", "uncovered", "rejected")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save `fig` as PNG (folders created) and return the path.

    Args:
        fig: a matplotlib figure.
        path: the PNG to write.
        dpi: resolution.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------------------------
# ECGs on paper


def _draw_paper_grid(ax, t_max: float, mv_min: float, mv_max: float) -> None:
    ax.set_xlim(0, t_max)
    ax.set_ylim(mv_min, mv_max)
    ax.set_xticks(np.arange(0, t_max + 1e-9, 0.2))
    ax.set_xticks(np.arange(0, t_max + 1e-9, 0.04), minor=True)
    ax.set_yticks(np.arange(np.ceil(mv_min * 2) / 2, mv_max + 1e-9, 0.5))
    ax.set_yticks(np.arange(np.ceil(mv_min * 10) / 10, mv_max + 1e-9, 0.1), minor=True)
    ax.grid(which="major", color=_GRID_MAJOR, linewidth=0.8)
    ax.grid(which="minor", color=_GRID_MINOR, linewidth=0.4)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_aspect(PAPER_GAIN_MM_MV / PAPER_SPEED_MM_S)   # 1 mV high = 10 mm, 1 s wide = 25 mm
    for spine in ax.spines.values():
        spine.set_visible(False)


def _calibration_pulse(ax, x0: float, y0: float) -> None:
    """The 1 mV x 200 ms calibration box drawn at the start of each row."""
    xs = [x0, x0 + 0.04, x0 + 0.04, x0 + 0.24, x0 + 0.24, x0 + 0.28]
    ys = [y0, y0, y0 + 1.0, y0 + 1.0, y0, y0]
    ax.plot(xs, ys, color=_TRACE, linewidth=1.0)


def plot_ecg_paper(signal: np.ndarray, fs: float, leads: Sequence[str] = STANDARD_LEADS,
                   title: str | None = None, rhythm_lead: str | None = "II", seconds: float = 10.0,
                   row_height_mv: float = 3.0, mm_per_inch: float = 25.4 / 0.9):
    """A 12-lead ECG in the clinical 3 x 4 layout (2.5 s per column) on standard ECG paper.

    25 mm/s, 10 mm/mV, 1 mm minor / 5 mm major grid, a 1 mV calibration pulse at the start of every row, and
    lead labels.

    Args:
        signal: (12, n) millivolts, rows in the order of `leads`.
        fs: sampling rate of `signal` (Hz).
        leads: the lead name of each row of `signal`.
        title: drawn above the paper (may hold several lines); None for none.
        rhythm_lead: drawn full length as a rhythm strip underneath; None to omit it.
        seconds: the duration shown (the first `seconds` of the signal).
        row_height_mv: the height of each row of the layout, in mV.
        mm_per_inch: paper millimetres per figure inch (the default prints slightly smaller than life size so
            that a 10 s ECG fits a notebook's width).
    """
    signal = np.asarray(signal, dtype=np.float32)
    n = int(min(signal.shape[1], round(seconds * fs)))
    col_s = seconds / 4
    layout = [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]]
    rows = 3 + (1 if rhythm_lead else 0)
    lead_pos = {name: i for i, name in enumerate(leads)}
    pulse_w = 0.4
    t_total = seconds + pulse_w
    height_mv = rows * row_height_mv
    width_in = t_total * PAPER_SPEED_MM_S / mm_per_inch
    height_in = height_mv * PAPER_GAIN_MM_MV / mm_per_inch
    fig, ax = plt.subplots(figsize=(width_in, height_in + (0.4 if title else 0)))
    _draw_paper_grid(ax, t_total, -height_mv, 0.0)
    for r in range(rows):
        baseline = -(r + 0.6) * row_height_mv
        _calibration_pulse(ax, 0.05, baseline)
        if r < 3:
            for c, name in enumerate(layout[r]):
                if name not in lead_pos:
                    continue
                start = int(round(c * col_s * fs))
                stop = min(n, int(round((c + 1) * col_s * fs)))
                seg = signal[lead_pos[name], start:stop]
                t = pulse_w + start / fs + np.arange(len(seg)) / fs
                ax.plot(t, baseline + seg, color=_TRACE, linewidth=0.7)
                ax.text(pulse_w + c * col_s + 0.05, baseline + 0.9, name, fontsize=9, fontweight="bold")
                if c > 0:   # the short separator mark between columns, as printed ECGs have
                    ax.plot([pulse_w + c * col_s] * 2, [baseline - 0.3, baseline + 0.3], color=_TRACE, linewidth=0.8)
        elif rhythm_lead in lead_pos:
            seg = signal[lead_pos[rhythm_lead], :n]
            ax.plot(pulse_w + np.arange(n) / fs, baseline + seg, color=_TRACE, linewidth=0.7)
            ax.text(pulse_w + 0.05, baseline + 0.9, rhythm_lead, fontsize=9, fontweight="bold")
    footer = f"{PAPER_SPEED_MM_S:g} mm/s   {PAPER_GAIN_MM_MV:g} mm/mV   fs {fs:g} Hz"
    ax.text(t_total - 0.05, -height_mv + 0.15, footer, fontsize=8, ha="right")
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def _shorten(text: str, chars: int) -> str:
    """`text` cut at the last whole word within `chars` characters, with " ..." when cut."""
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def plot_ecg_with_text(signal: np.ndarray, fs: float, leads: Sequence[str], record_id: str, text: str,
                       text_chars: int = 160):
    """An ECG on standard paper titled with its record, its sampling rate and the beginning of its text.

    Args:
        signal: (12, n) millivolts, rows in the order of `leads`.
        fs: sampling rate of `signal` (Hz), also shown in the title.
        leads: the lead name of each row of `signal`.
        record_id: the record, shown in the title.
        text: the text the ECG is paired with.
        text_chars: show at most this many characters of `text` (cut at a word).
    """
    title = f"record {record_id} ({fs:g} Hz)\n" + textwrap.fill(_shorten(text, text_chars), width=TITLE_WIDTH)
    return plot_ecg_paper(signal, fs, leads=leads, title=title)


def plot_caption_sample(signal: np.ndarray, fs: float, leads: Sequence[str], record_id: str, caption: str,
                        text: str, text_chars: int = 300):
    """One ECG on standard paper with the model's caption and the true text above it.

    Args:
        signal: (12, n) millivolts, rows in the order of `leads`.
        fs: sampling rate of `signal` (Hz).
        leads: the lead name of each row of `signal`.
        record_id: the record, shown in the title.
        caption: the caption the model generated for the ECG.
        text: the text the ECG was paired with.
        text_chars: show at most this many characters of `caption` and of `text` (cut at a word).
    """
    def labelled(label: str, body: str) -> str:
        return textwrap.fill(f"{label}: {_shorten(body, text_chars)}", width=TITLE_WIDTH, subsequent_indent="    ")

    title = f"record {record_id}\n{labelled('generated caption', caption)}\n{labelled('paired text', text)}"
    return plot_ecg_paper(signal, fs, leads=leads, title=title)


# ---------------------------------------------------------------------------------------------------------------
# 01 Cardio Query Assistant


def plot_cqa_coverage(result, hits):
    """Coverage of a generation run and retrieval hit@k: the two numbers that say how far the assistant goes.

    Left: the share of distinct statements, and of their occurrences in records, in each status. Right: hit@k
    overall and per source of the labelled retrieval set.

    Args:
        result: the `esi.rag.generation.GenerationResult` (its records carry each statement's status and count).
        hits: the `esi.rag.quality.HitRate` on the labelled retrieval set.
    """
    n_statements = {s: 0 for s in CQA_STATUSES}
    n_records = {s: 0 for s in CQA_STATUSES}
    for record in result.records:
        n_statements[record["status"]] += 1
        n_records[record["status"]] += int(record.get("count") or 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(CQA_STATUSES))
    total_s, total_r = max(1, sum(n_statements.values())), max(1, sum(n_records.values()))
    share_s = [100 * n_statements[s] / total_s for s in CQA_STATUSES]
    share_r = [100 * n_records[s] / total_r for s in CQA_STATUSES]
    left.bar(x - 0.2, share_s, 0.4, label=f"distinct statements (n={total_s})", color="#4C72B0")
    left.bar(x + 0.2, share_r, 0.4, label=f"statement occurrences in records (n={total_r})", color="#DD8452")
    for xi, (a, b) in enumerate(zip(share_s, share_r)):
        left.text(xi - 0.2, a + 1, f"{a:.0f}", ha="center", fontsize=8)
        left.text(xi + 0.2, b + 1, f"{b:.0f}", ha="center", fontsize=8)
    left.set_xticks(x, [s.replace("_", "-") for s in CQA_STATUSES])
    left.set_ylabel("share (%)")
    left.set_ylim(0, 110)
    left.set_title("What the assistant did with each statement")
    left.legend(fontsize=8, loc="upper right")

    sources = list(hits.by_source)
    ks = sorted(hits.hit_at)
    width = 0.8 / max(1, len(ks))
    groups = ["all"] + sources
    for j, k in enumerate(ks):
        values = [hits.hit_at[k]] + [hits.by_source[s][k] for s in sources]
        pos = np.arange(len(groups)) + (j - (len(ks) - 1) / 2) * width
        right.bar(pos, values, width, label=f"hit@{k}")
        for p, v in zip(pos, values):
            right.text(p, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    right.set_xticks(np.arange(len(groups)), groups)
    right.set_xlabel("statements of the labelled retrieval set, by source")
    right.set_ylabel("share with the expected entry in the top k")
    right.set_ylim(0, 1.12)
    right.set_title(f"Retrieval quality ({hits.n} labelled statements)")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 02 data exploration


def plot_agreement(cosines: Sequence[float], title: str = "Agreement with the ESI paper's descriptions"):
    """Histogram of the cosine similarities between our descriptions and a reference dictionary's.

    Args:
        cosines: one cosine similarity per statement both dictionaries describe (`esi.rag.quality.agreement`).
        title: the figure title.
    """
    if len(cosines) == 0:
        raise ValueError("no cosine to plot: the two dictionaries share no described statement")
    values = np.asarray(cosines, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(values, bins=np.linspace(min(0.0, values.min()), 1.0, 41), color="#4C72B0", edgecolor="white")
    ax.axvline(float(np.median(values)), color="#C44E52", linestyle="--",
               label=f"median {np.median(values):.2f} (mean {values.mean():.2f}, n={len(values)})")
    ax.set_xlabel("cosine similarity of description embeddings (MiniLM)")
    ax.set_ylabel("statements")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_statement_frequencies(counts: pd.Series, top: int = 20, title: str = "Most frequent statements"):
    """Horizontal bars of the `top` most frequent statements.

    Args:
        counts: records per statement, most frequent first (e.g. `esi.data.corpus.statement_frequencies`).
        top: how many statements to show.
        title: the figure title; "(top n of N)" is appended.
    """
    shown = counts.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(shown) + 1.2))
    ax.barh(range(len(shown)), shown.to_numpy(), color="#4C72B0")
    ax.set_yticks(range(len(shown)), [s if len(s) <= 60 else s[:57] + "..." for s in shown.index], fontsize=8)
    ax.set_xlabel("records with the statement")
    ax.set_title(f"{title} (top {len(shown)} of {len(counts)})")
    fig.tight_layout()
    return fig


def plot_token_lengths(lengths: np.ndarray, max_length: int, text_encoder: str = ""):
    """Histogram of tokens per text with the pretraining cut-off (train_max_text_length) and the share cut.

    Args:
        lengths: tokens per text (e.g. `esi.data.text.token_lengths`).
        max_length: the cut-off, drawn as a dashed line.
        text_encoder: the tokenizer's name, for the axis label ("" to leave it out).
    """
    lengths = np.asarray(lengths)
    cut = float(np.mean(lengths > max_length)) if len(lengths) else 0.0
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.hist(lengths, bins=40, color="#4C72B0", edgecolor="white")
    ax.axvline(max_length, color="#C44E52", linestyle="--",
               label=f"train_max_text_length = {max_length}: {cut:.0%} of texts are cut")
    ax.set_xlabel(f"tokens per text{f' ({text_encoder} tokenizer)' if text_encoder else ''}")
    ax.set_ylabel("texts")
    ax.set_title(f"Text lengths (n={len(lengths)}, median {np.median(lengths):.0f} tokens)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_store_overview(index: pd.DataFrame, masks: np.ndarray, leads: Sequence[str], fs: float):
    """Source sampling rates, lead availability and quality flags of a store's records.

    Args:
        index: the store's index table (`ECGStore.index`: column fs_source and the quality_<flag> columns).
        masks: bool (records, leads), True where the source file held the lead (`ECGStore.masks`).
        leads: the lead name of each column of `masks`.
        fs: the rate the store holds the records at (Hz), shown in the title.
    """
    masks = np.asarray(masks, dtype=bool)
    fig, (ax_fs, ax_leads, ax_flags) = plt.subplots(1, 3, figsize=(13, 3.8),
                                                     gridspec_kw={"width_ratios": [1, 2, 2]})
    rates = index["fs_source"].value_counts().sort_index()
    ax_fs.bar([f"{rate:g}" for rate in rates.index], rates.to_numpy(), color="#4C72B0")
    ax_fs.set_xlabel("source sampling rate (Hz)")
    ax_fs.set_ylabel("records")
    ax_fs.set_title(f"Sampling rates (stored at {fs:g} Hz)")

    present = 100 * masks.mean(axis=0) if len(masks) else np.zeros(len(leads))
    ax_leads.bar(list(leads), present, color="#55A868")
    ax_leads.set_ylim(0, 105)
    ax_leads.set_ylabel("records with the lead (%)")
    ax_leads.set_xlabel("lead")
    ax_leads.set_title("Lead availability")

    flags = [c for c in index.columns if c.startswith("quality_")]
    shares = [100 * index[c].astype(bool).mean() for c in flags]
    names = [c.removeprefix("quality_").replace("_", " ") for c in flags]
    ax_flags.barh(names, shares, color="#C44E52")
    for y, v in enumerate(shares):
        ax_flags.text(v + 1, y, f"{v:.1f}%", va="center", fontsize=8)
    ax_flags.set_xlim(0, 115)
    ax_flags.set_xlabel("records flagged (%)")
    ax_flags.set_title("Quality flags (set at conversion)")
    fig.tight_layout()
    return fig


def plot_average_beats(beats: Sequence, leads: Sequence[str], all_leads: Sequence[str] | None = None):
    """One panel per lead: each class's average beat (median line, 25-75 % band between records).

    Args:
        beats: `esi.beats.ClassBeats` list (all with the same leads and window), e.g. `esi.beats.class_beats`.
        leads: the leads to show, e.g. ["II", "V1", "V5"].
        all_leads: the lead order of the beats' rows (default: esi.data.leads.STANDARD_LEADS).

    Raises:
        ValueError: no beats, or a lead of `leads` that is not in `all_leads`.
    """
    if not beats:
        raise ValueError("no class has a complete beat to show")
    order = list(all_leads or STANDARD_LEADS)
    missing = [lead for lead in leads if lead not in order]
    if missing:
        raise ValueError(f"data_beat_leads: unknown lead(s) {', '.join(missing)}; leads are {', '.join(order)}")
    fig, axes = plt.subplots(1, len(leads), figsize=(4.2 * len(leads), 3.8), sharey=True, squeeze=False)
    for ax, lead in zip(axes[0], leads):
        j = order.index(lead)
        for cb in beats:
            t_ms = cb.t * 1000
            line, = ax.plot(t_ms, cb.beat[j], linewidth=1.4,
                            label=f"{cb.name} (n={cb.n_records}, {cb.rate_bpm:.0f} bpm)")
            ax.fill_between(t_ms, cb.low[j], cb.high[j], color=line.get_color(), alpha=0.12, linewidth=0)
        ax.axvline(0, color="#888", linewidth=0.6, linestyle=":")
        ax.axhline(0, color="#888", linewidth=0.6)
        ax.set_title(f"lead {lead}")
        ax.set_xlabel("time from QRS (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("amplitude (mV)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Average beat per class (median over records; band: 25-75 % between records)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 03 pretraining


def plot_training_curves(metrics: pd.DataFrame | str | os.PathLike,
                         keys: Sequence[str] = ("loss", "contrastive_loss", "caption_loss"),
                         recall_keys: Sequence[str] = ("recall@1", "recall@5", "recall@10"),
                         chance: Mapping[str, float] | None = None):
    """Loss curves (train per step, validation per epoch) and validation ECG -> text recall per epoch.

    Args:
        metrics: a run's metrics.csv as a DataFrame (columns split, step, epoch, the keys), or its path.
        keys: the loss columns to draw.
        recall_keys: the recall columns to draw.
        chance: recall key -> its chance level, drawn as a dotted line. None: k / retrieval_pool from the table's
            last validation pool (no lines when it has no retrieval_pool); {} for no lines.
    """
    table = metrics if isinstance(metrics, pd.DataFrame) else pd.read_csv(metrics)
    if chance is None:
        chance = {}
        if "retrieval_pool" in table and table["retrieval_pool"].notna().any():
            pool = float(table["retrieval_pool"].dropna().iloc[-1])
            chance = {f"recall@{k}": min(1.0, k / pool) for k in (1, 5, 10)}
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 3.8))
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    for key in keys:
        if key in train and train[key].notna().any():
            ax_loss.plot(train["step"], train[key], label=f"train {key}", linewidth=1)
        if key in val and val[key].notna().any():
            ax_loss.plot(val["step"], val[key], "o--", label=f"val {key}", markersize=4)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss (nats)")
    ax_loss.set_title("Pretraining losses")
    for key in recall_keys:
        if key in val and val[key].notna().any():
            line, = ax_rec.plot(val["epoch"], val[key], "o-", label=f"ECG→text {key}")
            if key in chance:
                ax_rec.axhline(chance[key], color=line.get_color(), linestyle=":", linewidth=1,
                               label=f"chance {key}")
    ax_rec.set_xlabel("epoch")
    ax_rec.set_ylabel("validation recall")
    ax_rec.set_ylim(0, 1)
    ax_rec.set_title("Validation retrieval")
    with warnings.catch_warnings():
        # Drawn live before the first validation: the recall panel is still empty, which is no news.
        warnings.filterwarnings("ignore", message="No artists with labels found")
        ax_loss.legend(fontsize=8)
        ax_rec.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 04 evaluation


def _result_label(row, with_protocol: bool = True) -> str:
    """A results row's bar label: protocol (unless the figure has one), task, label fraction, and the metric when
    it is not macro AUROC."""
    parts = [row["protocol"].replace("_", " ")] if with_protocol else []
    parts.append(row["task"])
    if pd.notna(row.get("label_fraction")):
        parts.append(f"{row['label_fraction']:.0%} labels")
    if row["metric"] != "macro_auroc":
        parts.append(row["metric"].replace("_", " "))
    return ", ".join(parts)


def plot_results_summary(table: pd.DataFrame):
    """The results of an evaluation run as horizontal bars with bootstrap intervals, one colour per encoder; the
    p-value against the random-init twin in a column of its own right of the bars (never over a whisker).

    At notebook width one figure per protocol reads best (notebook 04 draws `table` grouped by protocol); a
    figure of one protocol names it in the title instead of on every bar.

    Args:
        table: the tidy results (esi.evaluate's results.csv: protocol, task, label_fraction, encoder, metric,
            value, ci_low, ci_high, and where present ci_level and p_value).

    Raises:
        ValueError: the table is empty.
    """
    if table.empty:
        raise ValueError("no results to plot")
    # The macros over the supported classes only stay in the table: one bar per result is already a tall figure.
    table = table[~table["metric"].astype(str).str.endswith("_supported")]
    protocols = list(dict.fromkeys(table["protocol"]))
    table = table.assign(label=[_result_label(r, with_protocol=len(protocols) > 1) for _, r in table.iterrows()])
    labels = list(dict.fromkeys(table["label"]))
    encoders = list(dict.fromkeys(table["encoder"]))
    colour = {encoder: f"C{j}" for j, encoder in enumerate(encoders)}
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(table) + 0.25 * len(labels) + 1.6))
    # p-values sit right of the axes, at the height of their bar
    beside = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
    has_p = False
    for i, label in enumerate(labels):
        rows = table[table["label"] == label]
        height = 0.8 / len(rows)
        for j, (_, r) in enumerate(rows.iterrows()):     # centred on the row, whatever encoders it has
            y = i + (j - (len(rows) - 1) / 2) * height
            ax.barh(y, r["value"], height * 0.9, color=colour[r["encoder"]], label=r["encoder"])
            if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color="black", linewidth=1)
            p = r.get("p_value", np.nan)
            if pd.notna(p):
                ax.text(1.02, y, f"{p:.2g}", transform=beside, va="center", fontsize=7, color=colour[r["encoder"]])
                has_p = True
    if has_p:
        ax.text(1.02, 1.0, "p vs\nrandom init", transform=ax.transAxes, va="bottom", fontsize=7)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    columns = min(len(unique), 3)     # the legend sits between the title and the bars, at most 3 to a row
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0),
              ncol=columns, frameon=False)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    levels = table["ci_level"].dropna().unique() if "ci_level" in table else []
    interval = f"{levels[0]:.0%} CI" if len(levels) == 1 else "bootstrap CI"
    if protocols == ["identification"]:
        metric = "top-k accuracy"
    elif "identification" in protocols:
        metric = "macro AUROC / AUPRC, or top-k accuracy (identification)"
    else:
        metric = "macro AUROC / AUPRC"
    ax.set_xlabel(f"{metric}; line: {interval}", fontsize=8)
    datasets = list(dict.fromkeys(table["dataset"])) if "dataset" in table else ["ptbxl"]
    names = {"ptbxl": "PTB-XL", "cpsc2018": "CPSC2018", "csn": "CSN"}
    where = ("PTB-XL (test fold 10)" if datasets == ["ptbxl"] else
             f"{', '.join(names.get(d, d) for d in datasets)} (each one's test split)")
    what = protocols[0].replace("_", " ").capitalize() if len(protocols) == 1 else "Results"
    ax.set_title(f"{what} on {where}", fontsize=10,
                 pad=8 + 15 * -(-len(unique) // columns))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# The chance lines and the "undefined" notes of the evaluation figures.
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
    ax.set_xlabel(f"test AUROC ({split_names(per_class, task)[1]}); n = positive test records")
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


def split_names(table: pd.DataFrame, task: str) -> tuple[str, str]:
    """How figures name the training and the scored split of `task`'s rows: PTB-XL's folds, or a dataset's splits."""
    ptbxl = "dataset" not in table or set(table.loc[table["task"] == task, "dataset"]) <= {"ptbxl"}
    return ("folds 1-8", "fold 10") if ptbxl else ("the training split", "the test split")


def plot_auroc_vs_fraction(table: pd.DataFrame, task: str, protocol: str = "linear_probe"):
    """Macro AUROC against the fraction of training labels, with bootstrap-interval error bars, per encoder.

    A paper's published number for the task (`esi.evaluate.published`) is drawn as a grey marker at the label
    fractions where one of our rows is comparable with it (`comparability`: same split, input length, labels,
    model selection and training records); nowhere else.

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
    from esi.evaluate.published import comparability, linear_probe_curve  # (esi.evaluate imports torch: only here)

    scored = table[(table["task"] == task) & (table["protocol"] == protocol) & (table["metric"] == "macro_auroc")]
    for paper, marker in (("MERL", "x"), ("HeartLang", "+")):
        published = linear_probe_curve(paper, task) or {}
        shown = sorted({f for f in published for row in scored.to_dict("records")
                        if np.isclose(row["label_fraction"], f) and comparability(row, paper)[0]})
        if shown:
            how = " (best epoch on test)" if paper == "MERL" else ""
            ax.plot(shown, [published[f] for f in shown], marker, color=CHANCE_COLOR, markersize=8, linestyle="",
                    label=f"{paper}, published{how}")
    ax.axhline(0.5, color=CHANCE_COLOR, linestyle=":", linewidth=1, label="chance (0.5)")
    low = min(0.45, float(np.nanmin(rows["ci_low"])) - 0.02) if len(rows) else 0.45
    ax.set_ylim(max(0.0, low), 1.0)
    train, test = split_names(table, task)
    ax.set_xlabel(f"labelled training records used (share of {train}, log scale)")
    interval = f"{levels[0]:.0%} bootstrap CI" if len(levels) == 1 else "bootstrap CI"
    ax.set_ylabel(f"macro AUROC on {test} ({interval})")
    subsets = {"merl": "MERL's subset draw", "every_class": "every class kept"}
    shown = ", ".join(subsets.get(d, d) for d in sorted(draws))
    ax.set_title(f"Linear probe: {task}" + (f" ({shown})" if shown else ""), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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


# --- encoders side by side ---------------------------------------------------------------------------------------

DATASET_NAMES = {"ptbxl": "PTB-XL", "cpsc2018": "CPSC2018", "csn": "CSN"}


def twin_of_rows(table: pd.DataFrame) -> dict[str, str]:
    """pretrained encoder -> the random-init twin its p-value was computed against (the `baseline` column)."""
    if "baseline" not in table:
        return {}
    paired = table[table["baseline"].fillna("").astype(str) != ""]
    return dict(zip(paired["encoder"], paired["baseline"]))


def plot_encoder_comparison(table: pd.DataFrame, protocol: str = "linear_probe", metric: str = "macro_auroc",
                            label_fraction: float | None = 1.0, twins: Mapping[str, str] | None = None):
    """Encoders x tasks: each pretrained encoder's macro AUROC with its interval, its random-init twin just below
    it (open bar), the paired test's p-value right of each panel, and the rows of an encoder pretrained on the test
    dataset's records hatched (`pretraining_overlap`).

    Args:
        table: the tidy results (esi.evaluate's results.csv; several runs concatenated is fine). Rows of several
            seeds are averaged (value, interval and p-value).
        protocol: which protocol's rows ("linear_probe", "benchmark_finetune", ...).
        metric: which metric (bars start at 0.5, chance for AUROC).
        label_fraction: which label fraction (None: rows without one).
        twins: pretrained label -> twin label; default: the rows' `baseline` column.

    Raises:
        ValueError: no rows of that protocol, metric and fraction.
    """
    rows = table[(table["protocol"] == protocol) & (table["metric"] == metric)]
    if label_fraction is None:
        rows = rows[rows["label_fraction"].isna()]
    else:
        rows = rows[np.isclose(rows["label_fraction"].astype(float), label_fraction)]
    if rows.empty:
        raise ValueError(f"no {metric} rows of {protocol} at label fraction {label_fraction}")
    twins = dict(twins) if twins is not None else twin_of_rows(rows)
    rows = rows.assign(dataset=rows["dataset"] if "dataset" in rows else "ptbxl",
                       overlap=(rows["pretraining_overlap"].fillna("") if "pretraining_overlap" in rows else ""),
                       p=rows["p_value"] if "p_value" in rows else np.nan)
    cells = (rows.groupby(["dataset", "task", "encoder"], sort=False)
             .agg(value=("value", "mean"), low=("ci_low", "mean"), high=("ci_high", "mean"), p=("p", "mean"),
                  overlap=("overlap", "first")).reset_index())
    # Rows of the figure: each pretrained encoder, then its twin; encoders without a partner at the end.
    encoders = list(dict.fromkeys(cells["encoder"]))
    order = []
    for encoder in encoders:
        if encoder in twins.values() and any(twins.get(e) == encoder for e in encoders):
            continue
        order.append(encoder)
        if twins.get(encoder) in encoders:
            order.append(twins[encoder])
    is_twin = {e: e in twins.values() and any(twins.get(o) == e for o in encoders) for e in order}
    colours, k = {}, 0
    for encoder in order:
        if not is_twin[encoder]:
            colours[encoder] = f"C{k % 10}"
            k += 1
    for pretrained, twin in twins.items():
        if twin in order and pretrained in colours:
            colours[twin] = colours[pretrained]
    y, positions = 0.0, {}
    for encoder in order:                      # a twin sits close under its encoder, a new encoder after a gap
        y += 0.75 if is_twin[encoder] else 1.15
        positions[encoder] = y
    panels = list(dict.fromkeys(zip(cells["dataset"], cells["task"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 3.3 * len(panels), 1.6 + 0.42 * len(order)),
                             sharey=True, squeeze=False)
    chance = 0.5 if "auroc" in metric else 0.0
    for ax, (dataset, task) in zip(axes[0], panels):
        for r in cells[(cells["dataset"] == dataset) & (cells["task"] == task)].itertuples():
            at, colour, twin = positions[r.encoder], colours[r.encoder], is_twin[r.encoder]
            # Hatching is drawn in the edge colour: an overlap bar is filled lighter so that it shows.
            face = "white" if twin else matplotlib.colors.to_rgba(colour, 0.35 if r.overlap else 1.0)
            ax.barh(at, r.value - chance, left=chance, height=0.6, color=face, edgecolor=colour,
                    hatch="///" if r.overlap else None, linewidth=1.2)
            if np.isfinite(r.low) and np.isfinite(r.high):
                ax.plot([r.low, r.high], [at, at], color="black", linewidth=1)
            if np.isfinite(r.p):
                ax.text(1.015, at, f"p={r.p:.2g}", va="center", fontsize=7,
                        fontweight="bold" if r.p < 0.05 else "normal")
        ax.set_xlim(chance, 1.16)
        ax.set_xticks([t for t in np.arange(chance, 1.001, 0.1)])
        ax.axvline(1.0, color=CHANCE_COLOR, linewidth=0.6)
        ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: {task}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    short = {e: ("random-init twin" if is_twin[e] else textwrap.shorten(e, 28, placeholder="...")) for e in order}
    axes[0][0].set_yticks([positions[e] for e in order], [short[e] for e in order], fontsize=8)
    for label, encoder in zip(axes[0][0].get_yticklabels(), order):
        label.set_color("#555555" if is_twin[encoder] else "black")
    axes[0][0].invert_yaxis()
    levels = rows["ci_level"].dropna().unique() if "ci_level" in rows else []
    interval = f"{levels[0]:.0%} interval" if len(levels) == 1 else "bootstrap interval"
    metric_name = metric.replace("_", " ").replace("auroc", "AUROC").replace("auprc", "AUPRC")
    fig.supxlabel(f"{metric_name} (bars from chance; line: {interval}; p: paired test against the "
                  "random-init twin, bold < 0.05)", fontsize=8)
    handles = [matplotlib.patches.Patch(facecolor="grey", edgecolor="grey", label="pretrained"),
               matplotlib.patches.Patch(facecolor="white", edgecolor="grey", label="random-init twin"),
               matplotlib.patches.Patch(facecolor="white", edgecolor="grey", hatch="///",
                                        label="pretrained on the test dataset's records")]
    fraction = "" if label_fraction is None else f", {label_fraction:.0%} of the training labels"
    fig.suptitle(f"Encoders compared: {protocol.replace('_', ' ')}{fraction}", fontsize=10)
    height = fig.get_figheight()       # inches: the title and the legend take fixed room above the panels
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / height), ncol=3, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / height))
    return fig
