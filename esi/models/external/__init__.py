"""The field's released ECG encoders, each with its exact architecture, a strict load and its declared input.

    from esi.models.external import load_external, prepare_input
    module, spec = load_external("merl", "res18_best_encoder.pth")
    x = prepare_input(ecgs_mv, fs=500, spec=spec)          # (n, 12, T) mV, standard lead order -> as trained
    features = module.encode(torch.from_numpy(x))          # (n, module.dim)

One file per family, each holding the architecture written from the reference repository's model code,
`load_<family>(path_or_state_dict) -> (module, InputSpec)`, and the input it was trained on:

    merl        MERL (cheliu-computation/MERL-ICML2024): ResNet18/34/50/101 and ViT tiny..base
    ecgfounder  ECGFounder (PKUDigitalHealth/ECGFounder): Net1D
    stmem       ST-MEM (bakqui/ST-MEM): ST_MEM_ViT (released as ViT-B/75)
    hubert_ecg  HuBERT-ECG (Edoar-do/HuBERT-ECG): transformers' HubertModel from config.json + model.safetensors
    ked         ECGFM-KED (control-spiderman/ECGFM-KED): its xresnet1d101 (the "ecg_model" of its .pt)
    dbeta       D-BETA (manhph2211/D-BETA): its fairseq-signals ECG transformer, class token, projection and pooler
    ecg_fm      ECG-FM (bowang-lab/ECG-FM, fairseq-signals): its ECGTransformerModel, pretrained or fine-tuned .pt
    heartlang   HeartLang (PKUDigitalHealth/HeartLang): its heartbeat tokenizer and ST_ECGFormer
    ecg_jepa    ECG-JEPA (sehunfromdaegu/ECG_JEPA): its MaskTransformer encoder (the "encoder" of its .pth)

Every load is strict: a missing, unexpected or mis-shaped tensor is a ValueError naming the file and the tensor;
only the heads a family documents are dropped, by name. Each adapter is checked against its reference
repository's own code on seeded weights (tests/test_models_external.py, fixtures in tests/data/encoders).
Modules return `EncoderOutput(tokens, pooled)` like the toolkit's own encoders; `encode(x)` is the pooled
features.
"""

from __future__ import annotations

import importlib

from esi.models.external.inputs import InputSpec, prepare_input


# kind -> "module:function" of its loader(path or state_dict, **options) -> (module, InputSpec); each family's
# module is imported only when it is loaded (HuBERT-ECG's imports transformers).
LOADERS = {"merl": "esi.models.external.merl:load_merl",
           "ecgfounder": "esi.models.external.ecgfounder:load_ecgfounder",
           "stmem": "esi.models.external.stmem:load_stmem",
           "hubert_ecg": "esi.models.external.hubert_ecg:load_hubert_ecg",
           "ked": "esi.models.external.ked:load_ked",
           "dbeta": "esi.models.external.dbeta:load_dbeta",
           "ecg_fm": "esi.models.external.ecg_fm:load_ecg_fm",
           "heartlang": "esi.models.external.heartlang:load_heartlang",
           "ecg_jepa": "esi.models.external.ecg_jepa:load_ecg_jepa"}


def load_external(kind: str, source, **options):
    """(module in eval mode, its InputSpec) of a released encoder.

    Args:
        kind: the family (a key of LOADERS).
        source: the checkpoint file (HuBERT-ECG: its folder), or its state_dict.
        options: passed to the family's loader (HuBERT-ECG, D-BETA, ECG-FM: `config`, its config dict).

    Raises:
        ValueError: an unknown kind, or weights that are not of the family (naming the file and tensor).
        FileNotFoundError: no such file.
    """
    if kind not in LOADERS:
        raise ValueError(f"unknown external encoder kind {kind!r}; one of {', '.join(LOADERS)}")
    module, function = LOADERS[kind].split(":")
    return getattr(importlib.import_module(module), function)(source, **options)


__all__ = ["InputSpec", "LOADERS", "load_external", "prepare_input"]
