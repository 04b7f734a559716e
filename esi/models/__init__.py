"""ECG encoders (1D ConvNeXt V2, xresnet1d101), the CoCa-style ESI model, and loading checkpoints.

    from esi.models import create_encoder
    encoder = create_encoder("convnextv2_atto")
    out = encoder(x)            # x (batch, 12, time) -> out.tokens (B, n_tokens, dim), out.pooled (B, dim)

`create_encoder` is the one name this package exports; import everything else from the module that defines it:

    registry      create_encoder, list_encoders, count_parameters, EncoderOutput, CONVNEXTV2_VARIANTS
    convnextv2    ConvNeXtV2Encoder
    xresnet1d     XResNet1d (the PTB-XL benchmark's xresnet1d101)
    esi_model     ESIModel, ESIConfig (ECG encoder + text encoder + caption decoder; save_pretrained, from_pretrained)
    caption       AttentionPooler, CaptionDecoder, greedy_search, beam_search
    losses        contrastive_loss, caption_loss
    distributed   the gathers and reductions the losses need across ranks
    text_encoder  load_text_encoder (bundled MiniLM or a Hugging Face model), TextEncoderNotAvailable
    pretrained    load_ecg_encoder (the ECG encoder of a saved ESI model)
    original      load_original_esi_checkpoint and the original release's lead order and normalisation
    external      the field's released encoders (MERL, ECGFounder, ST-MEM, HuBERT-ECG, ECGFM-KED): load_external,
                  InputSpec, prepare_input

Importing this package does not import torch; building an encoder does.
"""

from esi.models.registry import create_encoder

__all__ = ["create_encoder"]
