"""ECG data layer: read WFDB records, convert them into a memory-mapped store, and load them.

Public names are imported lazily (PEP 562) so that `import esi.data` stays light: reading a record
does not import torch, and torch is imported only when a Dataset is used.
"""

from __future__ import annotations

from esi._lazy import lazy_exports

_PUBLIC = {
    "STANDARD_LEADS": "esi.data.leads",
    "MIMIC_LEADS": "esi.data.leads",
    "canonical_lead": "esi.data.leads",
    "ECG": "esi.data.ecg",
    "ECGFormatError": "esi.data.ecg",
    "read_ecg": "esi.data.reader",
    "read_digital": "esi.data.reader",
    "quality_flags": "esi.data.quality",
    "ECGStore": "esi.data.store",
    "convert": "esi.data.convert",
    "ECGDataset": "esi.data.datasets",
    "fit_scaler": "esi.data.transforms",
    "Scaler": "esi.data.transforms",
    "sources": "esi.data.sources",
    "corpus": "esi.data.corpus",
    "ptbxl": "esi.data.ptbxl",
    "mimic": "esi.data.mimic",
    "text": "esi.data.text",
    "statements": "esi.data.statements",
    "load_waveform_dict": "esi.data.statements",
    "demo": "esi.data.demo",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
