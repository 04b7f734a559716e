"""Figures render from real data and respect the ECG-paper scale; each figure shows what it is given."""

import numpy as np
import pandas as pd
import pytest
import wfdb

from esi.beats import class_average_beats
from esi.data.demo_corpus import simulate_record
from esi.data.reader import read_ecg
from esi.plots import (
    PAPER_GAIN_MM_MV,
    PAPER_SPEED_MM_S,
    plot_auroc_vs_fraction,
    plot_average_beats,
    plot_per_class_auroc,
    plot_caption_sample,
    plot_cqa_coverage,
    plot_ecg_paper,
    plot_ecg_with_text,
    plot_results_summary,
    plot_statement_frequencies,
    plot_store_overview,
    plot_token_lengths,
    plot_training_curves,
    save_figure,
)
from esi.rag.generation import GenerationResult
from esi.rag.quality import HitRate

LONG_TEXT = ("sinus rhythm. normal ECG. " * 20).strip()


@pytest.fixture(autouse=True)
def close_figures():
    """Every test here draws figures; close them so that pyplot does not keep them alive for later tests."""
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


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


def test_ecg_with_text_titles_the_record_its_rate_and_the_shortened_text(ptbxl_dir):
    ecg = read_ecg(ptbxl_dir / "records100/00000/00001_lr")
    fig = plot_ecg_with_text(ecg.signal, ecg.fs, ecg.leads, "1", LONG_TEXT, text_chars=60)
    title = fig.axes[0].get_title(loc="left")
    assert title.startswith("record 1 (100 Hz)\nsinus rhythm. normal ECG.")
    assert title.endswith(" ...") and len(title) < 100


def test_caption_sample_shows_the_caption_above_the_paired_text(ptbxl_dir):
    ecg = read_ecg(ptbxl_dir / "records500/00000/00002_hr")
    fig = plot_caption_sample(ecg.signal, ecg.fs, ecg.leads, "2", "sinus bradycardia", LONG_TEXT)
    lines = fig.axes[0].get_title(loc="left").splitlines()
    assert lines[0] == "record 2"
    assert lines[1] == "generated caption: sinus bradycardia"
    assert lines[2].startswith("paired text: sinus rhythm")


def test_training_curves_plot_losses_and_recall(tmp_path):
    df = pd.DataFrame({
        "split": ["train"] * 4 + ["val"] * 2, "step": [1, 2, 3, 4, 2, 4], "epoch": [0, 0, 1, 1, 1, 2],
        "loss": [3.0, 2.5, 2.0, 1.8, 2.2, 1.9], "recall@1": [np.nan] * 4 + [0.1, 0.2],
    })
    fig = plot_training_curves(df, chance={"recall@1": 0.05})
    assert fig.axes[0].get_xlabel() == "optimizer step"
    assert len(fig.axes[1].lines) == 2
    assert save_figure(fig, tmp_path / "curves.png").stat().st_size > 5_000


def test_training_curves_draw_chance_from_the_retrieval_pool(tmp_path):
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame({
        "split": ["train", "train", "val"], "step": [1, 2, 2], "epoch": [0, 1, 1], "loss": [3.0, 2.6, 2.8],
        "recall@1": [np.nan, np.nan, 0.3], "recall@5": [np.nan, np.nan, 0.7], "retrieval_pool": [np.nan, np.nan, 20],
    }).to_csv(metrics, index=False)
    recall_panel = plot_training_curves(metrics).axes[1]
    chance = {line.get_label(): line.get_ydata()[0] for line in recall_panel.lines if line.get_linestyle() == ":"}
    assert chance == {"chance recall@1": pytest.approx(1 / 20), "chance recall@5": pytest.approx(5 / 20)}


def test_cqa_coverage_shows_status_shares_and_hit_rates(tmp_path):
    records = [{"statement": "Sinus rhythm", "status": "described", "count": 6},
               {"statement": "Left bundle branch block", "status": "described", "count": 2},
               {"statement": "Unconfirmed report", "status": "non_diagnostic", "count": 2},
               {"statement": "Odd finding", "status": "uncovered", "count": None}]
    result = GenerationResult(descriptions={}, records=records, out_dir=tmp_path)
    hits = HitRate(n=40, hit_at={1: 0.6, 3: 0.8}, by_source={"mimic": {1: 0.5, 3: 0.75}, "ptbxl": {1: 0.7, 3: 0.85}})
    coverage, retrieval = plot_cqa_coverage(result, hits).axes
    statements, occurrences = coverage.containers
    # Four statements: 2 described, 1 non-diagnostic, 1 uncovered; 11 occurrences (a missing count counts once).
    assert [bar.get_height() for bar in statements] == pytest.approx([50, 25, 25, 0])
    assert [bar.get_height() for bar in occurrences] == pytest.approx([800 / 11, 200 / 11, 100 / 11, 0])
    assert [t.get_text() for t in retrieval.get_xticklabels()] == ["all", "mimic", "ptbxl"]
    assert [bar.get_height() for bar in retrieval.containers[1]] == [0.8, 0.75, 0.85]   # hit@3
    assert retrieval.get_title() == "Retrieval quality (40 labelled statements)"


def test_statement_frequencies_show_the_top_statements_most_frequent_first():
    counts = pd.Series({"sinus rhythm": 407, "normal ECG": 297, "inferior myocardial infarction": 37,
                        "left ventricular hypertrophy": 35}, name="records")
    ax = plot_statement_frequencies(counts, top=3).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["inferior myocardial infarction", "normal ECG", "sinus rhythm"]   # read bottom to top
    assert [bar.get_width() for bar in ax.patches] == [37, 297, 407]
    assert ax.get_title() == "Most frequent statements (top 3 of 4)"


def test_token_lengths_mark_the_cut_off_and_the_share_cut():
    lengths = np.array([20, 40, 60, 80, 100, 120, 140, 300])
    ax = plot_token_lengths(lengths, max_length=128, text_encoder="minilm").axes[0]
    cut_off = ax.lines[0]
    assert list(cut_off.get_xdata()) == [128, 128]
    assert cut_off.get_label() == "train_max_text_length = 128: 25% of texts are cut"
    assert ax.get_xlabel() == "tokens per text (minilm tokenizer)"
    assert sum(bar.get_height() for bar in ax.patches) == len(lengths)


def test_store_overview_shows_rates_lead_availability_and_quality_flags():
    index = pd.DataFrame({"fs_source": [500.0, 500.0, 250.0, 1000.0],
                          "quality_flat_lead": [True, False, False, False],
                          "quality_resampled": [False, False, True, True]})
    masks = np.ones((4, 12), dtype=bool)
    masks[:2, 6] = False                              # V1 missing from two of the four files
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    rates, availability, flags = plot_store_overview(index, masks, leads, fs=500).axes
    assert [t.get_text() for t in rates.get_xticklabels()] == ["250", "500", "1000"]
    assert [bar.get_height() for bar in rates.patches] == [1, 2, 1]
    assert availability.patches[6].get_height() == 50 and availability.patches[0].get_height() == 100
    assert [t.get_text() for t in flags.get_yticklabels()] == ["flat lead", "resampled"]
    assert [bar.get_width() for bar in flags.patches] == [25, 50]


@pytest.fixture(scope="module")
def simulated_beats():
    classes = ["normal", "left_bundle_branch_block"]
    records = ((simulate_record(name, seed=seed).signal, 500.0, [name]) for name in classes for seed in (1, 2))
    return class_average_beats(records, classes)


def test_average_beats_draw_one_panel_per_lead_and_one_line_per_class(simulated_beats):
    fig = plot_average_beats(simulated_beats, ["II", "V1"])
    assert [ax.get_title() for ax in fig.axes] == ["lead II", "lead V1"]
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert [label.split(" (")[0] for label in legend] == ["normal", "left_bundle_branch_block"]
    assert all("n=2" in label for label in legend)


def test_average_beats_reject_an_unknown_lead(simulated_beats):
    with pytest.raises(ValueError, match="unknown lead.*V7"):
        plot_average_beats(simulated_beats, ["II", "V7"])


def test_results_summary_has_one_row_per_result_and_a_bar_per_encoder():
    table = pd.DataFrame([
        ("superdiagnostic", "linear_probe", 0.1, "ESI", "macro_auroc", 0.82, 0.78, 0.86),
        ("superdiagnostic", "linear_probe", 0.1, "ESI (random init)", "macro_auroc", 0.61, 0.55, 0.66),
        ("superdiagnostic", "zero_shot", np.nan, "ESI", "macro_auroc", 0.70, np.nan, np.nan),
        ("all", "identification", np.nan, "ESI", "top1_accuracy", 0.35, 0.30, 0.41),
    ], columns=["task", "protocol", "label_fraction", "encoder", "metric", "value", "ci_low", "ci_high"])
    ax = plot_results_summary(table).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "linear probe, superdiagnostic, 10% labels", "zero shot, superdiagnostic",
        "identification, all, top1 accuracy"]
    assert [bar.get_width() for bar in ax.patches] == [0.82, 0.61, 0.70, 0.35]
    assert len(ax.lines) == 3                         # a CI line for every result that has one
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ESI", "ESI (random init)"]


def test_results_summary_of_no_results_is_an_error():
    with pytest.raises(ValueError, match="no results"):
        plot_results_summary(pd.DataFrame(columns=["protocol", "task", "encoder", "metric", "value"]))


def probe_rows(dataset: str, task: str, draw: str = "merl", selection: str = "test_max") -> pd.DataFrame:
    """Linear-probe rows produced as MERL's were (unless `draw` or `selection` say otherwise)."""
    split = "ptbxl_folds_1-8/9/10" if dataset == "ptbxl" else "merl_tables_records"
    rows = [{"dataset": dataset, "task": task, "protocol": "linear_probe", "label_fraction": f, "encoder": encoder,
             "metric": "macro_auroc", "value": v, "ci_low": v - 0.03, "ci_high": v + 0.03, "ci_level": 0.9,
             "subset_draw": draw if f < 1 else "all", "selection": selection, "split": split, "length_policy": "merl",
             "labels": "merl_released", "n_test": 2198, "seed": 0}
            for f in (0.01, 0.1, 1.0) for encoder, v in (("ESI", 0.8), ("ESI (random init)", 0.6))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dataset, task, train, test", [
    ("ptbxl", "superdiagnostic", "folds 1-8", "fold 10"),
    ("cpsc2018", "cpsc2018", "the training split", "the test split"),
    ("csn", "csn", "the training split", "the test split"),
])
def test_label_fraction_figure_draws_a_published_number_only_beside_a_comparable_row(dataset, task, train, test):
    from esi.evaluate.published import LINEAR_PROBE

    ax = plot_auroc_vs_fraction(probe_rows(dataset, task), task).axes[0]
    assert train in ax.get_xlabel() and f"macro AUROC on {test}" in ax.get_ylabel()
    crosses = [line for line in ax.lines if line.get_label() == "MERL, published (best epoch on test)"]
    assert len(crosses) == 1
    assert list(crosses[0].get_xdata()) == [0.01, 0.1, 1.0]
    np.testing.assert_allclose(crosses[0].get_ydata(), np.array(LINEAR_PROBE["MERL"][task]) / 100)
    # Subsets of another draw are other records: nothing MERL published is drawn beside them but 100 %.
    other = plot_auroc_vs_fraction(probe_rows(dataset, task, draw="every_class"), task).axes[0]
    merl = [line for line in other.lines if line.get_label().startswith("MERL")]
    assert len(merl) == 1 and list(merl[0].get_xdata()) == [1.0]
    # Selected on validation: never beside MERL's test-split maxima; beside HeartLang's 100 % (its own subsets).
    validated = plot_auroc_vs_fraction(probe_rows(dataset, task, selection="fold9_best"), task).axes[0]
    assert not [line for line in validated.lines if line.get_label().startswith("MERL")]
    heartlang = [line for line in validated.lines if line.get_label().startswith("HeartLang")]
    assert len(heartlang) == 1 and list(heartlang[0].get_xdata()) == [1.0]


@pytest.mark.parametrize("dataset, task, scored", [("ptbxl", "rhythm", "fold 10"), ("csn", "csn", "the test split")])
def test_per_class_figure_names_the_split_it_scores(dataset, task, scored):
    per_class = pd.DataFrame([(dataset, task, "zero_shot", "none", np.nan, "ESI", 0, "426783006", "sinus rhythm",
                               0.8, 0.7, 12)],
                             columns=["dataset", "task", "protocol", "recipe", "label_fraction", "encoder", "seed",
                                      "class", "class_name", "auroc", "auprc", "n_positive_test"])
    ax = plot_per_class_auroc(per_class, task, "zero_shot").axes[0]
    assert ax.get_xlabel() == f"test AUROC ({scored}); n = positive test records"


def comparison_table() -> pd.DataFrame:
    """A small synthetic results table: three encoders and their twins on PTB-XL, CPSC2018 and CSN; ST-MEM saw
    CSN's records in pretraining."""
    rng = np.random.default_rng(0)
    encoders = {"ESI (convnextv2_base)": ("random init (convnextv2_base)", ""),
                "MERL MERLResNet": ("random init (MERL MERLResNet)", ""),
                "ST-MEM STMEMViT": ("random init (ST-MEM STMEMViT)", "Chapman, Ningbo")}
    rows = []
    for dataset, task in (("ptbxl", "superdiagnostic"), ("cpsc2018", "cpsc2018"), ("csn", "csn")):
        for encoder, (twin, overlap) in encoders.items():
            value = rng.uniform(0.8, 0.93)
            for label, v, p, baseline in ((encoder, value, rng.choice([0.001, 0.2]), twin),
                                          (twin, value - 0.15, np.nan, "")):
                rows.append({"dataset": dataset, "task": task, "protocol": "linear_probe", "label_fraction": 1.0,
                             "encoder": label, "metric": "macro_auroc", "value": v, "ci_low": v - 0.02,
                             "ci_high": v + 0.02, "ci_level": 0.9, "p_value": p, "baseline": baseline,
                             "pretraining_overlap": overlap if dataset == "csn" and label == encoder else ""})
    return pd.DataFrame(rows)


def test_encoder_comparison_puts_each_twin_under_its_encoder_and_hatches_overlap(tmp_path):
    from esi.plots import plot_encoder_comparison

    fig = plot_encoder_comparison(comparison_table())
    first, csn = fig.axes[0], fig.axes[2]
    assert [t.get_text() for t in first.get_yticklabels()] == [
        "ESI (convnextv2_base)", "random-init twin", "MERL MERLResNet", "random-init twin", "ST-MEM STMEMViT",
        "random-init twin"]
    assert [a.get_title() for a in fig.axes] == ["PTB-XL: superdiagnostic", "CPSC2018: cpsc2018", "CSN: csn"]
    assert len(first.patches) == 6 and sum(p.get_hatch() == "///" for p in csn.patches) == 1
    assert sum(p.get_hatch() == "///" for p in first.patches) == 0
    assert [p.get_facecolor() for p in first.patches][1][:3] == (1.0, 1.0, 1.0)       # the twin: an open bar
    assert sum(t.get_text().startswith("p=") for t in first.texts) == 3                # one p per pretrained row
    save_figure(fig, tmp_path / "comparison.png")
    with pytest.raises(ValueError, match="no macro_auroc rows of benchmark_finetune"):
        plot_encoder_comparison(comparison_table(), protocol="benchmark_finetune")
