"""Downstream evaluation: the PTB-XL benchmark (Protocol A), linear probes (Protocol B), zero-shot and
ECG-based identification. Entry point: `python -m esi.evaluate --config params/....yaml`.

    from esi.evaluate import evaluate, run_linear_probe, EncoderSpec

Public names are imported lazily so `import esi.evaluate` stays light.
"""

from __future__ import annotations

from esi._lazy import lazy_exports

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
    "label_fraction_subset": "esi.evaluate.probe",
    "macro_auroc": "esi.evaluate.metrics",
    "macro_auprc": "esi.evaluate.metrics",
    "paired_bootstrap_test": "esi.evaluate.metrics",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
