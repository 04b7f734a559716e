"""params/*.yaml and the notebooks' parameter cells: every key belongs to a stage, type-checks, is commented,
layers as papermill does, each file states only what differs from what it is layered on, and a notebook's own
base (the demo) never leaks into a run given another file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from esi.config import ConfigError, load_config, setting
from esi.evaluate.config import load_evaluate_config
from esi.params import known_parameters, layer_params, load_params, params_from_mapping, relocate
from esi.rag.config import CQAConfig, OpenAIEndpointConfig, load_cqa_config
from esi.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params"
DEMO, TINY, PAPER, BENCHMARK, CQA, THREE, ZOO = (PARAMS / f"{n}.yaml" for n in (
    "demo", "tiny", "mimic_paper", "ptbxl_benchmark", "cqa", "ecg_benchmarks", "encoder_zoo"))
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PARAMS_FILES = {"demo": [DEMO], "demo+tiny": [DEMO, TINY], "tiny": [TINY], "mimic_paper": [PAPER],
                "ptbxl_benchmark": [BENCHMARK], "cqa": [CQA], "ecg_benchmarks": [THREE], "encoder_zoo": [ZOO]}


def yaml_keys(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", list(PARAMS_FILES))
def test_every_key_of_a_params_file_belongs_to_a_stage_and_type_checks(name):
    params = params_from_mapping(layer_params(PARAMS_FILES[name]), name)
    assert params.values.keys() == layer_params(PARAMS_FILES[name]).keys()


@pytest.mark.parametrize("path", [DEMO, TINY, PAPER, BENCHMARK, CQA, THREE, ZOO], ids=lambda p: p.name)
def test_every_key_of_a_params_file_is_commented(path):
    lines = path.read_text().splitlines()
    uncommented = [key for key in yaml_keys(path)
                   if not any(re.match(rf"^{key}:.*#\s*\S", line) for line in lines)]
    assert uncommented == [], f"{path.name}: keys without a comment on their line: {uncommented}"


@pytest.mark.parametrize("path", [DEMO, TINY, PAPER, BENCHMARK, CQA, THREE, ZOO], ids=lambda p: p.name)
def test_every_params_file_names_what_it_is_layered_on(path):
    # Stated even when [] ("the defaults alone"): papermill -f then replaces the notebook's own base (the demo).
    assert "run_params_files" in yaml_keys(path)


def typed_value(values: dict, key: str):
    section, name = known_parameters()[key]
    return setting(getattr(params_from_mapping(values), section), name)


@pytest.mark.parametrize("path", [DEMO, TINY, PAPER, BENCHMARK, CQA, THREE, ZOO], ids=lambda p: p.name)
def test_a_params_file_states_only_what_differs_from_its_base(path):
    """Each default is written once, in its stage's dataclass: a file restating a value its base already gives
    (the defaults, or the files it names) is a second copy that drifts."""
    own = yaml_keys(path)
    base = layer_params(own["run_params_files"])
    restated = [key for key, value in own.items()
                if key != "run_params_files" and typed_value(base, key) == typed_value({**base, key: value}, key)]
    assert restated == [], f"{path.name} restates what its base gives: {restated}"


def test_tiny_alone_is_the_demo_with_tinys_changes():
    # tiny.yaml names demo.yaml as its base: `--config tiny.yaml` == `--config demo.yaml --config tiny.yaml`.
    assert layer_params([TINY]) == layer_params([DEMO, TINY])
    assert load_config(TrainConfig, [TINY], section="train") == load_config(TrainConfig, [DEMO, TINY], section="train")


def test_papermill_f_mimic_paper_replaces_the_notebooks_demo_base(tmp_path):
    """A notebook's parameters cell names the demo as its base; papermill -f mimic_paper.yaml injects that file's
    keys after it, including its own `run_params_files: []`, so no demo value reaches the paper run."""
    cell = {"run_params_files": ["params/demo.yaml"]}
    injected = {**cell, **yaml_keys(PAPER)}
    params = load_params(injected)
    paper = params_from_mapping(layer_params([PAPER]))
    assert [getattr(params, s) for s in ("run", "demo", "data", "cqa", "train", "evaluate")] == \
        [getattr(paper, s) for s in ("run", "demo", "data", "cqa", "train", "evaluate")]
    demo_only = {k for k in yaml_keys(DEMO) if k not in yaml_keys(PAPER) and k != "run_params_files"}
    assert demo_only, "the demo changes settings the paper leaves at their defaults"
    for key in demo_only:
        assert typed_value(layer_params([PAPER]), key) == typed_value({}, key), f"demo's {key} leaked"
    assert (params.train.ecg_encoder, params.train.fs, params.demo.corpus_dir) == ("convnextv2_base", 500.0, "")
    # The cell alone (no -f): the demo. A -p value wins over the base.
    assert load_params({**cell}).train == load_config(TrainConfig, [DEMO], section="train")
    assert load_params({**cell, "train_epochs": 7}).train.epochs == 7


def test_base_files_in_a_cycle_are_an_error(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"run_params_files: [{b}]\ntrain_epochs: 2\n")
    b.write_text(f"run_params_files: [{a}]\n")
    with pytest.raises(ConfigError, match="cycle"):
        layer_params([a])


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


def test_cqa_defaults_are_the_settings_params_cqa_yaml_always_held():
    # params/cqa.yaml once listed every default (nested, then flat); the defaults now live in CQAConfig alone and
    # must still be those values. cqa.yaml is the LLM example: only what differs.
    cfg = CQAConfig()
    assert (cfg.top_k, cfg.min_score, cfg.backend, cfg.chunk_size, cfg.max_retries) == (3, 0.6, "extractive", 512, 4)
    assert cfg.openai == OpenAIEndpointConfig(base_url="http://127.0.0.1:8000/v1", model="",
                                              api_key_env="OPENAI_API_KEY", temperature=0.0, max_tokens=256,
                                              timeout_s=60.0)
    assert (cfg.hf.device, cfg.hf.dtype, cfg.hf.max_new_tokens) == ("cpu", "auto", 200)
    assert cfg.prompt_template.startswith("Reference passages from an ECG knowledge base:\n{context}\n\n")
    assert cfg.prompt_template.endswith("in which leads. Plain prose, no lists.")
    assert cfg.system_prompt.startswith("You are a cardiologist") and not cfg.system_prompt.endswith("\n")
    assert all(key.startswith(("cqa_", "run_params_files")) for key in yaml_keys(CQA))
    llm = load_cqa_config(CQA, ["cqa_openai.model=llama3", "cqa_top_k=5"])
    assert (llm.backend, llm.openai.model, llm.openai.base_url, llm.top_k) == ("openai", "llama3",
                                                                               "http://127.0.0.1:8000/v1", 5)


def test_a_nested_section_is_refused_saying_how_to_write_it_flat(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("cqa:\n  top_k: 5\n  openai: {model: llama3}\n")
    for load in (lambda: load_cqa_config(nested), lambda: load_evaluate_config(nested),
                 lambda: load_config(TrainConfig, nested, section="train")):
        with pytest.raises(ConfigError, match=r"section 'cqa' is nested.*`cqa_top_k: \.\.\.`"):
            load()


def test_evaluate_overrides_take_full_keys_and_run_name():
    config, run_name = load_evaluate_config([DEMO], ["evaluate_probe_epochs=20", "run_name=mine"])
    assert (config.probe.epochs, run_name) == (20, "mine")
    assert load_evaluate_config([TINY])[1] == "tiny"      # tiny.yaml's run_name, read through its base
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


# --- an edited notebook writes its own run folder ------------------------------------------------------------


def try_an_idea(notebook: Path) -> dict:
    """The notebook's globals after its parameters cell with the suggested ideas uncommented, as a user does."""
    lines = parameters_cell(notebook).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Try an idea"))
    source = "\n".join(lines[:start + 1] + [line.removeprefix("# ") for line in lines[start + 1:]])
    namespace: dict = {}
    exec(source, namespace)
    namespace.pop("__builtins__")
    return namespace


def test_03s_suggested_idea_trains_into_its_own_folder_beside_the_demo(capsys):
    params = load_params(try_an_idea(REPO / "notebooks" / "03_pretrain.ipynb"))
    demo = load_params({"run_params_files": ["params/demo.yaml"]})
    assert params.train.epochs == 5 and demo.train.epochs == 3
    variant = demo.run_dir.with_name("demo-train_epochs_5")
    assert params.run_dir == variant and params.figures_dir == variant / "figures"
    assert Path(params.train.out_dir) == variant / "pretrain"
    assert Path(params.evaluate.out_dir) == variant
    assert Path(params.evaluate.encoders[0].path) == variant / "pretrain" / "model"   # 04 scores this run's model
    # inputs are the demo's: its corpus, store and the dictionary 01 wrote
    for field in ("data_root", "store_dir", "waveform_dict", "patients"):
        assert getattr(params.train, field) == getattr(demo.train, field), field
    assert "writes to outputs/demo-train_epochs_5, not to outputs/demo" in capsys.readouterr().out


def test_an_evaluation_idea_keeps_scoring_the_demos_model():
    params = load_params(try_an_idea(REPO / "notebooks" / "04_ptbxl_evaluation.ipynb"))
    demo = load_params({"run_params_files": ["params/demo.yaml"]})
    assert params.run_dir == demo.run_dir.with_name("demo-evaluate_probe_epochs_100")
    assert params.train.out_dir == demo.train.out_dir
    assert params.evaluate.encoders == demo.evaluate.encoders


def test_make_demo_and_explicit_folders_write_where_they_say(tmp_path):
    # esi.report injects every key with the file's own `run_params_files: []`: nothing to differ from
    demo = layer_params([DEMO])
    assert load_params(dict(demo)).run_dir == params_from_mapping(demo).run_dir
    # an edit that names the run folder is taken as it is; run_name alone names outputs/<run_name>
    cell = {"run_params_files": ["params/demo.yaml"], "train_epochs": 5}
    assert load_params({**cell, "run_dir": str(tmp_path)}).run_dir == tmp_path
    named = load_params({**cell, "run_name": "five_epochs"})
    assert named.run_dir.name == "five_epochs" and Path(named.train.out_dir) == named.run_dir / "pretrain"


# --- the notebooks' parameter cells ---------------------------------------------------------------------------


def parameters_cell(path: Path) -> str:
    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_parameters_cell_names_its_base_and_holds_no_default(path):
    """Defaults live in the stages' dataclasses; the cell only names the demo as the notebook's base, so a notebook
    opened in JupyterLab runs the demo and a papermill -f file replaces it."""
    listed = papermill.inspect_notebook(str(path))
    assert list(listed) == ["run_params_files"]
    assert ast.literal_eval(listed["run_params_files"]["default"]) == ["params/demo.yaml"]
    assert listed["run_params_files"]["help"]


def test_params_readme_names_every_stage_prefix():
    text = (PARAMS / "README.md").read_text()
    for prefix in ("run_", "demo_", "data_", "cqa_", "train_", "evaluate_"):
        assert f"`{prefix}`" in text


def test_every_params_file_is_tested():
    assert {p.name for p in PARAMS.glob("*.yaml")} == {p.name for p in (DEMO, TINY, PAPER, BENCHMARK, CQA, THREE, ZOO)}


def test_ecg_benchmarks_runs_the_three_benchmarks_on_merls_records():
    config, run_name = load_evaluate_config([THREE])
    assert (config.datasets, config.challenge_split, config.challenge_length_policy) == (
        ["ptbxl", "cpsc2018", "csn"], "merl", "merl")
    assert config.probe.fractions == [0.01, 0.1, 1.0] and config.random_baselines and run_name == "ecg_benchmarks"


def test_encoder_zoo_puts_each_released_encoder_beside_esi_on_merls_preset():
    from esi.evaluate.encoders import EXTERNAL_KINDS

    config, run_name = load_evaluate_config([ZOO])
    kinds = [spec.kind for spec in config.encoders]
    assert kinds[0] == "esi" and {"merl", "ecgfounder", "stmem", "hubert_ecg", "ked"} <= set(kinds) <= {
        "esi", *EXTERNAL_KINDS}
    assert all(spec.path and spec.name for spec in config.encoders)
    assert (config.datasets, config.challenge_split, run_name) == (["ptbxl", "cpsc2018", "csn"], "merl", "encoder_zoo")
    assert "zero_shot" not in config.protocols and config.random_baselines
    ecgfix, _ = load_evaluate_config([ZOO], ["evaluate_challenge_split=ecgfix",
                                             "evaluate_challenge_length_policy=drop_short"])
    assert (ecgfix.challenge_split, ecgfix.challenge_length_policy) == ("ecgfix", "drop_short")
