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

from esi.models.external.inputs import InputSpec, prepare_input


def _merl(source, **options):
    from esi.models.external.merl import load_merl

    return load_merl(source, **options)


def _ecgfounder(source, **options):
    from esi.models.external.ecgfounder import load_ecgfounder

    return load_ecgfounder(source, **options)


def _stmem(source, **options):
    from esi.models.external.stmem import load_stmem

    return load_stmem(source, **options)


def _hubert_ecg(source, **options):
    from esi.models.external.hubert_ecg import load_hubert_ecg

    return load_hubert_ecg(source, **options)


def _ked(source, **options):
    from esi.models.external.ked import load_ked

    return load_ked(source, **options)


def _ecg_jepa(source, **options):
    from esi.models.external.ecg_jepa import load_ecg_jepa

    return load_ecg_jepa(source, **options)


def _dbeta(source, **options):
    from esi.models.external.dbeta import load_dbeta

    return load_dbeta(source, **options)


def _ecg_fm(source, **options):
    from esi.models.external.ecg_fm import load_ecg_fm

    return load_ecg_fm(source, **options)


def _heartlang(source, **options):
    from esi.models.external.heartlang import load_heartlang

    return load_heartlang(source, **options)


# kind -> loader(path or state_dict, **options) -> (module, InputSpec)
LOADERS = {"merl": _merl, "ecgfounder": _ecgfounder, "stmem": _stmem, "hubert_ecg": _hubert_ecg, "ked": _ked,
           "dbeta": _dbeta, "ecg_fm": _ecg_fm, "heartlang": _heartlang, "ecg_jepa": _ecg_jepa}


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
    return LOADERS[kind](source, **options)


__all__ = ["InputSpec", "LOADERS", "load_external", "prepare_input"]
