"""Gemini Embedding client against a real loopback HTTP server that speaks the API's JSON."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from wit_retrieval.errors import ConfigError
from wit_retrieval.models.gemini import (
    EmbeddingApiError,
    GeminiClient,
    GeminiConfig,
    GeminiEncoder,
    backoff_delay,
)

KEY = "test-key-123"
MODEL = "gemini-embedding-001"


def expected_vector(text: str, dim: int) -> np.ndarray:
    """What the fake API answers for `text`: deterministic, deliberately not unit length."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32) * 3


class FakeGemini:
    """A ThreadingHTTPServer with the embedding API's routes, key check and scripted faults."""

    def __init__(self):
        self.calls: list[dict] = []
        self.faults: list[tuple[int, dict]] = []   # (status, headers) answered by the next POSTs
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("x-goog-api-key") != KEY or "key=" in self.path:
                    self._send(400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid "
                                               "API key.", "status": "INVALID_ARGUMENT"}})
                    return False
                return True

            def do_GET(self):
                if self._authorised() and self.path == f"/v1beta/models/{MODEL}":
                    self._send(200, {"name": f"models/{MODEL}", "version": "001", "outputTokenLimit": 2048})
                elif self.path != f"/v1beta/models/{MODEL}":
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.calls.append({"path": self.path, "body": body})
                    fault = owner.faults.pop(0) if owner.faults else None
                if not self._authorised():
                    return
                if fault:
                    self._send(fault[0], {"error": {"code": fault[0], "message": "scripted fault"}}, fault[1])
                    return
                if self.path != f"/v1beta/models/{MODEL}:batchEmbedContents":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                out = []
                for request in body["requests"]:
                    assert request["model"] == f"models/{MODEL}"
                    dim = request.get("outputDimensionality", 3072)
                    out.append({"values": expected_vector(request["content"]["parts"][0]["text"], dim).tolist()})
                self._send(200, {"embeddings": out})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1beta"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    server = FakeGemini()
    yield server
    server.close()


def config(api, **kwargs) -> GeminiConfig:
    return GeminiConfig(base_url=api.base_url, backoff_base=0.01, **kwargs)


def test_missing_key_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GEMINI_API_KEY") as info:
        GeminiClient(GeminiConfig())
    assert "\n" not in str(info.value)
    monkeypatch.setenv("GOOGLE_API_KEY", "other")
    assert GeminiConfig().key() == "other"


def test_batches_of_at_most_100_in_order_renormalised(api):
    encoder = GeminiEncoder(config(api, dim=768, concurrency=3))
    texts = [f"document number {i}" for i in range(250)]
    vectors = encoder.encode_documents(texts, titles=[f"Title {i}" if i % 2 else None for i in range(250)])
    sizes = sorted(len(c["body"]["requests"]) for c in api.calls)
    assert sizes == [50, 100, 100]
    first = api.calls[0]["body"]["requests"][0]
    assert first["taskType"] == "RETRIEVAL_DOCUMENT" and first["outputDimensionality"] == 768
    titled = {r["content"]["parts"][0]["text"]: r.get("title") for c in api.calls for r in c["body"]["requests"]}
    assert titled["document number 3"] == "Title 3" and titled["document number 2"] is None
    want = np.stack([expected_vector(t, 768) for t in texts])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, want, rtol=1e-5, atol=1e-6)
    assert vectors.dtype == np.float32 and encoder.metadata.dim == 768
    assert encoder.metadata.revision == f"{MODEL}@001" and encoder.metadata.zero_shot_on("mmir")


def test_retry_after_seconds_then_503_then_success(api):
    api.faults = [(429, {"Retry-After": "1"}), (503, {})]
    client = GeminiClient(config(api, dim=128))
    started = time.perf_counter()
    vectors = client.embed(["a", "b"], "RETRIEVAL_QUERY")
    elapsed = time.perf_counter() - started
    assert elapsed >= 0.95, "Retry-After: 1 must be honoured"
    assert client.retries == 2 and len(api.calls) == 3 and vectors.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_retry_after_http_date(api):
    api.faults = [(429, {"Retry-After": formatdate(time.time() + 2, usegmt=True)})]
    client = GeminiClient(config(api, dim=64))
    started = time.perf_counter()
    client.embed(["x"], "RETRIEVAL_QUERY")
    assert time.perf_counter() - started >= 0.9  # the date has one-second resolution
    assert client.retries == 1


def test_client_errors_are_not_retried_and_name_the_cause(api, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "wrong")
    client = GeminiClient(config(api))
    with pytest.raises(EmbeddingApiError, match="API key not valid"):
        client.embed(["x"], "RETRIEVAL_QUERY")
    assert len(api.calls) == 1


def test_gives_up_after_max_retries(api):
    api.faults = [(503, {})] * 5
    client = GeminiClient(config(api, max_retries=2))
    with pytest.raises(EmbeddingApiError, match="after 3 attempts.*503"):
        client.embed(["x"], "RETRIEVAL_QUERY")
    assert len(api.calls) == 3


def test_backoff_grows_with_jitter_and_respects_retry_after():
    import random

    cfg = GeminiConfig(backoff_base=1.0, backoff_max=8.0)
    rng = random.Random(0)
    delays = [backoff_delay(a, cfg, None, rng) for a in range(6)]
    assert all(0 <= d <= min(8.0, 2**a) for a, d in enumerate(delays))
    assert backoff_delay(0, cfg, 5.0, rng) == 5.0
    with pytest.raises(ConfigError, match="task type"):
        GeminiConfig(query_task="RETRIEVAL")
    with pytest.raises(ConfigError, match="dimensionality"):
        GeminiConfig(dim=4096)


def test_registered_encoder_queries_with_names(api, monkeypatch):
    from wit_retrieval.models import load_encoder

    monkeypatch.setenv("GEMINI_BASE_URL", api.base_url)
    encoder = load_encoder(f"gemini:{MODEL}:256")
    assert encoder.metadata.name == f"gemini:{MODEL}:256" and encoder.metadata.modalities == ("text",)
    vectors = encoder.encode_queries(["[MASK_0] next to [MASK_1]"], [[None, None]], names=[["Paris", "Rome"]])
    request = api.calls[-1]["body"]["requests"][0]
    assert request["content"]["parts"][0]["text"] == "Paris next to Rome"
    assert request["taskType"] == "RETRIEVAL_QUERY" and vectors.shape == (1, 256)
    with pytest.raises(ConfigError, match="text-only"):
        encoder.encode_images([object()])
    with pytest.raises(ConfigError, match="needs images"):
        encoder.encode_queries(["[MASK_0]"], [[None]], fusion="inject")


def test_text_side_run_through_the_api_reuses_cached_documents(api, tmp_path):
    import pyarrow as pa

    from wit_retrieval.models.text_baseline import DocumentText, text_side_run

    encoder = GeminiEncoder(config(api, dim=64))
    queries = pa.table({"query_id": ["q1", "q2"], "masked_text": ["[MASK_0] at dusk", "[MASK_0] and [MASK_1]"]})
    corpus = pa.table({"image_id": ["i1", "i2", "i3"]})
    texts = {"i1": DocumentText("Paris", "English: skyline"), "i2": DocumentText(None, "a bridge"),
             "i3": DocumentText("Rome", "")}
    names = [["Paris"], ["Rome", None]]
    first = text_side_run(encoder, queries, corpus, texts, 3, names=names, cache_dir=tmp_path / "cache")
    sent = [r for c in api.calls for r in c["body"]["requests"]]
    documents = {r["content"]["parts"][0]["text"]: r for r in sent if r["taskType"] == "RETRIEVAL_DOCUMENT"}
    assert documents["English: skyline"]["title"] == "Paris" and documents["Rome"]["title"] == "Rome"
    assert {r["content"]["parts"][0]["text"] for r in sent if r["taskType"] == "RETRIEVAL_QUERY"} == {
        "Paris at dusk", "Rome and something"}
    api.calls.clear()
    again = text_side_run(encoder, queries, corpus, texts, 3, names=names, cache_dir=tmp_path / "cache")
    assert again == first and len(list((tmp_path / "cache").glob("*.parquet"))) == 1
    assert all(r["taskType"] == "RETRIEVAL_QUERY" for c in api.calls for r in c["body"]["requests"])
    texts["i2"] = DocumentText(None, "a different bridge")
    text_side_run(encoder, queries, corpus, texts, 3, names=names, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.parquet"))) == 2, "changed texts must not reuse old vectors"
