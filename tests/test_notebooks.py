"""The notebooks run end to end with papermill on the tiny parameters (01 -> 04 sharing one run folder), write the
figures they promise, and reject unknown or mistyped parameters; the committed notebooks carry no outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from esi.params import layer_params, relocate
from esi.report import NOTEBOOKS, NotebookFailed, execute_notebook, notebook_path, run_notebooks

REPO = Path(__file__).resolve().parents[1]
DEMO, TINY = REPO / "params" / "demo.yaml", REPO / "params" / "tiny.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The figures each notebook promises (names under <run_dir>/figures/; a pattern with * may match several).
PROMISED_FIGURES = {
    "01_cardio_query_assistant": ["01_cqa_coverage.png", "01_cqa_agreement.png"],
    "02_data_exploration": ["02_statement_frequencies.png", "02_text_lengths.png", "02_leads_quality.png",
                            "02_average_beats.png", "02_ecg_*.png"],
    "03_pretrain": ["03_training_curves.png", "03_caption_*.png"],
    "04_ptbxl_evaluation": ["04_results_linear_probe.png", "per_class_auroc_linear_probe_superdiagnostic.png",
                            "identification_cmc.png"],
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, esi_dict_path):
    """The whole chain on params/demo.yaml + params/tiny.yaml, moved into a temporary run folder; run once."""
    values = relocate(layer_params([DEMO, TINY]), tmp_path_factory.mktemp("tiny") / "run")
    values["data_reference_dict"] = str(esi_dict_path)     # also exercises 01's comparison with the paper's dict
    return run_notebooks(values, progress=False)


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def error_outputs(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [f"{o.ename}: {o.evalue}" for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]


def test_committed_notebooks_carry_no_outputs():
    for name in NOTEBOOKS:
        notebook = nbformat.read(notebook_path(name), as_version=4)
        dirty = [i for i, c in enumerate(notebook.cells)
                 if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
        assert dirty == [], f"{name}: code cells {dirty} carry outputs; strip them before committing"


def test_committed_notebooks_are_stripped_as_nbstripout_leaves_them():
    """The notebooks are the source, edited in JupyterLab; only their stripped form is committed (outputs, counts,
    cell ids and run metadata out), so diffs show what a person changed. `nbstripout --install` strips on git add."""
    paths = [str(notebook_path(name)) for name in NOTEBOOKS]
    result = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", *paths], capture_output=True, text=True)
    assert result.returncode == 0, ("run `.venv/bin/nbstripout notebooks/*.ipynb` (or `nbstripout --install` once) "
                                    "before committing:\n" + result.stdout + result.stderr)


def test_every_notebook_has_one_parameters_cell_before_it_validates_them():
    for name in NOTEBOOKS:
        cells = nbformat.read(notebook_path(name), as_version=4).cells
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters' (papermill needs exactly one)"
        following = cells[tagged[0] + 1].source
        assert "load_params(globals())" in following, f"{name}: the cell after the parameters must validate them"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_tiny_parameters_and_writes_its_figures(tiny_run, name):
    runs = {run.name: run for run in tiny_run.runs}
    assert name in runs, f"{name} did not run (an earlier notebook failed: {tiny_run.runs[-1].error})"
    run = runs[name]
    assert run.ok, f"{name}: {run.error} (executed notebook: {run.executed})"
    figures = tiny_run.run_dir / "figures"
    for pattern in PROMISED_FIGURES[name]:
        matches = sorted(figures.glob(pattern))
        assert matches, f"{name} wrote no {pattern} in {figures}"
        assert all(is_png(p) for p in matches), f"{name}: {pattern} is not a non-empty PNG"


@pytest.mark.slow
def test_the_run_folder_has_rendered_notebooks_and_an_index_linking_them(tiny_run):
    assert tiny_run.ok
    index = tiny_run.index_html.read_text()
    for run in tiny_run.runs:
        assert run.html.exists() and run.html.stat().st_size > 10_000
        assert f"notebooks/{run.name}.html" in index
        assert error_outputs(run.executed) == []
    for figure in tiny_run.figures:
        assert f"figures/{figure.name}" in index
    assert (tiny_run.run_dir / "params.yaml").exists()


@pytest.mark.slow
def test_papermill_cli_rejects_an_unknown_parameter_with_a_did_you_mean(tmp_path):
    # A plain papermill call from the repository root with the virtualenv activated (its bin/ first on PATH).
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    out = tmp_path / "02.ipynb"
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/02_data_exploration.ipynb", str(out),
         "-f", "params/demo.yaml", "-p", "train_epoch", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown parameter 'train_epoch'" in result.stderr
    assert "Did you mean 'train_epochs'?" in result.stderr
    assert any("train_epoch" in e for e in error_outputs(out))   # the saved notebook shows the error


@pytest.mark.slow
def test_a_mistyped_parameter_fails_the_notebook_naming_the_key(tmp_path):
    with pytest.raises(NotebookFailed, match=r"train_epochs: expected an integer, got 'three'"):
        execute_notebook(notebook_path("03"), tmp_path / "03.ipynb", {"train_epochs": "three"}, progress=False)


@pytest.mark.slow
def test_a_failing_cell_fails_the_run_and_leaves_the_executed_notebook(tiny_run, tmp_path):
    # esi.report on the tiny run's own parameters, with the PTB-XL folder pointing nowhere: 04 must fail.
    result = subprocess.run(
        [sys.executable, "-m", "esi.report", "--config", str(tiny_run.params_file), "--only", "04",
         "--set", f"evaluate_ptbxl_root={tmp_path / 'missing'}", "--set", f"run_dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    executed = tmp_path / "run" / "notebooks" / "04_ptbxl_evaluation.ipynb"
    assert str(executed) in result.stderr
    assert any("ptbxl_database.csv" in e for e in error_outputs(executed))
    assert "failed" in (tmp_path / "run" / "index.html").read_text()
