"""Configuration is data: YAML files in params/ loaded into typed dataclasses.

Each stage declares one dataclass of its settings. `load_config` layers YAML files and overrides (later wins,
as papermill's `-f a.yaml -f b.yaml -p key value` does) and rejects keys the dataclass does not declare, with a
"did you mean" hint, so a typo never silently falls back to a default.

One spelling everywhere: a params key is flat, `<stage>_<setting>` (`train_epochs: 3`), in every params file, as
papermill's `-p train_epochs 3` and as every entry point's `--set train_epochs=3` (`overrides_for` parses those).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used as it is; the message says which and why."""


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from `path`, with a clear error for a missing file, broken YAML or a non-mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """'key=value' -> (key, value), the value parsed as YAML ('3' -> 3, 'true' -> True, '[1,2]' -> list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def merge(base: dict, update: Mapping) -> dict:
    """Layer `update` over `base` key by key, as papermill does: a value replaces the earlier one whole
    (a mapping is not merged into the earlier mapping). A dotted key ('model.latent_dim') sets one entry
    inside a mapping value, for command-line overrides."""
    out = dict(base)
    for key, value in update.items():
        if "." in key:
            head, rest = key.split(".", 1)
            inner = out.get(head)
            out[head] = merge(dict(inner) if isinstance(inner, Mapping) else {}, {rest: value})
        else:
            out[key] = value
    return out


def _unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    names = list(flat_fields(cls))
    hint = difflib.get_close_matches(key, names, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"unknown key {key!r} in {where}.{suggestion} Known keys: {', '.join(names)}")


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            return float(value)       # YAML 1.1 reads 1e-3 (no dot) as a string; it means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


# --- nested settings spelled flat -------------------------------------------------------------------------------

# A dataclass field holding a nested settings dataclass whose fields are spelled as flat keys of the outer one:
# EvaluateConfig.probe (ProbeSettings) is set by `probe_epochs`, ... (params key `evaluate_probe_epochs`).
GROUP = "esi.config.group_prefix"


def settings_group(cls: type, prefix: str | None = None):
    """A field of nested settings `cls` whose own fields are flat keys `<prefix><field>` of the outer dataclass.

    Args:
        cls: the nested settings dataclass (its defaults are the field's default).
        prefix: what its keys start with; None: the field's name and "_" (`probe` -> `probe_epochs`); "": its
            keys are spelled as the outer class's own (`n_boot`).
    """
    return field(default_factory=cls, metadata={GROUP: prefix})


def _group_prefix(f: dataclasses.Field) -> str | None:
    """The flat prefix of a settings-group field (None: an ordinary field)."""
    if GROUP not in f.metadata:
        return None
    return f.name + "_" if f.metadata[GROUP] is None else f.metadata[GROUP]


def flat_fields(cls: type) -> dict[str, tuple[str, ...]]:
    """Every flat key of dataclass `cls` -> the attribute path it sets: {"epochs": ("epochs",),
    "probe_epochs": ("probe", "epochs"), ...}; the fields of settings groups (`settings_group`) are spelled flat."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(cls):
        prefix = _group_prefix(f)
        if prefix is None:
            out[f.name] = (f.name,)
        else:
            out.update({prefix + key: (f.name, *path) for key, path in flat_fields(hints[f.name]).items()})
    return out


def setting(config: Any, key: str) -> Any:
    """The value of flat key `key` of a config dataclass (`setting(evaluate, "probe_epochs")`)."""
    value = config
    for name in flat_fields(type(config))[key]:
        value = getattr(value, name)
    return value


def with_changes(changes: Mapping[str, Any], *settings: Any) -> tuple:
    """Each of the dataclasses `settings` with the fields `changes` names replaced (a name goes to the first
    that has it): `probe, common = with_changes({"epochs": 3, "n_boot": 20}, ProbeSettings(), CommonSettings())`.

    Raises:
        TypeError: a name none of them has (listing theirs), as a function call with an unknown keyword.
    """
    left = dict(changes)
    out = []
    for one in settings:
        names = {f.name for f in dataclasses.fields(one)}
        mine = {k: left.pop(k) for k in list(left) if k in names}
        out.append(dataclasses.replace(one, **mine) if mine else one)
    if left:
        known = sorted({f.name for one in settings for f in dataclasses.fields(one)})
        raise TypeError(f"unknown setting(s) {', '.join(map(repr, left))}; known: {', '.join(known)}")
    return tuple(out)


def from_dict(cls: type[T], data: Mapping, where: str | None = None, _prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, type-checking each field and rejecting unknown keys. The fields of a
    settings group (`settings_group`) are flat keys (`probe_epochs: 3`), as `to_dict` writes them."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    flat = flat_fields(cls)
    kwargs, grouped = {}, {}
    for key, value in data.items():
        path = flat.get(key)
        if path is not None and len(path) > 1:          # a field of a settings group, spelled flat
            grouped.setdefault(path[0], {})[key[len(_group_prefix(fields[path[0]])):]] = value
        elif path is not None:
            kwargs[key] = _coerce(value, hints[key], f"{where}.{_prefix}{key}")
        else:
            raise _unknown_key_error(cls, key, where)
    for name, values in grouped.items():
        kwargs[name] = from_dict(hints[name], values, where, _prefix + _group_prefix(fields[name]))
    label = f"{where}.{_prefix[:-1]}" if _prefix.endswith("_") else where   # a group: its name
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{label}: {err}") from err
    except ValueError as err:        # a settings class's own check (__post_init__)
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{label}: {err}") from err


# One params file drives the whole chain (params/demo.yaml): its keys are FLAT and carry the stage they belong
# to as a prefix (`cqa_backend`, `train_epochs`, `run_name`), because papermill injects each top-level key as
# one notebook parameter and layers files key by key (`-f a.yaml -f b.yaml -p train_epochs 3`). A stage reads
# the keys with its prefix; a key with no known prefix is an error. A setting that is itself a mapping is one
# key with a mapping value (`cqa_openai: {base_url: ..., model: ...}`). The command line spells a key the same
# way: `--set train_epochs=3`, `--set cqa_openai.model=llama3` (a dot reaches one entry of a mapping value).
SECTIONS = ("run", "demo", "data", "cqa", "train", "evaluate")


def section_of(key: str) -> str | None:
    for section in SECTIONS:
        if key.startswith(section + "_"):
            return section
    return None


def _reject_nested(data: Mapping, where: str) -> None:
    """A nested `section: {key: v}` mapping is not a params format: say how to write it flat."""
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            example = next(iter(value), "name")
            raise ConfigError(f"{where}: section {key!r} is nested; params keys are flat, one per setting: write "
                              f"`{key}: {{{example}: ...}}` as `{key}_{example}: ...` (see params/README.md)")


def select_section(data: Mapping, section: str | None, where: str = "config") -> dict:
    """The keys of `section` (prefix stripped) from a flat params mapping.

    Keys of the other sections are ignored; a key that belongs to no section is an error, and so is a nested
    `section: {...}` mapping. A file written for one stage alone, with no prefixed key at all (a resolved config
    written by `save_config`), is returned unchanged.
    """
    _reject_nested(data, where)
    if section is None:
        return dict(data)
    if not any(section_of(k) for k in data):
        return dict(data)
    stray = [k for k in data if section_of(k) is None]
    if stray:
        prefixes = [f"{s}_" for s in SECTIONS]
        raise ConfigError(f"{where}: key {stray[0]!r} belongs to no stage; params keys start with one of "
                          f"{', '.join(prefixes)}")
    prefix = section + "_"
    return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def section_keys(section: str, cls: type) -> list[str]:
    """The flat params keys of dataclass `cls` as settings of `section`: ['train_epochs', 'train_lr', ...]."""
    return [f"{section}_{key}" for key in flat_fields(cls)]


def _did_you_mean(key: str, section: str | None, known: Sequence[str]) -> str | None:
    """The known key a mistyped `key` most likely meant: the same field with the right prefix, else the closest."""
    other = section_of(key)
    bare = key[len(other) + 1:] if other else key
    targets = [section] if section else list(SECTIONS)
    for target in targets:
        for candidate in (f"{target}_{key}", f"{target}_{bare}"):
            if candidate in known:
                return candidate
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    if close:
        return close[0]
    for target in targets:     # a misspelt setting: compare the part after the prefix
        fields = {k[len(target) + 1:]: k for k in known if k.startswith(target + "_")}
        close = difflib.get_close_matches(bare, list(fields), n=1, cutoff=0.6)
        if close:
            return fields[close[0]]
    return None


def overrides_for(section: str | None, items: Sequence[str], known: Sequence[str] | None = None) -> dict:
    """Command-line `--set KEY=VALUE` items -> the settings they override, for the stage `section`.

    Every entry point spells an override the same way: the full flat params key (as in the params files and
    papermill's `-p`), `=`, a YAML value: `train_epochs=2`, `evaluate_probe_epochs=20`, `cqa_top_k=5`. A dot
    reaches one entry of a mapping-valued setting: `cqa_openai.model=llama3`.

    Args:
        section: the stage the entry point runs ("train", "evaluate", "cqa"); its keys come back with the
            prefix stripped (`train_epochs=2` -> {"epochs": 2}). None: keys of any stage, returned whole.
        items: the "KEY=VALUE" strings.
        known: the full keys accepted (e.g. `section_keys("train", TrainConfig)`, plus "run_name" for
            esi.evaluate); one outside `section` comes back whole. None: any key with the section's prefix.

    Raises:
        ConfigError: a key without the prefix, another stage's key or an unknown key, in one line with a
            "did you mean" (`--set epochs=2: did you mean train_epochs? (a key is written in full, ...)`).
    """
    prefix = f"{section}_" if section else None
    out: dict = {}
    for item in items:
        key, value = parse_override(item)
        head = key.split(".", 1)[0]
        accepted = (head in known) if known is not None else (
            head.startswith(prefix) if prefix else section_of(head) is not None)
        if not accepted:
            hint = _did_you_mean(head, section, list(known or ()))
            what = f"did you mean {hint + key[len(head):]}?" if hint else f"unknown key {head!r}"
            other = section_of(head)
            stage = f"; {other}_ keys belong to the {other} stage" if section and other and other != section else ""
            raise ConfigError(f"--set {item}: {what} (a key is written in full, as in the params files: "
                              f"{prefix or '<stage>_'}<setting>{stage})")
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        out[key] = value
    return out


# A params file may name the files it is layered on (read first, later ones win, their own bases before them):
# `run_params_files: [params/demo.yaml]`. Every shipped file says it, `[]` for "on the defaults alone", so that
# papermill's `-f file` replaces the notebook's own base (the demo) instead of being layered on top of it.
BASE_KEY = "run_params_files"


def read_params(files: Sequence[str | os.PathLike] | str | os.PathLike | None) -> dict:
    """The flat params of YAML `files`, each layered on the files its `run_params_files` names (recursively).

    Keys layer as papermill does: later wins, a value replaces the earlier one whole. Paths in
    `run_params_files` are relative to the repository root, like every path in params.

    Raises:
        ConfigError: a missing or broken file, a nested section, or files that name each other in a cycle.
    """
    from esi.paths import resolve

    if files is None:
        files = []
    elif isinstance(files, (str, os.PathLike)):
        files = [files]
    values: dict = {}

    def read(path, chain: tuple) -> None:
        full = resolve(path)
        if full in chain:
            cycle = " -> ".join(str(c) for c in (*chain, full))
            raise ConfigError(f"{BASE_KEY} names files in a cycle: {cycle}")
        data = read_yaml(full)
        _reject_nested(data, str(path))
        bases = data.get(BASE_KEY) or []
        if isinstance(bases, (str, os.PathLike)):
            bases = [bases]
        if not isinstance(bases, list):
            raise ConfigError(f"{path}: {BASE_KEY} must be a list of params files, got {bases!r}")
        for base in bases:
            read(base, (*chain, full))
        values.update(data)

    for f in files:
        read(f, ())
    return values


def load_config(
    cls: type[T],
    files: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    overrides: Mapping | Sequence[str] | None = None,
    section: str | None = None,
) -> T:
    """Layer YAML `files` then `overrides` into dataclass `cls`.

    files: params YAML files, later ones win, each on the files its `run_params_files` names (`read_params`).
    section: read only that section of each file (see SECTIONS).
    overrides: a mapping of field names (`{"epochs": 2}`), or "KEY=VALUE" strings spelled as on the command
        line: with a section, the full params key (`train_epochs=2`, see `overrides_for`); without, the field.
    """
    where = ", ".join(str(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files or []))
    data = select_section(read_params(files), section, where=where or "config")
    if overrides:
        if isinstance(overrides, Mapping):
            data = merge(data, overrides)
        elif section is not None:
            data = merge(data, overrides_for(section, overrides, section_keys(section, cls)))
        else:
            data = merge(data, dict(parse_override(o) for o in overrides))
    return from_dict(cls, data)


def to_dict(config: Any) -> dict:
    """A plain dict of a config dataclass, ready for yaml.safe_dump; the fields of its settings groups are flat
    keys, as the params spell them (`probe_epochs: 3`)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            out = {}
            for f in dataclasses.fields(v):
                prefix = _group_prefix(f)
                value = plain(getattr(v, f.name))
                out.update({prefix + k: x for k, x in value.items()} if prefix is not None else {f.name: value})
            return out
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(config)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved config next to a run's outputs so the run can be repeated exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
