"""Downstream evaluation: the PTB-XL benchmark (Protocol A), linear probes (Protocol B), zero-shot and
ECG-based identification. Entry point: `python -m esi.evaluate --config params/....yaml`.

    from esi.evaluate import evaluate, run_linear_probe, EncoderSpec

Public names are imported lazily so `import esi.evaluate` stays light.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "evaluate": "esi.evaluate.run",
    "load_evaluate_config": "esi.evaluate.config",
    "EvaluationResult": "esi.evaluate.run",
    "EncoderSpec": "esi.evaluate.encoders",
    "load_encoder": "esi.evaluate.encoders",
    "run_linear_probe": "esi.evaluate.linear_probe",
    "run_ptbxl_benchmark": "esi.evaluate.ptbxl_benchmark",
    "run_zero_shot": "esi.evaluate.zero_shot",
    "run_identification": "esi.evaluate.identification",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module 'esi.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
