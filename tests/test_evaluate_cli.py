"""`python -m esi.evaluate --config ... --set ...` on a tiny config over the real PTB-XL records: linear probe and
identification with a random-init ConvNeXt V2 atto at 100 Hz; results.csv/json, per_class.csv and figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from esi.evaluate.results import RESULT_COLUMNS
from esi.evaluate.run import main

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("per_class_auroc_linear_probe_superdiagnostic.png", "roc_linear_probe_superdiagnostic.png",
           "auroc_vs_label_fraction_superdiagnostic.png", "tsne_superclass.png", "identification_cmc.png")


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict:
    base = tmp_path_factory.getbasetemp() / "evaluate_shared"
    return {"store_dir": base / "stores", "cache_dir": base / "features"}


def tiny_config(path: Path, ptbxl_dir: Path, out_dir: Path, shared: dict) -> Path:
    params = {
        "run_name": "tiny",
        "evaluate_ptbxl_root": str(ptbxl_dir),
        "evaluate_out_dir": str(out_dir),
        "evaluate_store_dir": str(shared["store_dir"]),
        "evaluate_cache_dir": str(shared["cache_dir"]),
        "evaluate_encoders": [{"kind": "random", "architecture": "convnextv2_atto", "fs": 100,
                               "normalize": "per_lead"}],
        "evaluate_protocols": ["linear_probe", "identification"],
        "evaluate_probe_tasks": ["superdiagnostic"],
        "evaluate_probe_fractions": [0.1, 1.0],
        "evaluate_probe_epochs": 5,
        "evaluate_n_boot": 20,
        "evaluate_convert_workers": 1,
        "evaluate_progress": False,
        "evaluate_tsne_max_points": 150,
        "evaluate_tsne_iterations": 250,
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run(ptbxl_dir, shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    out_dir = tmp / "run"
    config = tiny_config(tmp / "tiny.yaml", ptbxl_dir, out_dir, shared)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "esi.evaluate", "--config", str(config),
                           "--set", "evaluate_probe_epochs=3", "--set", "evaluate_identification_max_rank=10"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out_dir, done


def test_the_run_writes_the_tidy_table_as_csv_and_json(run):
    out_dir, done = run
    table = pd.read_csv(out_dir / "results.csv")
    assert list(table.columns) == list(RESULT_COLUMNS)
    records = json.loads((out_dir / "results.json").read_text())
    # 2 label fractions x (AUROC, AUPRC; each also over the supported classes) + top-1/top-5 identification on
    # all probes and on those >= 24 h apart
    assert len(records) == len(table) == 12
    assert set(table["protocol"]) == {"linear_probe", "identification"}
    probe = table[table["protocol"] == "linear_probe"]
    assert set(probe["metric"]) == {"macro_auroc", "macro_auprc", "macro_auroc_supported", "macro_auprc_supported"} and (probe["recipe"] == "esi_probe").all()
    assert (table["ci_level"] == 0.9).all()
    assert set(table.loc[table["protocol"] == "identification", "recipe"]) == {"earliest_record_gallery"}
    assert dict(zip(table["protocol"], table["split"])) == {"linear_probe": "ptbxl_folds_1-8/9/10",
                                                            "identification": "ptbxl_all_folds"}
    assert table["value"].between(0, 1).all() and (table["ci_low"] <= table["ci_high"]).all()
    ident = table[table["protocol"] == "identification"].set_index("metric")["value"]
    assert ident["top1_accuracy"] <= ident["top5_accuracy"]
    assert table["notes"].str.contains("smoke-sized").all()
    assert "results" in done.stdout and "macro_auroc" in done.stdout
    per_class = pd.read_csv(out_dir / "per_class.csv")
    assert set(per_class["class"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
    assert "myocardial infarction" in set(per_class["class_name"])


def test_the_run_records_its_resolved_config_with_the_overrides(run):
    out_dir, _ = run
    resolved = yaml.safe_load((out_dir / "evaluate_config.yaml").read_text())
    assert resolved["probe_epochs"] == 3 and resolved["identification_max_rank"] == 10
    assert resolved["encoders"][0]["architecture"] == "convnextv2_atto"


def test_the_run_draws_every_figure_as_a_non_empty_png(run):
    out_dir, _ = run
    for name in FIGURES:
        path = out_dir / "figures" / name
        assert path.is_file(), name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, name


def test_an_unknown_key_stops_the_cli_with_a_hint(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("evaluate_probe_epoch: 3\n")
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(config)])
    assert stop.value.code == 2
    assert "Did you mean 'probe_epochs'" in capsys.readouterr().err


@pytest.mark.parametrize("item, hint", [("probe_epochs=3", "evaluate_probe_epochs"),
                                        ("train_probe_epochs=3", "evaluate_probe_epochs")])
def test_set_refuses_a_short_or_other_stage_key_with_a_did_you_mean(item, hint, tmp_path, capsys):
    config = tmp_path / "ok.yaml"
    config.write_text("evaluate_probe_epochs: 3\n")
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(config), "--set", item])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --set {item}: did you mean {hint}?"), err
