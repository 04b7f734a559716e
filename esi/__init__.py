"""ESI: ECG Semantic Integrator.

Stages, each one subpackage or module (see README "Where things live"):
  esi.data      read WFDB records, convert them into a memory-mapped store, datasets, texts
  esi.rag       Cardio Query Assistant: statement -> waveform description
  esi.models    ECG encoders and the CoCa-style ESI model
  esi.train     the pretraining entry point (python -m esi.train)
  esi.evaluate  PTB-XL protocols, zero-shot, identification

Importing esi never touches CUDA, never starts processes and never downloads anything.
"""

__version__ = "0.1.0"
