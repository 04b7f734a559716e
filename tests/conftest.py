"""Shared test fixtures. Tests run offline and may read ../shared (beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may download at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# One intra-op thread per process: tests start torchrun/DataLoader/conversion subprocesses on a 2-core machine,
# and idle OpenMP threads spinning for a core cost far more than the parallelism gains on such small work.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("ESI_SHARED", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.exists():
        pytest.fail(f"../shared not found at {SHARED_DIR}; tests need the shared data beside the checkout "
                    "(or set ESI_SHARED)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def ptbxl_dir(shared_dir) -> Path:
    """Real PTB-XL records 1-500 in the PhysioNet layout (records100/, records500/, ptbxl_database.csv)."""
    return shared_dir / "data" / "ptbxl"


@pytest.fixture(scope="session")
def esi_dict_path(shared_dir) -> Path:
    """The statement -> description dictionary released with the original ESI paper."""
    return shared_dir / "data" / "esi_mimic_waveform_dict.json"
