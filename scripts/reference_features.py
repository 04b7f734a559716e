"""Make the fixtures that pin esi.models.external to the reference repositories' own model code.

Run with a scratch environment that can import the reference code (NOT the project's venv), from a checkout of
the reference repository at the commit recorded:

    python scripts/reference_features.py merl_resnet18 --repo /tmp/ref/merl --commit <sha> \
        --ptbxl ../shared/data/ptbxl

For each fixture it builds the reference model with the reference code, fills it with
`tests/external_weights.seeded_state_dict` (the same tensors the test rebuilds), randomises nothing else,
prepares the records with the reference's own loader code, runs the reference's feature call in eval mode, and
writes tests/data/encoders/<name>/reference.json (seed, repository, commit, records, key layout) and features.npy.
Nothing here is imported by the package or the tests.

Beyond torch, numpy, scipy, pandas, wfdb and transformers, the scratch environment needs: einops, scikit-learn and
matplotlib (HeartLang, ECG-JEPA's loader), omegaconf 2.3 (D-BETA), and hydra-core 1.0.7 with omegaconf 2.0.6, the
pins of fairseq-signals' setup.py (ECG-FM; then omegaconf 2.0.6 on the path, not 2.3). The fixtures of
2026-12 were made with Python 3.11 and torch 2.13 CPU; each builder says what it stubs and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from external_weights import FIXTURES, layout_of, seeded_state_dict  # noqa: E402

RECORDS = (1, 2, 9)  # PTB-XL ecg_id, 500 Hz records (10 s, 12 leads)
SEED = 19


def ptbxl_path(ptbxl: Path, ecg_id: int, rate: int = 500) -> Path:
    suffix = "hr" if rate == 500 else "lr"
    return ptbxl / f"records{rate}" / f"{ecg_id // 1000 * 1000:05d}" / f"{ecg_id:05d}_{suffix}"


# --- MERL ---------------------------------------------------------------------------------------------------

def merl_inputs(repo: Path, ptbxl: Path) -> torch.Tensor:
    """The records through MERL's own PTB-XL loader (finetune/finetune_dataset.py, ECGDataset)."""
    import pandas as pd

    sys.path.insert(0, str(repo / "finetune"))
    from finetune_dataset import ECGDataset

    # ECGDataset reads 'filename_hr' and takes columns 6.. as labels.
    frame = pd.DataFrame({"ecg_id": RECORDS, "a": 0, "b": 0, "c": 0, "d": 0,
                          "filename_hr": [str(ptbxl_path(Path(""), i)) for i in RECORDS], "label": 0})
    dataset = ECGDataset(str(ptbxl), frame, dataset_name="ptbxl")
    return torch.stack([dataset[i][0] for i in range(len(RECORDS))])


def merl_resnet18(repo: Path, ptbxl: Path):
    sys.path.insert(0, str(repo / "utils"))
    from resnet1d import ResNet18

    model = ResNet18()
    call = "ResNet18() (utils/resnet1d.py): forward(x) = layer4 map, features = mean over time"
    return model, lambda x: model(x).mean(dim=-1), merl_inputs(repo, ptbxl), call


def merl_vit_tiny(repo: Path, ptbxl: Path):
    sys.path.insert(0, str(repo / "utils"))
    from vit1d import vit_tiny

    model = vit_tiny(num_leads=12)
    call = "vit_tiny(num_leads=12) (utils/vit1d.py): features = forward_encoding(x)"
    return model, model.forward_encoding, merl_inputs(repo, ptbxl), call


# --- ECGFounder ---------------------------------------------------------------------------------------------

def ecgfounder_net1d(repo: Path, ptbxl: Path):
    import types

    import wfdb

    # dataset.py imports torchvision.transforms but never uses it; torchvision is not needed to run it.
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    sys.modules.setdefault("torchvision.transforms", types.ModuleType("torchvision.transforms"))
    sys.path.insert(0, str(repo))
    from dataset import LVEF_12lead_cls_Dataset
    from net1d import Net1D
    from util import filter_bandpass

    # The builder of finetune_model.ft_12lead_ECGFounder (without its checkpoint load).
    model = Net1D(in_channels=12, base_filters=64, ratio=1, filter_list=[64, 160, 160, 400, 400, 1024, 1024],
                  m_blocks_list=[2, 2, 2, 3, 3, 4, 4], kernel_size=16, stride=2, groups_width=16, verbose=False,
                  use_bn=False, use_do=False, n_classes=150, return_features=True)
    # LVEF_12lead_cls_Dataset.__getitem__'s steps: nan_to_num, (lead reorder: PTB-XL files are already in the
    # standard order its reorder produces), filter_bandpass(., 500), z_score_normalization, FloatTensor.
    inputs = []
    for ecg_id in RECORDS:
        data = np.nan_to_num(wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0], nan=0).T
        data = filter_bandpass(data, 500)
        inputs.append(torch.FloatTensor(LVEF_12lead_cls_Dataset.z_score_normalization(None, data)))
    call = ("Net1D(finetune_model.ft_12lead_ECGFounder's settings, return_features=True) (net1d.py): "
            "features = deep_features")
    return model, lambda x: model(x)[1], torch.stack(inputs), call


# --- ST-MEM -------------------------------------------------------------------------------------------------

def stmem_vit_small(repo: Path, ptbxl: Path):
    """ST_MEM_ViT at the small width (384; the released ViT-B/75 is the same class at 768): its eval pipeline."""
    import math
    import pickle
    import tempfile
    import types

    import wfdb
    import yaml

    # util/misc.py imports torch._six.inf, gone from torch 2; it was math.inf.
    sys.modules.setdefault("torch._six", types.SimpleNamespace(inf=math.inf))
    sys.path.insert(0, str(repo))
    import models.encoder as encoder
    import util.transforms as T
    from util.dataset import ECGDataset

    config = yaml.safe_load((repo / "configs" / "downstream" / "st_mem.yaml").read_text())
    transform = T.Compose(T.get_transforms_from_config(config["dataset"]["eval_transforms"]) + [T.ToTensor()])
    folder = Path(tempfile.mkdtemp())
    names = []
    for ecg_id in RECORDS:  # its loader reads (leads, samples) arrays from .pkl files, with their rate
        names.append(f"{ecg_id:05d}.pkl")
        (folder / names[-1]).write_bytes(pickle.dumps(wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0].T))
    dataset = ECGDataset(str(folder), filenames=names, fs_list=[500] * len(names),
                         target_fs=config["dataset"]["fs"], transform=transform)
    inputs = torch.stack([dataset[i] for i in range(len(names))])  # (records, 3 crops, 12, 2250)
    model = encoder.st_mem_vit_small(num_leads=12)

    def features_of(x):  # engine_downstream.evaluate: the model on each crop, averaged
        return torch.stack([model.forward_encoding(x[:, i]) for i in range(x.shape[1])], dim=1).mean(dim=1)

    call = ("st_mem_vit_small(num_leads=12) (models/encoder/st_mem_vit.py): features = mean over the 3 eval crops "
            "of forward_encoding(crop)")
    return model, features_of, inputs, call


# --- HuBERT-ECG ---------------------------------------------------------------------------------------------

# A small configuration of HuBERTECGConfig (the released ones are 512-1024 wide, 8-16 layers); the adapter builds
# whatever config.json says with the same transformers class.
HUBERT_ECG_CONFIG = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 384,
                     "conv_dim": [64] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
                     "mask_time_prob": 0.3, "classifier_proj_size": 64, "ensemble_length": 1, "vocab_sizes": [100]}


def hubert_ecg_small(repo: Path, ptbxl: Path):
    import tempfile

    import pandas as pd
    import wfdb

    sys.path.insert(0, str(repo / "code"))
    from dataset import ECGDataset
    from hubert_ecg import HuBERTECG, HuBERTECGConfig
    from utils import ecg_preprocessing

    # The README's recipe: ecg_preprocessing at the source rate, saved as .npy at 500 Hz, then ECGDataset with
    # downsampling_factor=5 (its encode path: the first 5 s, leads flattened, decimated).
    folder = Path(tempfile.mkdtemp())
    names = []
    for ecg_id in RECORDS:
        names.append(str(folder / f"{ecg_id:05d}.npy"))
        np.save(names[-1], ecg_preprocessing(wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0].T, 500))
    pd.DataFrame({"filename": names}).to_csv(folder / "index.csv", index=False)
    dataset = ECGDataset(str(folder / "index.csv"), str(folder), downsampling_factor=5, pretrain=False, encode=True)
    inputs = torch.stack([dataset[i][0] for i in range(len(names))])  # (records, 6000)
    model = HuBERTECG(HuBERTECGConfig(**HUBERT_ECG_CONFIG))

    call = ("HuBERTECG(HuBERTECGConfig(**config)) (code/hubert_ecg.py): features = last_hidden_state.mean(dim=1), "
            "the pooling of HuBERTForECGClassification without an attention mask")
    return model, lambda x: model(x).last_hidden_state.mean(dim=1), inputs, call


# --- ECGFM-KED ----------------------------------------------------------------------------------------------

def ked_xresnet1d101(repo: Path, ptbxl: Path):
    import enum
    import inspect
    import re as re_module
    import types
    import typing

    import wfdb
    from scipy.signal import resample

    # models/xresnet1d_101.py star-imports fastai v1 (fastai.layers, fastai.core) for standard-library names its
    # backbone code uses at definition time (typing's Optional/Collection, Enum, inspect, re, a Floats alias);
    # fastai v1 does not install beside torch 2, so these two modules hold just those names. fastai's own layers
    # are used only by the classification head, which the encoder has not.
    names = {"Optional": typing.Optional, "Collection": typing.Collection, "Floats": typing.Union[float, list],
             "Enum": enum.Enum, "inspect": inspect, "re": re_module}
    sys.modules["fastai"] = types.ModuleType("fastai")
    for sub in ("layers", "core"):
        module = types.ModuleType(f"fastai.{sub}")
        module.__dict__.update(names)
        sys.modules[f"fastai.{sub}"] = module
    # Only models/xresnet1d_101.py is imported: the repository's models/__init__.py (which imports its text and
    # decoder models) is left out, i.e. the checkout given as --repo has an empty models/__init__.py.
    sys.path.insert(0, str(repo))
    from models.xresnet1d_101 import xresnet1d101

    # main_mimiciv.py's construction (without the head it never builds: use_ecgNet_Diagnosis is not "ecgNet").
    model = xresnet1d101(num_classes=1, input_channels=12, kernel_size=5, ps_head=0.5)
    # MimicivDataset.__getitem__: wfdb.rdsamp, .T, resample(ecg, T / 5) (Fourier), NaN -> 0. It reads MIMIC-IV-ECG
    # files as stored (aVF before aVL); a PTB-XL file is reordered to that order first, as its pretraining saw.
    mimic_order = [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]
    inputs = []
    for ecg_id in RECORDS:
        ecg = wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0].T[mimic_order]
        ecg = torch.from_numpy(resample(ecg, int(ecg.shape[1] / 5), axis=1))
        inputs.append(torch.where(torch.isnan(ecg), torch.zeros_like(ecg), ecg))
    call = "xresnet1d101(input_channels=12, kernel_size=5) (models/xresnet1d_101.py): features = model(x).mean(-1)"
    return model, lambda x: model(x).mean(dim=-1), torch.stack(inputs), call


# --- ECG-JEPA -----------------------------------------------------------------------------------------------

def ecg_jepa_small(repo: Path, ptbxl: Path):
    """ECG-JEPA's MaskTransformer at width 192, 4 blocks, 4 heads (48 channels per head, as the released 768-wide,
    16-head encoder); its own waves_ptbxl steps and its representation()."""
    import types

    import wfdb
    from torch import nn

    # ecg_jepa.py imports DropPath and trunc_normal_ from timm, whose import needs a torchvision matching this torch;
    # DropPath is built only for drop_path_rate > 0 (0 here) and ecg_jepa.py defines its own trunc_normal_.
    timm_layers = types.ModuleType("timm.models.layers")
    timm_layers.DropPath, timm_layers.trunc_normal_ = nn.Identity, nn.init.trunc_normal_
    for name in ("timm", "timm.models"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["timm.models.layers"] = timm_layers
    sys.path.insert(0, str(repo))
    from ecg_data import downsample_waves
    from ecg_jepa import ecg_jepa

    # models.load_encoder's builder with a smaller encoder (mask_scale (0, 0), 8 leads, sin-cos positions).
    model = ecg_jepa(encoder_embed_dim=192, encoder_depth=4, encoder_num_heads=4, predictor_embed_dim=96,
                     predictor_depth=1, predictor_num_heads=2, c=8, pos_type="sincos", mask_scale=(0, 0),
                     leads=[0, 1, 2, 3, 4, 5, 6, 7]).encoder
    # waves_ptbxl: wfdb records at 500 Hz, (leads, samples), Fourier-resampled to 2,500, leads [0, 1] + [6:].
    data = np.stack([wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0].T for ecg_id in RECORDS])
    data = downsample_waves(data, 2500)
    data = np.concatenate([data[:, :2], data[:, 6:]], axis=1)
    call = ("ecg_jepa(encoder_embed_dim=192, encoder_depth=4, encoder_num_heads=4, c=8).encoder (ecg_jepa.py): "
            "features = representation(x)")
    return model, model.representation, torch.from_numpy(data), call


# --- D-BETA -------------------------------------------------------------------------------------------------

# configs/config.json's model settings at a smaller size (the release: 8 layers of 768, conv 256, 12 heads, text
# side 768 wide); the pretraining mask embedding is kept (apply_mask), as the released checkpoint holds it.
DBETA_CONFIG = {"encoder_layers": 2, "encoder_embed_dim": 192, "encoder_ffn_embed_dim": 384,
                "encoder_attention_heads": 4, "conv_feature_layers": "[(64, 2, 2)] * 4", "apply_mask": True,
                "hidden_dim": 192, "num_layers": 1, "num_heads": 4, "num_top_layer": 1, "vocab_size": 100,
                "mem_decoder_hidden_dim": 64, "mem_decoder_num_layers": 1, "mem_decoder_num_heads": 2,
                "max_text_size": 32}


def dbeta_small(repo: Path, ptbxl: Path):
    import types

    import transformers.modeling_utils
    import transformers.pytorch_utils
    import wfdb
    from transformers import T5Config, T5EncoderModel

    # models/cross_layer.py imports three helpers from transformers.modeling_utils that transformers 5 moved to
    # pytorch_utils (find_pruneable_heads_and_indices is gone; only prune_heads, never called here, uses it).
    transformers.modeling_utils.apply_chunking_to_forward = transformers.pytorch_utils.apply_chunking_to_forward
    transformers.modeling_utils.prune_linear_layer = transformers.pytorch_utils.prune_linear_layer
    transformers.modeling_utils.find_pruneable_heads_and_indices = None
    sys.path.insert(0, str(repo))
    import models.dbeta as dbeta
    from models.processor import get_ecg_feats

    # DBETA's text tower is T5EncoderModel.from_pretrained("google/flan-t5-base"), which would download; the ECG
    # features never use it, so a tiny random T5 stands in (its keys are among the heads the adapter drops).
    tiny_t5 = T5Config(vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    dbeta.T5EncoderModel = types.SimpleNamespace(from_pretrained=lambda name: T5EncoderModel(tiny_t5))
    config = json.loads((repo / "configs" / "config.json").read_text())
    config["model"].update(DBETA_CONFIG)
    model = dbeta.DBETA(types.SimpleNamespace(**config["model"]))
    # example.ipynb: Fourier-resample to 500 Hz (PTB-XL records already are), keep the first 5,000 samples.
    data = np.stack([wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0].T[:, :5000] for ecg_id in RECORDS])
    call = ("DBETA(configs/config.json with DBETA_CONFIG) (models/dbeta.py): features = "
            "models.processor.get_ecg_feats(model, x)")
    return model, lambda x: get_ecg_feats(model, x), torch.from_numpy(data), call, config


# --- ECG-FM (fairseq-signals) -------------------------------------------------------------------------------

# Wav2Vec2CMSCConfig at a smaller size (ECG-FM: 12 layers of 768, FFN 3072, 12 heads, conv 256); the rest as
# examples/w2v_cmsc/config/pretraining/w2v_cmsc_rlm.yaml sets it (mask embedding and quantiser kept, as the
# released pretrained checkpoint holds them).
ECG_FM_CONFIG = {"encoder_layers": 2, "encoder_embed_dim": 192, "encoder_ffn_embed_dim": 384,
                 "encoder_attention_heads": 4, "conv_feature_layers": "[(64, 2, 2)] * 4", "in_d": 12,
                 "apply_mask": True, "mask_prob": 0.65, "quantize_targets": True, "final_dim": 64,
                 "latent_vars": 8, "latent_groups": 2, "layer_norm_first": False}


def fairseq_signals_importable(repo: Path) -> None:
    """Make fairseq-signals (a checkout at `repo`, not installed) importable on Python 3.11 and transformers 5.

    Its nested config dataclasses are unhashable defaults, which Python 3.11's dataclasses refuse (the reason its
    README asks for Python <= 3.10): each dataclass gets object.__hash__. Its ECG-text datasets and M3AE/MedViLL
    models import transformers names that version 5 moved or removed; ECG-FM's model uses none of them.
    Needs hydra-core 1.0.7 and omegaconf 2.0.6 (its setup.py pins) on the path.
    """
    import dataclasses

    import transformers
    import transformers.modeling_utils
    import transformers.pytorch_utils

    original = dataclasses._process_class

    def process_class(cls, *args, **kwargs):
        cls = original(cls, *args, **kwargs)
        if cls.__hash__ is None:
            cls.__hash__ = object.__hash__
        return cls

    dataclasses._process_class = process_class
    transformers.DataCollatorForWholeWordMask = type("DataCollatorForWholeWordMask", (), {})
    for name in ("apply_chunking_to_forward", "prune_linear_layer", "find_pruneable_heads_and_indices"):
        setattr(transformers.modeling_utils, name, getattr(transformers.pytorch_utils, name, None))
    sys.path.insert(0, str(repo))
    import fairseq_signals  # noqa: F401


def ecg_fm_small(repo: Path, ptbxl: Path):
    """fairseq-signals' Wav2Vec2CMSCModel (ECG-FM's pretraining model) through its own preprocessing scripts."""
    import tempfile

    import pandas as pd
    import wfdb
    from scipy.io import loadmat

    fairseq_signals_importable(repo)
    sys.path.insert(0, str(repo / "scripts" / "preprocess" / "ecg"))
    from preprocess import extract_wfdb, preprocess_mat, segment_mat

    from fairseq_signals.models.wav2vec2.wav2vec2_cmsc import Wav2Vec2CMSCConfig, Wav2Vec2CMSCModel

    model = Wav2Vec2CMSCModel(Wav2Vec2CMSCConfig(**ECG_FM_CONFIG))
    # preprocess.py's pipeline for each record: extract_wfdb (.mat in the leads_to_load order; PTB-XL spells the
    # leads AVR/AVL/AVF in its standard order, so that spelling is the order asked for), preprocess_mat (resample to
    # 500 Hz, per-lead standardisation, constant leads to 0), segment_mat (non-overlapping 5 s segments).
    folder = Path(tempfile.mkdtemp())
    segments = []
    for ecg_id in RECORDS:
        path = str(ptbxl_path(ptbxl, ecg_id))
        names = wfdb.rdheader(path).sig_name
        leads = pd.DataFrame({"global_order": np.arange(len(names))}, index=names)
        org, pre = folder / f"{ecg_id}_org.mat", folder / f"{ecg_id}.mat"
        extract_wfdb({"path": path, "save_path": str(org), "idx": ecg_id}, leads)
        preprocess_mat({"path": str(org), "save_path": str(pre)}, 500, True, "zero")
        files = segment_mat({"path": str(pre), "save_path": str(pre)}, 5, 500)
        segments.append(np.stack([loadmat(f)["feats"] for f in files]))
    inputs = torch.from_numpy(np.stack(segments))  # (records, 2 segments, 12, 2500)

    def encoder_out_to_emb(x):  # ECG-FM scripts/embs.py
        return torch.div(x.sum(dim=1), (x != 0).sum(dim=1))

    def features_of(x):  # each segment through extract_features (mask=False), embedded, then averaged
        return torch.stack([encoder_out_to_emb(model.extract_features(x[:, i], None)["x"])
                            for i in range(x.shape[1])], dim=1).mean(dim=1)

    call = ("Wav2Vec2CMSCModel(Wav2Vec2CMSCConfig(**ECG_FM_CONFIG)) (fairseq_signals/models/wav2vec2): features = "
            "mean over the 5 s segments of encoder_out_to_emb(extract_features(segment)['x'])")
    return model, features_of, inputs, call, ECG_FM_CONFIG


# --- HeartLang ----------------------------------------------------------------------------------------------

def heartlang_small(repo: Path, ptbxl: Path):
    """HeartLang's ST_ECGFormer at width 128, 2 blocks, 2 heads (64 channels each, as the release's 8 x 64), fed
    by its MIMIC-IV preprocessing functions and its QRSTokenizer's steps."""
    import types

    import wfdb
    from torch import nn

    # modeling_pretrain / modeling_vqhbr import timm (create_model, register_model, trunc_normal_), whose import
    # needs a torchvision matching this torch; register_model only records the builders, which are not used here.
    timm = types.ModuleType("timm")
    timm.create_model = None
    for name in ("timm.models", "timm.models.layers", "timm.models.registry"):
        module = types.ModuleType(name)
        module.register_model, module.trunc_normal_ = (lambda fn: fn), nn.init.trunc_normal_
        sys.modules[name] = module
    sys.modules["timm"] = timm
    sys.path.insert(0, str(repo))
    sys.path.insert(0, str(repo / "datasets" / "dataset_preprocess" / "MIMIC-IV"))
    from mimic_preprocess import bandpass_filter, replace_nan_with_window_average, resample_signals
    from modeling_pretrain import ST_ECGFormer
    from QRSTokenizer import QRSTokenizer

    # modeling_pretrain.HeartLang's builder at a smaller size (vocab_size only sizes the dropped lm_head).
    model = ST_ECGFormer(seq_len=256, time_window=96, depth=2, embed_dim=128, heads=2, mlp_dim=256, dim_head=64,
                         vocab_size=64, dropout=0.1, emb_dropout=0.1)
    # mimic_preprocess.process_batch (is_norm=False): NaN repair, Fourier resampling 500 -> 100 Hz, lead reorder
    # (PTB-XL files are in the standard order it produces), band-pass 0.67-40 Hz.
    data = np.stack([wfdb.rdsamp(str(ptbxl_path(ptbxl, ecg_id)))[0].T for ecg_id in RECORDS])
    data = bandpass_filter(resample_signals(replace_nan_with_window_average(data), 500, 100), 0.67, 40, 100)
    # QRSTokenizer.forward's steps per record (forward itself samples 5 records to plot, so needs at least 5).
    tokenizer = QRSTokenizer(fs=100, max_len=256, token_len=96, save_path="", stage="test",
                             used_channels=list(range(12)))
    words, leads, seconds = [], [], []
    for ecg in data:
        qrs = tokenizer.qrs_detection(ecg)
        sentence, in_chans, in_times = tokenizer.qrs_to_sequence(tokenizer.extract_qrs_segments(ecg, qrs), qrs)
        words.append(sentence.astype(np.float32))
        leads.append(in_chans.astype(np.int64))
        seconds.append(in_times.astype(np.int64))
    inputs = torch.from_numpy(np.stack(words))
    leads, seconds = torch.from_numpy(np.stack(leads)), torch.from_numpy(np.stack(seconds))

    def features_of(x):  # ST_ECGFormerClassifier.forward's feature: the class token of all tokens
        return model(x, in_chan_matrix=leads, in_time_matrix=seconds, return_all_tokens=True)[:, 0]

    call = ("ST_ECGFormer(seq_len=256, time_window=96, depth=2, embed_dim=128, heads=2, mlp_dim=256) "
            "(modeling_pretrain.py) on QRSTokenizer sentences: features = model(x, in_chan_matrix, in_time_matrix, "
            "return_all_tokens=True)[:, 0]")
    return model, features_of, inputs, call


FIXTURE_BUILDERS = {
    "heartlang_small": ("PKUDigitalHealth/HeartLang", heartlang_small),
    "ecg_fm_small": ("Jwoo5/fairseq-signals", ecg_fm_small),
    "dbeta_small": ("manhph2211/D-BETA", dbeta_small),
    "ecg_jepa_small": ("sehunfromdaegu/ECG_JEPA", ecg_jepa_small),
    "ked_xresnet1d101": ("control-spiderman/ECGFM-KED", ked_xresnet1d101),
    "hubert_ecg_small": ("Edoar-do/HuBERT-ECG", hubert_ecg_small),
    "stmem_vit_small": ("bakqui/ST-MEM", stmem_vit_small),
    "ecgfounder_net1d": ("PKUDigitalHealth/ECGFounder", ecgfounder_net1d),
    "merl_resnet18": ("cheliu-computation/MERL-ICML2024", merl_resnet18),
    "merl_vit_tiny": ("cheliu-computation/MERL-ICML2024", merl_vit_tiny),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(FIXTURE_BUILDERS))
    parser.add_argument("--repo", type=Path, required=True, help="checkout of the reference repository")
    parser.add_argument("--commit", required=True, help="the reference repository's commit (recorded)")
    parser.add_argument("--ptbxl", type=Path, default=ROOT.parent / "shared" / "data" / "ptbxl")
    args = parser.parse_args()

    repository, builder = FIXTURE_BUILDERS[args.name]
    model, features_of, inputs, call, *config = builder(args.repo.resolve(), args.ptbxl.resolve())
    layout = layout_of(model.state_dict())
    model.load_state_dict(seeded_state_dict(layout, SEED), strict=True)
    model.eval()
    with torch.no_grad():
        features = features_of(inputs.float()).numpy().astype(np.float32)

    folder = FIXTURES / args.name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", features)
    meta = {"name": args.name, "repository": repository, "commit": args.commit, "seed": SEED,
            "torch": torch.__version__, "ptbxl_records": list(RECORDS), "rate": 500, "feature_call": call,
            "input_shape": list(inputs.shape), "feature_scale": float(np.abs(features).max()),
            **({"config": HUBERT_ECG_CONFIG} if args.name.startswith("hubert_ecg") else {}),
            **({"config": config[0]} if config else {}),  # the config.json the model was built from
            "layout": layout}
    (folder / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{folder}: features {features.shape}, scale {meta['feature_scale']:.4g}")


if __name__ == "__main__":
    main()
