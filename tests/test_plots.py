"""Figures render from real data and respect the ECG-paper scale."""

import numpy as np
import pandas as pd
import wfdb

from esi.plots import PAPER_GAIN_MM_MV, PAPER_SPEED_MM_S, plot_ecg_paper, plot_training_curves, save_figure


def test_ecg_paper_has_the_standard_scale_and_all_lead_labels(ptbxl_dir, tmp_path):
    rec = wfdb.rdrecord(str(ptbxl_dir / "records500/00000/00001_hr"))
    fig = plot_ecg_paper(rec.p_signal.T, rec.fs, title="ecg 1")
    ax = fig.axes[0]
    # 1 mV must be as tall on the page as 0.4 s is wide (10 mm vs 25 mm/s).
    assert ax.get_aspect() == PAPER_GAIN_MM_MV / PAPER_SPEED_MM_S
    labels = {t.get_text() for t in ax.texts}
    assert {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V6"} <= labels
    path = save_figure(fig, tmp_path / "ecg.png")
    assert path.stat().st_size > 20_000


def test_training_curves_plot_losses_and_recall(tmp_path):
    df = pd.DataFrame({
        "split": ["train"] * 4 + ["val"] * 2, "step": [1, 2, 3, 4, 2, 4], "epoch": [0, 0, 1, 1, 1, 2],
        "loss": [3.0, 2.5, 2.0, 1.8, 2.2, 1.9], "recall@1": [np.nan] * 4 + [0.1, 0.2],
    })
    fig = plot_training_curves(df, chance={"recall@1": 0.05})
    assert fig.axes[0].get_xlabel() == "optimizer step"
    assert len(fig.axes[1].lines) == 2
    assert save_figure(fig, tmp_path / "curves.png").stat().st_size > 5_000
