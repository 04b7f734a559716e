"""Config loading: typed fields, unknown keys rejected, layering, stage prefixes, broken YAML."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from esi.config import ConfigError, load_config, save_config


@dataclass
class Stage:
    epochs: int = 1
    lr: float = 1e-3
    encoder: str = "convnextv2_atto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    folds: list[int] = field(default_factory=lambda: [1, 2])
    resume: str | None = None


def test_layering_later_files_and_overrides_win(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("train_epochs: 5\ntrain_lr: 0.01\ncqa_backend: extractive\nrun_name: demo\n")
    b.write_text("train_epochs: 7\n")
    cfg = load_config(Stage, [a, b], ["lr=0.5"], section="train")
    assert (cfg.epochs, cfg.lr) == (7, 0.5)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train_epcohs: 5\n")
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_config(Stage, f, section="train")


def test_key_of_no_stage_is_an_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train_epochs: 5\nepochs: 3\n")
    with pytest.raises(ConfigError, match="belongs to no stage"):
        load_config(Stage, f, section="train")


def test_wrong_types_are_errors():
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(Stage, overrides={"epochs": "five"})
    with pytest.raises(ConfigError, match="not one of"):
        load_config(Stage, overrides={"precision": "int8"})
    assert load_config(Stage, overrides=["folds=[1, 2, 3]", "resume=auto"]).folds == [1, 2, 3]


def test_broken_yaml_and_missing_file_are_clear(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("train_epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Stage, f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Stage, tmp_path / "nope.yaml")


def test_nested_sections_spell_the_same_keys_and_saved_config_reloads(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  epochs: 4\ncqa_backend: extractive\n")
    cfg = load_config(Stage, f, section="train")
    assert cfg.epochs == 4
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Stage, tmp_path / "resolved.yaml") == cfg


@dataclass
class WithMapping:
    model: dict = field(default_factory=dict)


def test_a_mapping_value_is_replaced_whole_as_papermill_does_and_dotted_keys_set_one_entry(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("train_model: {latent_dim: 128, n_queries: 16}\n")
    b.write_text("train_model: {latent_dim: 64}\n")
    assert load_config(WithMapping, [a, b], section="train").model == {"latent_dim": 64}
    assert load_config(WithMapping, [a], ["model.n_queries=8"], section="train").model == {
        "latent_dim": 128, "n_queries": 8}
