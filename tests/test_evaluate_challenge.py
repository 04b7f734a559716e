"""The evaluation protocols on CPSC2018 and CSN as downloaded (Challenge tree, ecg-arrhythmia tree): fixtures made
from real PTB-XL records (tests/challenge_fixtures.py), a small ESI model, linear probe + fine-tuning + zero-shot,
every row naming its dataset, split preset and length policy."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from challenge_fixtures import LONG_RECORD, SHORT_RECORD, write_challenge_tree, write_ecg_arrhythmia_tree
from oracles import merl_table
from esi.config import from_dict
from esi.data.challenge_tasks import CPSC2018_CLASSES, load_challenge_task
from esi.data.datasets import ECGDataset
from esi.evaluate.config import EvaluateConfig
from esi.evaluate.encoders import EncoderSpec
from esi.evaluate.results import RESULT_COLUMNS
from esi.evaluate.run import evaluate
from esi.evaluate.datasets import ChallengeDataset
from esi.evaluate.workspace import Workspace


@pytest.fixture(scope="module")
def trees(ptbxl_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("challenge_trees")
    # 150 records each (PTB-XL records 1-150 and 151-300): ~30 test records, a few positives of every class in them.
    challenge = write_challenge_tree(ptbxl_dir, base / "challenge-2021", n_cpsc=150, n_chapman=0)
    csn = write_ecg_arrhythmia_tree(ptbxl_dir, base / "ecg-arrhythmia", n=150, first_ecg_id=151)
    return {"challenge": base / "challenge-2021", "csn": base / "ecg-arrhythmia", "challenge_truth": challenge,
            "csn_truth": csn}



@pytest.fixture(scope="module")
def run(trees, esi_dir, esi_dict_path, tmp_path_factory):
    """Probe, fine-tuning (1 + 1 epochs) and zero-shot on CPSC2018 (drop_short) and CSN, one evaluate() call."""
    out = tmp_path_factory.mktemp("challenge_run")
    config = from_dict(EvaluateConfig, dict(      # flat keys, as the params spell them (evaluate_probe_epochs, ...)
        datasets=["cpsc2018", "csn"], challenge_root=str(trees["challenge"]), csn_root=str(trees["csn"]),
        challenge_split="stratified", challenge_length_policy="drop_short", challenge_min_positives=5,
        out_dir=str(out), encoders=[EncoderSpec(kind="esi", path=str(esi_dir), name="ESI (small)")],
        protocols=["linear_probe", "benchmark", "zero_shot"], convert_workers=1, n_boot=20,
        significance_resamples=50, progress=False, probe_fractions=[0.5, 1.0], probe_epochs=5,
        benchmark_supervised=[], benchmark_epochs=1, benchmark_finetune_epochs=1, benchmark_batch_size=8,
        benchmark_save_models=False, zero_shot_waveform_dict=str(esi_dict_path), tsne_iterations=250))
    with pytest.warns(UserWarning, match="small test sets"):
        result = evaluate(config, "challenge")
    return result, out


@pytest.mark.slow   # builds `run`: probe, fine-tuning and zero-shot on two datasets, half a minute
def test_every_protocol_runs_on_both_datasets_and_each_row_names_dataset_split_and_length(run):
    result, out = run
    table = result.table
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert set(table["dataset"]) == {"cpsc2018", "csn"}
    assert (table["task"] == table["dataset"]).all()         # one task per dataset, named after it
    for dataset in ("cpsc2018", "csn"):
        protocols = set(table.loc[table["dataset"] == dataset, "protocol"])
        assert protocols == {"linear_probe", "benchmark_finetune", "zero_shot"}, (dataset, protocols)
    assert set(table["length_policy"]) == {"drop_short"}
    assert set(table["labels"]) == {"exact"}                  # the label rule, which comparability reads
    trained = table[table["protocol"] != "zero_shot"]
    assert set(trained["split"]) == {"stratified_70/10/20_records"}
    assert set(table.loc[table["protocol"] == "zero_shot", "split"]) == {"stratified_70/10/20_records:test"}
    # Trained rows say which split chose their epoch: the dataset's validation split, not PTB-XL's fold 9.
    assert trained["notes"].str.contains("selected on the validation split (stratified_70/10/20_records)",
                                         regex=False).all()
    assert not trained["notes"].str.contains("fold 9").any()
    assert set(table["metric"]) == {"macro_auroc", "macro_auprc", "macro_auroc_supported", "macro_auprc_supported"}
    # Every macro over all scorable classes has a value; the macro over the supported classes (>= 10 test
    # positives) has one where such a class exists, and says so where none does (these test sets are small).
    supported = table["metric"].str.endswith("_supported")
    assert table.loc[~supported, "value"].between(0, 1).all()
    empty = table.loc[supported, "notes"].str.contains("no class has >= 10 test positives")
    assert (table.loc[supported, "value"].between(0, 1) | (table.loc[supported, "value"].isna() & empty)).all()
    assert (table["n_rare_classes"] >= 0).all() and (table.loc[supported, "n_rare_classes"] == 0).all()
    # The random-init twin beside every pretrained row; the pretrained rows carry the paired p-value.
    assert {"ESI (small)"} < set(table["encoder"])
    assert any(e.startswith("random init") for e in table["encoder"])
    pretrained = table[table["encoder"] == "ESI (small)"]
    assert pretrained.loc[~supported, "p_value"].between(0, 1).all()
    assert pretrained["p_value"].isna().eq(pretrained["value"].isna()).all()     # a p-value wherever a value
    assert table["p_value_holm"].isna().eq(table["p_value"].isna()).all()
    assert (table["p_value_holm"].dropna() >= table["p_value"].dropna()).all()
    assert not table["comparable"].any() and table["why_not"].str.len().gt(0).all()   # smoke-sized, other split
    # results.csv is what the table says
    written = pd.read_csv(out / "results.csv")
    assert written["dataset"].tolist() == table["dataset"].tolist()


def test_cpsc_rows_score_the_nine_challenge_classes_on_records_of_10_s_or_more(run, trees):
    result, out = run
    summary = pd.read_csv(out / "evaluate" / "cpsc2018_summary.csv", dtype={"code": str})
    classes = summary[(summary["kind"] == "class") & (summary["status"] == "kept")]["code"].tolist()
    assert classes == list(CPSC2018_CLASSES)
    short = summary[(summary["kind"] == "records") & (summary["name"] == "shorter than 10 s")]
    assert int(short["count"].iloc[0]) == 1                   # the 6 s record, dropped and counted
    rejected = summary[(summary["kind"] == "records") & (summary["name"] == "rejected by the reader")]
    assert int(rejected["count"].iloc[0]) == 0
    per_class = result.per_class[result.per_class["dataset"] == "cpsc2018"]
    names = dict(zip(per_class["class"].astype(str), per_class["class_name"]))
    assert names["164889003"] == "atrial fibrillation"         # names from the shipped SNOMED-CT table
    predictions = np.load(next((out / "evaluate" / "predictions" / "linear_probe" / "cpsc2018").glob("*.npz")))
    ids = set(predictions["ecg_ids"].astype(str))
    assert SHORT_RECORD not in ids and ids <= set(trees["challenge_truth"]["record_id"])


def test_the_csn_task_uses_exact_codes_with_min_positives_and_writes_its_summary(run, trees):
    _, out = run
    summary = pd.read_csv(out / "evaluate" / "csn_summary.csv", dtype={"code": str})
    kept = summary[(summary["kind"] == "class") & (summary["status"] == "kept")]
    assert (kept["count_kept"] >= 5).all() and len(kept) >= 3
    truth = trees["csn_truth"]
    # Positives counted by exact code against the headers as written (equivalents merged by the task).
    for code, count in zip(kept["code"], kept["count_kept"]):
        exact = sum(code in str(dx).split(";") for dx in truth["dx"])
        assert count >= exact


def test_figures_are_drawn_for_each_dataset(run):
    result, out = run
    names = {p.name for p in result.figures}
    assert {"per_class_auroc_linear_probe_cpsc2018.png", "per_class_auroc_linear_probe_csn.png",
            "auroc_vs_label_fraction_cpsc2018.png"} <= names
    from esi.plots import plot_results_summary

    assert plot_results_summary(result.table).axes[0].get_title() == "Results on CPSC2018, CSN (each one's test split)"


def test_length_policies_crop_the_long_record_at_its_centre_or_keep_its_start(trees, tmp_path):
    truth = trees["challenge_truth"].set_index("record_id")
    for policy, crop in (("crop_pad", "centre"), ("merl", "start")):
        dataset = ChallengeDataset(trees["challenge"], "cpsc2018", length_policy=policy)
        Workspace(tmp_path / policy, dataset, workers=1, progress=False)
        store = dataset.store(500)
        assert store.settings.crop == crop
        row = store.locate([LONG_RECORD])[0]
        signal = store.read([row])[0]
        import wfdb

        raw = wfdb.rdsamp(str(truth.loc[LONG_RECORD, "path"]))[0].T.astype(np.float32)
        start = (raw.shape[1] - 5000) // 2 if crop == "centre" else 0
        np.testing.assert_allclose(signal, raw[:, start:start + 5000], atol=1e-3)
        assert len(dataset.task()) == len(truth[truth["source"] == "cpsc_2018"])    # nothing dropped by these


def test_merl_policy_feeds_cpsc_records_5_s_of_signal_in_a_10_s_frame(trees, tmp_path):
    dataset = Workspace(tmp_path, ChallengeDataset(trees["challenge"], "cpsc2018", length_policy="merl"), workers=1,
                        progress=False).dataset
    assert dataset.valid_samples(100) == 500 and dataset.valid_samples(500) == 2500
    store = dataset.store(100)
    ecg = ECGDataset(store, [0, 1], valid_samples=500).fetch([0, 1])["ecg"].numpy()
    assert ecg.shape == (2, 12, 1000)
    assert np.all(ecg[..., 500:] == 0) and np.any(ecg[..., :500] != 0)
    other = ChallengeDataset(trees["csn"], "csn", length_policy="merl")
    assert other.valid_samples(100) is None                   # MERL reads CSN's first 10 s whole


def test_evaluation_windows_lie_inside_each_records_signal_never_over_its_padding(trees, tmp_path):
    """Protocol A's 2.5 s windows every 1.25 s: a 10 s record has 7; a 6 s record zero-padded to 10 s (crop_pad)
    has 3, and MERL's 5 s of a 10 s frame has 3; their rows repeat the last window, so max aggregation and
    anything masking by n_windows see only signal."""
    dataset = Workspace(tmp_path, ChallengeDataset(trees["challenge"], "cpsc2018", length_policy="crop_pad"),
                        workers=1, progress=False).dataset
    store = dataset.store(100)
    short, full = store.locate([SHORT_RECORD])[0], store.locate(["A0001"])[0]
    assert store.n_valid[short] == 600 and store.n_valid[full] == 1000
    for valid_samples, expected in ((None, {short: 3, full: 7}), (500, {short: 3, full: 3})):
        batch = ECGDataset(store, [short, full], windows=(250, 125), valid_samples=valid_samples).fetch([0, 1])
        whole = ECGDataset(store, [short, full], valid_samples=valid_samples).fetch([0, 1])["ecg"].numpy()
        ecg = batch["ecg"].numpy()
        assert ecg.shape == (2, 7, 12, 250)
        assert batch["n_windows"].tolist() == [expected[short], expected[full]]
        for k, row in enumerate((short, full)):
            own = expected[row]
            for w in range(7):
                start = min(w, own - 1) * 125
                np.testing.assert_array_equal(ecg[k, w], whole[k, :, start:start + 250])
                assert start + 250 <= min(store.n_valid[row], valid_samples or 1000)
            assert not np.all(ecg[k] == 0, axis=(1, 2)).any()         # no window of padding


def test_merl_split_on_the_fixture_names_follows_merls_tables(trees, tmp_path):
    workspace = Workspace(tmp_path, ChallengeDataset(trees["challenge"], "cpsc2018", split="merl"), workers=1,
                          progress=False)
    task = workspace.dataset.task()
    table = pd.read_csv(workspace.run_dir / "evaluate" / "cpsc2018_summary.csv")
    assert len(table)
    merl = merl_table()
    merl = merl[merl["dataset"] == "cpsc2018"].set_index("record")["split"]
    fold_of = {"train": 1, "val": 9, "test": 10}
    assert [fold_of[merl[name]] for name in task.ecg_ids] == task.folds.tolist()
    # rows scored without training name the split preset and the folds they scored
    assert workspace.dataset.scored_split(task, [10]) == "merl_tables_records:test"
    assert workspace.dataset.scored_split(task, [9, 10]) == "merl_tables_records:folds_9,10"


def test_a_missing_dataset_folder_stops_before_any_work(tmp_path):
    config = EvaluateConfig(datasets=["cpsc2018"], challenge_root=str(tmp_path / "nowhere"), out_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="evaluate_challenge_root"):
        evaluate(config)


def test_a_task_from_the_store_index_equals_one_from_the_headers(trees, tmp_path):
    dataset = Workspace(tmp_path, ChallengeDataset(trees["csn"], "csn", min_positives=5), workers=1,
                        progress=False).dataset
    from_store = dataset.task()
    from_headers = load_challenge_task(dataset.records(), "csn", min_positives=5)
    assert from_store.classes == from_headers.classes
    np.testing.assert_array_equal(from_store.y, from_headers.y)
    np.testing.assert_array_equal(from_store.folds, from_headers.folds)


def test_an_input_scaler_is_fitted_on_the_training_split_only(trees, tmp_path):
    dataset = Workspace(tmp_path, ChallengeDataset(trees["challenge"], "cpsc2018"), workers=1, progress=False).dataset
    store = dataset.store(100)
    rows = dataset.training_rows(store)
    train = dataset.task().split("train")
    assert sorted(store.index["record_id"].iloc[rows]) == sorted(train.ecg_ids)
    assert len(rows) < len(store)


def test_an_unknown_dataset_name_says_which_sources_the_tree_holds(trees, tmp_path, capsys):
    from esi.evaluate.run import main

    code = None
    try:
        main(["--set", "evaluate_datasets=[cpsc]", "--set", f"evaluate_challenge_root={trees['challenge']}",
              "--set", f"evaluate_out_dir={tmp_path}", "--set", "evaluate_encoders=[]"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no records of cpsc" in err[0] and "cpsc_2018" in err[0]


def test_a_dataset_reads_only_its_own_source_folders_of_the_tree(ptbxl_dir, tmp_path):
    truth = write_challenge_tree(ptbxl_dir, tmp_path / "tree")          # cpsc_2018 (40) + chapman_shaoxing (30)
    for dataset, source in (("cpsc2018", "cpsc_2018"), ("csn", "chapman_shaoxing")):
        records = ChallengeDataset(tmp_path / "tree", dataset).records()
        expected = truth[truth["source"] == source]
        assert records["record_id"].tolist() == expected["record_id"].tolist()
        assert records["dx"].tolist() == expected["dx"].tolist()


def test_a_record_the_reader_rejects_is_counted_in_the_summary_not_silently_dropped(ptbxl_dir, tmp_path):
    truth = write_challenge_tree(ptbxl_dir, tmp_path / "tree", n_cpsc=40, n_chapman=0)
    broken = truth.loc[truth["record_id"] == "A0020", "path"].iloc[0] + ".mat"
    with open(broken, "r+b") as handle:       # truncated, as an interrupted download leaves it
        handle.truncate(1000)
    workspace = Workspace(tmp_path / "run", ChallengeDataset(tmp_path / "tree", "cpsc2018"), workers=1, progress=False)
    task = workspace.dataset.task()
    assert "A0020" not in set(task.ecg_ids) and len(task) == 39
    summary = pd.read_csv(tmp_path / "run" / "evaluate" / "cpsc2018_summary.csv")
    row = summary[summary["name"] == "rejected by the reader"].iloc[0]
    assert (row["count"], row["status"]) == (1, "dropped") and "rejected.csv" in row["reason"]
