"""Protocol corners a real server cannot easily be made to produce (httpx.MockTransport).

Every test runs the sync and the async path through the same body (``use_async``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_sglang import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    EmbeddingClient,
    InternalServerError,
    MalformedResponseError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
)
from qwen_sglang.client import shells as client_module

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record backoff sleeps instead of sleeping."""
    slept: list[float] = []

    async def fake_async_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    monkeypatch.setattr(client_module.asyncio, "sleep", fake_async_sleep)
    return slept


def vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def ok_body(
    n: int, dim: int = 8, *, b64: bool = False, order: list[int] | None = None, seed0: int = 0
) -> dict[str, Any]:
    data = []
    for i in order if order is not None else range(n):
        v = vec(seed0 + i, dim)
        emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v.tolist()
        data.append({"object": "embedding", "embedding": emb, "index": i})
    return {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 3 * n, "total_tokens": 3 * n}}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": status}
    return httpx.Response(status, json=body, headers=headers)


#: What a client asks a server once, before its first request (the discovery step).
DISCOVERY = ("/v1/models", "/model_info", "/get_model_info", "/server_info", "/get_server_info", "/workers")


class Recorder:
    """Records the requests a handler answers; discovery GETs get 404 (an OpenAI-compatible
    server that tells nothing about itself) unless ``discovery`` answers them."""

    def __init__(
        self,
        handler: Callable[[httpx.Request, dict[str, Any]], httpx.Response],
        discovery: dict[str, Any] | None = None,
    ) -> None:
        self.handler = handler
        self.discovery = discovery or {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.discovered: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path in DISCOVERY:
            self.discovered.append(request.url.path)
            body = self.discovery.get(request.url.path)
            return httpx.Response(200, json=body) if body is not None else error(404, "Not Found")
        payload = json.loads(request.content) if request.content else {}
        self.requests.append(payload)
        self.headers.append(request.headers)
        return self.handler(request, payload)


def make_client(rec: Recorder, **kwargs: Any) -> EmbeddingClient:
    transport = httpx.MockTransport(rec)
    kwargs.setdefault("base_url", "http://mock:30000/v1")
    kwargs.setdefault("model", "some-embedder")
    return EmbeddingClient(
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
        **kwargs,
    )


def embed(client: EmbeddingClient, texts: list[str], use_async: bool, **kw: Any) -> list[list[float]]:
    if use_async:
        return asyncio.run(client.aembed_documents(texts, **kw))
    return client.embed_documents(texts, **kw)


both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


@both
def test_retries_503_then_succeeds_honouring_retry_after(use_async: bool, no_sleep: list[float]) -> None:
    answers = iter([error(503, "loading", {"Retry-After": "2"}), error(503, "loading")])

    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        answer = next(answers, None)
        return answer if answer is not None else httpx.Response(200, json=ok_body(len(payload["input"])))

    rec = Recorder(handler)
    out = embed(make_client(rec), ["a", "b"], use_async)
    assert len(out) == 2
    assert len(rec.requests) == 3
    assert no_sleep[0] == 2.0  # Retry-After honoured
    assert 0.5 <= no_sleep[1] <= 1.0  # then exponential backoff (second attempt: 0.5..1.0 s)


@both
def test_429_is_retried_then_raises_typed_error(use_async: bool, no_sleep: list[float]) -> None:
    rec = Recorder(lambda r, p: error(429, "slow down", {"Retry-After": "1"}))
    with pytest.raises(RateLimitError) as info:
        embed(make_client(rec, max_retries=2), ["a"], use_async)
    assert len(rec.requests) == 3
    assert info.value.status_code == 429
    assert no_sleep == [1.0, 1.0]


@both
def test_400_is_never_retried(use_async: bool) -> None:
    rec = Recorder(lambda r, p: error(400, "The input (99999 tokens) is longer than the model's context length"))
    with pytest.raises(BadRequestError, match="longer than the model's context length"):
        embed(make_client(rec, max_retries=5), ["a"], use_async)
    assert len(rec.requests) == 1


@both
def test_500_exhausts_retries(use_async: bool) -> None:
    rec = Recorder(lambda r, p: error(500, "boom"))
    with pytest.raises(InternalServerError):
        embed(make_client(rec, max_retries=1), ["a"], use_async)
    assert len(rec.requests) == 2


@both
def test_connection_error_names_url_and_how_to_start(use_async: bool) -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    rec = Recorder(handler)
    with pytest.raises(APIConnectionError) as info:
        embed(make_client(rec, max_retries=1), ["a"], use_async)
    text = str(info.value)
    assert "http://mock:30000/v1/embeddings" in text and "qwen-sglang serve" in text
    assert len(rec.requests) == 2


@both
def test_timeout_is_a_typed_error(use_async: bool) -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(APITimeoutError):
        embed(make_client(Recorder(handler), max_retries=0), ["a"], use_async)


@both
def test_auth_and_not_found_errors(use_async: bool) -> None:
    rec = Recorder(lambda r, p: httpx.Response(401, json={"error": "Unauthorized"}))
    with pytest.raises(AuthenticationError, match="api_key"):
        embed(make_client(rec), ["a"], use_async)
    assert len(rec.requests) == 1
    rec = Recorder(lambda r, p: httpx.Response(404, json={"detail": "Not Found"}))
    with pytest.raises(NotFoundError, match="/v1"):
        embed(make_client(rec, base_url="http://mock:30000/api"), ["a"], use_async)


@both
def test_generation_model_400_says_how_to_fix(use_async: bool) -> None:
    msg = "This model does not appear to be an embedding model by default. Please add `--is-embedding` when launching the server"
    rec = Recorder(lambda r, p: error(400, msg))
    with pytest.raises(BadRequestError, match="restart it with --is-embedding"):
        embed(make_client(rec), ["a"], use_async)


@both
def test_matryoshka_400_falls_back_to_client_truncation_once(use_async: bool) -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "dimensions" in payload:
            return error(
                400,
                "Model 'm' does not support matryoshka representation, changing output dimensions will lead to poor results.",
            )
        return httpx.Response(200, json=ok_body(len(payload["input"]), dim=64))

    rec = Recorder(handler)
    client = make_client(rec, dimensions=16, batch_size=1, max_concurrency=1)
    out = np.array(embed(client, ["a", "b", "c"], use_async))
    assert out.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    full = vec(0, 64)[:16]
    np.testing.assert_allclose(out[0], full / np.linalg.norm(full), atol=1e-6)
    # one rejected request, then never again: 1 + 3 requests, only the first with dimensions
    assert [("dimensions" in p) for p in rec.requests] == [True, False, False, False]
    assert client.client_side_dimensions


@both
def test_ignored_dimensions_are_truncated_and_remembered(use_async: bool) -> None:
    # SGLang < 0.5.5 silently ignores `dimensions` and returns the full vector.
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), dim=64)))
    client = make_client(rec, dimensions=16, batch_size=1, max_concurrency=1)
    out = np.array(embed(client, ["a", "b"], use_async))
    assert out.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert [("dimensions" in p) for p in rec.requests] == [True, False]


@both
def test_dimensions_equal_to_native_are_not_sent(use_async: bool) -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), dim=1024)))
    client = make_client(rec, model="Qwen/Qwen3-Embedding-0.6B", dimensions=1024)
    assert client.embedding_dim == 1024
    embed(client, ["a"], use_async)
    assert "dimensions" not in rec.requests[0]


@both
def test_base64_and_float_answers_decode_to_the_same_vectors(use_async: bool) -> None:
    rec_b64 = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), b64=True)))
    rec_float = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))))
    a = embed(make_client(rec_b64), ["x", "y"], use_async)
    b = embed(make_client(rec_float, encoding_format="float"), ["x", "y"], use_async)
    assert rec_b64.requests[0]["encoding_format"] == "base64"
    assert rec_float.requests[0]["encoding_format"] == "float"
    np.testing.assert_array_equal(np.array(a), np.array(b))
    assert all(type(x) is float for x in a[0])


@both
def test_base64_rejected_falls_back_to_float(use_async: bool) -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if payload["encoding_format"] == "base64":
            return error(400, "encoding_format base64 is not supported")
        return httpx.Response(200, json=ok_body(len(payload["input"])))

    rec = Recorder(handler)
    client = make_client(rec, batch_size=1, max_concurrency=1)
    assert len(embed(client, ["a", "b"], use_async)) == 2
    assert [p["encoding_format"] for p in rec.requests] == ["base64", "float", "float"]


@both
def test_answers_out_of_order_are_put_back_in_order(use_async: bool) -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(3, order=[2, 0, 1])))
    out = np.array(embed(make_client(rec), ["a", "b", "c"], use_async))
    for i in range(3):
        np.testing.assert_allclose(out[i], vec(i), atol=1e-7)


MALFORMED: dict[str, Callable[[int], Any]] = {
    "fewer vectors": lambda n: ok_body(n - 1),
    "wrong width": lambda n: {
        "data": [{"embedding": vec(0, 8).tolist(), "index": 0}, {"embedding": vec(1, 9).tolist(), "index": 1}]
    },
    "nan": lambda n: {"data": [{"embedding": [float("nan")] * 8, "index": i} for i in range(n)]},
    "duplicate index": lambda n: ok_body(n, order=[0, 0]),
    "index out of range": lambda n: ok_body(n, order=[0, 5]),
    "truncated base64": lambda n: {"data": [{"embedding": "AAAA" + "AA", "index": i} for i in range(n)]},
    "no data": lambda n: {"object": "list"},
    "embedding is a dict": lambda n: {"data": [{"embedding": {"x": 1}, "index": i} for i in range(n)]},
    # never valid Qwen3 output (doctor calls them a fault); np.asarray took both silently
    "all zeros": lambda n: {"data": [{"embedding": [0.0] * 8, "index": i} for i in range(n)]},
    "booleans": lambda n: {"data": [{"embedding": [True, False] * 4, "index": i} for i in range(n)]},
    "numbers as strings": lambda n: {"data": [{"embedding": ["0.5"] * 8, "index": i} for i in range(n)]},
    "nested lists": lambda n: {"data": [{"embedding": [[0.5, 0.5]] * 4, "index": i} for i in range(n)]},
}


@both
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_answers_raise_typed_errors(case: str, use_async: bool) -> None:
    # json.dumps writes NaN as a bare token, as Python servers do
    body = json.dumps(MALFORMED[case](2)).encode()
    rec = Recorder(lambda r, p: httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    with pytest.raises(MalformedResponseError):
        embed(make_client(rec), ["a", "b"], use_async)


@both
def test_non_json_body_is_malformed(use_async: bool) -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, text="<html>proxy error</html>"))
    with pytest.raises(MalformedResponseError, match="not JSON"):
        embed(make_client(rec), ["a"], use_async)


@both
def test_batches_respect_count_and_token_budget_and_keep_order(use_async: bool) -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        # the vector encodes the text so the test can check order
        data = []
        for i, text in enumerate(payload["input"]):
            v = np.zeros(8, dtype=np.float32)
            v[int(text.split()[1]) % 8] = 1.0
            data.append({"embedding": v.tolist(), "index": i})
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 1}})

    rec = Recorder(handler)
    texts = [f"text {i} " + "x" * (300 if i % 5 == 0 else 10) for i in range(40)]
    client = make_client(rec, batch_size=4, max_batch_tokens=120, max_concurrency=3)
    out = np.array(embed(client, texts, use_async))
    assert out.shape == (40, 8)
    assert [int(np.argmax(row)) for row in out] == [i % 8 for i in range(40)]
    sizes = [len(p["input"]) for p in rec.requests]
    assert sum(sizes) == 40 and max(sizes) <= 4
    assert any(size < 4 for size in sizes[:-1])  # the token budget closed some batches early
    assert client.prompt_tokens == len(rec.requests)


@both
def test_one_failing_batch_fails_the_call_with_no_partial_result(use_async: bool) -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "bad" in payload["input"]:
            return error(400, "Input at index 0 cannot be empty or whitespace only")
        return httpx.Response(200, json=ok_body(len(payload["input"])))

    rec = Recorder(handler)
    with pytest.raises(BadRequestError):
        embed(make_client(rec, batch_size=1, max_concurrency=4), ["a", "b", "bad", "c"], use_async)


def test_api_key_is_sent_as_bearer_and_never_shown() -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))))
    client = make_client(rec, api_key="sk-very-secret-key-123")
    client.embed_documents(["a"])
    assert rec.headers[0]["authorization"] == "Bearer sk-very-secret-key-123"
    assert "sk-very-secret" not in repr(client)
    assert "sk-very-secret" not in repr(client.settings)
    assert "sk-very-secret" not in client.settings.model_dump_json()


def test_query_gets_instruction_and_documents_do_not() -> None:
    # a fine-tune of Qwen3-Embedding under its own name: the server reports its architecture
    qwen3 = {
        "model_path": "/m/ft",
        "is_generation": False,
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
    }
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))), {"/model_info": qwen3})
    client = make_client(rec, model="/m/ft")
    client.embed_query("what is sglang?\nline two")
    client.embed_documents(["a doc\nwith newline"])
    client.embed_query("q", task="sts")
    assert rec.requests[0]["input"] == [
        "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:what is sglang?\nline two"
    ]
    assert rec.requests[1]["input"] == ["a doc\nwith newline"]
    assert rec.requests[2]["input"] == ["Instruct: Retrieve semantically similar text\nQuery:q"]


def test_async_client_survives_a_second_event_loop() -> None:
    # langchain-openai's async client stays bound to the first loop ("Event loop is closed").
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # discovery: a server that tells nothing
            return error(404, "Not Found")
        calls.append(1)
        return httpx.Response(200, json=ok_body(len(json.loads(request.content)["input"])))

    client = EmbeddingClient(base_url="http://mock:1/v1", model="m")
    original = httpx.AsyncClient

    class Patched(httpx.AsyncClient):
        def __init__(self, **kw: Any) -> None:
            super().__init__(transport=httpx.MockTransport(handler), **kw)

    httpx.AsyncClient = Patched  # type: ignore[misc]
    try:
        asyncio.run(client.aembed_documents(["a"]))
        asyncio.run(client.aembed_documents(["b"]))
    finally:
        httpx.AsyncClient = original  # type: ignore[misc]
    assert len(calls) == 2


@both
def test_server_without_tokenize_still_embeds_long_texts(use_async: bool) -> None:
    # e.g. another OpenAI-compatible server: no exact counts, so texts are sent as they are
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if request.url.path.endswith("/tokenize"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json=ok_body(len(payload["input"])))

    rec = Recorder(handler)
    # A limit the client knows (here max_tokens; with SGLang, /v1/models' max_model_len) makes
    # the long text a suspect worth counting; without one nothing is counted or cut.
    client = make_client(rec, model="unknown-model", max_tokens=100)
    long_text = "word " * 400
    assert len(embed(client, [long_text, "short"], use_async)) == 2
    assert len(embed(client, [long_text], use_async)) == 1
    tokenize_calls = [h for h, p in zip(rec.headers, rec.requests, strict=True) if "prompt" in p]
    assert len(tokenize_calls) == 1  # tried once, then remembered
    assert rec.requests[-1]["input"] == [long_text]


@both
def test_json_bodies_read_the_same_with_and_without_orjson(use_async: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import qwen_sglang.client.answers as answers_module

    assert answers_module._orjson_loads is not None  # a CPython dependency: the fast path is the one in use
    floats = json.dumps(ok_body(3)).encode()
    rec = Recorder(lambda r, p: httpx.Response(200, content=floats, headers={"content-type": "application/json"}))
    fast = embed(make_client(rec, encoding_format="float"), ["a", "b", "c"], use_async)
    monkeypatch.setattr(answers_module, "_orjson_loads", None)
    slow = embed(make_client(rec, encoding_format="float"), ["a", "b", "c"], use_async)
    assert fast == slow
    np.testing.assert_allclose(fast, [vec(i) for i in range(3)], atol=1e-7)


@both
def test_bare_nan_tokens_are_named_as_such_not_as_bad_json(use_async: bool) -> None:
    # orjson refuses bare NaN tokens; the standard library reads them and the value check names them
    body = json.dumps(MALFORMED["nan"](2)).encode()
    rec = Recorder(lambda r, p: httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    with pytest.raises(MalformedResponseError, match="NaN or infinite"):
        embed(make_client(rec), ["a", "b"], use_async)


def test_sync_progress_advances_while_other_requests_are_in_flight() -> None:
    """The callback fires as each request finishes, not when the whole call is done: every request
    but the first waits until progress has been reported (it would time out otherwise)."""
    import threading

    reported = threading.Event()

    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if payload["input"][0] != "t0" and not reported.wait(timeout=20):
            return error(500, "no progress was reported while this request waited")
        return httpx.Response(200, json=ok_body(len(payload["input"])))

    calls: list[tuple[int, int]] = []

    def on_progress(texts: int, tokens: int) -> None:
        calls.append((texts, tokens))
        reported.set()

    client = make_client(Recorder(handler), batch_size=2, max_concurrency=4, max_retries=0)
    texts = [f"t{i}" for i in range(8)]
    result = client.embed(texts, on_progress=on_progress)
    assert result.vectors.shape == (8, 8)
    assert calls == [(2, 6)] * 4  # one call per request: its texts and its prompt tokens


@both
def test_progress_reports_every_request_and_the_totals_add_up(use_async: bool) -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))))
    calls: list[tuple[int, int]] = []
    client = make_client(rec, batch_size=3, max_concurrency=2)
    texts = [f"text {i}" for i in range(10)]
    if use_async:
        asyncio.run(client.aembed(texts, on_progress=lambda n, t: calls.append((n, t))))
    else:
        client.embed(texts, on_progress=lambda n, t: calls.append((n, t)))
    assert len(calls) == len(rec.requests) == 4
    assert sum(n for n, _ in calls) == 10
    assert sum(t for _, t in calls) == 30


@both
def test_a_retry_after_past_the_retry_deadline_is_not_waited_for(use_async: bool, no_sleep: list[float]) -> None:
    """Retry-After of a day with timeout=2, max_retries=3: the retry deadline is 4 x 2 + 3 x 8 =
    32 s away, so the client fails at once, saying why (it used to sleep 60 s three times)."""
    rec = Recorder(lambda r, p: error(503, "overloaded", {"Retry-After": "86400"}))
    with pytest.raises(InternalServerError, match=r"Retry-After.*past the retry deadline"):
        embed(make_client(rec, timeout=2, max_retries=3), ["a"], use_async)
    assert no_sleep == [] and len(rec.requests) == 1


@both
def test_a_retry_after_within_the_deadline_is_honoured_and_none_waits_60_s_at_most(
    use_async: bool, no_sleep: list[float]
) -> None:
    rec = Recorder(lambda r, p: error(429, "slow down", {"Retry-After": "20"}))
    with pytest.raises(RateLimitError):
        embed(make_client(rec, timeout=30, max_retries=1), ["a"], use_async)
    assert no_sleep == [20.0]
    no_sleep.clear()
    rec = Recorder(lambda r, p: error(429, "slow down", {"Retry-After": "86400"}))
    with pytest.raises(RateLimitError):
        embed(make_client(rec, timeout=None, max_retries=1), ["a"], use_async)
    assert no_sleep == [60.0]  # no timeout, no deadline: the old cap


@both
@pytest.mark.parametrize(
    ("status", "body"),
    [(302, b""), (301, json.dumps(ok_body(1)).encode()), (307, b"<html>moved</html>")],
    ids=["302", "301-with-a-body-that-looks-right", "307"],
)
def test_a_redirect_names_its_location_and_the_base_url_to_use(status: int, body: bytes, use_async: bool) -> None:
    """httpx does not follow redirects: a 302 read as "no 'data' list", a 301 with a body as
    success. Now a typed error, never retried, naming where to point base_url."""
    headers = {"Location": "https://embed.example.com/api/v1/embeddings"}
    rec = Recorder(lambda r, p: httpx.Response(status, content=body, headers=headers))
    with pytest.raises(APIStatusError) as info:
        embed(make_client(rec, max_retries=3), ["a"], use_async)
    text = str(info.value)
    assert info.value.status_code == status and len(rec.requests) == 1
    assert "redirecting to https://embed.example.com/api/v1/embeddings" in text
    assert "set base_url to 'https://embed.example.com/api/v1'" in text


@both
@pytest.mark.parametrize("tokens", [b"1e400", b"-3", b"2.5", b"true", b'"12"', b"1" + b"0" * 400])
def test_a_usage_count_that_is_not_a_count_is_malformed(tokens: bytes, use_async: bool) -> None:
    body = json.dumps(ok_body(1)).encode().replace(b'"prompt_tokens": 3', b'"prompt_tokens": ' + tokens)
    assert tokens in body
    rec = Recorder(lambda r, p: httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    with pytest.raises(MalformedResponseError, match="usage.prompt_tokens is .*not a token count"):
        embed(make_client(rec), ["a"], use_async)


@both
def test_an_answer_in_an_encoding_the_client_did_not_ask_for_is_refused(use_async: bool) -> None:
    body = json.dumps(ok_body(1)).encode()
    rec = Recorder(lambda r, p: httpx.Response(200, content=body, headers={"content-encoding": "br"}))
    with pytest.raises(MalformedResponseError, match="Content-Encoding 'br'"):
        embed(make_client(rec), ["a"], use_async)
    assert rec.headers[0]["accept-encoding"] == "gzip, deflate"  # what the client decodes itself


@both
def test_the_size_bound_leaves_room_for_another_models_wider_vectors(use_async: bool) -> None:
    """Configured for the 1024-d 0.6B, answered by an 8B server (4096-d, as JSON floats): the
    answer is within the bound, so the error is the one that names the cause."""
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), dim=4096)))
    with pytest.raises(MalformedResponseError, match="returned 4096-d vectors"):
        embed(make_client(rec, model="Qwen/Qwen3-Embedding-0.6B", encoding_format="float"), ["a"] * 32, use_async)


@both
def test_413_splits_the_batch_in_order_and_lowers_a_learned_budget(use_async: bool) -> None:
    # a server with a per-request cap the client's estimate overshot (the local backend's tokens)
    advertised = {"/server_info": {"client_defaults": {"batch_size": 1000, "max_batch_tokens": 100_000}}}

    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        n = len(payload["input"])
        if n > 3:
            return error(413, f"Request too large: {n} inputs")
        first = int(payload["input"][0].split()[1])
        return httpx.Response(200, json=ok_body(n, seed0=first))

    rec = Recorder(handler, advertised)
    client = make_client(rec)
    texts = [f"text {i}" for i in range(10)]
    out = embed(client, texts, use_async)
    np.testing.assert_allclose(out, [vec(i) for i in range(10)], atol=1e-6)  # every row its own text
    sizes = [len(p["input"]) for p in rec.requests]
    assert sizes == [10, 5, 2, 3, 5, 2, 3]  # refused, then halves until each fits
    assert client.request_shape["max_batch_tokens"] < 100_000  # learned budgets shrink
    # a budget set explicitly stays (the batch is still split), and one text too large is an error
    told = make_client(Recorder(handler, advertised), max_batch_tokens=100_000)
    assert len(embed(told, texts, use_async)) == 10 and told.request_shape["max_batch_tokens"] == 100_000
    alone = make_client(Recorder(lambda r, p: error(413, "Request too large"), advertised))
    with pytest.raises(RequestTooLargeError):
        embed(alone, ["x"], use_async)
