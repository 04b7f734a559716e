"""Which ECG encoder to evaluate, and how it must be fed: `EncoderSpec` -> `load_encoder` -> `LoadedEncoder`.

Four kinds of encoder:

- "esi": a model saved by `esi.train` (`ESIModel.save_pretrained` folder). Its `preprocessing.json`
  (written by esi.train beside config.json) records the rate, normalisation and leads it was pretrained with.
- "original": the original ESI release's `model.safetensors` (500 Hz, ONE z-score over the whole ECG, MIMIC-IV
  lead order with aVF before aVL; see `esi.models.original`).
- "random": a randomly initialised encoder of a named architecture: the baseline every result is shown
  against. `random_twin(spec)` makes the twin of a pretrained spec: same architecture, rate, normalisation
  and lead order, random weights.
- "supervised": an encoder trained from scratch on PTB-XL labels by Protocol A
  (`esi.evaluate.benchmark`, which saves `<task>/<encoder>.pt`), used as a frozen feature extractor.
- "merl", "ecgfounder", "stmem", "hubert_ecg", "ked", "ecg_jepa", "dbeta", "ecg_fm", "heartlang" (every key of
  `esi.models.external.LOADERS`): a released encoder of the field, loaded strictly by its adapter and fed
  through the `InputSpec` it declares.
- "python": any other encoder, `factory: "package.module:function"` returning (module, InputSpec).

`LoadedEncoder.features(x, fs)` is the one way features are made: x (n, 12, T) millivolts in the standard lead
order at `fs` Hz, brought to the encoder's rate, window, normalisation and lead order, then encoded. An external
encoder's module (`PreparedEncoder`) makes its input inside `forward`, so fine-tuning feeds it the same way.

An encoder is identified by a hash of its weights and preprocessing (`LoadedEncoder.identity`), which keys the
feature cache: a retrained checkpoint at the same path never reuses stale features.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from esi.data.leads import MIMIC_LEADS, STANDARD_LEADS
from esi.models.external import LOADERS, InputSpec
from esi.paths import resolve

EXTERNAL_KINDS = tuple(LOADERS)     # the field's released encoders, one adapter each
EncoderKind = str                   # one of ENCODER_KINDS
ENCODER_KINDS = ("esi", "original", "random", "supervised", "python", *EXTERNAL_KINDS)
# Every benchmark dataset here (PTB-XL, CPSC2018, CSN) is recorded at 500 Hz: an external encoder reads records
# at this rate and its own declared resampler (as its reference loader) takes them to its rate from there.
SOURCE_FS = 500.0
# The seconds of a stored record: ESI-family encoders see the whole of it (their frozen features).
RECORD_S = 10.0
NORMALIZATIONS = ("global", "per_lead", "scaler")
LEAD_ORDERS = {"standard": STANDARD_LEADS, "mimic": MIMIC_LEADS}
PREPROCESSING_FILE = "preprocessing.json"

# The original ESI loader: 500 Hz, one z-score over all leads and samples, MIMIC-IV-ECG lead order.
ORIGINAL_FS = 500.0
ORIGINAL_NORMALIZE = "global"
# Architecture arguments that reproduce the original's ConvNeXt V2 (its norm and its stride remainder).
ORIGINAL_ENCODER_KWARGS = {"downsample_norm": "time", "remainder": "drop"}


@dataclass
class EncoderSpec:
    """One encoder to evaluate (an entry of params `evaluate_encoders`).

    kind: "esi", "original", "random", "supervised", "python" or an external family ("merl", "ecgfounder",
        "stmem", "hubert_ecg", "ked", ...: EXTERNAL_KINDS) (see the module docstring).
    path: esi: the saved model folder; original: its model.safetensors (or folder); supervised: a `.pt` saved by
        Protocol A; an external family: its released file (HuBERT-ECG: the model card folder); python: passed to
        the factory (may be empty); random: unused, except for the twin of an external encoder (its checkpoint
        gives the architecture). Relative paths are taken from the repository root.
    name: the label in tables and figures; default: derived from kind and architecture.
    architecture: random: the encoder name for `esi.models.create_encoder` (e.g. "convnextv2_atto"), or
        "<kind>:<class>:<shapes>" for the twin of an external encoder (`random_twin` writes it); others:
        read from the checkpoint (leave empty).
    encoder_kwargs: random: extra constructor arguments (e.g. {downsample_norm: time, remainder: drop}).
    fs: sampling rate (Hz) the encoder is fed at; None: what the checkpoint records (required for "random").
    normalize: "global" (one z-score per ECG), "per_lead" (z-score each lead) or "scaler" (per-lead mean/std
        fitted on the PTB-XL training folds); None: what the checkpoint records (required for "random").
    lead_order: "standard" (I, II, III, aVR, aVL, aVF, V1-V6) or "mimic" (aVF before aVL); None: the
        checkpoint's (standard for random encoders).
    seed: random: the seed of the initial weights.
    factory: python (and its twin): "package.module:function"; `function(path)` (or `function()` without a path)
        returns (module, InputSpec): the module takes the declared input and returns EncoderOutput(tokens, pooled)
        or (batch, dim) features.
    """

    kind: EncoderKind
    path: str = ""
    name: str = ""
    architecture: str = ""
    encoder_kwargs: dict = field(default_factory=dict)
    fs: float | None = None
    normalize: Literal["global", "per_lead", "scaler"] | None = None
    lead_order: Literal["standard", "mimic"] | None = None
    seed: int = 0
    factory: str = ""

    def __post_init__(self):
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"encoder kind must be one of {', '.join(ENCODER_KINDS)}, got {self.kind!r}")
        if self.kind == "python" and not re.fullmatch(r"[\w.]+:\w+", self.factory):
            raise ValueError(f"a python encoder needs factory: \"package.module:function\", got {self.factory!r} "
                             f"(name: {self.name or '-'})")
        if self.kind not in ("random", "python") and not self.path:
            raise ValueError(f"an encoder of kind {self.kind!r} needs a path (name: {self.name or '-'})")
        if self.kind == "random" and not self.architecture:
            raise ValueError("a random encoder needs an architecture, e.g. architecture: convnextv2_atto")
        if self.kind in (*EXTERNAL_KINDS, "python") and (self.fs, self.normalize, self.lead_order) != (None,) * 3:
            raise ValueError(f"{self.name or self.path or self.factory}: a {self.kind} encoder is fed as its adapter "
                             "declares (its InputSpec); remove fs, normalize and lead_order from its entry")
        if self.normalize is not None and self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")


@dataclass
class LoadedEncoder:
    """An encoder ready to use, with everything needed to feed it the way it was trained.

    module: takes (batch, 12, time) in `leads` order; returns `EncoderOutput(tokens, pooled)`; `encode(x)` pooled.
    label: the name in tables. kind: the spec's kind. pretrained: False only for random encoders.
    architecture: encoder name (and variant). encoder_kwargs: its constructor arguments.
    fs, normalize, leads: how the protocols read records for it (the store's rate, `ECGDataset`'s normalisation
        and lead order). An external encoder reads raw millivolts in the standard order at SOURCE_FS
        (normalize None): its `PreparedEncoder` module makes its declared `input` itself.
    scaler: for normalize="scaler", the scaler it was trained with if the checkpoint has one (else fitted on the
        PTB-XL training folds when features are extracted).
    identity: hash of weights and preprocessing (keys cached features).
    spec: the spec it came from.
    input: an external encoder's declared input (None: an ESI-family encoder).
    pretrained_on: the datasets it was pretrained on, as its adapter declares (flags overlap with a test set).
    """

    module: nn.Module
    label: str
    kind: str
    pretrained: bool
    architecture: str
    encoder_kwargs: dict
    fs: float
    normalize: str
    leads: tuple[str, ...]
    identity: str
    spec: EncoderSpec
    scaler: object | None = None
    input: InputSpec | None = None
    pretrained_on: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return int(self.module.dim)

    @property
    def window_s(self) -> float | None:
        """Seconds of record the encoder takes at once: an external encoder's declared window (the whole record
        when it cuts its own crops); None: any length (ESI-family encoders; the protocol's window applies)."""
        if self.input is None:
            return None
        return self.input.window_s or RECORD_S

    def input_columns(self) -> dict:
        """The results' `encoder_fs`, `encoder_window_s`, `encoder_normalize`: the input the encoder is fed
        (external: its InputSpec, one input's seconds; ESI-family: its rate, the whole record, its normalisation)."""
        if self.input is not None:
            return {"encoder_fs": float(self.input.fs), "encoder_window_s": self.input.n_samples / self.input.fs,
                    "encoder_normalize": self.input.normalize}
        return {"encoder_fs": float(self.fs), "encoder_window_s": RECORD_S, "encoder_normalize": str(self.normalize)}

    def prepare(self, x, fs: float, *, n_valid=None, mask=None, scaler=None) -> torch.Tensor:
        """An ESI-family encoder's input made from ECGs, as `ECGDataset` makes it: resampled to its rate, cropped
        or zero-padded to RECORD_S, normalised (ignoring padding and missing leads), leads in its order.

        Args:
            x: (n, 12, T) millivolts in the standard lead order at `fs` Hz (numpy or tensor).
            fs: the rate of x.
            n_valid: (n,) samples of signal before each record's zero padding (None: all T).
            mask: (n, 12) bool, leads present (None: all).
            scaler: for normalize="scaler": the scaler to apply (default: the encoder's own).
        """
        from esi.data.reader import resample_signal
        from esi.data.store import fit_length
        from esi.data.transforms import lead_positions, normalize

        x = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32)
        n, leads, length = x.shape
        n_valid = np.full(n, length) if n_valid is None else np.asarray(n_valid)
        if abs(float(fs) - self.fs) > 1e-6:
            x = resample_signal(x.reshape(n * leads, length), fs, self.fs)[0].reshape(n, leads, -1)
            n_valid = np.ceil(n_valid * self.fs / float(fs)).astype(int)
        frame = int(round(RECORD_S * self.fs))
        # the first RECORD_S, zeros after; a copy, as normalisation below works in place and x may be the caller's
        x = np.array(fit_length(x, frame)[0], dtype=np.float32, order="C")
        scaler = scaler if scaler is not None else self.scaler
        if self.normalize == "scaler" and scaler is None:
            raise ValueError(f"{self.label}: normalize='scaler' needs the scaler fitted on the training records")
        normalize(x, self.normalize, None if scaler is None else scaler.select(STANDARD_LEADS),
                  n_valid=np.minimum(n_valid, frame), mask=mask, out=x)
        return torch.from_numpy(np.ascontiguousarray(x[:, lead_positions(self.leads, STANDARD_LEADS)]))

    @torch.inference_mode()
    def features(self, x, fs: float, *, n_valid=None, mask=None, scaler=None) -> np.ndarray:
        """Pooled features of ECGs, each fed as the encoder was trained.

        Args:
            x: (n, 12, T) millivolts in the standard lead order, sampled at `fs` Hz (numpy or tensor).
            fs: the rate of x.
            n_valid, mask, scaler: ESI-family encoders: see `prepare` (an external encoder pads and normalises
                as its reference loader does, zeros included).

        Returns:
            float32 (n, dim).
        """
        device = next(self.module.parameters(), torch.empty(0)).device
        if self.input is not None:
            x = torch.as_tensor(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32))
            out = self.module.encode(x.to(device), fs=fs)
        else:
            out = self.module.encode(self.prepare(x, fs, n_valid=n_valid, mask=mask, scaler=scaler).to(device))
        return out.float().cpu().numpy()


def slug(text: str) -> str:
    """A file-name-safe version of a label `text` ("ESI (convnextv2_base)" -> "esi_convnextv2_base")."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "encoder"


def read_preprocessing(model_dir: str | Path) -> dict:
    """The preprocessing an `esi.train` model was pretrained with ({} if the folder records none).

    model_dir: the saved model folder; its `preprocessing.json` (fs, normalize, leads, ...) is read, or else
        the one in the folder above it.
    """
    model_dir = Path(model_dir)
    for candidate in (model_dir / PREPROCESSING_FILE, model_dir.parent / PREPROCESSING_FILE):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{candidate}: not valid JSON ({err})") from err
    return {}


def _lead_order_name(leads) -> str:
    leads = tuple(leads)
    for name, order in LEAD_ORDERS.items():
        if leads == order:
            return name
    raise ValueError(f"unsupported lead order {leads}; expected the 12 standard leads or the MIMIC order")


def weights_identity(module: nn.Module, preprocessing: dict) -> str:
    """A short hash of every tensor of `module` (names, shapes, bytes) and of its preprocessing.

    Args:
        module: the encoder (any module; its state_dict is hashed).
        preprocessing: JSON-able facts about how it is fed (fs, normalize, leads).
    """
    digest = hashlib.blake2b(digest_size=10)
    digest.update(json.dumps(preprocessing, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _original_architecture(encoder: nn.Module, path: Path) -> tuple[str, dict]:
    """(architecture name, constructor kwargs) of an encoder loaded from an original release."""
    from esi.models.original import detect_original_variant

    variant = f"convnextv2_{detect_original_variant(encoder.state_dict(), path).name or 'custom'}"
    kwargs = {**ORIGINAL_ENCODER_KWARGS, "depths": list(encoder.depths), "dims": list(encoder.dims)}
    return variant, kwargs


def esi_settings(spec: EncoderSpec) -> tuple[str, dict, float, str, str]:
    """(architecture, kwargs, fs, normalize, lead order) of an "esi" spec: its fields first, then what the
    checkpoint records (config.json for the architecture, preprocessing.json for the input).

    Args:
        spec: an "esi" spec.

    Raises:
        ValueError: neither the spec nor the checkpoint gives the rate and normalisation.
    """
    from esi.models.esi_model import read_esi_config

    directory = resolve(spec.path)
    config = read_esi_config(directory)
    recorded = read_preprocessing(directory)
    fs = spec.fs if spec.fs is not None else recorded.get("fs")
    normalize = spec.normalize or recorded.get("normalize")
    if fs is None or normalize is None:
        raise ValueError(f"{directory}: the sampling rate and normalisation the model was pretrained with are "
                         f"unknown (no {PREPROCESSING_FILE}); set fs and normalize in its encoder entry")
    leads = spec.lead_order or (_lead_order_name(recorded["leads"]) if recorded.get("leads") else "standard")
    return config.ecg_encoder, dict(config.ecg_encoder_kwargs), float(fs), normalize, leads


# Readable names of the external families (a kind added to LOADERS without one shows as its kind).
KIND_TITLES = {"merl": "MERL", "ecgfounder": "ECGFounder", "stmem": "ST-MEM", "hubert_ecg": "HuBERT-ECG",
               "ked": "ECGFM-KED", "ecg_jepa": "ECG-JEPA", "dbeta": "D-BETA", "ecg_fm": "ECG-FM",
               "heartlang": "HeartLang", "python": "python"}


def is_external(spec: EncoderSpec) -> bool:
    """Whether `spec` is a released encoder of the field, a python factory's, or the random twin of one."""
    return spec.kind in (*EXTERNAL_KINDS, "python") or (spec.kind == "random" and ":" in spec.architecture)


def python_factory(factory: str):
    """The function a "package.module:function" string names (ValueError naming what is missing)."""
    module_name, _, name = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"factory {factory!r}: cannot import {module_name} ({err})") from err
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"factory {factory!r}: {module_name} has no function {name}")
    return function


def external_module(spec: EncoderSpec) -> tuple[nn.Module, InputSpec]:
    """(released module, its InputSpec) of an external or python spec, or of the random twin of one (the weights
    are then still the checkpoint's: `load_encoder` redraws them).

    Raises:
        ValueError: an unknown kind, a checkpoint of another family or weights that do not fit (naming the file
            and the tensor), or a factory that does not return (module, InputSpec).
    """
    from esi.models.external import load_external

    kind = spec.architecture.split(":")[0] if spec.kind == "random" else spec.kind
    path = resolve(spec.path) if spec.path else None
    if kind != "python":
        return load_external(kind, path)
    function = python_factory(spec.factory)
    made = function(str(path)) if path else function()
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module)
            and isinstance(made[1], InputSpec)):
        raise ValueError(f"factory {spec.factory!r} must return (torch module, InputSpec), got {type(made).__name__}")
    return made


def external_architecture(kind: str, module: nn.Module) -> str:
    """"<kind>:<class>:<hash of tensor names and shapes>": two encoders of one family but other sizes differ."""
    digest = hashlib.blake2b(digest_size=4)
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
    return f"{kind}:{type(module).__name__}:{digest.hexdigest()}"


def random_twin(spec: EncoderSpec, seed: int | None = None) -> EncoderSpec:
    """The random-init baseline of a pretrained spec: same architecture, rate, normalisation, lead order.

    spec: an "esi", "original", "supervised", external or python spec (a "random" spec is returned unchanged).
        An external encoder's twin reads its architecture from the same checkpoint and is fed the same input.
    seed: seed of the random weights (default: the spec's).
    """
    if spec.kind == "random":
        return spec
    if is_external(spec):
        module, _ = external_module(spec)
        title = KIND_TITLES.get(spec.kind, spec.kind)
        return EncoderSpec(kind="random", path=spec.path, factory=spec.factory, fs=SOURCE_FS,
                           architecture=external_architecture(spec.kind, module),
                           name=f"random init ({title} {type(module).__name__})",
                           seed=spec.seed if seed is None else seed)
    path = resolve(spec.path)
    if spec.kind == "esi":
        architecture, kwargs, fs, normalize, leads = esi_settings(spec)
    elif spec.kind == "original":
        from esi.models.original import load_original_esi_checkpoint

        architecture, kwargs = _original_architecture(load_original_esi_checkpoint(path), path)
        fs, normalize, leads = spec.fs or ORIGINAL_FS, spec.normalize or ORIGINAL_NORMALIZE, spec.lead_order or "mimic"
    else:
        saved = _read_supervised(path)
        architecture, kwargs = saved["architecture"], saved.get("encoder_kwargs", {})
        fs, normalize = spec.fs or saved["fs"], spec.normalize or saved["normalize"]
        leads = spec.lead_order or _lead_order_name(saved.get("leads", STANDARD_LEADS))
    return EncoderSpec(kind="random", name=f"random init ({architecture})", architecture=architecture,
                       encoder_kwargs=kwargs, fs=fs, normalize=normalize, lead_order=leads,
                       seed=spec.seed if seed is None else seed)


def with_random_baselines(specs: list[EncoderSpec]) -> list[EncoderSpec]:
    """`specs` plus the random twin of every pretrained spec whose baseline is not already listed.

    A random spec already present with the same architecture, rate and normalisation counts as the baseline.
    """
    out = list(specs)
    present = {(s.architecture, float(s.fs or 0), s.normalize) for s in specs if s.kind == "random"}
    for spec in specs:
        if spec.kind == "random":
            continue
        twin = random_twin(spec)
        key = (twin.architecture, float(twin.fs), twin.normalize)
        if key not in present:
            out.append(twin)
            present.add(key)
    return out


def _read_supervised(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such supervised checkpoint (Protocol A saves them under "
                                "<run>/evaluate/models/)")
    saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only: no code runs
    missing = [k for k in ("architecture", "encoder_state", "fs", "normalize") if k not in saved]
    if missing:
        raise ValueError(f"{path}: not a supervised encoder checkpoint of esi.evaluate (missing {', '.join(missing)})")
    return saved


def _build(architecture: str, kwargs: dict) -> nn.Module:
    """A randomly initialised encoder: `create_encoder(architecture)`, or the original's ConvNeXt V2 sizes."""
    from esi.models.convnextv2 import ConvNeXtV2Encoder
    from esi.models.registry import create_encoder

    kwargs = dict(kwargs)
    if "depths" in kwargs:  # an original checkpoint's exact sizes (possibly none of the named variants)
        return ConvNeXtV2Encoder(**{**kwargs, "depths": tuple(kwargs["depths"]), "dims": tuple(kwargs["dims"])})
    return create_encoder(architecture, **kwargs)


def load_encoder(spec: EncoderSpec, device: str | torch.device = "cpu") -> LoadedEncoder:
    """Build or load the encoder of `spec`, in eval mode on `device`, with its preprocessing.

    spec: what to load.
    device: where to put the weights.

    Raises:
        FileNotFoundError / ValueError: a missing or unusable checkpoint, naming the file and the reason.
    """
    path = resolve(spec.path) if spec.path else None
    scaler, input_spec, pretrained_on = None, None, ()
    if is_external(spec):
        from esi.models.external.prepared import PreparedEncoder, random_init

        net, input_spec = external_module(spec)
        kind = spec.architecture.split(":")[0] if spec.kind == "random" else spec.kind
        architecture, kwargs = external_architecture(kind, net), {}
        if spec.kind == "random":
            if architecture != spec.architecture:
                raise ValueError(f"{path or spec.factory}: holds {architecture}, not the twin's {spec.architecture}")
            random_init(net, spec.seed)
        else:
            pretrained_on = tuple(input_spec.pretrained_on)
        module = PreparedEncoder(net, input_spec, SOURCE_FS)
        fs, normalize, leads = SOURCE_FS, None, "standard"
        title = f"{KIND_TITLES.get(kind, kind)} {type(net).__name__}"
        label = spec.name or (f"random init ({title})" if spec.kind == "random" else title)
    elif spec.kind == "esi":
        from esi.models.pretrained import load_ecg_encoder

        architecture, kwargs, fs, normalize, leads = esi_settings(spec)
        module = load_ecg_encoder(path)
        label = spec.name or f"ESI ({architecture})"
    elif spec.kind == "original":
        from esi.models.original import load_original_esi_checkpoint

        module = load_original_esi_checkpoint(path)
        architecture, kwargs = _original_architecture(module, path)
        fs, normalize = spec.fs or ORIGINAL_FS, spec.normalize or ORIGINAL_NORMALIZE
        leads = spec.lead_order or "mimic"
        if (fs, normalize, leads) != (ORIGINAL_FS, ORIGINAL_NORMALIZE, "mimic"):
            warnings.warn(f"{path}: feeding the original ESI encoder at {fs} Hz / {normalize} / {leads} leads, "
                          "not as it was pretrained (500 Hz, global z-score, MIMIC lead order)", stacklevel=2)
        label = spec.name or f"original ESI ({architecture})"
    elif spec.kind == "supervised":
        from esi.data.transforms import Scaler

        saved = _read_supervised(path)
        architecture, kwargs = saved["architecture"], dict(saved.get("encoder_kwargs", {}))
        module = _build(architecture, kwargs)
        module.load_state_dict(saved["encoder_state"])
        fs, normalize = spec.fs or float(saved["fs"]), spec.normalize or saved["normalize"]
        leads = spec.lead_order or _lead_order_name(saved.get("leads", STANDARD_LEADS))
        scaler = Scaler.from_dict(saved["scaler"]) if saved.get("scaler") else None
        label = spec.name or f"supervised {saved.get('task', '')} ({architecture})".replace("  ", " ")
    else:
        if spec.fs is None or spec.normalize is None:
            raise ValueError(f"random encoder {spec.name or spec.architecture}: set fs and normalize (or make it "
                             "with random_twin(pretrained_spec))")
        architecture, kwargs = spec.architecture, dict(spec.encoder_kwargs)
        torch.manual_seed(spec.seed)
        module = _build(architecture, kwargs)
        fs, normalize, leads = float(spec.fs), spec.normalize, spec.lead_order or "standard"
        label = spec.name or f"random init ({architecture})"
    preprocessing = {"fs": float(fs), "normalize": normalize, "leads": leads}
    if input_spec is not None:  # an external encoder: keyed by its weights and the input it declares
        preprocessing["input"] = asdict(input_spec)
    module = module.to(device).eval()
    return LoadedEncoder(module=module, label=label, kind=spec.kind, pretrained=spec.kind != "random",
                         architecture=architecture, encoder_kwargs=kwargs, fs=float(fs), normalize=normalize,
                         leads=LEAD_ORDERS[leads], identity=weights_identity(module, preprocessing), spec=spec,
                         scaler=scaler, input=input_spec, pretrained_on=pretrained_on)


def twin_labels(encoders) -> dict[str, str]:
    """pretrained encoder label -> label of its random-init twin, among `encoders` (`LoadedEncoder`s).

    The twin is the random encoder with the same architecture, rate and normalisation (the rule
    `with_random_baselines` adds twins by); a pretrained encoder without one is left out.
    """
    randoms = {(e.architecture, float(e.fs), e.normalize): e.label for e in encoders if not e.pretrained}
    return {e.label: randoms[(e.architecture, float(e.fs), e.normalize)] for e in encoders
            if e.pretrained and (e.architecture, float(e.fs), e.normalize) in randoms}


def load_encoders(encoders, device: str | torch.device = "cpu", random_baselines: bool = True) -> list[LoadedEncoder]:
    """Load a mix of `EncoderSpec`s and already `LoadedEncoder`s, adding the random twin of each pretrained spec.

    Args:
        encoders: specs (loaded here) and loaded encoders (kept as they are), in any order.
        device: where loaded encoders go.
        random_baselines: add `random_twin` of every pretrained spec not already paired with a random spec.
    """
    specs = [e for e in encoders if isinstance(e, EncoderSpec)]
    if random_baselines:
        specs = with_random_baselines(specs)
    ready = [e for e in encoders if isinstance(e, LoadedEncoder)]
    return ready + [load_encoder(s, device) for s in specs]


def fresh_copy(encoder: LoadedEncoder) -> nn.Module:
    """A trainable copy of the encoder's module (for fine-tuning without touching the loaded one)."""
    import copy

    return copy.deepcopy(encoder.module).train()

