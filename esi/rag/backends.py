"""Generation backends: turn a statement and its retrieved passages into a waveform description.

- `ExtractiveBackend` ("extractive", the offline default the demo uses): no language model; composes the
  description from the waveform criteria and leads of the retrieved entries, so every sentence is quoted
  from the knowledge base.
- `OpenAIBackend` ("openai"): any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp server,
  a hosted API). The API key is read from the environment variable named in params, sent only in the
  Authorization header, and never stored or logged.
- `LocalHFBackend` ("hf"): a Hugging Face causal LM from a local folder (local_files_only).

Errors a retry may cure (HTTP 5xx and 429, timeouts, dropped connections) raise `BackendError` with
retryable=True; the generation run retries those with exponential backoff and fails fast on the rest.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

from esi.config import ConfigError
from esi.rag.knowledge_base import KnowledgeEntry

if TYPE_CHECKING:
    from esi.rag.config import CQAConfig, LocalHFConfig, OpenAIEndpointConfig


class BackendError(RuntimeError):
    """A backend call that failed; `retryable` says whether trying again may succeed."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Request:
    """Everything a backend may use for one statement.

    statement: the statement (its normal form). entries: the knowledge entries of its findings, in order.
    system / prompt: the rendered system prompt and user prompt (template with {statement} and {context}).
    """

    statement: str
    entries: tuple[KnowledgeEntry, ...]
    system: str
    prompt: str


class Backend(Protocol):
    name: str
    model: str

    def identity(self) -> str:
        """Everything about the backend that changes its answers (part of the cache key)."""

    def describe(self, request: Request) -> str:
        """The waveform description; raises BackendError on failure."""


def render_prompt(template: str, statement: str, context: str) -> str:
    """Fill {statement} and {context}; other braces in the template are left alone (no str.format).

    Args:
        template: the prompt template (cqa_prompt_template).
        statement: the statement to describe.
        context: the retrieved passages (see `format_context`).
    """
    return template.replace("{statement}", statement).replace("{context}", context)


def _sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if len(text) > 1 and text[0].isupper() and text[1].islower() else text


class ExtractiveBackend:
    """Compose a description from the retrieved entries without a language model.

    For each finding: "<Title>: <first N waveform criteria>. Leads: <first sentence of Leads>." The output
    is deterministic and quotes the knowledge base only.

    Args:
        max_criteria: how many waveform-criteria bullets to quote per finding.
    """

    name = "extractive"
    model = "extractive-v1"

    def __init__(self, max_criteria: int = 3):
        self.max_criteria = max_criteria

    def identity(self) -> str:
        return f"{self.name}:{self.model}:criteria={self.max_criteria}"

    def describe(self, request: Request) -> str:
        if not request.entries:
            raise BackendError(f"no knowledge entry to compose a description of {request.statement!r}", False)
        parts = []
        for entry in request.entries:
            criteria = [c.rstrip(". ") for c in entry.criteria()[: self.max_criteria]]
            # Later items continue the sentence: lower-case "Rate ..." but keep "QRS ...", "PR ...".
            criteria = criteria[:1] + [_lower_first(c) for c in criteria[1:]]
            body = "; ".join(criteria) if criteria else entry.summary
            text = f"{entry.title}: {_sentence(body)}"
            leads = entry.section("Leads")
            if leads:
                first = re.split(r"(?<=[.!?])\s", re.sub(r"\s+", " ", leads.replace("- ", " ")).strip())[0]
                text += f" Leads: {_sentence(first)}"
            parts.append(text)
        return " ".join(parts)


class OpenAIBackend:
    """POST {base_url}/chat/completions on an OpenAI-compatible server.

    Args:
        cfg: base_url, model, api_key_env (the NAME of the environment variable holding the key; the key may
            be absent for a local server), temperature, max_tokens, timeout_s.
    """

    name = "openai"

    def __init__(self, cfg: "OpenAIEndpointConfig"):
        import httpx

        if not cfg.model:
            raise ConfigError("cqa_openai.model is empty: name the model the server should run")
        self.cfg = cfg
        self.model = cfg.model
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # One client for all threads (httpx.Client is thread-safe); the key lives only in its headers.
        self._client = httpx.Client(headers=headers, timeout=cfg.timeout_s)

    def identity(self) -> str:
        return (f"{self.name}:{self.cfg.base_url.rstrip('/')}:{self.model}:t={self.cfg.temperature}"
                f":max={self.cfg.max_tokens}")

    def describe(self, request: Request) -> str:
        import httpx

        payload = {
            "model": self.model,
            "messages": [{"role": "system", "content": request.system}, {"role": "user", "content": request.prompt}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException as err:
            raise BackendError(f"timeout after {self.cfg.timeout_s}s calling {self.url}: {type(err).__name__}",
                               True) from err
        except httpx.TransportError as err:
            raise BackendError(f"cannot reach {self.url}: {type(err).__name__}: {err}", True) from err
        if response.status_code == 429 or response.status_code >= 500:
            raise BackendError(f"HTTP {response.status_code} from {self.url}: {response.text[:200]}", True)
        if response.status_code >= 400:
            raise BackendError(f"HTTP {response.status_code} from {self.url}: {response.text[:200]}", False)
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise BackendError(f"unexpected reply from {self.url}: {response.text[:200]}", False) from err
        text = (text or "").strip()
        if not text:
            raise BackendError(f"empty completion from {self.url} for {request.statement!r}", False)
        return text

    def close(self) -> None:
        self._client.close()


class LocalHFBackend:
    """A causal language model from a local folder (AutoModelForCausalLM + AutoTokenizer, local_files_only).

    Uses the tokenizer's chat template when it has one, else plain "system\\n\\nprompt\\n\\n". Calls are
    serialised with a lock: one model on one device gains nothing from threads.

    Args:
        cfg: model_path, max_new_tokens, temperature (0 = greedy), device, dtype.
    """

    name = "hf"

    def __init__(self, cfg: "LocalHFConfig"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from esi.paths import resolve

        path = resolve(cfg.model_path)
        if path is None or not path.is_dir():
            raise FileNotFoundError(f"cqa_hf.model_path is not a local model folder: {cfg.model_path!r}")
        self.cfg = cfg
        self.model = path.name
        self.path = path
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.lm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        self.lm.to(cfg.device).eval()
        self._lock = threading.Lock()

    def identity(self) -> str:
        return (f"{self.name}:{self.path}:t={self.cfg.temperature}:max={self.cfg.max_new_tokens}")

    def _inputs(self, request: Request):
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": request.system}, {"role": "user", "content": request.prompt}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
        else:
            ids = self.tokenizer(f"{request.system}\n\n{request.prompt}\n\n", return_tensors="pt")
        return {k: v.to(self.cfg.device) for k, v in ids.items()}

    def describe(self, request: Request) -> str:
        import torch

        inputs = self._inputs(request)
        n_prompt = inputs["input_ids"].shape[1]
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        if limit and n_prompt + self.cfg.max_new_tokens > limit:
            raise BackendError(f"{self.model}: a prompt of {n_prompt} tokens plus max_new_tokens="
                               f"{self.cfg.max_new_tokens} exceeds its context of {limit} tokens for "
                               f"{request.statement!r}; shorten prompt_template or use a longer-context model", False)
        sampling = self.cfg.temperature > 0
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.inference_mode():
            output = self.lm.generate(
                **inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=sampling,
                temperature=self.cfg.temperature if sampling else None, top_p=None, top_k=None, pad_token_id=pad,
            )
        new_tokens = output[0, n_prompt:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        if not text:
            raise BackendError(f"{self.model} generated no text for {request.statement!r}", False)
        return text


def make_backend(cfg: "CQAConfig") -> Backend:
    """The backend named by cfg.backend ("extractive", "openai" or "hf"), built from its settings.

    Args:
        cfg: the CQA settings (backend, extractive_max_criteria, openai.*, hf.*).
    """
    if cfg.backend == "extractive":
        return ExtractiveBackend(cfg.extractive_max_criteria)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg.openai)
    if cfg.backend == "hf":
        return LocalHFBackend(cfg.hf)
    raise ValueError(f"unknown backend {cfg.backend!r}; use extractive, openai or hf")


def format_context(entries: Sequence[KnowledgeEntry], documents: Sequence[str] = ()) -> str:
    """The {context} of the prompt: each finding's full entry, then any user-document passages.

    Args:
        entries: the knowledge entries of the statement's findings, in order.
        documents: texts of user-document chunks to add.
    """
    blocks = [f"[{i + 1}] {entry.context()}" for i, entry in enumerate(entries)]
    blocks += [f"[{len(entries) + j + 1}] (from your documents) {text}" for j, text in enumerate(documents)]
    return "\n\n".join(blocks)


__all__ = ["Backend", "BackendError", "ExtractiveBackend", "LocalHFBackend", "OpenAIBackend", "Request",
           "format_context", "make_backend", "render_prompt"]
