"""End to end on the real PTB-XL records: pretrain ESI on folds 1-8 (reports as text) once, then (1) the model
retrieves fold 9's texts far above chance, and (2) in Protocol B on superdiagnostic the pretrained encoder beats
its random-init twin on fold 10.

Smoke-sized: 353 training pairs, 64 labelled test records, a few CPU minutes in all. The numbers say that the
pipeline learns something transferable, not how good ESI is. Measured when written (macro AUROC [90 % interval]):
with 10 % of the labels ESI 0.70 [0.61, 0.78] vs random init 0.53 [0.45, 0.60], p = 0.02; with all 353 labels the
gap narrows (0.80 vs 0.75, p = 0.11), as expected of a model pretrained on the same few hundred ECGs the probe
then sees.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from esi.config import load_config
from esi.evaluate import EncoderSpec, Workspace, run_linear_probe
from esi.train import TrainConfig
from esi.train import main as train_main


@pytest.fixture(scope="module")
def pretrained_on_ptbxl(ptbxl_dir, store_dir, tmp_path_factory):
    """ConvNeXt V2 atto + the bundled MiniLM, 3 epochs on PTB-XL folds 1-8 (353 records, text: demographics, SCP
    statements, the report), validated on fold 9 (81 pairs); started as a user starts a run, from a params file.
    About a minute on 2 idle cores."""
    run = tmp_path_factory.mktemp("e2e")
    params = {
        "train_out_dir": str(run / "pretrain"), "train_corpus": "ptbxl", "train_data_root": str(ptbxl_dir),
        "train_store_dir": str(store_dir), "train_fs": 100, "train_seconds": 10,
        "train_ecg_encoder": "convnextv2_atto", "train_text_encoder": "minilm", "train_max_text_length": 32,
        # a narrow decoder with a small caption weight: captioning is not what retrieval or the probe needs, and
        # the 30522-word output layer of a full-width decoder would cost more than the ECG encoder
        "train_model": {"decoder_depth": 1, "decoder_heads": 4, "decoder_dim": 64, "decoder_embeddings": "random",
                        "n_queries": 8, "latent_dim": 64, "caption_weight": 0.1},
        "train_batch_size": 16, "train_epochs": 3, "train_lr": 1e-3, "train_text_lr": 5e-5,
        "train_warmup_epochs": 0.5, "train_checkpoint_every": 1000, "train_keep_checkpoints": 1,
        "train_caption_samples": 2, "train_tensorboard": False, "train_progress": False,
    }
    path = run / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = train_main(["--config", str(path)])
    return result, run


def rank_of_true_text(model_dir: Path, corpus, rows, normalize: str) -> torch.Tensor:
    """For each validation ECG, how many validation texts the saved model scores above the ECG's own text."""
    from esi.data.datasets import ECGDataset
    from esi.models.esi_model import ESIModel

    model = ESIModel.from_pretrained(model_dir)
    ecgs = ECGDataset(corpus.store, rows, normalize=normalize).fetch(np.arange(len(rows)))["ecg"]
    texts = model.tokenize([corpus.texts[row] for row in rows])
    with torch.no_grad():
        similarity = model.encode_ecg(ecgs) @ model.encode_text(texts["input_ids"], texts["attention_mask"]).T
    return (similarity > similarity.diagonal()[:, None]).sum(dim=1)


@pytest.mark.slow
def test_a_short_real_pretraining_run_retrieves_texts_far_above_chance(pretrained_on_ptbxl, store_dir, ptbxl_dir,
                                                                       capsys):
    """With 81 pairs, recall@5 moves in steps of 1/81 and its sampling noise (sd ~0.045 near 0.2) is as large as
    any margin one could ask of it, so "far above chance" is judged on the rank of each ECG's own text among the
    81 texts, which uses every pair: by chance its mean is 40 with a standard error of 2.6.
    """
    from esi.data.corpus import build_corpus

    result, _ = pretrained_on_ptbxl
    cfg = load_config(TrainConfig, result.run_dir / "config.yaml")
    recall, pool = result.val_metrics, int(result.val_metrics["retrieval_pool"])
    corpus = build_corpus("ptbxl", ptbxl_dir, store_dir, fs=100, seconds=10, progress=False)
    ranks = rank_of_true_text(result.model_dir, corpus, corpus.rows["val"], cfg.normalize).float()
    chance_rank, chance_error = (pool - 1) / 2, math.sqrt((pool ** 2 - 1) / 12 / pool)
    z = (chance_rank - float(ranks.mean())) / chance_error
    with capsys.disabled():
        print(f"\n[real pretraining] {result.steps} steps; validation pool {pool}: " + ", ".join(
            f"recall@{k} {recall[f'recall@{k}']:.3f} (chance {k / pool:.3f})" for k in (1, 5, 10))
            + f"; mean rank of the true text {float(ranks.mean()):.1f} (chance {chance_rank:.0f}, z = {z:.1f})")
    assert pool == len(corpus.rows["val"]) == 81                 # PTB-XL fold 9 of the 500 records in ../shared
    assert recall["recall@10"] == pytest.approx(float((ranks < 10).float().mean()), abs=2 / pool)
    assert z > 4                                                  # p < 1e-4 under chance
    assert recall["recall@10"] > 1.5 * 10 / pool
    assert (result.run_dir / "captions.jsonl").read_text().count("\n") == 2


@pytest.mark.slow
def test_pretrained_encoder_beats_random_init_on_fold_10(pretrained_on_ptbxl, ptbxl_dir):
    result, run = pretrained_on_ptbxl
    workspace = Workspace(run / "eval", ptbxl_dir, progress=False)
    table = run_linear_probe([EncoderSpec(kind="esi", path=str(result.model_dir), name="ESI (PTB-XL smoke)")],
                             workspace, tasks=["superdiagnostic"], fractions=[0.1, 1.0], epochs=60, n_boot=100).table
    print(table[["encoder", "task", "label_fraction", "value", "ci_low", "ci_high", "n_test"]].to_string())
    random_name = next(e for e in table["encoder"] if e.startswith("random init"))
    # Each pretrained row carries the p-value of the paired test against its twin; the twin's rows none.
    assert table.loc[table["encoder"] == "ESI (PTB-XL smoke)", "p_value"].between(0, 1).all()
    assert table.loc[table["encoder"] == random_name, "p_value"].isna().all()
    table = table[table["metric"] == "macro_auroc"]
    few_labels = table[table["label_fraction"] == 0.1].set_index("encoder")
    pretrained, random = few_labels.loc["ESI (PTB-XL smoke)"], few_labels.loc[random_name]
    assert pretrained["n_test"] == 64            # fold 10: 66 records, 2 without a superdiagnostic label
    assert pretrained["ci_low"] <= pretrained["value"] <= pretrained["ci_high"]
    assert pretrained["value"] > random["value"]
    mean = table.groupby("encoder")["value"].mean()
    assert mean["ESI (PTB-XL smoke)"] > mean[random_name]
