"""The core client against a real server process (local backend in CI, SGLang on a GPU)."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from langchain_qwen_sglang import QwenSGLangEmbeddings
from qwen_sglang import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    EmbeddingClient,
    InvalidInputError,
    format_query,
)
from qwen_sglang.client.endpoints import Endpoints
from qwen_sglang.client.retries import request_flow
from qwen_sglang.servers import ManagedServer, free_port
from tests.conftest import TOL, make_server

both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


def raw_embed(server: ManagedServer, inputs: list[Any], **extra: Any) -> np.ndarray:
    """Ask the server directly, bypassing the client (the reference)."""
    body = {"model": "x", "input": inputs, "encoding_format": "float", **extra}
    r = httpx.post(server.base_url + "/embeddings", json=body, timeout=60)
    r.raise_for_status()
    data = sorted(r.json()["data"], key=lambda d: d["index"])
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def client_for(server: ManagedServer, **kw: Any) -> EmbeddingClient:
    kw.setdefault("model", "Qwen3-Embedding-test")
    return EmbeddingClient(base_url=server.base_url, **kw)


def run(client: EmbeddingClient, method: str, arg: Any, use_async: bool, **kw: Any) -> Any:
    if use_async:
        return asyncio.run(getattr(client, "a" + method)(arg, **kw))
    return getattr(client, method)(arg, **kw)


TEXTS = [
    "SGLang serves Qwen3-Embedding on GPUs.",
    "Le chat dort sur le canapé.",
    "向量数据库存储嵌入。",
    "def embed(x):\n    return model(x)",
    "emoji 🚀 and RTL שלום עולם",
]


@both
def test_query_carries_exactly_the_instruction_and_documents_do_not(server: ManagedServer, use_async: bool) -> None:
    client = client_for(server)
    query = "what serves embeddings?\nsecond line"
    got = np.array(run(client, "embed_query", query, use_async))
    want = raw_embed(server, [format_query(query, client.settings.query_instruction)])[0]
    np.testing.assert_allclose(got, want, atol=TOL)
    assert np.abs(got - raw_embed(server, [query])[0]).max() > 10 * TOL  # the instruction matters
    docs = np.array(run(client, "embed_documents", TEXTS, use_async))
    np.testing.assert_allclose(docs, raw_embed(server, TEXTS), atol=TOL)


@both
def test_dimensions_64_are_the_renormalised_prefix(server: ManagedServer, use_async: bool) -> None:
    full = raw_embed(server, TEXTS)
    assert full.shape[1] == 128
    client = client_for(server, dimensions=64)
    got = np.array(run(client, "embed_documents", TEXTS, use_async))
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert got.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, prefix, atol=TOL)
    assert not client.client_side_dimensions  # the server did it


@both
def test_dimensions_fallback_against_a_server_without_matryoshka(
    server: ManagedServer, server_no_mrl: ManagedServer, use_async: bool
) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        raw_embed(server_no_mrl, ["x"], dimensions=64)
    client = client_for(server_no_mrl, dimensions=64, batch_size=2)
    got = np.array(run(client, "embed_documents", TEXTS, use_async))
    full = raw_embed(server, TEXTS)
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(got, prefix, atol=TOL)
    assert client.client_side_dimensions


def test_base64_and_float_give_the_same_vectors(server: ManagedServer) -> None:
    a = np.array(client_for(server, encoding_format="base64").embed_documents(TEXTS))
    b = np.array(client_for(server, encoding_format="float").embed_documents(TEXTS))
    np.testing.assert_array_equal(a, b)


@both
def test_order_preserved_across_batches_and_concurrency(server: ManagedServer, use_async: bool) -> None:
    texts = [f"passage {i}: " + "lorem ipsum " * (i % 9) for i in range(60)]
    one_by_one = np.concatenate([raw_embed(server, [t]) for t in texts])
    client = client_for(server, batch_size=7, max_concurrency=4)
    got = np.array(run(client, "embed_documents", texts, use_async))
    np.testing.assert_allclose(got, one_by_one, atol=TOL)
    assert client.prompt_tokens > 0


def test_empty_text_raises_before_any_request(server: ManagedServer) -> None:
    sent: list[httpx.Request] = []
    client = client_for(server, http_client=httpx.Client(event_hooks={"request": [sent.append]}))
    with pytest.raises(InvalidInputError, match="index 1"):
        client.embed_documents(["fine", "   "])
    assert client.prompt_tokens == 0 and sent == []  # not even the discovery step
    client.embed_documents(["fine"])
    assert sent  # the same client does send


def test_unreachable_url_gives_the_clear_error() -> None:
    port = free_port()
    client = EmbeddingClient(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(APIConnectionError) as info:
        client.embed_documents(["x"])
    assert f"127.0.0.1:{port}" in str(info.value) and "qwen-sglang serve" in str(info.value)


def test_503_while_loading_then_200(qwen_model_dir: Path) -> None:
    srv = make_server(qwen_model_dir)
    srv.start(wait=False)
    try:
        first = None
        deadline = time.monotonic() + srv.startup_timeout  # SGLang's HTTP server comes up late
        while first is None and time.monotonic() < deadline:
            try:
                first = httpx.get(srv.root_url + "/health", timeout=2).status_code
            except httpx.HTTPError:
                assert srv.is_running(), srv.logs_tail()
                time.sleep(0.05)
        assert first == 503, "the server should answer 503 while it loads the model"
        client = client_for(srv, max_retries=100)
        out = client.embed_documents(["embedded once the model is ready"])
        assert len(out[0]) == 128
    finally:
        srv.stop()


def test_server_answers_sglang_errors(server: ManagedServer) -> None:
    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(server.base_url + "/embeddings", json=body, timeout=30)

    r = post({"input": ["hello", ""]})
    assert r.status_code == 400
    assert r.json() == {
        "object": "error",
        "message": "Input at index 1 cannot be empty or whitespace only",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    assert post({"input": []}).json()["message"] == "Input cannot be empty"
    assert post({"input": "x", "dimensions": 0}).json()["message"] == "Requested dimensions must be greater than 0"
    assert "greater than max embedding dimension: 128" in post({"input": "x", "dimensions": 999}).json()["message"]
    ok = post({"input": [[1944, 151643], [9707, 1879, 151643]]})  # token ids
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2
    assert ok.json()["usage"]["prompt_tokens"] == 5


def test_token_counts_are_exact(server: ManagedServer, qwen_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_model_dir))
    counts = client_for(server).count_tokens(TEXTS)
    assert counts == [len(tok(t)["input_ids"]) for t in TEXTS]
    assert client_for(server).tokenize(["test"]) == [[1944, 151643]]


class TestLongTexts:
    LIMIT = 64

    def test_error_policy_names_index_and_count(self, server: ManagedServer) -> None:
        client = client_for(server, max_tokens=self.LIMIT, long_text="error")
        long = "token " * 200
        with pytest.raises(InvalidInputError, match=r"index 1 has 20\d tokens"):
            client.embed_documents(["short", long])

    def test_truncate_keeps_first_tokens_and_the_end_token(self, server: ManagedServer) -> None:
        client = client_for(server, max_tokens=self.LIMIT, long_text="truncate")
        long = " ".join(f"w{i}" for i in range(300))
        got = np.array(client.embed_documents([long]))[0]
        ids = client.tokenize([long], add_special_tokens=False)[0]
        want = raw_embed(server, [ids[: self.LIMIT - 1] + [151643]])[0]
        np.testing.assert_allclose(got, want, atol=TOL)

    @pytest.mark.parametrize("factor", [10, 100])
    def test_chunk_is_the_token_weighted_mean_of_windows(self, server: ManagedServer, factor: int) -> None:
        window, overlap = 32, 8
        client = client_for(server, max_tokens=self.LIMIT, chunk_tokens=window, chunk_overlap=overlap)
        long = " ".join(f"word{i % 97}" for i in range(window * factor // 2))
        ids = client.tokenize([long], add_special_tokens=False)[0]
        assert len(ids) >= window * (factor // 2)
        got = np.array(client.embed_documents([long, "short one"]))
        parts, weights, start = [], [], 0
        step = window - 1 - overlap
        while True:
            part = ids[start : start + window - 1]
            parts.append(part + [151643])
            weights.append(len(part))
            if start + window - 1 >= len(ids):
                break
            start += step
        vecs = raw_embed(server, parts)
        mean = (vecs * np.array(weights)[:, None]).sum(0)
        mean /= np.linalg.norm(mean)
        np.testing.assert_allclose(got[0], mean, atol=TOL)
        np.testing.assert_allclose(got[1], raw_embed(server, ["short one"])[0], atol=TOL)
        assert np.linalg.norm(got[0]) == pytest.approx(1.0, abs=1e-5)

    def test_over_long_input_sent_raw_gets_sglang_400(self, server: ManagedServer) -> None:
        r = httpx.post(server.base_url + "/embeddings", json={"input": [[5] * 40000]}, timeout=60)
        assert r.status_code == 400
        assert r.json()["message"].startswith("The input (40000 tokens) is longer than the model's context length")


def test_api_key_enforced_like_sglang(qwen_model_dir: Path) -> None:
    with make_server(qwen_model_dir, api_key="sk-test-key-42") as srv:
        assert httpx.get(srv.root_url + "/health").status_code == 200  # health stays open
        with pytest.raises(AuthenticationError, match="api_key"):
            client_for(srv).embed_documents(["x"])
        assert len(client_for(srv, api_key="sk-test-key-42").embed_documents(["x"])[0]) == 128
        assert "sk-test-key-42" not in srv.logs_tail(1000)
        assert "sk-test-key-42" not in repr(srv)


def test_a_key_in_default_headers_reaches_the_server_and_no_repr_log_or_pickle(
    qwen_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key given as a header (here the server's own ``Authorization``, as for a gateway's
    ``X-API-Key``) is sent with every request: the keyed server answers; nothing shows it."""
    key = "sk-header-key-5150"
    with make_server(qwen_model_dir, api_key=key) as srv:
        caplog.set_level(logging.DEBUG)
        embeddings = QwenSGLangEmbeddings(
            base_url=srv.base_url, model="Qwen3-Embedding-test", default_headers={"Authorization": f"Bearer {key}"}
        )
        assert len(embeddings.embed_documents(["x"])[0]) == 128
        assert len(asyncio.run(embeddings.aembed_query("y"))) == 128
        data = pickle.dumps(embeddings)
        with pytest.raises(AuthenticationError):  # the unpickled copy has no headers: the server refuses it
            pickle.loads(data).embed_documents(["x"])
        assert key.encode() not in data
        for text in (repr(embeddings), embeddings.model_dump_json(), caplog.text, srv.logs_tail(1000)):
            assert key not in text


def test_concurrent_requests_never_mix_results(server: ManagedServer) -> None:
    texts = [f"thread text {i} " + "x " * (i % 13) for i in range(48)]
    reference = np.concatenate([raw_embed(server, [t]) for t in texts])
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            chunk = list(range(k, 48, 16))
            results.update(zip(chunk, raw_embed(server, [texts[i] for i in chunk]), strict=True))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = np.stack([results[i] for i in range(48)])
    np.testing.assert_allclose(got, reference, atol=TOL)


def test_bad_request_message_is_the_servers(server: ManagedServer) -> None:
    client = client_for(server, max_tokens=10**6, long_text="error")
    with pytest.raises(BadRequestError, match="longer than the model's context length"):
        # past the client's own checks (which refuse this before sending): one request as is
        endpoints = Endpoints(client.base_urls)
        client._run(request_flow(client.settings, endpoints, "POST", "/embeddings", {"input": [[5] * 40000]}))


def test_single_queries_carry_the_query_priority_and_bulk_requests_none(server: ManagedServer) -> None:
    # the server says it schedules by priority (/server_info): embed_query asks for query_priority,
    # embed_documents (and a batch of queries) for nothing; None sends it on no request at all
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            sent.append(json.loads(request.content))

    def recording_client(**kw: Any) -> EmbeddingClient:
        http = httpx.Client(event_hooks={"request": [record]}, timeout=60)
        return client_for(server, http_client=http, **kw)

    assert httpx.get(server.root_url + "/server_info", timeout=10).json()["enable_priority_scheduling"] is True
    client = recording_client()
    client.embed_query("what is sglang?")
    client.embed_documents(["a document", "another one"])
    assert [r.get("priority") for r in sent] == [10, None]
    sent.clear()
    recording_client(query_priority=3).embed_query("q")
    recording_client(query_priority=None).embed_query("q")
    assert [r.get("priority") for r in sent] == [3, None]
