"""Pretraining settings: the `train_*` keys of the params files (params/README.md), one field each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TrainConfig:
    """Pretraining settings (params keys `train_<field>`). Paths are relative to the repository root.

    Each field's comment says what it sets; the groups are Data, Model, Optimisation and Bookkeeping.
    """

    # -- Data
    out_dir: str = "outputs/esi"          # run folder: config.yaml, checkpoints/, metrics.csv, tb/, model/, cache/
    # "mimic" (MIMIC-IV-ECG layout: record_list.csv, machine_measurements.csv, files/) or "ptbxl"
    corpus: Literal["mimic", "ptbxl"] = "mimic"
    data_root: str = ""                   # the dataset folder
    patients: str | None = None           # MIMIC-IV patients table (csv/csv.gz) for age and sex; optional
    store_dir: str | None = None          # the ECG store to use or create; default <out_dir>/store
    waveform_dict: str | None = None      # statement -> description JSON (CQA output or the paper's file); MIMIC only
    fs: float = 500.0                     # sampling rate (Hz) of the stored ECGs
    seconds: float = 10.0                 # length (s) of the stored ECGs
    crop_seconds: float | None = None     # train on random crops this long (None: the whole record); val: centre crops
    # "global" (one mean/std over all leads of a record, as the original) or "per_lead"
    normalize: Literal["global", "per_lead"] = "global"
    augment: bool = False                 # light augmentation (amplitude scaling, noise, baseline wander) in training
    val_fraction: float = 0.05            # MIMIC: share of subjects held out for validation
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])   # PTB-XL folds to train on
    val_folds: list[int] = field(default_factory=lambda: [9])   # PTB-XL validation folds (never 10: the test fold)
    max_records: int | None = None        # use only the first N records of the record list (smoke runs); None: all
    max_words: int | None = None          # word budget of each text (descriptions trimmed first); None: none
    convert_workers: int | None = None    # processes for the one-off conversion (None: all cores)
    num_workers: int = 0                  # DataLoader worker processes
    # -- Model
    ecg_encoder: str = "convnextv2_base"  # encoder name (convnextv2_atto ... convnextv2_large, xresnet1d101)
    ecg_encoder_kwargs: dict = field(default_factory=dict)   # extra encoder arguments, e.g. {drop_path_rate: 0.1}
    text_encoder: str = "michiyasunaga/BioLinkBERT-base"  # Hugging Face name, local folder, "minilm" (bundled, offline)
    max_text_length: int = 256            # tokens per text, special tokens included
    # further ESIConfig fields (latent_dim, n_queries, decoder_depth, caption_weight, local_loss, ...), each
    # documented with its default in esi/models/esi_model.py; type-checked when the config is built
    model: dict = field(default_factory=dict)
    # -- Optimisation
    epochs: int = 30                      # passes over the training pairs
    batch_size: int = 48                  # pairs per process per micro-batch
    grad_accum: int = 1                   # micro-batches per optimizer step
    lr: float = 1e-4                      # learning rate of the ECG encoder and all new heads
    text_lr: float = 1e-5                 # learning rate of the pretrained text encoder
    weight_decay: float = 0.05            # AdamW decay (not on norms, biases, embeddings, the logit scale)
    # "paper_step" (warm-up, then x0.1 every 10 epochs: the original README), "cosine" or "constant"
    schedule: Literal["paper_step", "cosine", "constant"] = "cosine"
    warmup_epochs: float = 5.0            # linear warm-up length
    min_lr_factor: float = 0.01           # cosine floor as a fraction of lr
    clip_grad: float | None = 1.0         # max gradient norm (None: no clipping)
    # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16" (fp16 uses a grad scaler)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False                 # torch.compile the model
    device: str = "auto"                  # "auto", "cpu", "cuda"
    seed: int = 0                         # seeds model init, data order, crops and augmentation
    # -- Bookkeeping
    checkpoint_every: int = 1000          # optimizer steps between checkpoints (and one at every epoch end)
    keep_checkpoints: int = 3             # how many recent checkpoints to keep
    resume: str = "auto"                  # "auto" (newest in out_dir, if any), "none" (start over), or a path
    log_every: int = 10                   # optimizer steps between train metric rows
    val_retrieval_pool: int = 1000        # at most this many val pairs in the recall@k pool (chance = k / pool)
    max_steps: int | None = None          # stop after this many optimizer steps in total (None: all epochs)
    tensorboard: bool = True              # TensorBoard logs under <out_dir>/tb
    progress: bool = True                 # progress bars
    caption_samples: int = 4              # validation ECGs to caption at the end (written to captions.jsonl)

    def __post_init__(self):
        owned = sorted(set(self.model) & {"ecg_encoder", "ecg_encoder_kwargs", "text_encoder", "max_text_length"})
        if owned:
            from esi.config import ConfigError

            raise ConfigError(f"train_model.{owned[0]}: set it as train_{owned[0]}, its own key")
        if self.model:
            model_config(self)   # a mistyped or unknown train_model entry stops here, naming train_model.<key>


def model_config(cfg: TrainConfig):
    """The `ESIConfig` a run builds: `cfg.model` (e.g. init_logit_scale) plus the encoder and length settings.

    Unknown or mistyped keys of `model` raise a ConfigError naming train_model.<key>.
    """
    from esi.config import from_dict
    from esi.models.esi_model import ESIConfig

    fields = dict(cfg.model)
    fields.update(ecg_encoder=cfg.ecg_encoder, ecg_encoder_kwargs=dict(cfg.ecg_encoder_kwargs),
                  text_encoder=cfg.text_encoder, max_text_length=cfg.max_text_length)
    return from_dict(ESIConfig, fields, where="train_model")
