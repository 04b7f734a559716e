"""The params of a whole run: every stage's settings from one flat mapping, for the notebooks and esi.report.

A params key is `<stage>_<setting>` (params/README.md); its default and its one-line comment are written once,
in the dataclass of its stage:

    run_      RunConfig                            (this module)
    demo_     DemoConfig                           (this module)
    data_     DataConfig                           (this module)
    cqa_      esi.rag.config.CQAConfig
    train_    esi.train.config.TrainConfig
    evaluate_ esi.evaluate.config.EvaluateConfig

A params file states only what differs from what it is layered on (`run_params_files`, read by
`esi.config.read_params`). A notebook's parameters cell names its base (`run_params_files = ["params/demo.yaml"]`:
the embedded demo); papermill injects its own values after that cell (`-f params/mimic_paper.yaml`, which names
its own base `[]` and so replaces the demo, or `-p train_epochs 2`); the next cell,

    from esi.params import load_params
    params = load_params(globals())

layers defaults <- base files <- the notebook's values, checks every key against the known ones (a key injected
with a typo stops with a "did you mean", never silently ignored) and type-checks each stage's dataclass:
params.run, params.demo, params.data, params.cqa, params.train, params.evaluate. The entry points read the same
files the same way (`python -m esi.train --config params/tiny.yaml` is demo.yaml, then tiny.yaml).
"""

from __future__ import annotations

import difflib
import os
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from esi.config import BASE_KEY, SECTIONS, ConfigError, flat_fields, from_dict, read_params, section_of, to_dict
from esi.paths import outputs_dir, resolve

# Nothing may download at run time; a notebook imports this module first (load_params), so set it for them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without ipywidgets tqdm falls back to text bars (fine in papermill and HTML); its warning is noise there.
warnings.filterwarnings("ignore", message="IProgress not found")

Task = Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]


@dataclass
class RunConfig:
    """Settings of the run as a whole (params keys `run_<field>`); each field's comment says what it sets."""

    # params files this run's own values are layered on (read first, later wins; each may name its own); []: the
    # defaults alone. A notebook's parameters cell sets ["params/demo.yaml"]
    params_files: list[str] = field(default_factory=list)
    name: str = "demo"                    # the run's name (evaluate_out_dir "" writes to outputs/<name>)
    # the folder of everything the notebooks write (figures/, the executed notebooks, index.html); "": outputs/<name>
    dir: str = ""
    # training processes: 1 trains inside the notebook; more start torchrun (one process per GPU) as a subprocess
    # and plot the curves live while it runs
    nproc_per_node: int = 1
    # with several processes: how often torchrun may restart them all after one dies; each restart resumes from
    # the newest checkpoint (torchrun's --max-restarts)
    max_restarts: int = 0
    refresh_s: float = 15.0               # seconds between live re-plots of the training curves (torchrun mode)

    def __post_init__(self):
        if self.nproc_per_node < 1:
            raise ConfigError(f"run_nproc_per_node must be >= 1, got {self.nproc_per_node}")
        if self.max_restarts < 0:
            raise ConfigError(f"run_max_restarts must be >= 0, got {self.max_restarts}")


@dataclass
class DemoConfig:
    """The offline demo corpus (params keys `demo_<field>`; see esi.data.demo_corpus.generate_demo)."""

    corpus_dir: str = ""                  # where to generate it; "": no demo corpus (real data)
    n_mimic: int = 600                    # records in the MIMIC-IV-ECG layout (the ECG-text pairs)
    n_ptbxl: int = 300                    # records in the PTB-XL layout (the evaluation set)
    seed: int = 0                         # everything in the corpus follows from it


@dataclass
class DataConfig:
    """What the notebooks read and show (params keys `data_<field>`)."""

    # the statement vocabulary the assistant describes (01): MIMIC-IV-ECG machine_measurements.csv, PTB-XL
    # scp_statements.csv, a statement -> description JSON, or a text file with one statement per line
    statements: str = ""
    # a statement -> description JSON to compare the generated descriptions with (e.g. the ESI paper's); "": none
    reference_dict: str = ""
    queries: list[str] = field(default_factory=list)   # free-text queries whose retrieved entries 01 shows
    examples: int = 4                     # ECGs of the pretraining corpus drawn on ECG paper (02)
    text_sample: int | None = 2000        # texts tokenised for the text-length statistics (02); None: all
    beat_task: Task = "superdiagnostic"   # the PTB-XL task whose classes get an average beat (02)
    beat_leads: list[str] = field(default_factory=lambda: ["II", "V1", "V5"])   # leads of the average-beat figure
    beat_records: int = 40                # records averaged per class at most
    seed: int = 0                         # which records are drawn and sampled


def stage_classes() -> dict[str, type]:
    """section name -> the dataclass holding its keys, for every section of esi.config.SECTIONS."""
    from esi.evaluate.config import EvaluateConfig
    from esi.rag.config import CQAConfig
    from esi.train import TrainConfig

    classes = {"run": RunConfig, "demo": DemoConfig, "data": DataConfig, "cqa": CQAConfig, "train": TrainConfig,
               "evaluate": EvaluateConfig}
    assert tuple(classes) == SECTIONS, "esi.config.SECTIONS and esi.params.stage_classes() must agree"
    return classes


def known_parameters() -> dict[str, tuple[str, str]]:
    """Every valid params key -> (section, flat key), e.g. 'train_epochs' -> ('train', 'epochs'),
    'evaluate_probe_epochs' -> ('evaluate', 'probe_epochs') (`esi.config.setting` reads its value)."""
    return {f"{section}_{key}": (section, key) for section, cls in stage_classes().items() for key in flat_fields(cls)}


def _unknown(key: str, known: Sequence[str], where: str) -> ConfigError:
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    prefix = section_of(key)
    if prefix is None:
        why = f"it starts with none of the stage prefixes {', '.join(s + '_' for s in SECTIONS)}"
    else:
        why = f"the {prefix} stage has no such setting"
    return ConfigError(f"unknown parameter {key!r} in {where}: {why}.{suggestion} "
                       "params/README.md lists where every stage's keys are documented.")


@dataclass
class Params:
    """Every stage's settings, type-checked, plus the flat mapping they came from (`values`)."""

    run: RunConfig
    demo: DemoConfig
    data: DataConfig
    cqa: Any
    train: Any
    evaluate: Any
    values: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """The run folder (run_dir, or outputs/<run_name>)."""
        return resolve(self.run.dir) if self.run.dir else outputs_dir() / self.run.name

    @property
    def figures_dir(self) -> Path:
        """<run folder>/figures: where `show` saves every figure."""
        return self.run_dir / "figures"


def params_from_mapping(values: Mapping[str, Any], where: str = "parameters") -> Params:
    """Check flat params keys and build every stage's config from them (missing keys take their defaults).

    Args:
        values: flat key -> value (`train_epochs: 3`), as papermill injects them or a params file holds them.
        where: names the source in error messages.

    Raises:
        ConfigError: an unknown key (with a "did you mean") or a value of the wrong type, naming the key.
    """
    known = known_parameters()
    by_section: dict[str, dict] = {section: {} for section in SECTIONS}
    for key, value in values.items():
        if key not in known:
            raise _unknown(key, list(known), where)
        section, name = known[key]
        by_section[section][name] = value
    configs = {}
    for section, cls in stage_classes().items():
        try:
            configs[section] = from_dict(cls, by_section[section], where=f"{where}: {section}")
        except ConfigError as err:
            # from_dict names the field without its prefix; name the params key the user actually wrote.
            message = str(err).replace(f"{where}: {section}.", f"{where}: {section}_")
            raise ConfigError(message) from None
    return Params(**configs, values=dict(values))


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


_SEEN_KEY = "_esi_parameter_names"


def load_params(namespace: dict, where: str = "the notebook's parameters") -> Params:
    """Validate a notebook's parameters (its globals after the parameters and injected cells) into `Params`.

    The files named by `run_params_files` are read first (see `esi.config.read_params`); the notebook's own
    values win over them. Every global that holds a plain value (str, number, bool, None, list, dict) and is not
    IPython's own must be
    a known params key: a key papermill injected with a typo fails here, naming it, instead of being ignored.

    Args:
        namespace: the notebook's `globals()`.
        where: names the source in error messages.

    Raises:
        ConfigError: an unknown or mistyped parameter.
    """
    hidden: set = set()
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            hidden = set(shell.user_ns_hidden)
    except ImportError:
        pass
    # Re-running this cell later in an interactive session: variables that later cells created are not
    # parameters, unless they look like one (a stage prefix, or close to a known key: an edited parameter cell).
    first_names = namespace.get(_SEEN_KEY)
    known = list(known_parameters())
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in hidden or name in ("In", "Out", "exit", "quit"):
            continue
        if isinstance(value, (types.ModuleType, type)) or callable(value) or not _plain(value):
            continue
        if first_names is not None and name not in first_names:
            if section_of(name) is None and not difflib.get_close_matches(name, known, n=1, cutoff=0.8):
                continue
        values[name] = value
    if first_names is None:
        namespace[_SEEN_KEY] = frozenset(values)
    # The base files first (the parameters cell names the demo's; an injected params file names its own).
    base = read_params(values.get(BASE_KEY) or [])
    layered = {**base, **values}
    variant = variant_of(base, layered)
    if variant != layered:
        old, new = (shown(params_from_mapping(v, where).run_dir) for v in (layered, variant))
        print(f"[esi] these parameters change {', '.join(edits_to(base, layered))} of "
              f"{', '.join(map(str, values[BASE_KEY]))}: this run writes to {new}, not to {old} (the base run's "
              "folder); set run_dir to choose another", flush=True)
    return params_from_mapping(variant, where)


def layer_params(files: Sequence[str | os.PathLike] = (), overrides: Mapping[str, Any] | None = None) -> dict:
    """Flat params from YAML files then overrides, layered key by key as papermill does (`-f a -f b -p k v`).

    A key's value is replaced as a whole (a mapping value is not merged), exactly what papermill injects; each
    file is layered on the files its `run_params_files` names (`esi.config.read_params`).

    Args:
        files: params YAML files; later files win.
        overrides: key -> value applied last.
    """
    return {**read_params(list(files)), **(overrides or {})}


def relocate(values: Mapping[str, Any], new_dir: str | os.PathLike) -> dict:
    """The same params with the run moved: every path inside the run folder now points inside `new_dir`.

    The run folder is `run_dir` (or outputs/<run_name>); a string value that resolves to a path inside it
    (also inside lists and mappings, e.g. evaluate_encoders' paths) is rewritten, and run_dir becomes `new_dir`.
    Paths outside the run folder (data downloads, bundled models) are left alone.

    Args:
        values: flat params (e.g. from `layer_params`).
        new_dir: the new run folder.
    """
    params = params_from_mapping(values, "relocate")
    old = params.run_dir.resolve()
    new = Path(resolve(new_dir)).resolve()

    def move(value):
        if isinstance(value, str) and value and "\n" not in value:
            path = resolve(value)
            if path is not None and (path == old or old in path.parents):
                return str(new / path.relative_to(old))
            return value
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    moved = {key: move(value) for key, value in values.items()}
    moved["run_dir"] = str(new)
    return moved


# --- an edited base: its own run folder ---------------------------------------------------------------------------

# train_* settings the ECG store is converted with: changing one needs a store of its own.
STORE_SETTINGS = ("train_corpus", "train_data_root", "train_fs", "train_seconds", "train_max_records")


def edits_to(base: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """The keys whose value in `values` differs from what the base files (`base`, on the defaults) give."""
    defaults = {f"{section}_{k}": v for section, config in _default_configs().items()
                for k, v in to_dict(config).items()}
    return [key for key, value in values.items()
            if key != BASE_KEY and value != base.get(key, defaults.get(key))]


def _default_configs() -> dict:
    return {section: cls() for section, cls in stage_classes().items()}


def variant_of(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """`values` with its outputs moved out of the base run's folder when they change the base files' settings.

    A notebook layered on params/demo.yaml with one edited key (03's `train_epochs: int = 5`) would otherwise
    write into outputs/demo, the folder `make demo` renders, and resume its finished model under other settings.
    Its run folder becomes <base run folder>-<key>_<value> (or outputs/<run_name> when run_name is among the
    edits); inside it go the figures, the evaluation results and, when a train_* key changed, the pretraining run
    (whose model evaluate_encoders then names) and, when a setting the ECG store is converted with changed, the
    store. Inputs (corpus, store, the CQA's dictionary) are still read from the base.
    Nothing moves without base files or when the edits set run_dir; a folder the edits set stays where they say.
    """
    edits = edits_to(base, values)
    if not base or not edits or "run_dir" in edits:
        return dict(values)
    old = params_from_mapping(values, "the base")
    if "run_name" in edits:
        new_dir = outputs_dir() / values["run_name"]
    else:
        named = [key for key in edits if key not in ("train_out_dir", "evaluate_out_dir")] or edits
        suffix = "-".join(f"{key}_{_slug(values[key])}" for key in named[:2])
        if len(named) > 2:   # a short, stable name for many edits
            suffix += f"-and-{len(named) - 2}-more-" + _digest({key: values[key] for key in named})
        new_dir = old.run_dir.with_name(f"{old.run_dir.name}-{suffix}")
    moved = dict(values, run_dir=str(new_dir))
    if old.evaluate.out_dir and "evaluate_out_dir" not in edits:
        moved["evaluate_out_dir"] = str(_move(resolve(old.evaluate.out_dir), old.run_dir, new_dir))
    if any(section_of(key) == "train" for key in edits) and "train_out_dir" not in edits:
        old_train, new_train = resolve(old.train.out_dir), new_dir / "pretrain"
        moved["train_out_dir"] = str(new_train)
        if set(edits) & set(STORE_SETTINGS) and old.train.store_dir:
            moved["train_store_dir"] = str(new_dir / "store")
        if "evaluate_encoders" in values:   # the encoders 04 evaluates: the model this run trains, not the base's
            moved["evaluate_encoders"] = [
                dict(spec, path=str(_move(resolve(spec["path"]), old_train, new_train)))
                if isinstance(spec, dict) and spec.get("path") else spec for spec in values["evaluate_encoders"]]
    return moved


def _move(path: Path, old: Path, new: Path) -> Path:
    """`path` with folder `old` replaced by `new` when it lies inside `old`; else `path` itself."""
    return new / path.relative_to(old) if path == old or old in path.parents else path


def shown(path: Path) -> str:
    """`path` relative to the repository root when inside it (how params name paths), else as it is."""
    from esi.paths import repo_root

    return str(_move(path, repo_root(), Path(".")))


def _slug(value: Any) -> str:
    text = str(value).replace(os.sep, "_")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:40]


def _digest(values: Mapping[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]
