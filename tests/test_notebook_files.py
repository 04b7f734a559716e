"""The committed notebooks as JupyterLab opens and saves them: they name the kernel `make setup` installs, and a
save with no edit leaves `git diff` empty through the nbstripout filter that `make setup` and `make lab` install."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from esi.report import NOTEBOOKS, PROJECT_KERNEL, notebook_path

REPO = Path(__file__).resolve().parents[1]


def makefile_value(name: str) -> str:
    """The value of `NAME := value` in the Makefile."""
    found = re.search(rf"^{name} := (.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, f"Makefile sets no {name}"
    return found.group(1).strip()


def test_every_notebook_names_the_kernel_make_setup_installs():
    kernel, display_name = makefile_value("KERNEL"), makefile_value("KERNEL_DISPLAY_NAME")
    assert "--name $(KERNEL) --display-name \"$(KERNEL_DISPLAY_NAME)\"" in (REPO / "Makefile").read_text()
    assert kernel == PROJECT_KERNEL      # esi.report (make demo) executes with the same kernel
    for name in NOTEBOOKS:
        spec = nbformat.read(notebook_path(name), as_version=4).metadata.kernelspec
        assert (spec.name, spec.display_name) == (kernel, display_name), name


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=repo,
                          capture_output=True, text=True, check=True)


def save_as_jupyterlab_does(path: Path) -> None:
    """Write the notebook back the way JupyterLab's save does: the server writes the frontend's model with
    nbformat, and the model's metadata carries the running kernel's language_info (with its Python version)."""
    from ipykernel.ipkernel import IPythonKernel

    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["language_info"] = dict(IPythonKernel.language_info)
    nbformat.write(notebook, path)


def test_a_notebook_saved_without_an_edit_diffs_empty_through_the_filter(tmp_path):
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    git(repo, "init", "-q")
    shutil.copy(REPO / ".gitattributes", repo / ".gitattributes")
    for name in NOTEBOOKS:
        shutil.copy(notebook_path(name), repo / "notebooks")
    # the Makefile's own recipe installs the filter (VENV: the environment running these tests)
    subprocess.run(["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "notebook-filter",
                    f"VENV={Path(sys.executable).parent.parent}"], cwd=repo, check=True, capture_output=True)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "notebooks as committed")

    saved = repo / "notebooks" / f"{NOTEBOOKS[2]}.ipynb"
    before = saved.read_text()
    save_as_jupyterlab_does(saved)
    assert saved.read_text() != before and '"version": "' in saved.read_text()   # the save did rewrite the file
    assert git(repo, "diff", "--stat").stdout == ""
    # git status still lists the file (its size changed) until `git add`, which then stages nothing
    git(repo, "add", "-u")
    assert git(repo, "diff", "--cached", "--stat").stdout == ""

    # an edit still shows, and only the edit
    notebook = nbformat.read(saved, as_version=4)
    notebook.cells[1].source += "\ntrain_epochs: int = 5"
    nbformat.write(notebook, saved)
    diff = git(repo, "diff", "-U0").stdout
    assert "+    \"train_epochs: int = 5\"" in diff and "language_info" not in diff, diff


def test_make_lab_serves_the_repository_root_passes_lab_args_and_allows_root_only_as_root():
    import os

    dry_run = subprocess.run(["make", "-n", "--no-print-directory", "lab", "LAB_ARGS=--no-browser --port 8899"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
    command = next(line for line in dry_run.replace("\\\n", " ").splitlines() if "jupyter lab" in line)
    assert f'--ServerApp.root_dir="{REPO}"' in command and "--LabApp.default_url=/lab/tree/notebooks" in command
    assert f"--KernelSpecManager.allowed_kernelspecs={PROJECT_KERNEL}" in command
    assert f"--MultiKernelManager.default_kernel_name={PROJECT_KERNEL}" in command
    assert command.rstrip().endswith("--no-browser --port 8899")
    assert ("--allow-root" in command) == (os.geteuid() == 0)


def test_committed_notebooks_are_stripped_as_the_filter_leaves_them():
    """What the filter strips (NOTEBOOK_STRIP_KEYS too) is not in the committed files, so a fresh clone's first save
    diffs empty as well."""
    paths = [str(notebook_path(name)) for name in NOTEBOOKS]
    result = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", "--extra-keys",
                             makefile_value("NOTEBOOK_STRIP_KEYS"), *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_show_table_says_a_column_of_one_value_once(capsys):
    import pandas as pd

    from esi.notebook import show_table

    show_table(pd.DataFrame({"dataset": ["ptbxl", "ptbxl"], "task": ["rhythm", "form"], "value": [0.81234, 0.7]}))
    printed = capsys.readouterr().out      # outside IPython the table is printed
    assert printed.startswith("in every row: dataset: ptbxl\n")
    assert "dataset" not in printed.splitlines()[1] and "rhythm" in printed
