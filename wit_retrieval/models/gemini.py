"""Gemini Embedding API client behind the Encoder protocol (`gemini:MODEL[:DIM]`).

Texts go in batches of up to 100 requests to `models/{model}:batchEmbedContents`; 429 and 5xx
answers are retried with exponential backoff and full jitter, waiting at least what the
server's Retry-After asks (seconds or an HTTP date). The key comes from GEMINI_API_KEY or
GOOGLE_API_KEY and travels in the `x-goog-api-key` header, never in the URL (which is logged).
Vectors below the model's full width (MRL: 768 / 1536 of 3072) are re-normalised here, as the
API returns them unnormalised.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, WitRetrievalError
from .encoders import ENCODERS, EncoderMetadata
from .text_encoders import TEXT_STYLES, TextEncoder, l2_normalise, split_dim

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_MODEL = "gemini-embedding-001"
FULL_DIM = 3072
MAX_BATCH = 100  # the API's limit of requests per batchEmbedContents call
KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING",
              "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")


class EmbeddingApiError(WitRetrievalError):
    """The embedding API refused a request, or kept failing after all retries."""


@dataclass(frozen=True)
class GeminiConfig:
    """Which model, width, tasks and endpoint; how to batch and retry."""

    model: str = DEFAULT_MODEL
    dim: int | None = None                 # outputDimensionality; None: the model's default (3072)
    query_task: str = "RETRIEVAL_QUERY"
    document_task: str = "RETRIEVAL_DOCUMENT"
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None             # None: from GEMINI_API_KEY or GOOGLE_API_KEY
    batch_size: int = MAX_BATCH
    concurrency: int = 2                   # batches in flight at once
    max_retries: int = 6
    backoff_base: float = 1.0              # seconds; doubled per attempt, full jitter
    backoff_max: float = 60.0
    max_retry_after: float = 600.0         # a longer Retry-After is an error, not a silent hour's wait
    timeout: float = 60.0

    def __post_init__(self):
        for task in (self.query_task, self.document_task):
            if task not in TASK_TYPES:
                raise ConfigError(f"unknown Gemini task type {task!r}; known: {', '.join(TASK_TYPES)}")
        if self.dim is not None and not 1 <= self.dim <= FULL_DIM:
            raise ConfigError(f"Gemini output dimensionality must be 1..{FULL_DIM} (768, 1536 or 3072 are the "
                              f"trained widths), got {self.dim}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"batch_size must be 1..{MAX_BATCH} (the API's limit per batch call)")

    def key(self) -> str:
        """The API key: explicit, else the first of GEMINI_API_KEY / GOOGLE_API_KEY that is set."""
        key = self.api_key or next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
        if not key:
            raise ConfigError("no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment")
        return key

    @property
    def model_path(self) -> str:
        """`models/{model}` as the API names it."""
        return self.model if self.model.startswith("models/") else f"models/{self.model}"


def backoff_delay(attempt: int, config: GeminiConfig, retry_after: float | None,
                  rng: random.Random | None = None) -> float:
    """Seconds before retry `attempt` (0-based): full jitter on base*2^attempt, never below Retry-After."""
    ceiling = min(config.backoff_max, config.backoff_base * 2**attempt)
    jittered = (rng or random).uniform(0, ceiling)
    return max(jittered, retry_after or 0.0)


class GeminiClient:
    """Batched, retrying calls to the embedding API; one requests.Session per thread."""

    def __init__(self, config: GeminiConfig, *, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.sleep = sleep
        self._headers = {"x-goog-api-key": config.key(), "Content-Type": "application/json"}
        self._local = threading.local()
        self._lock = threading.Lock()
        self.retries = 0                 # retried requests, over all threads

    @property
    def session(self):
        """This thread's session (requests.Session is not documented as thread-safe)."""
        import requests

        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
            self._local.session.headers.update(self._headers)
        return self._local.session

    def model_info(self) -> dict:
        """GET models/{model} (name, version, outputTokenLimit, ...); one try, {} on failure."""
        import requests

        try:
            response = self.session.get(f"{self.config.base_url.rstrip('/')}/{self.config.model_path}",
                                        timeout=min(self.config.timeout, 15))
            return response.json() if response.ok else {}
        except (requests.RequestException, ValueError):
            return {}

    def embed(self, texts: Sequence[str], task: str, titles: Sequence[str | None] | None = None) -> np.ndarray:
        """Embeddings [n, dim] of `texts` with task type `task`, in order, L2-normalised."""
        size = self.config.batch_size
        starts = range(0, len(texts), size)
        work = [(list(texts[s:s + size]), list(titles[s:s + size]) if titles else None) for s in starts]
        if self.config.concurrency > 1 and len(work) > 1:
            with ThreadPoolExecutor(self.config.concurrency) as pool:
                blocks = list(pool.map(lambda w: self._batch(w[0], task, w[1]), work))
        else:
            blocks = [self._batch(chunk, task, heads) for chunk, heads in work]
        if not blocks:
            return np.zeros((0, self.config.dim or FULL_DIM), np.float32)
        return l2_normalise(np.concatenate(blocks))

    def _request(self, text: str, task: str, title: str | None) -> dict:
        request = {"model": self.config.model_path, "content": {"parts": [{"text": text}]}, "taskType": task}
        if self.config.dim is not None:
            request["outputDimensionality"] = self.config.dim
        if title and task == "RETRIEVAL_DOCUMENT":  # the API takes a title for documents only
            request["title"] = title
        return request

    def _batch(self, texts: list[str], task: str, titles: list[str | None] | None) -> np.ndarray:
        body = {"requests": [self._request(t, task, titles[i] if titles else None) for i, t in enumerate(texts)]}
        answer = self.post(f"{self.config.model_path}:batchEmbedContents", body)
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, list) or len(embeddings) != len(texts):
            got = len(embeddings) if isinstance(embeddings, list) else "no"
            raise EmbeddingApiError(f"Gemini answered {got} embeddings for {len(texts)} texts")
        matrix = np.asarray([e.get("values", []) for e in embeddings], dtype=np.float32)
        want = self.config.dim or matrix.shape[1]
        if matrix.ndim != 2 or matrix.shape[1] != want:
            raise EmbeddingApiError(f"Gemini answered vectors of shape {matrix.shape}; expected {want} dimensions")
        return matrix

    def post(self, method: str, body: dict) -> dict:
        """POST JSON to `{base_url}/{method}`, retrying 429 / 5xx / connection errors; the answer's JSON."""
        import requests

        from ..images.http import parse_retry_after

        url = f"{self.config.base_url.rstrip('/')}/{method}"
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            try:
                response = self.session.post(url, json=body, timeout=self.config.timeout)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.ok:
                    return response.json()
                problem = f"HTTP {response.status_code}: {_api_message(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise EmbeddingApiError(f"Gemini API refused the request ({problem})")
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.config.max_retry_after:
                    raise EmbeddingApiError(f"Gemini API asks to wait {retry_after:.0f} s ({problem}); "
                                            "try again later or raise max_retry_after")
            if attempt == self.config.max_retries:
                break
            with self._lock:
                self.retries += 1
            self.sleep(backoff_delay(attempt, self.config, retry_after))
        raise EmbeddingApiError(f"Gemini API failed after {self.config.max_retries + 1} attempts ({problem})")


def _api_message(response) -> str:
    """The error message of a Google API error body, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return response.text[:300].strip() or response.reason or ""


class GeminiEncoder(TextEncoder):
    """Gemini Embedding (text only): RETRIEVAL_DOCUMENT for the corpus, RETRIEVAL_QUERY for queries."""

    def __init__(self, config: GeminiConfig = GeminiConfig(), *, name: str | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.client = GeminiClient(config, sleep=sleep)
        info = self.client.model_info()
        version = info.get("version")
        revision = f"{config.model}@{version}" if version else f"{config.model}@unknown-version"
        dim = config.dim or FULL_DIM
        self.metadata = EncoderMetadata(
            name=name or f"gemini:{config.model}" + (f":{config.dim}" if config.dim else ""), revision=revision,
            dim=dim, modalities=("text",), training_datasets=("Gemini Embedding training mixture (undisclosed)",),
            preprocessing=f"API tasks {config.query_task}/{config.document_task}; outputDimensionality {dim}",
            fusions=TEXT_STYLES, native_fusion="names")

    def encode_documents(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> np.ndarray:
        """Documents with the document task type (and titles, which the API takes for documents)."""
        titles = list(titles) if titles is not None else [None] * len(texts)
        # the API refuses empty content: a document known only by its title is its title
        texts = [t or title or "none" for t, title in zip(texts, titles)]
        return self.client.embed(texts, self.config.document_task, titles)

    def encode_query_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts with the query task type."""
        return self.client.embed(texts, self.config.query_task)


@ENCODERS.register("gemini")
def _gemini(spec: str, *, name: str, device: str | None = None) -> GeminiEncoder:
    """gemini:MODEL[:DIM] (base URL from GEMINI_BASE_URL when set)."""
    model, dim = split_dim(spec, name)
    base_url = os.environ.get("GEMINI_BASE_URL", DEFAULT_BASE_URL)
    return GeminiEncoder(GeminiConfig(model=model or DEFAULT_MODEL, dim=dim, base_url=base_url), name=name)
