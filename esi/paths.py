"""Where things are: the repository root and the outputs folder.

Paths in params/ are relative to the repository root, never to the current directory, so that a
notebook run from notebooks/ and a batch job run from anywhere resolve them the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The checkout that holds this package (the folder with pyproject.toml above esi/).

    ESI_ROOT overrides it; for a non-editable install with no checkout, the current directory is used.
    """
    if os.environ.get("ESI_ROOT"):
        return Path(os.environ["ESI_ROOT"]).resolve()
    candidate = PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").exists():
        return candidate
    return Path.cwd().resolve()


def outputs_dir() -> Path:
    """Everything the code writes goes below here (ESI_OUTPUTS overrides <repo>/outputs)."""
    if os.environ.get("ESI_OUTPUTS"):
        return Path(os.environ["ESI_OUTPUTS"]).resolve()
    return repo_root() / "outputs"


def resolve(path: str | os.PathLike | None, base: Path | None = None) -> Path | None:
    """Absolute path: `~` expanded, relative paths taken from `base` (default: the repository root)."""
    if path is None or str(path) == "":
        return None
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return p
    return ((base or repo_root()) / p).resolve()
