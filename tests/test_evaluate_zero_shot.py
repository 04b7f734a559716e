"""Zero-shot classification: class names and descriptions as prompts, cosine scores, and a run with a randomly
initialised small ESI model (ConvNeXt V2 atto + the bundled MiniLM) saved the way esi.train saves it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esi.data.leads import STANDARD_LEADS
from esi.data.ptbxl import load_statements
from esi.data.statements import load_waveform_dict
from esi.evaluate.datasets import class_names, statement_aliases
from esi.evaluate.encoders import EncoderSpec, load_encoder, random_twin
from esi.evaluate.results import RESULT_COLUMNS
from esi.evaluate.workspace import Workspace
from esi.evaluate.zero_shot import (NO_DESCRIPTION_TEMPLATE, class_descriptions, class_prompts, run_zero_shot,
                                    zero_shot_scores)

TEMPLATES = ["ECG showing {class_name}. {description}"]


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict:
    base = tmp_path_factory.getbasetemp() / "evaluate_shared"
    return {"store_dir": base / "stores", "cache_dir": base / "features"}



@pytest.fixture(scope="module")
def statements(ptbxl_dir):
    return load_statements(ptbxl_dir)


def test_prompts_carry_the_class_name_and_its_waveform_description(statements, esi_dict_path):
    waveform_dict = load_waveform_dict(esi_dict_path)
    classes = ["SR", "AFIB", "PACE", "MI"]
    names = class_names(classes, statements)
    assert names == {"SR": "sinus rhythm", "AFIB": "atrial fibrillation",
                     "PACE": "normal functioning artificial pacemaker", "MI": "myocardial infarction"}
    found = class_descriptions(classes, names, statement_aliases(classes, statements), waveform_dict)
    prompts = class_prompts(classes, names, found, TEMPLATES)
    sinus = " ".join(waveform_dict.lookup("sinus rhythm").split())
    assert prompts["SR"] == [f"ECG showing sinus rhythm. {sinus}"]
    assert found["AFIB"] and " ".join(found["AFIB"].split()) in prompts["AFIB"][0]
    # No entry of the dictionary describes a pacemaker: the class name alone is the prompt.
    assert found["PACE"] is None
    assert prompts["PACE"] == [NO_DESCRIPTION_TEMPLATE.format(class_name="normal functioning artificial pacemaker")]


def test_scores_are_cosine_similarities():
    text = np.array([[1.0, 0.0], [0.0, 2.0]])
    ecg = np.array([[3.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(zero_shot_scores(ecg, text), [[1.0, 0.0], [2 ** -0.5, 2 ** -0.5]])


def test_zero_shot_with_a_random_esi_model_gives_aurocs_in_0_1(esi_dir, ptbxl_dir, esi_dict_path, shared, tmp_path):
    spec = EncoderSpec(kind="esi", path=str(esi_dir), name="ESI (random weights)")
    workspace = Workspace(tmp_path, ptbxl_dir, workers=1, progress=False, **shared)
    table = run_zero_shot([spec], workspace, tasks=["superdiagnostic", "rhythm"], waveform_dict=esi_dict_path,
                          templates=TEMPLATES, n_boot=20).table
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert set(table["encoder"]) == {"ESI (random weights)", "random init (convnextv2_atto)"}
    assert set(table["task"]) == {"superdiagnostic", "rhythm"} and set(table["protocol"]) == {"zero_shot"}
    assert table["value"].between(0, 1).all()
    assert set(table["metric"]) == {"macro_auroc", "macro_auprc", "macro_auroc_supported", "macro_auprc_supported"}
    assert (table["ci_level"] == 0.90).all()
    assert set(table["recipe"]) == {"name_and_description_prompts"} and set(table["selection"]) == {"none"}
    assert set(table["split"]) == {"ptbxl_fold_10"}
    # A percentile interval need not hold the point estimate (resamples with repeated positives lift AUPRC), but
    # it is ordered; AUROC's holds it here.
    assert (table["ci_low"] <= table["ci_high"]).all()
    auroc = table[table["metric"] == "macro_auroc"]
    assert (auroc["ci_low"] <= auroc["value"]).all() and (auroc["value"] <= auroc["ci_high"]).all()
    assert table["notes"].str.contains(r"descriptions found for \d+/\d+ classes").all()
    # The model is paired with its random-init-ECG twin on the same records: a p-value on its rows only.
    pretrained = table["encoder"] == "ESI (random weights)"
    assert table.loc[pretrained, "p_value"].between(0, 1).all() and table.loc[~pretrained, "p_value"].isna().all()
    assert table.loc[pretrained, "notes"].str.contains("p vs random init").all()
    prompts = json.loads((tmp_path / "evaluate" / "zero_shot_prompts.json").read_text())
    assert prompts["rhythm"]["SR"][0].startswith("ECG showing sinus rhythm. ")


def test_an_esi_checkpoint_is_fed_as_recorded_and_its_random_twin_matches_it(esi_dir):
    spec = EncoderSpec(kind="esi", path=str(esi_dir))
    encoder = load_encoder(spec)
    assert (encoder.fs, encoder.normalize, encoder.leads) == (100.0, "per_lead", STANDARD_LEADS)
    twin = random_twin(spec)
    assert (twin.kind, twin.architecture, twin.fs, twin.normalize) == ("random", "convnextv2_atto", 100.0, "per_lead")
    baseline = load_encoder(twin)
    assert baseline.identity != encoder.identity and not baseline.pretrained
    # Without preprocessing.json the rate and normalisation are unknown: an error, not a guess.
    (esi_dir / "preprocessing.json").rename(esi_dir / "moved.json")
    try:
        with pytest.raises(ValueError, match="set fs and normalize"):
            load_encoder(spec)
        assert load_encoder(EncoderSpec(kind="esi", path=str(esi_dir), fs=100, normalize="global")).fs == 100.0
    finally:
        (esi_dir / "moved.json").rename(esi_dir / "preprocessing.json")
