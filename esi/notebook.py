"""What the notebooks call: parameter validation, run folders, showing figures, and the small glue between stages.

A notebook's first code cell (tagged `parameters`) assigns typed defaults; papermill injects its own values in
a cell after it (`papermill nb.ipynb out.ipynb -f params/demo.yaml -p train_epochs 3`). The next cell is

    from esi.notebook import load_params
    params = load_params(globals())

which checks every parameter the kernel holds against the known keys of all stages (a key injected with a typo
is an error with a "did you mean", never silently ignored) and type-checks them into one dataclass per stage:

    params.run, params.demo, params.data        (this module)
    params.cqa       esi.rag.config.CQAConfig            keys cqa_*
    params.train     esi.train.TrainConfig               keys train_*
    params.evaluate  esi.evaluate.config.EvaluateConfig  keys evaluate_*

Params files use the same flat keys (params/README.md), and the entry points read them too
(`python -m esi.train --config params/demo.yaml`), so a notebook and a command line run agree.

The figures themselves are drawn in esi.plots, from what helpers beside their subjects load and count
(esi.data.corpus, esi.data.text, esi.beats, esi.train.validation); `show` saves each figure under the run folder
and displays it. What stays here needs the notebook's `Params`: the glue between stages.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from esi.config import SECTIONS, ConfigError, from_dict, read_yaml, section_of
from esi.paths import outputs_dir, resolve

# Nothing may download at run time; notebooks import this module first, so set it for them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without ipywidgets tqdm falls back to text bars (fine in papermill and HTML); its warning is noise there.
warnings.filterwarnings("ignore", message="IProgress not found")

Task = Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]


@dataclass
class RunConfig:
    """Settings of the run as a whole (params keys `run_<field>`).

    name: the run's name (evaluate_out_dir "" writes to outputs/<name>).
    dir: the folder of everything the notebooks write (figures/, the executed notebooks, index.html);
        "" = outputs/<name>. Relative paths are taken from the repository root.
    nproc_per_node: training processes: 1 trains inside the notebook; more start torchrun as a subprocess
        (one process per GPU) and plot the curves live while it runs.
    refresh_s: seconds between live re-plots of the training curves (torchrun mode).
    """

    name: str = "demo"
    dir: str = ""
    nproc_per_node: int = 1
    refresh_s: float = 15.0

    def __post_init__(self):
        if self.nproc_per_node < 1:
            raise ConfigError(f"run_nproc_per_node must be >= 1, got {self.nproc_per_node}")


@dataclass
class DemoConfig:
    """The offline demo corpus (params keys `demo_<field>`; see esi.data.demo_corpus.generate_demo).

    corpus_dir: where to generate it; "" = no demo corpus (real data: the paths of the other stages point at it).
    n_mimic: records in the MIMIC-IV-ECG layout (the ECG-text pairs).
    n_ptbxl: records in the PTB-XL layout (the evaluation set).
    seed: everything in the corpus follows from it.
    """

    corpus_dir: str = ""
    n_mimic: int = 600
    n_ptbxl: int = 300
    seed: int = 0


@dataclass
class DataConfig:
    """What the notebooks read and show (params keys `data_<field>`).

    statements: the statement vocabulary the assistant describes (01): MIMIC-IV-ECG machine_measurements.csv,
        PTB-XL scp_statements.csv, a statement -> description JSON, or a text file with one statement per line.
    reference_dict: a statement -> description JSON to compare the generated descriptions with (e.g. the one
        released with the ESI paper); "" = no comparison.
    queries: free-text queries whose retrieved knowledge entries 01 shows.
    examples: ECGs of the pretraining corpus drawn on ECG paper (02).
    text_sample: texts tokenised for the text-length statistics (02); None = all.
    beat_task: the PTB-XL task whose classes get an average beat (02).
    beat_leads: the leads shown in the average-beat figure.
    beat_records: at most this many records per class are averaged.
    seed: which records are drawn and sampled.
    """

    statements: str = ""
    reference_dict: str = ""
    queries: list[str] = field(default_factory=list)
    examples: int = 4
    text_sample: int | None = 2000
    beat_task: Task = "superdiagnostic"
    beat_leads: list[str] = field(default_factory=lambda: ["II", "V1", "V5"])
    beat_records: int = 40
    seed: int = 0


def stage_classes() -> dict[str, type]:
    """section name -> the dataclass holding its keys, for every section of esi.config.SECTIONS."""
    from esi.evaluate.config import EvaluateConfig
    from esi.rag.config import CQAConfig
    from esi.train import TrainConfig

    classes = {"run": RunConfig, "demo": DemoConfig, "data": DataConfig, "cqa": CQAConfig, "train": TrainConfig,
               "evaluate": EvaluateConfig}
    assert tuple(classes) == SECTIONS, "esi.config.SECTIONS and esi.notebook.stage_classes() must agree"
    return classes


def known_parameters() -> dict[str, tuple[str, str]]:
    """Every valid params key -> (section, field name), e.g. 'train_epochs' -> ('train', 'epochs')."""
    return {f"{section}_{f.name}": (section, f.name)
            for section, cls in stage_classes().items() for f in dataclasses.fields(cls)}


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

    Every global that holds a plain value (str, number, bool, None, list, dict) and is not IPython's own must be
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
    params = params_from_mapping(values, where)
    if first_names is None:
        namespace[_SEEN_KEY] = frozenset(values)
    return params


def layer_params(files: Sequence[str | os.PathLike] = (), overrides: Mapping[str, Any] | None = None) -> dict:
    """Flat params from YAML files then overrides, layered key by key as papermill does (`-f a -f b -p k v`).

    A key's value is replaced as a whole (a mapping value is not merged), exactly what papermill injects.

    Args:
        files: params YAML files; later files win.
        overrides: key -> value applied last.
    """
    values: dict = {}
    for path in files:
        data = read_yaml(resolve(path))
        for key, value in data.items():
            if isinstance(value, Mapping) and key in SECTIONS:
                raise ConfigError(f"{path}: section {key!r} is nested; notebooks need flat keys "
                                  f"({key}_<name>: value), one per papermill parameter")
            values[key] = value
    values.update(overrides or {})
    return values


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


# ---------------------------------------------------------------------------------------------------------------
# showing figures (drawn by esi.plots)


def show(fig, name: str, params: Params, dpi: int = 120) -> None:
    """Save `fig` as <run folder>/figures/<name>.png, display that PNG in the notebook, close the figure.

    Showing the saved file (not the live figure) works whatever the matplotlib backend, and what the notebook
    shows is exactly what is on disk. Returns nothing, so that a cell ending with it prints no path.

    Args:
        fig: a matplotlib figure.
        name: file name without extension, e.g. "02_text_lengths".
        params: the notebook's params (for the run folder).
        dpi: resolution of the PNG.
    """
    import matplotlib.pyplot as plt

    from esi.plots import save_figure

    path = save_figure(fig, params.figures_dir / f"{name}.png", dpi=dpi)
    plt.close(fig)
    show_image(path)


def show_image(path: str | os.PathLike) -> None:
    """Display a PNG in the notebook (prints its path outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        print(path)
        return
    if get_ipython() is None:
        print(path)
        return
    display(Image(filename=str(path)))


# ---------------------------------------------------------------------------------------------------------------
# stages


def ensure_demo_corpus(params: Params, progress: bool = True):
    """Generate the demo corpus if `demo_corpus_dir` is set (a finished one is reused); None otherwise.

    Returns:
        esi.data.demo_corpus.DemoPaths, or None when the run uses real data.
    """
    if not params.demo.corpus_dir:
        return None
    from esi.data.demo_corpus import generate_demo

    return generate_demo(params.demo.corpus_dir, n_mimic=params.demo.n_mimic, n_ptbxl=params.demo.n_ptbxl,
                         seed=params.demo.seed, progress=progress)


# TrainConfig fields that decide the pretraining corpus (02 and 03 must build the same one).
CORPUS_FIELDS = ("out_dir", "corpus", "data_root", "patients", "store_dir", "waveform_dict", "fs", "seconds",
                 "val_fraction", "train_folds", "val_folds", "max_words", "max_records", "convert_workers",
                 "progress")


def corpus_arguments(train_cfg) -> dict:
    """The `esi.data.corpus.build_corpus` arguments that `esi.train.train` uses for this TrainConfig
    (see `esi.train.data.corpus_arguments`), so the data notebook converts the same store pretraining reads."""
    from esi.train.data import corpus_arguments as train_corpus_arguments
    return train_corpus_arguments(train_cfg)


def write_train_params(params: Params, path: str | os.PathLike | None = None) -> Path:
    """Write the notebook's train_* settings as a params file, for `esi.train.launch` / `python -m esi.train`.

    Args:
        params: the notebook's params.
        path: where to write (default <run folder>/train_params.yaml).
    """
    import yaml

    from esi.config import to_dict

    path = Path(path) if path is not None else params.run_dir / "train_params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"train_{k}": v for k, v in to_dict(params.train).items()}
    path.write_text(yaml.safe_dump(flat, sort_keys=False))
    return path


def train_with_live_curves(params: Params, figure_name: str = "03_training_curves") -> Path:
    """Pretrain with torchrun in a subprocess (`esi.train.launch`) and re-plot the curves from metrics.csv as it runs.

    The training processes write <train_out_dir>/metrics.csv row by row; a background thread redraws the figure
    in the notebook from it every `run_refresh_s` seconds. The launch itself stays in the notebook's main thread,
    so interrupting the kernel stops the training processes too. Raises when training fails.

    Returns:
        The saved curves figure.
    """
    import threading

    from IPython.display import Image, display

    from esi.train.launch import launch_training

    config_file = write_train_params(params)
    metrics = resolve(params.train.out_dir) / "metrics.csv"
    handle = display(display_id=True)
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(params.run.refresh_s):
            path = _replot(metrics, params, figure_name)
            if path is not None:
                handle.update(Image(filename=str(path)))

    plotter = threading.Thread(target=redraw, name="esi-live-curves", daemon=True)
    plotter.start()
    try:
        launch_training([str(config_file)], nproc_per_node=params.run.nproc_per_node)
    finally:
        stop.set()
        plotter.join()
    path = _replot(metrics, params, figure_name)
    if path is None:
        raise RuntimeError(f"training finished but wrote no metrics at {metrics}")
    handle.update(Image(filename=str(path)))
    return path


def _replot(metrics: Path, params: Params, figure_name: str) -> Path | None:
    import matplotlib.pyplot as plt
    import pandas as pd

    from esi.plots import plot_training_curves, save_figure

    if not metrics.exists():
        return None
    try:
        table = pd.read_csv(metrics)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None     # caught mid-write; the next refresh reads it whole
    if table.empty:
        return None
    fig = plot_training_curves(table)
    path = save_figure(fig, params.figures_dir / f"{figure_name}.png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# 01 Cardio Query Assistant


def statements_path(params: Params) -> Path:
    """The statement vocabulary file (`data_statements`), checked to exist."""
    if not params.data.statements:
        raise ConfigError("data_statements is empty: point it at machine_measurements.csv (MIMIC-IV-ECG), "
                          "scp_statements.csv (PTB-XL), a statement -> description JSON or a statement list")
    path = resolve(params.data.statements)
    if not path.is_file():
        raise FileNotFoundError(f"data_statements: {path} does not exist")
    return path


def dictionary_handoff(params: Params, dict_path: Path) -> str:
    """A line saying whether pretraining (train_waveform_dict) will read the dictionary just written."""
    target = resolve(params.train.waveform_dict) if params.train.waveform_dict else None
    if target is None:
        return (f"wrote {dict_path}; train_waveform_dict is not set in these parameters: set it to this file for "
                "03 to use the descriptions")
    if Path(target).resolve() == Path(dict_path).resolve():
        return f"wrote {dict_path}: 03 reads it (train_waveform_dict)"
    return f"wrote {dict_path}; note that 03 reads another dictionary: train_waveform_dict = {target}"


# ---------------------------------------------------------------------------------------------------------------
# 03 pretraining


def check_pretraining_inputs(params: Params) -> None:
    """Fail early, with the step to run, when pretraining's inputs are missing (the dictionary from 01)."""
    if params.train.waveform_dict:
        path = resolve(params.train.waveform_dict)
        if not path.is_file():
            raise FileNotFoundError(f"train_waveform_dict: {path} does not exist; run notebook 01 (the Cardio Query "
                                    "Assistant writes it) or point train_waveform_dict at an existing dictionary")
    corpus_arguments(params.train)   # data_root set and present


def config_table(config, prefix: str):
    """A resolved config as a two-column table of params keys and values (pandas DataFrame)."""
    import pandas as pd

    from esi.config import to_dict

    rows = [(f"{prefix}_{k}", repr(v) if isinstance(v, (list, dict)) else v) for k, v in to_dict(config).items()]
    return pd.DataFrame(rows, columns=["key", "value"]).set_index("key")


def caption_samples(params: Params):
    """(figure name, figure) for every caption sample of the run: the ECG on paper, its caption and true text."""
    from esi.data.store import ECGStore
    from esi.plots import plot_caption_sample
    from esi.train.validation import read_captions

    run = resolve(params.train.out_dir)
    store = ECGStore(corpus_arguments(params.train)["store_dir"])
    for sample in read_captions(run / "captions.jsonl"):
        fig = plot_caption_sample(store[sample["store_row"]], store.fs, store.leads, sample["record_id"],
                                  sample["caption"], sample["text"])
        yield f"03_caption_{sample['record_id']}", fig
