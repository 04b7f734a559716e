"""Generation backends against real servers and models: an OpenAI-compatible HTTP server on 127.0.0.1
(started here, failing on purpose), and a tiny randomly initialised Hugging Face causal LM on disk."""

from __future__ import annotations

import json
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from esi.rag.__main__ import main
from esi.rag.backends import BackendError, LocalHFBackend, Request
from esi.rag.config import CQAConfig, LocalHFConfig, OpenAIEndpointConfig
from esi.rag.generation import call_with_retries, generate
from esi.rag.index import build_index, bundled_embedding_path, load_embedding_model
from esi.rag.vocabulary import vocabulary_from_strings

SHARED_INDEX_DIR = Path(tempfile.gettempdir()) / "esi-test-cqa-index"  # same content-hashed copy as test_rag_index
API_KEY = "sk-test-7f3a9c-never-write-me"


class ChatServer:
    """A chat-completions server on 127.0.0.1 that answers like vLLM/Ollama, or fails as told.

    fail_first: the first N requests get HTTP `status`; fail_always: statements that always get it.
    """

    def __init__(self, fail_first: int = 0, fail_always: tuple[str, ...] = (), status: int = 500):
        self.fail_first, self.fail_always, self.status = fail_first, fail_always, status
        self.calls: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                statement = re.search(r'Machine ECG statement: "(.*)"', prompt).group(1)
                with server.lock:
                    server.calls.append(statement)
                    failing = server.fail_first > 0 or statement in server.fail_always
                    server.fail_first = max(0, server.fail_first - 1)
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    self._reply(401, {"error": "missing or wrong API key"})
                elif self.path != "/v1/chat/completions" or body["model"] != "tiny-chat":
                    self._reply(404, {"error": f"no route {self.path} for {body['model']}"})
                elif failing:
                    self._reply(server.status, {"error": "overloaded"})
                else:
                    text = f"Waveform of {statement}: broad QRS in V6."
                    self._reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def index():
    cfg = CQAConfig(index_dir=str(SHARED_INDEX_DIR), show_progress=False)
    return build_index(cfg, embed_model=load_embedding_model())


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs) -> ChatServer:
        servers.append(ChatServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def openai_cfg(server: ChatServer, tmp_path: Path, **overrides) -> CQAConfig:
    endpoint = OpenAIEndpointConfig(base_url=server.base_url, model="tiny-chat", api_key_env="CQA_TEST_KEY",
                                    timeout_s=10)
    return CQAConfig(backend="openai", openai=endpoint, index_dir=str(SHARED_INDEX_DIR), max_concurrency=2,
                     max_retries=3, backoff_s=0.01, cache_path=str(tmp_path / "cache.jsonl"), show_progress=False,
                     **overrides)


@pytest.mark.parametrize("status", [500, 429])
def test_server_errors_are_retried_until_the_call_succeeds(index, serve, tmp_path, monkeypatch, status):
    monkeypatch.setenv("CQA_TEST_KEY", API_KEY)
    server = serve(fail_first=2, status=status)
    result = generate(vocabulary_from_strings(["LBBB"]), openai_cfg(server, tmp_path), tmp_path / "run", index=index)
    assert result.ok and result.n_generated == 1
    assert result.descriptions == {"LBBB": "Waveform of lbbb: broad QRS in V6."}
    assert server.calls == ["lbbb"] * 3
    assert result.records[0]["attempts"] == 3 and result.records[0]["backend"] == "openai"


def test_a_statement_that_keeps_failing_is_rejected_and_the_cli_exits_nonzero(index, serve, tmp_path, monkeypatch):
    monkeypatch.setenv("CQA_TEST_KEY", API_KEY)
    server = serve(fail_always=("atrial flutter",))
    statements = tmp_path / "statements.txt"
    statements.write_text("LBBB\nAtrial flutter\nSinus bradycardia\n*UnconfirmedAnalysis*\n")
    out = tmp_path / "run"
    code = main(["generate", "--statements", str(statements), "--backend", "openai", "--out", str(out),
                 "--set", f"cqa_openai.base_url={server.base_url}", "--set", "cqa_openai.model=tiny-chat",
                 "--set", "cqa_openai.api_key_env=CQA_TEST_KEY", "--set", "cqa_max_retries=2",
                 "--set", "cqa_backoff_s=0.01", "--set", f"cqa_index_dir={SHARED_INDEX_DIR}",
                 "--set", f"cqa_cache_path={tmp_path / 'cache.jsonl'}", "--set", "cqa_show_progress=false"])
    assert code == 1
    descriptions = json.loads((out / "waveform_dict.json").read_text())
    assert set(descriptions) == {"LBBB", "Sinus bradycardia"}  # the others were still written
    records = {r["statement"]: r for r in map(json.loads, (out / "provenance.jsonl").read_text().splitlines())}
    rejected = records["Atrial flutter"]
    assert rejected["status"] == "rejected" and rejected["attempts"] == 3 and "HTTP 500" in rejected["error"]
    assert server.calls.count("atrial flutter") == 3
    # The key reached the server (it answers 401 otherwise) but was never written anywhere.
    written = [p for p in list(out.rglob("*")) + [tmp_path / "cache.jsonl"] if p.is_file()]
    assert len(written) >= 5
    assert all(API_KEY not in p.read_text() for p in written)


def test_client_errors_fail_fast_without_retries(index, serve, tmp_path, monkeypatch):
    monkeypatch.setenv("CQA_TEST_KEY", API_KEY)
    server = serve(fail_always=("lbbb",), status=400)
    result = generate(vocabulary_from_strings(["LBBB"]), openai_cfg(server, tmp_path), tmp_path / "run", index=index)
    assert not result.ok and result.failures[0]["attempts"] == 1
    assert server.calls == ["lbbb"]


def test_backoff_doubles_up_to_its_cap():
    waits = []
    attempts = iter([BackendError("HTTP 503", True)] * 4 + ["done"])

    def flaky() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(flaky, max_retries=5, backoff_s=1.0, backoff_max_s=3.0, sleep=waits.append) == ("done", 5)
    assert waits == [1.0, 2.0, 3.0, 3.0]


def test_local_hf_backend_plumbing_with_tiny_random_model(index, tmp_path):
    """Proves the plumbing (local files only, prompt in, text out), not the quality of the text."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_embedding_path()), local_files_only=True)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=2048, vocab_size=tokenizer.vocab_size,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "tiny-gpt2")
    tokenizer.save_pretrained(tmp_path / "tiny-gpt2")

    backend = LocalHFBackend(LocalHFConfig(model_path=str(tmp_path / "tiny-gpt2"), max_new_tokens=6, temperature=1.0))
    request = Request(statement="lbbb", entries=(), system="You describe ECGs.",
                      prompt='Machine ECG statement: "lbbb". Describe the waveform.')
    text = backend.describe(request)
    assert isinstance(text, str) and text.strip()
    assert backend.name == "hf" and "tiny-gpt2" in backend.identity()

    # The same model chosen in the settings drives a whole generation run.
    cfg = CQAConfig(backend="hf", hf=LocalHFConfig(model_path=str(tmp_path / "tiny-gpt2"), max_new_tokens=6,
                                                   temperature=1.0),
                    index_dir=str(SHARED_INDEX_DIR), cache_path=str(tmp_path / "cache.jsonl"), show_progress=False)
    result = generate(vocabulary_from_strings(["LBBB", "Sinus bradycardia"]), cfg, tmp_path / "run", index=index)
    assert result.ok and set(result.descriptions) == {"LBBB", "Sinus bradycardia"}
    assert {r["backend"] for r in result.records} == {"hf"} and {r["model"] for r in result.records} == {"tiny-gpt2"}
