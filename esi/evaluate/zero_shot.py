"""Zero-shot classification with an ESI model: no training, text prompts as the classifier.

For each class of a task (PTB-XL's, or CPSC2018's / CSN's SNOMED-CT classes):
  class name    the English name of the label (`EvalDataset.class_names`): scp_statements.csv's
                `description` for SCP codes ("IMI" -> "inferior myocardial infarction"), a fixed name for the
                benchmark's label groups ("MI" -> "myocardial infarction"), the SNOMED-CT name of a Challenge
                class ("164889003" -> "atrial fibrillation"), or a name from the params;
  description   the waveform description of that finding from a statement -> description dictionary (the Cardio
                Query Assistant's output, or the original paper's file), looked up with esi.data.statements'
                spelling-tolerant matching under the class name, then the class's other texts
                (`EvalDataset.class_aliases`: the SCP statement text; the abbreviation and CSN acronym), or the code;
  prompts       each template filled in ("ECG showing {class_name}. {description}"); a class without a
                description uses `no_description_template`.
The class's text embedding is the normalised mean of its prompts' embeddings; an ECG's score for the class is
the cosine similarity of its ECG embedding with it. Macro AUROC and AUPRC on fold 10 (bootstrap interval) per
task, with the p-value of a paired test against the same model with a random-init ECG side.

    workspace = Workspace("outputs/run", "data/ptbxl")
    results = run_zero_shot([EncoderSpec(kind="esi", path="outputs/run/model")], workspace,
                            ZeroShotSettings(waveform_dict="outputs/cqa/ptbxl_descriptions.json"))
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, fields
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from esi.config import with_changes
from esi.evaluate.encoders import (LEAD_ORDERS, EncoderSpec, LoadedEncoder, esi_settings, is_external, slug,
                                   twin_labels, weights_identity)
from esi.evaluate.results import (CommonSettings, ProtocolResults, Task, attach_p_values, changed_settings,
                                  classification_rows, join_notes, save_predictions)
from esi.evaluate.workspace import Workspace
from esi.paths import resolve

PROTOCOL = "zero_shot"
# The results' recipe column: what the class prompts were built from (nothing is trained).
PROMPT_RECIPES = {True: "name_and_description_prompts", False: "class_name_prompts"}
DEFAULT_TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")
DEFAULT_TEMPLATES = ("ECG showing {class_name}. {description}",)
NO_DESCRIPTION_TEMPLATE = "ECG showing {class_name}."


@dataclass
class ZeroShotSettings:
    """Zero-shot's settings (params keys `evaluate_zero_shot_<field>`)."""

    tasks: list[Task] = field(default_factory=lambda: list(DEFAULT_TASKS))   # PTB-XL tasks
    waveform_dict: str = ""               # statement -> description JSON (CQA output); "": class names only
    # prompt templates with {class_name} and {description} (embeddings averaged over them)
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    no_description_template: str = NO_DESCRIPTION_TEMPLATE   # a class without a description
    class_names: dict = field(default_factory=dict)   # label (or SNOMED abbreviation) -> English name
    folds: list[int] = field(default_factory=lambda: [10])   # folds scored (10: the test split)


# Settings a zero-shot row shows in columns of their own (task; split: the folds scored).
IN_COLUMNS = ("tasks", "folds")

def class_descriptions(classes: Sequence[str], names: Mapping[str, str], aliases: Mapping[str, Sequence[str]],
                       waveform_dict) -> dict:
    """Each class's waveform description from `waveform_dict` (a `StatementDict`), or None when it has none.

    Args:
        classes: class labels; names: label -> English name (`class_names`).
        aliases: label -> other texts of the class (`EvalDataset.class_aliases`: PTB-XL's SCP statement texts, a
            Challenge class's abbreviation and CSN acronym).
        waveform_dict: the dictionary (None: no descriptions).

    Looked up under the class name, then its aliases, then the label itself.
    """
    if waveform_dict is None:
        return {c: None for c in classes}
    out = {}
    for c in classes:
        candidates = [names[c], *aliases.get(c, ()), c]
        out[c] = next((d for d in (waveform_dict.lookup(t) for t in candidates) if d), None)
    return out


def class_prompts(classes: Sequence[str], names: Mapping[str, str], descriptions: Mapping[str, str | None],
                  templates: Sequence[str] = DEFAULT_TEMPLATES,
                  no_description_template: str = NO_DESCRIPTION_TEMPLATE) -> dict[str, list[str]]:
    """The text prompts of each class.

    Args:
        classes: class labels.
        names: label -> English name.
        descriptions: label -> waveform description (None: none found).
        templates: with {class_name} and {description}; one prompt per template.
        no_description_template: with {class_name}; used alone for a class without a description.
    """
    prompts = {}
    for c in classes:
        description = descriptions.get(c)
        if description:
            prompts[c] = [t.format(class_name=names[c], description=" ".join(description.split()))
                          for t in templates]
        else:
            prompts[c] = [no_description_template.format(class_name=names[c])]
    return prompts


@torch.inference_mode()
def class_embeddings(model, prompts: Mapping[str, list[str]], batch_size: int = 32) -> np.ndarray:
    """(classes, latent_dim): each class's mean prompt embedding, L2-normalised, in `prompts` order.

    model: an `ESIModel` (its `encode_text` returns normalised text latents).
    prompts: class label -> its prompts.
    batch_size: prompts per text-encoder pass.
    """
    texts = [p for ps in prompts.values() for p in ps]
    latents = torch.cat([model.encode_text(texts[i:i + batch_size]).float().cpu()
                         for i in range(0, len(texts), batch_size)])
    out, start = [], 0
    for ps in prompts.values():
        mean = latents[start:start + len(ps)].mean(0)
        out.append(torch.nn.functional.normalize(mean, dim=0))
        start += len(ps)
    return torch.stack(out).numpy()


def zero_shot_scores(ecg_latents: np.ndarray, text_latents: np.ndarray) -> np.ndarray:
    """Cosine similarity of every ECG (`ecg_latents`, (records, d)) with every class (`text_latents`,
    (classes, d)): (records, classes)."""
    e = ecg_latents / np.linalg.norm(ecg_latents, axis=1, keepdims=True).clip(1e-12)
    t = text_latents / np.linalg.norm(text_latents, axis=1, keepdims=True).clip(1e-12)
    return e @ t.T


class ECGLatentEncoder(nn.Module):
    """An ESI model seen as an encoder whose `encode(x)` is the normalised ECG latent (for the feature cache)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dim = model.config.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_ecg(x)


def load_esi_model(spec: EncoderSpec, device: str = "cpu", random_ecg: bool = False) -> LoadedEncoder:
    """An ESI model (from `spec.path`) wrapped as a `LoadedEncoder` of ECG latents, for zero-shot scoring.

    Args:
        spec: an "esi" spec.
        device: where the model goes.
        random_ecg: re-initialise the ECG side (encoder, attention pooler, ECG projection; seeded by spec.seed)
            and keep the trained text side: the random-init baseline, which should score near chance.
    """
    from esi.models.esi_model import ESIModel

    if spec.kind != "esi":
        raise ValueError(f"zero-shot needs an ESI model with its text encoder (kind 'esi'), got kind {spec.kind!r}")
    architecture, kwargs, fs, normalize, leads = esi_settings(spec)
    model = ESIModel.from_pretrained(resolve(spec.path), device="cpu")
    label = spec.name or f"ESI ({architecture})"
    if random_ecg:
        # A new model around the trained text encoder: every ECG-side weight (encoder, pooler, projection) random,
        # the text side (encoder and projection) as trained.
        torch.manual_seed(spec.seed)
        trained = model
        model = ESIModel(trained.config, text_encoder=trained.text_encoder)
        model.text_to_latent.load_state_dict(trained.text_to_latent.state_dict())
        label = f"random init ({architecture})"
    model = model.to(device).eval()
    wrapper = ECGLatentEncoder(model)
    preprocessing = {"fs": fs, "normalize": normalize, "leads": leads}
    return LoadedEncoder(module=wrapper, label=label, kind=spec.kind, pretrained=not random_ecg,
                         architecture=architecture, encoder_kwargs=kwargs, fs=fs, normalize=normalize,
                         leads=LEAD_ORDERS[leads], identity=weights_identity(wrapper, preprocessing), spec=spec)


def run_zero_shot(encoders: Sequence[EncoderSpec], workspace: Workspace, settings: ZeroShotSettings | None = None,
                  common: CommonSettings | None = None, *, random_baselines: bool = True,
                  **changes) -> ProtocolResults:
    """Zero-shot macro AUROC and AUPRC of every ESI model on the records of `settings.folds`, per task.

    Args:
        encoders: `EncoderSpec`s of kind "esi" (others are skipped with a warning).
        workspace: the dataset's `Workspace` (stores, feature cache, device, batch size).
        settings: tasks, prompts and folds (params keys `evaluate_zero_shot_*`; default `ZeroShotSettings()`:
            class names only, fold 10). Class names in `settings.class_names` override the defaults
            (see `class_names`).
        common: seed (bootstrap; the random-init baseline's weights come from the spec), intervals, paired tests
            and classes kept (default `CommonSettings()`).
        random_baselines: also score each model with a random-init ECG encoder (chance level expected).
        changes: fields of `settings` or `common` to change (`templates=[...], n_boot=20`).

    Returns:
        `ProtocolResults`. The prompts used are written to <run_dir>/evaluate/zero_shot_prompts.json, test-set
        scores to <run_dir>/evaluate/predictions/zero_shot/<task>/.
    """
    from esi.data.statements import load_waveform_dict

    settings, common = with_changes(changes, settings or ZeroShotSettings(), common or CommonSettings())
    folds = settings.folds
    descriptions_dict = load_waveform_dict(resolve(settings.waveform_dict)) if settings.waveform_dict else None
    used = changed_settings(settings, ZeroShotSettings(), [f.name for f in fields(settings)
                                                            if f.name not in IN_COLUMNS])
    models = []
    for spec in encoders:
        if spec.kind != "esi":
            external = " (the text towers of released encoders are not loaded)" if is_external(spec) else ""
            warnings.warn(f"zero-shot skips {spec.name or spec.path or spec.factory} (kind {spec.kind!r}): only ESI "
                          f"models saved by esi.train have the text side it needs{external}", stacklevel=2)
            continue
        models.append(load_esi_model(spec, workspace.device))
        if random_baselines:
            models.append(load_esi_model(spec, workspace.device, random_ecg=True))

    outputs, per_class, used_prompts = [], [], {}
    for task_name in workspace.dataset.task_names(settings.tasks):
        task = workspace.dataset.task(task_name, common.min_samples)
        test = task.subset(np.isin(task.folds, list(folds)))
        if len(test) == 0:
            raise ValueError(f"{task_name}: no records in fold(s) {list(folds)}")
        labels = workspace.dataset.class_names(task.classes, settings.class_names)
        found = class_descriptions(task.classes, labels, workspace.dataset.class_aliases(task.classes), descriptions_dict)
        prompts = class_prompts(task.classes, labels, found, settings.templates, settings.no_description_template)
        used_prompts[task_name] = prompts
        n_found = sum(d is not None for d in found.values())
        coverage = f"descriptions found for {n_found}/{len(task.classes)} classes"
        for model in models:
            # Every record of the scored folds, encoded once per model (cached) and shared by the tasks.
            fold_ids = workspace.dataset.scored_records(model.fs, folds)
            latents = workspace.features(model, what="latent", ecg_ids=fold_ids).take(test.ecg_ids)
            text = class_embeddings(model.module.model, prompts)
            scores = zero_shot_scores(latents, text)
            out = classification_rows(task_name, PROTOCOL, model.label, task.classes, test.y, scores,
                                      split=workspace.dataset.scored_split(task, folds),
                                      recipe=PROMPT_RECIPES[descriptions_dict is not None], selection="none",
                                      seed=common.seed, n_boot=common.n_boot, ci_level=common.ci_level,
                                      notes=join_notes(coverage, f"folds {list(folds)}"), names=labels,
                                      settings=used)
            outputs.append({**out, "encoder": model.label, "key": task_name, "y_true": test.y, "y_score": scores})
            per_class.extend(out["per_class"])
            save_predictions(workspace.predictions_dir / PROTOCOL / task_name / f"{slug(model.label)}.npz", test.y,
                             scores, task.classes, test.ecg_ids, encoder=model.label, pretrained=model.pretrained)
    path = workspace.run_dir / "evaluate" / "zero_shot_prompts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(used_prompts, indent=2, ensure_ascii=False))
    attach_p_values(outputs, twin_labels(models), n_resamples=common.significance_resamples, seed=0)
    rows = [row for out in outputs for row in out["rows"]]
    return ProtocolResults.from_rows(rows, per_class, **workspace.dataset.context, encoders=models)
