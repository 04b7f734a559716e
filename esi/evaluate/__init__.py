"""Downstream evaluation: the PTB-XL benchmark (Protocol A), linear probes (Protocol B), zero-shot and
ECG-based identification. Entry point: `python -m esi.evaluate --config params/....yaml`."""
