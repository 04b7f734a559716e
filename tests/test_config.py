"""Config loading: typed fields, unknown keys rejected, layering, stage prefixes, broken YAML."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from esi.config import (ConfigError, flat_fields, load_config, overrides_for, save_config, section_keys, setting,
                        settings_group)


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
    cfg = load_config(Stage, [a, b], ["train_lr=0.5"], section="train")
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


def test_a_nested_section_is_refused_with_the_flat_spelling_and_saved_config_reloads(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  epochs: 4\ncqa_backend: extractive\n")
    for section in ("train", "cqa", None):
        with pytest.raises(ConfigError, match=r"section 'train' is nested.*write `train: \{epochs: \.\.\.\}` as "
                                              r"`train_epochs: \.\.\.`"):
            load_config(Stage, f, section=section)
    f.write_text("train_epochs: 4\ncqa_backend: extractive\n")
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
    assert load_config(WithMapping, [a], ["train_model.n_queries=8"], section="train").model == {
        "latent_dim": 128, "n_queries": 8}


def test_overrides_are_full_params_keys_and_anything_else_is_one_line_with_a_did_you_mean():
    known = ["train_epochs", "train_lr", "train_model", "run_name"]
    assert overrides_for("train", ["train_epochs=2", "train_lr=0.5", "train_model.latent_dim=64", "run_name=x"],
                         known) == {"epochs": 2, "lr": 0.5, "model.latent_dim": 64, "run_name": "x"}
    assert overrides_for(None, ["train_epochs=2", "cqa_top_k=[1, 2]"]) == {"train_epochs": 2, "cqa_top_k": [1, 2]}
    for item, hint in [("epochs=2", "train_epochs"), ("evaluate_epochs=2", "train_epochs"),
                       ("train_epoch=2", "train_epochs"), ("model.latent_dim=3", "train_model.latent_dim")]:
        with pytest.raises(ConfigError) as err:
            overrides_for("train", [item], known)
        message = str(err.value)
        assert message.startswith(f"--set {item}: did you mean {hint}?") and "\n" not in message, message
    with pytest.raises(ConfigError, match=r"--set zzz=1: unknown key 'zzz'"):
        overrides_for("train", ["zzz=1"], known)
    with pytest.raises(ConfigError, match=r"--set epochs=2: did you mean train_epochs\?"):
        overrides_for(None, ["epochs=2"], known)
    with pytest.raises(ConfigError, match="not of the form key=value"):
        overrides_for("train", ["train_epochs"], known)


def test_a_number_written_1e_3_is_a_float_although_yaml_1_1_reads_it_as_a_string():
    from dataclasses import dataclass

    from esi.config import ConfigError, load_config

    @dataclass
    class Settings:
        lr: float = 0.1
        name: str = "x"

    assert load_config(Settings, overrides={"lr": "1e-3"}).lr == 1e-3
    assert load_config(Settings, overrides={"name": "1e-3"}).name == "1e-3"   # a string stays a string
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(Settings, overrides={"lr": "fast"})


@dataclass
class Head:
    epochs: int = 100
    decays: list[float] = field(default_factory=lambda: [0.0, 1e-2])

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


@dataclass
class Shared:
    n_boot: int = 100


@dataclass
class Nested:
    device: str = "cpu"
    shared: Shared = settings_group(Shared, prefix="")
    probe: Head = settings_group(Head)


def test_a_settings_group_is_spelled_flat_type_checked_and_saved_flat(tmp_path):
    assert flat_fields(Nested) == {"device": ("device",), "n_boot": ("shared", "n_boot"),
                                   "probe_epochs": ("probe", "epochs"), "probe_decays": ("probe", "decays")}
    assert section_keys("evaluate", Nested) == ["evaluate_device", "evaluate_n_boot", "evaluate_probe_epochs",
                                                "evaluate_probe_decays"]
    f = tmp_path / "p.yaml"
    f.write_text("evaluate_probe_epochs: 3\nevaluate_n_boot: 7\n")
    cfg = load_config(Nested, f, ["evaluate_probe_decays=[0.1]"], section="evaluate")
    assert (cfg.probe, cfg.shared.n_boot, setting(cfg, "probe_epochs")) == (Head(3, [0.1]), 7, 3)
    with pytest.raises(ConfigError, match=r"--set evaluate_probe_epoch=2: did you mean evaluate_probe_epochs\?"):
        load_config(Nested, f, ["evaluate_probe_epoch=2"], section="evaluate")
    with pytest.raises(ConfigError, match=r"unknown key 'probe_epoch' .*Did you mean 'probe_epochs'"):
        load_config(Nested, overrides={"probe_epoch": 2})
    with pytest.raises(ConfigError, match=r"Nested.probe_epochs: expected an integer, got 'x'"):
        load_config(Nested, overrides={"probe_epochs": "x"})
    with pytest.raises(ConfigError, match=r"Nested.probe: epochs must be >= 1"):
        load_config(Nested, overrides={"probe_epochs": 0})
    save_config(cfg, tmp_path / "resolved.yaml")
    assert "probe_epochs: 3\n" in (tmp_path / "resolved.yaml").read_text()     # spelled as the params spell it
    assert load_config(Nested, tmp_path / "resolved.yaml") == cfg
