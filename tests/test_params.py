"""params/*.yaml and the notebooks' parameter cells: every key belongs to a stage, type-checks, is commented,
layers as papermill does, and the notebooks' defaults are the embedded default (params/demo.yaml)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from esi.config import ConfigError, load_config
from esi.evaluate.config import load_evaluate_config
from esi.notebook import CORPUS_FIELDS, layer_params, load_params, params_from_mapping, relocate
from esi.rag.config import CQAConfig, OpenAIEndpointConfig, load_cqa_config
from esi.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params"
DEMO, TINY, PAPER, BENCHMARK, CQA = (PARAMS / f"{n}.yaml"
                                     for n in ("demo", "tiny", "mimic_paper", "ptbxl_benchmark", "cqa"))
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PARAMS_FILES = {"demo": [DEMO], "demo+tiny": [DEMO, TINY], "mimic_paper": [PAPER], "ptbxl_benchmark": [BENCHMARK],
                "cqa": [CQA]}


def yaml_keys(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", list(PARAMS_FILES))
def test_every_key_of_a_params_file_belongs_to_a_stage_and_type_checks(name):
    params = params_from_mapping(layer_params(PARAMS_FILES[name]), name)
    assert params.values.keys() == layer_params(PARAMS_FILES[name]).keys()


@pytest.mark.parametrize("path", [DEMO, TINY, PAPER, BENCHMARK, CQA], ids=lambda p: p.name)
def test_every_key_of_a_params_file_is_commented(path):
    lines = path.read_text().splitlines()
    uncommented = [key for key in yaml_keys(path)
                   if not any(re.match(rf"^{key}:.*#\s*\S", line) for line in lines)]
    assert uncommented == [], f"{path.name}: keys without a comment on their line: {uncommented}"


def test_tiny_only_overrides_keys_that_demo_sets():
    assert set(yaml_keys(TINY)) - set(yaml_keys(DEMO)) == set()


def test_mimic_paper_sets_every_key_demo_sets_so_no_demo_default_leaks_into_it():
    assert set(yaml_keys(DEMO)) - set(yaml_keys(PAPER)) == set()


def test_mimic_paper_is_the_papers_recipe():
    params = params_from_mapping(layer_params([PAPER]))
    train = params.train
    assert (train.ecg_encoder, train.text_encoder) == ("convnextv2_base", "michiyasunaga/BioLinkBERT-base")
    assert (train.fs, train.batch_size, train.schedule, train.epochs) == (500.0, 48, "paper_step", 30)
    assert params.run.nproc_per_node == 4
    assert params.demo.corpus_dir == ""          # real data, no demo corpus


def test_mimic_paper_keeps_every_description_and_the_originals_temperature():
    import dataclasses

    import torch

    from esi.models.esi_model import ESIModel
    from esi.train.config import model_config

    train = load_config(TrainConfig, [PAPER], section="train")   # what python -m esi.train --config reads
    assert train == params_from_mapping(layer_params([PAPER])).train
    assert train.max_text_length == 512       # the original's ~500 tokens, not 256 (which drops descriptions)
    config = model_config(train)
    assert (config.max_text_length, config.init_logit_scale) == (512, 1.0)   # the original's exp(1.0)
    # 512 fits the text encoders' 512 positions; here with the demo's (offline) MiniLM and a small ECG encoder.
    small = dataclasses.replace(train, ecg_encoder="convnextv2_atto", text_encoder="minilm",
                                model={**train.model, "n_queries": 4, "decoder_depth": 1})
    model = ESIModel(model_config(small))
    assert model.logit_scale.item() == pytest.approx(1.0)
    tokens = model.tokenize(["sinus rhythm " * 400, "left axis deviation"])
    assert tokens["input_ids"].shape[1] == 512
    with torch.no_grad():   # the caption decoder's positions reach 512 too
        out = model(torch.randn(2, 12, 1000), tokens["input_ids"], tokens["attention_mask"])
    assert out["caption_logits"].shape[1] == 511 and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="exceeds the 512 positions"):
        ESIModel(model_config(dataclasses.replace(small, max_text_length=513)), text_encoder=model.text_encoder)


def test_an_unknown_key_is_an_error_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown parameter 'train_epoch'.*Did you mean 'train_epochs'\?"):
        params_from_mapping({"train_epoch": 3})


def test_a_key_without_a_stage_prefix_is_an_error_naming_the_prefixes():
    with pytest.raises(ConfigError, match=r"'trian_epochs'.*none of the stage prefixes run_, demo_"):
        params_from_mapping({"trian_epochs": 3})


def test_a_mistyped_value_names_the_params_key():
    with pytest.raises(ConfigError, match=r"train_epochs: expected an integer, got 'three'"):
        params_from_mapping({"train_epochs": "three"})


def test_layering_demo_and_tiny_gives_what_the_entry_points_read():
    # papermill -f demo.yaml -f tiny.yaml == python -m esi.train/esi.evaluate/esi.rag --config demo --config tiny
    params = params_from_mapping(layer_params([DEMO, TINY]))
    assert params.train == load_config(TrainConfig, [DEMO, TINY], section="train")
    assert params.cqa == load_cqa_config([DEMO, TINY])
    assert params.evaluate == load_evaluate_config([DEMO, TINY])[0]


def test_cqa_yaml_is_flat_and_loads_the_settings_it_always_held():
    # params/cqa.yaml was a nested `cqa:` section; flat `cqa_*` keys (one mapping-valued key per endpoint) must
    # give exactly the CQAConfig it gave then: every documented default.
    assert all(key.startswith("cqa_") for key in yaml_keys(CQA))
    cfg = load_cqa_config(CQA)
    assert cfg == CQAConfig()
    assert (cfg.top_k, cfg.min_score, cfg.backend, cfg.chunk_size, cfg.max_retries) == (3, 0.6, "extractive", 512, 4)
    assert cfg.openai == OpenAIEndpointConfig(base_url="http://127.0.0.1:8000/v1", model="",
                                              api_key_env="OPENAI_API_KEY", temperature=0.0, max_tokens=256,
                                              timeout_s=60.0)
    assert (cfg.hf.device, cfg.hf.dtype, cfg.hf.max_new_tokens) == ("cpu", "auto", 200)
    assert cfg.prompt_template.startswith("Reference passages from an ECG knowledge base:\n{context}\n\n")
    assert cfg.prompt_template.endswith("in which leads. Plain prose, no lists.")
    assert cfg.system_prompt.startswith("You are a cardiologist") and not cfg.system_prompt.endswith("\n")
    assert load_cqa_config(CQA, ["cqa_openai.model=llama3", "cqa_top_k=5"]).openai.model == "llama3"


def test_a_nested_section_is_refused_saying_how_to_write_it_flat(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("cqa:\n  top_k: 5\n  openai: {model: llama3}\n")
    for load in (lambda: load_cqa_config(nested), lambda: load_evaluate_config(nested),
                 lambda: load_config(TrainConfig, nested, section="train")):
        with pytest.raises(ConfigError, match=r"section 'cqa' is nested.*`cqa_top_k: \.\.\.`"):
            load()


def test_evaluate_overrides_take_full_keys_and_run_name():
    config, run_name = load_evaluate_config([DEMO], ["evaluate_probe_epochs=20", "run_name=mine"])
    assert (config.probe_epochs, run_name) == (20, "mine")
    assert load_evaluate_config([DEMO])[1] == yaml_keys(DEMO)["run_name"]
    with pytest.raises(ConfigError, match=r"--set probe_epochs=20: did you mean evaluate_probe_epochs\?"):
        load_evaluate_config([DEMO], ["probe_epochs=20"])


@pytest.mark.parametrize("item, hint", [("epochs=2", "train_epochs"), ("top_k=5", "cqa_top_k"),
                                        ("cqa_openai.modle=x", None)])
def test_report_set_takes_full_keys_and_refuses_a_short_one_with_a_did_you_mean(item, hint, capsys):
    from esi.report import main as report_main

    assert report_main(["--config", str(DEMO), "--set", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    if hint:
        assert err[0].startswith(f"error: --set {item}: did you mean {hint}?"), err
    else:       # a full key reaches the parameters: cqa_openai.modle is then an unknown entry of cqa_openai
        assert "'modle'" in err[0] and "Did you mean 'model'" in err[0], err


def test_later_files_and_overrides_win_key_by_key():
    values = layer_params([DEMO, TINY], {"train_epochs": 7})
    assert values["train_epochs"] == 7
    assert values["demo_n_mimic"] == yaml_keys(TINY)["demo_n_mimic"]
    assert values["train_ecg_encoder"] == yaml_keys(DEMO)["train_ecg_encoder"]


def test_relocate_moves_every_path_inside_the_run_folder_and_nothing_else(tmp_path):
    moved = relocate(layer_params([DEMO]), tmp_path / "run")
    assert moved["run_dir"] == str(tmp_path / "run")
    assert moved["train_data_root"] == str(tmp_path / "run" / "corpus" / "mimic-iv-ecg")
    assert moved["evaluate_encoders"][0]["path"] == str(tmp_path / "run" / "pretrain" / "model")
    assert moved["train_text_encoder"] == "minilm"
    assert params_from_mapping(moved).figures_dir == tmp_path / "run" / "figures"


def test_load_params_reads_a_notebooks_globals_and_rejects_an_injected_typo():
    namespace = {"run_name": "demo", "train_epochs": 2, "np": pytest, "helper": len}
    assert load_params(namespace).train.epochs == 2
    with pytest.raises(ConfigError, match="Did you mean 'train_epochs'"):
        load_params({"run_name": "demo", "train_epoch": 2})


# --- the notebooks' parameter cells ---------------------------------------------------------------------------


def parameters_cell(path: Path) -> str:
    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_lists_every_parameter_with_a_type_and_a_comment(path):
    assigned = re.findall(r"^(\w+)\s*:", parameters_cell(path), re.MULTILINE)
    listed = papermill.inspect_notebook(str(path))
    assert list(listed) == assigned            # a line papermill cannot parse would be dropped silently
    for name, parameter in listed.items():
        assert parameter["inferred_type_name"] != "None", f"{name} has no type annotation"
        assert parameter["help"], f"{name} has no comment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defaults_are_the_demo_values(path):
    demo = yaml_keys(DEMO)
    for name, parameter in papermill.inspect_notebook(str(path)).items():
        assert name in demo, f"{path.name} declares {name}, which params/demo.yaml does not set"
        assert ast.literal_eval(parameter["default"]) == demo[name], f"{path.name}: {name} differs from demo.yaml"


# Each notebook declares every demo.yaml key of what it runs, so opened without -f it runs the demo.
READS = {
    "01_cardio_query_assistant": ("run_", "demo_", "cqa_", "data_statements", "data_reference_dict", "data_queries"),
    "02_data_exploration": ("run_", "demo_", "data_examples", "data_text_sample", "data_beat_", "data_seed",
                            "evaluate_ptbxl_root", "train_text_encoder", "train_max_text_length",
                            *(f"train_{f}" for f in CORPUS_FIELDS)),
    "03_pretrain": ("run_", "demo_", "train_"),
    "04_ptbxl_evaluation": ("run_", "demo_", "evaluate_"),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_declares_every_demo_key_it_reads(path):
    declared = set(papermill.inspect_notebook(str(path)))
    needed = {k for k in yaml_keys(DEMO) if k.startswith(READS[path.stem])}
    assert needed - declared == set()


def test_every_demo_key_is_declared_by_some_notebook():
    declared = set().union(*(papermill.inspect_notebook(str(p)) for p in NOTEBOOKS))
    assert set(yaml_keys(DEMO)) - declared == set()


def test_params_readme_names_every_stage_prefix():
    text = (PARAMS / "README.md").read_text()
    for prefix in ("run_", "demo_", "data_", "cqa_", "train_", "evaluate_"):
        assert f"`{prefix}`" in text
