"""Figures: ECGs on standard ECG paper, training curves, and evaluation plots.

Every function draws onto a new matplotlib figure and returns it; `save_figure` writes it as PNG. Nothing here
computes results: callers pass arrays and tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from esi.data.leads import STANDARD_LEADS

# Standard ECG paper: 25 mm/s, 10 mm/mV; minor grid 1 mm (0.04 s, 0.1 mV), major grid 5 mm (0.2 s, 0.5 mV).
PAPER_SPEED_MM_S = 25.0
PAPER_GAIN_MM_MV = 10.0
_GRID_MAJOR = "#e8a0a0"
_GRID_MINOR = "#f6d5d5"
_TRACE = "#111111"


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save `fig` as PNG (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


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

    signal: (12, n) millivolts in the order of `leads`; fs: Hz. A full-length rhythm strip of `rhythm_lead` is
    drawn underneath (None to omit). 25 mm/s, 10 mm/mV, 1 mm minor / 5 mm major grid, a 1 mV calibration
    pulse at the start of every row, and lead labels. Returns the figure.
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


def plot_training_curves(metrics, keys: Sequence[str] = ("loss", "contrastive_loss", "caption_loss"),
                         recall_keys: Sequence[str] = ("recall@1", "recall@5", "recall@10"), chance: dict | None = None):
    """Loss curves (train per step, validation per epoch) and validation retrieval recall per epoch.

    metrics: the DataFrame of a run's metrics.csv (columns split, step, epoch, ...). `chance` maps a recall key
    to its chance level, drawn as a dashed line.
    """
    import pandas as pd
    df = metrics if isinstance(metrics, pd.DataFrame) else pd.read_csv(metrics)
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 3.8))
    train, val = df[df["split"] == "train"], df[df["split"] == "val"]
    for key in keys:
        if key in train and train[key].notna().any():
            ax_loss.plot(train["step"], train[key], label=f"train {key}", linewidth=1)
        if key in val and val[key].notna().any():
            ax_loss.plot(val["step"], val[key], "o--", label=f"val {key}", markersize=4)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss (nats)")
    ax_loss.set_title("Pretraining losses")
    ax_loss.legend(fontsize=8)
    for key in recall_keys:
        if key in val and val[key].notna().any():
            line, = ax_rec.plot(val["epoch"], val[key], "o-", label=f"ECG→text {key}")
            if chance and key in chance:
                ax_rec.axhline(chance[key], color=line.get_color(), linestyle=":", linewidth=1,
                               label=f"chance {key}")
    ax_rec.set_xlabel("epoch")
    ax_rec.set_ylabel("validation recall")
    ax_rec.set_ylim(0, 1)
    ax_rec.set_title("Validation retrieval")
    ax_rec.legend(fontsize=8)
    fig.tight_layout()
    return fig
