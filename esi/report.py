"""Execute the notebooks with papermill, render them to HTML, and write an index.html linking them and the figures.

    values = layer_params(["params/demo.yaml"])          # flat params, layered as papermill does
    report = run_notebooks(values)                       # 01 -> 04 into <run folder>/notebooks/
    report.ok, report.index_html

Command line (`make demo` runs it on params/demo.yaml: the whole chain offline, on CPU, in minutes):

    python -m esi.report --config params/demo.yaml [--config more.yaml] [--set <stage>_<setting>=value] [--out DIR]
                         [--only 03 04] [--kernel NAME]

On params/demo.yaml the four notebooks do:

  01 Cardio Query Assistant  generates the demo corpus, builds the knowledge index, describes every machine
                             statement of the corpus (extractive backend) -> outputs/demo/cqa/waveform_dict.json
  02 data exploration        converts the corpus into an ECG store, tables, text lengths, ECGs on paper, beats
  03 pretraining             esi.train: convnextv2_atto + the bundled MiniLM -> outputs/demo/pretrain/model
  04 PTB-XL evaluation       esi.evaluate on the demo's PTB-XL-layout set -> outputs/demo/results.csv, figures

Each notebook runs in order with the same parameters; the first failing cell stops the chain (the later
notebooks depend on its outputs). The executed notebook is kept with the error visible (papermill marks the
failing cell), rendered to HTML like the others, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from esi.paths import repo_root

class _KnownParameterFilter(logging.Filter):
    """papermill warns about every injected key the parameters cell does not assign; all params files pass every
    stage's keys to every notebook, and `esi.params.load_params` checks them all, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


logging.getLogger("papermill").addFilter(_KnownParameterFilter())

NOTEBOOKS = ("01_cardio_query_assistant", "02_data_exploration", "03_pretrain", "04_ptbxl_evaluation")
PROJECT_KERNEL = "esi"          # installed by `make setup` (ipykernel install --sys-prefix --name esi)


def notebooks_dir() -> Path:
    """The notebooks/ folder of the checkout."""
    return repo_root() / "notebooks"


def notebook_path(name: str) -> Path:
    """notebooks/<name>.ipynb for a full name ("03_pretrain") or its number ("03")."""
    matches = [n for n in NOTEBOOKS if n == name or n.split("_", 1)[0] == name]
    if not matches:
        raise ValueError(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)} (or their numbers)")
    return notebooks_dir() / f"{matches[0]}.ipynb"


def project_kernel() -> str:
    """The kernel to execute with: "esi" when it runs this very interpreter, else "python3".

    A kernel named "esi" from another checkout or environment would import a different esi; "python3" runs
    `python` from PATH, which `kernel_environment` points at this interpreter.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(PROJECT_KERNEL)
    except NoSuchKernel:
        return "python3"
    if spec.argv and Path(spec.argv[0]).absolute() == Path(sys.executable).absolute():
        return PROJECT_KERNEL
    return "python3"


@contextlib.contextmanager
def kernel_environment():
    """Within the block, `python` on PATH is this interpreter and nothing downloads (kernels inherit os.environ)."""
    saved = dict(os.environ)
    bin_dir = str(Path(sys.executable).absolute().parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the executed notebook (with the error) is at `output`."""

    def __init__(self, notebook: Path, output: Path, reason: str):
        super().__init__(f"{notebook.name} failed: {reason}\n  executed notebook with the error: {output}")
        self.notebook, self.output, self.reason = notebook, output, reason


def execute_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: Mapping[str, Any],
                     kernel_name: str | None = None, progress: bool = True, log_output: bool = False) -> Path:
    """Run one notebook with papermill, injecting `parameters`, and save the executed copy at `output`.

    Args:
        notebook: the .ipynb to run (its folder is the working directory, as in Jupyter).
        output: where the executed notebook goes (folder created).
        parameters: flat params key -> value (injected after the `parameters` cell).
        kernel_name: the Jupyter kernel; default `project_kernel()`.
        progress: a progress bar over the cells.
        log_output: also echo every cell's output to this terminal.

    Raises:
        NotebookFailed: a cell raised (the executed notebook, error included, is saved at `output`).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook, output = Path(notebook), Path(output)
    if not notebook.exists():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)     # a stale copy from an earlier run must not pass for this one
    with kernel_environment():
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=dict(parameters),
                                       kernel_name=kernel_name or project_kernel(), cwd=str(notebook.parent),
                                       progress_bar=progress, log_output=log_output,
                                       # the kernel's own warnings (e.g. "running over TCP without encryption"
                                       # on a local kernel) would interleave with the progress bars
                                       extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except PapermillExecutionError as err:
            raise NotebookFailed(notebook, output,
                                 f"cell {err.exec_count} raised {err.ename}: {err.evalue}") from None
        except (RuntimeError, TimeoutError, OSError) as err:    # the kernel died, or could not start
            raise NotebookFailed(notebook, output, f"{type(err).__name__}: {err}") from err
        finally:
            if output.exists():
                tidy_outputs(output)
    return output


def tidy_outputs(executed: str | os.PathLike) -> None:
    """Merge consecutive stream outputs and apply carriage returns, in place.

    A progress bar arrives as hundreds of stream messages, each redrawing one line; kept as they are they fill
    the notebook and its HTML with every intermediate state. Afterwards each bar shows its final line only.
    """
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    executed = Path(executed)
    notebook = nbformat.read(executed, as_version=4)
    CoalesceStreamsPreprocessor().preprocess(notebook, {})
    nbformat.write(notebook, executed)


def render_html(executed: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Render an executed notebook to a standalone HTML page (figures embedded) beside it or at `html_path`."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    html_path = Path(html_path) if html_path is not None else executed.with_suffix(".html")
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(executed, as_version=4))
    html_path.write_text(body, encoding="utf-8")
    return html_path


@dataclass
class NotebookRun:
    """One notebook of a report: where its executed copy and HTML are, how long it ran, and whether it failed."""

    name: str
    executed: Path
    html: Path | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Report:
    """What `run_notebooks` did: the run folder, one entry per notebook attempted, the index page."""

    run_dir: Path
    params_file: Path
    runs: list[NotebookRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    index_html: Path | None = None

    @property
    def ok(self) -> bool:
        return all(run.ok for run in self.runs) and not self.skipped

    @property
    def figures(self) -> list[Path]:
        return sorted((self.run_dir / "figures").glob("*.png"))


def run_notebooks(values: Mapping[str, Any], notebooks: Sequence[str] = NOTEBOOKS, kernel_name: str | None = None,
                  progress: bool = True, log_output: bool = False) -> Report:
    """Execute `notebooks` in order with the flat params `values`; render each to HTML; write index.html.

    Writes into the run folder (run_dir, or outputs/<run_name>): params.yaml (the parameters used, so that
    `papermill NB OUT -f <run folder>/params.yaml` repeats a notebook), notebooks/<name>.ipynb and .html,
    index.html. Stops at the first failing notebook (the rest are listed as skipped).

    Args:
        values: flat params key -> value (see esi.params.layer_params); checked before anything runs.
        notebooks: names or numbers of the notebooks, run in the order given.
        kernel_name: the Jupyter kernel; default `project_kernel()`.
        progress: progress bars over the cells.
        log_output: echo cell outputs to the terminal.

    Raises:
        esi.config.ConfigError: unknown or mistyped parameters (before any notebook starts).
    """
    from esi.params import params_from_mapping

    params = params_from_mapping(values, "the run's parameters")
    paths = [notebook_path(n) for n in notebooks]      # unknown names fail here, before anything is written
    run_dir = params.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    params_file = run_dir / "params.yaml"
    params_file.write_text("# The parameters of this run (papermill -f this file repeats a notebook).\n"
                           + yaml.safe_dump(dict(values), sort_keys=False))
    report = Report(run_dir=run_dir, params_file=params_file)
    for position, source in enumerate(paths):
        executed = run_dir / "notebooks" / source.name
        run = NotebookRun(name=source.stem, executed=executed)
        if progress:
            print(f"[esi.report] {source.stem}", flush=True)
        started = time.perf_counter()
        try:
            execute_notebook(source, executed, values, kernel_name=kernel_name, progress=progress,
                             log_output=log_output)
        except NotebookFailed as err:
            run.error = err.reason
        run.seconds = time.perf_counter() - started
        if executed.exists():
            run.html = render_html(executed)
        report.runs.append(run)
        if not run.ok:
            report.skipped = [p.stem for p in paths[position + 1:]]
            break
    report.index_html = write_index(report)
    return report


def _figure_group(path: Path) -> str:
    prefix = path.name.split("_", 1)[0]
    for name in NOTEBOOKS:
        if name.startswith(prefix + "_"):
            return name
    return "04_ptbxl_evaluation"   # esi.evaluate names its figures by content (per_class_auroc_..., roc_...)


def write_index(report: Report) -> Path:
    """index.html in the run folder: a table of the notebooks (status, time, HTML and .ipynb) and every figure."""
    root = report.run_dir

    def link(path: Path | None, label: str) -> str:
        if path is None or not path.exists():
            return ""
        return f'<a href="{html.escape(path.relative_to(root).as_posix())}">{html.escape(label)}</a>'

    rows = []
    for run in report.runs:
        status = "ok" if run.ok else f'<span class="fail">failed: {html.escape(run.error or "")}</span>'
        rows.append(f"<tr><td>{html.escape(run.name)}</td><td>{status}</td><td>{run.seconds:.0f} s</td>"
                    f"<td>{link(run.html, 'HTML')}</td><td>{link(run.executed, '.ipynb')}</td></tr>")
    for name in report.skipped:
        rows.append(f"<tr><td>{html.escape(name)}</td><td>skipped (an earlier notebook failed)</td>"
                    "<td></td><td></td><td></td></tr>")
    groups: dict[str, list[Path]] = {}
    for figure in report.figures:
        groups.setdefault(_figure_group(figure), []).append(figure)
    sections = []
    for group in sorted(groups):
        tiles = "".join(
            f'<figure><a href="{html.escape(f.relative_to(root).as_posix())}"><img src="'
            f'{html.escape(f.relative_to(root).as_posix())}" alt="{html.escape(f.stem)}"></a>'
            f"<figcaption>{html.escape(f.stem)}</figcaption></figure>" for f in groups[group])
        sections.append(f"<h3>{html.escape(group)}</h3><div class=grid>{tiles}</div>")
    extras = [link(root / name, name) for name in ("results.csv", "results.json", "params.yaml")]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ESI run {html.escape(root.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
.fail {{ color: #b00; }} .grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 330px; }} img {{ width: 330px; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #444; }}
</style></head><body>
<h1>ESI run: {html.escape(root.name)}</h1>
<p>{html.escape(str(root))} &mdash; {'all notebooks ran' if report.ok else 'a notebook failed'}</p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>rendered</th><th>executed</th></tr>
{''.join(rows)}</table>
<p>{' &middot; '.join(e for e in extras if e)}</p>
<h2>Figures</h2>
{''.join(sections) or '<p>none yet</p>'}
</body></html>
"""
    path = root / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esi.report",
        description="Execute the ESI notebooks (01 CQA, 02 data, 03 pretraining, 04 PTB-XL evaluation) with "
                    "papermill on a params file, render them to HTML and write index.html in the run folder.")
    parser.add_argument("--config", "-f", action="append", default=None, metavar="YAML",
                        help="params file(s), layered key by key as papermill -f does; later files win")
    parser.add_argument("--set", "-p", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter with its params key, e.g. --set train_epochs=2 "
                             "(values are YAML); repeatable")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="move the run: every output path inside the run folder goes below DIR instead")
    parser.add_argument("--only", nargs="+", default=None, metavar="NB",
                        help="run only these notebooks, in this order (names or numbers: 01 02 03 04)")
    parser.add_argument("--kernel", default=None, help="Jupyter kernel (default: esi when installed, else python3)")
    parser.add_argument("--verbose", action="store_true", help="echo every cell's output to the terminal")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status (0: every notebook ran, 1: one failed, 2: bad parameters)."""
    from esi.config import ConfigError, merge, overrides_for
    from esi.params import known_parameters, layer_params, relocate

    args = build_parser().parse_args(argv)
    files = args.config
    if not files:
        print("error: give at least one params file with --config", file=sys.stderr)
        return 2
    try:
        # merge, not update: `--set cqa_openai.model=x` sets one entry of the cqa_openai mapping
        values = merge(layer_params(files), overrides_for(None, args.set, list(known_parameters())))
        if args.out:
            values = relocate(values, args.out)
        report = run_notebooks(values, notebooks=args.only or NOTEBOOKS, kernel_name=args.kernel,
                               log_output=args.verbose)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    for run in report.runs:
        state = "ok" if run.ok else f"FAILED ({run.error})"
        print(f"  {run.name:<28} {run.seconds:6.0f} s  {state}")
    for name in report.skipped:
        print(f"  {name:<28}          skipped")
    print(f"\nOpen {report.index_html} (rendered notebooks and {len(report.figures)} figures)")
    print(f"Figures: {report.run_dir / 'figures'}   executed notebooks: {report.run_dir / 'notebooks'}")
    if not report.ok:
        failed = report.runs[-1]
        print(f"\n{failed.name} failed; the executed notebook shows the error: {failed.executed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
