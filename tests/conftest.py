"""Shared test fixtures. Tests run offline and may read ../shared (beside the checkout).

`make test` runs the suite in two worker processes (pytest-xdist, `-n 2 --dist loadscope`): each module's tests
run in one worker, so a module fixture is built once; a session fixture is built once per worker that needs it.
The modules holding the most `slow` tests are handed out first, so that the two workers end together.
"""

from __future__ import annotations

import os
from collections import Counter
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


@pytest.fixture(scope="session")
def esi_dir(tmp_path_factory) -> Path:
    """A small ESI model (convnextv2_atto + the bundled MiniLM) with seeded random weights, saved as esi.train saves
    one (save_pretrained + preprocessing.json: 100 Hz, per-lead normalisation).

    Seeded 1, so that its weights differ from the random-init twin's (seed 0)."""
    import json

    import torch

    from esi.data.leads import STANDARD_LEADS
    from esi.models.esi_model import ESIConfig, ESIModel

    torch.manual_seed(1)
    config = ESIConfig(ecg_encoder="convnextv2_atto", text_encoder="minilm", max_text_length=128, latent_dim=64,
                       n_queries=8, decoder_depth=1, decoder_heads=4)
    directory = ESIModel(config).save_pretrained(tmp_path_factory.mktemp("esi") / "model")
    preprocessing = {"fs": 100.0, "seconds": 10.0, "normalize": "per_lead", "leads": list(STANDARD_LEADS)}
    (directory / "preprocessing.json").write_text(json.dumps(preprocessing))
    return directory


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):   # only in xdist's worker processes
        return
    # xdist hands the modules out in the order their first test is collected (--no-loadscope-reorder): the
    # modules with the most slow tests first, the others as collected
    slow_tests = Counter(item.module for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[item.module])


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory, ptbxl_dir) -> Path:
    """The PTB-XL records of ../shared converted once per session into a 100 Hz x 10 s store."""
    from esi.data.corpus import ensure_store

    directory = tmp_path_factory.getbasetemp() / "ptbxl100-store"
    ensure_store("ptbxl", ptbxl_dir, directory, fs=100, seconds=10, workers=2, progress=False)
    return directory
