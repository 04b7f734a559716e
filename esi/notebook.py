"""What the notebooks call besides their parameters (esi.params): showing figures and the glue between stages.

The figures themselves are drawn in esi.plots, from what helpers beside their subjects load and count
(esi.data.corpus, esi.data.text, esi.beats, esi.train.validation); `show` saves each figure under the run folder
and displays it. What stays here needs the notebook's `Params` (esi.params): the glue between stages.
"""

from __future__ import annotations

import os
from pathlib import Path

from esi.config import ConfigError
from esi.params import Params
from esi.paths import resolve
from esi.train.data import corpus_arguments

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


def show_table(table, digits: int = 3) -> None:
    """Display a DataFrame that reads at notebook width: a column holding one value in every row is said once
    above the table instead of repeated, numbers have `digits` decimals, long headers wrap (cells do not), and a
    table still too wide scrolls sideways (in JupyterLab and the rendered HTML). Prints it outside IPython."""
    import pandas as pd

    constant = [c for c in table.columns if len(table) > 1 and table[c].nunique(dropna=False) == 1]
    same = "; ".join(f"{c}: {'none' if pd.isna(table[c].iloc[0]) else table[c].iloc[0]}" for c in constant)
    shown = table.drop(columns=constant)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print((f"in every row: {same}\n" if same else "") + shown.to_string())
        return
    styled = (shown.style.format(precision=digits, na_rep="")
              .set_caption(f"in every row: {same}" if same else "")
              .set_table_styles([{"selector": "th", "props": "white-space: normal; max-width: 12em;"},
                                 {"selector": "td", "props": "white-space: nowrap;"},
                                 {"selector": "caption", "props": "text-align: left; caption-side: top;"}]))
    display(HTML(f'<div style="overflow-x: auto; max-width: 100%;">{styled.to_html()}</div>'))


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
        launch_training([str(config_file)], nproc_per_node=params.run.nproc_per_node,
                        max_restarts=params.run.max_restarts)
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
