"""ECG encoders (1D ConvNeXt V2, xresnet1d101), the CoCa-style ESI model, and loading checkpoints.

    from esi.models import create_encoder
    encoder = create_encoder("convnextv2_atto")
    out = encoder(x)            # x (batch, 12, time) -> out.tokens (B, n_tokens, dim), out.pooled (B, dim)

Public names are imported lazily (PEP 562), like esi.data, so `import esi.models` stays light.
"""

from __future__ import annotations

from esi._lazy import lazy_exports

_PUBLIC = {
    "EncoderOutput": "esi.models.registry",
    "create_encoder": "esi.models.registry",
    "list_encoders": "esi.models.registry",
    "count_parameters": "esi.models.registry",
    "CONVNEXTV2_VARIANTS": "esi.models.registry",
    "ConvNeXtV2Encoder": "esi.models.convnextv2",
    "XResNet1d": "esi.models.xresnet1d",
    "load_original_esi_checkpoint": "esi.models.original",
    "detect_original_variant": "esi.models.original",
    "OriginalCheckpointError": "esi.models.original",
    "ORIGINAL_LEAD_ORDER": "esi.models.original",
    "to_original_lead_order": "esi.models.original",
    "zscore_whole_ecg": "esi.models.original",
    "ESIModel": "esi.models.esi_model",
    "ESIConfig": "esi.models.esi_model",
    "load_ecg_encoder": "esi.models.pretrained",
    "load_text_encoder": "esi.models.text_encoder",
    "TextEncoderNotAvailable": "esi.models.text_encoder",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
