"""The client against servers that misbehave on purpose (real sockets on loopback, bounded).

No working server drips its answer a byte at a time or sends a compressed bomb, so these run
against `tests.integration.hostile_server`; broken vectors come from the deliberately broken
servers of `tests.integration.broken_servers` (the faults ``qwen-sglang doctor`` names).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from qwen_sglang import APITimeoutError, EmbeddingClient, MalformedResponseError
from tests.integration.broken_servers import broken_server
from tests.integration.hostile_server import drip, gzip_bomb, hostile_server, response_head

both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])

#: A valid answer to a one-text request.
ANSWER = json.dumps({"object": "list", "data": [{"index": 0, "embedding": [0.5, -0.5, 0.5, -0.5]}]}).encode()


def embed(client: EmbeddingClient, texts: list[str], use_async: bool) -> list[list[float]]:
    if use_async:
        return asyncio.run(client.aembed_documents(texts))
    return client.embed_documents(texts)


def drip_headers(request: bytes) -> Iterator[tuple[float, bytes]]:
    """Headers one byte every 0.25 s (about 10 s), then a valid answer."""
    yield 0, b"HTTP/1.1 200 OK\r\n"
    yield from drip(b"X-Slow: " + b"a" * 32 + b"\r\n", 0.25)
    yield 0, f"Content-Type: application/json\r\nContent-Length: {len(ANSWER)}\r\n\r\n".encode() + ANSWER


def drip_body(request: bytes) -> Iterator[tuple[float, bytes]]:
    """A valid answer whose body comes one byte every 0.1 s (about 10 s)."""
    yield 0, response_head(content_type="application/json", content_length=len(ANSWER))
    yield from drip(ANSWER, 0.1)


@both
@pytest.mark.parametrize("script", [drip_headers, drip_body], ids=["headers", "body"])
def test_timeout_bounds_the_whole_request_not_each_read(script: object, use_async: bool) -> None:
    """Every read comes within the timeout, yet the answer would take ~10 s: timeout=1 ends it
    at about 1 s (per-read timeouts let it run the whole 10 s and return the answer)."""
    with hostile_server(script) as url:  # type: ignore[arg-type]
        client = EmbeddingClient(base_url=url, model="m", timeout=1.0, max_retries=0)
        start = time.monotonic()
        with pytest.raises(APITimeoutError, match="within timeout=1 s"):
            embed(client, ["a"], use_async)
        elapsed = time.monotonic() - start
        client.close()
    assert elapsed < 5, f"the request ran {elapsed:.1f} s with timeout=1"


_BOMB_CLIENT = """
import json, resource, sys
from qwen_sglang import EmbeddingClient
client = EmbeddingClient(base_url=sys.argv[1], model="m", max_retries=0, timeout=60)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    client.embed_documents(["a"])
    outcome = "accepted"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "grew_mib": (after - before) / 1024}))
"""


def test_a_gzip_bomb_is_refused_while_streaming_without_growing_the_client() -> None:
    """256 MiB of zeros in 260 KB of gzip, as the answer to a one-text request: refused after the
    ~1.5 MB such a request can need, with the client's peak RSS (a real process) nearly unchanged.
    (bench/hostile_answers.py measures the 1 GiB bomb of the issue.)"""
    length, pieces = gzip_bomb(256)
    body = list(pieces)

    def bomb(request: bytes) -> Iterator[tuple[float, bytes]]:
        yield 0, response_head(content_type="application/json", content_encoding="gzip", content_length=length)
        for piece in body:
            yield 0, piece

    with hostile_server(bomb) as url:
        run = subprocess.run(
            [sys.executable, "-c", _BOMB_CLIENT, url], capture_output=True, text=True, timeout=120, check=True
        )
    result = json.loads(run.stdout)
    assert result["outcome"].startswith("MalformedResponseError") and "larger than" in result["outcome"]
    assert result["grew_mib"] < 32, result  # the expanded body would be 256 MiB


@both
def test_all_zero_vectors_from_a_server_are_a_typed_error(use_async: bool) -> None:
    """A server whose pooling is broken answers zeros: never a valid Qwen3 embedding."""
    with broken_server("zero") as url:
        client = EmbeddingClient(base_url=url, max_retries=0)  # the model it names, whatever it is
        with pytest.raises(MalformedResponseError, match="all zeros.*qwen-sglang doctor"):
            embed(client, ["a text", "another"], use_async)
        client.close()


@both
def test_empty_text_zero_policy_still_gives_zero_rows(use_async: bool) -> None:
    """The client's own ``empty_text="zero"`` rows are made by the client, not refused."""
    with broken_server("identical") as url:  # any server: only the non-empty text is sent
        client = EmbeddingClient(base_url=url, empty_text="zero", max_retries=0)
        out = embed(client, ["a text", "  "], use_async)
        client.close()
    assert any(out[0]) and not any(out[1])


@both
def test_a_proxy_from_the_environment_is_still_used(use_async: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync client runs on its own transport (for the deadline); httpx then ignores
    HTTP_PROXY, so the client falls back to httpx's for URLs the environment proxies."""
    seen: list[bytes] = []

    def proxy(request: bytes) -> Iterator[tuple[float, bytes]]:
        seen.append(request.split(b"\r\n", 1)[0])
        # one request per connection, and said so: the client's discovery GETs come first
        head = response_head(content_type="application/json", content_length=len(ANSWER), connection="close")
        yield 0, head + ANSWER

    with hostile_server(proxy) as url:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, url.removesuffix("/v1"))
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        client = EmbeddingClient(base_url="http://embedding-server.invalid:9/v1", model="m", max_retries=0)
        assert len(embed(client, ["a"], use_async)) == 1
        client.close()
    # every request went through the proxy: the client's discovery GETs, then the embedding
    assert seen[-1] == b"POST http://embedding-server.invalid:9/v1/embeddings HTTP/1.1"
    assert all(line.split()[1].startswith(b"http://embedding-server.invalid:9/") for line in seen)
