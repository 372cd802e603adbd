"""Several servers behind one client (``base_url`` with several URLs), against real local-backend
processes: requests spread over them, a server killed during a call costs no vector (none lost,
none twice, the same as one server's), all of them down is one typed error; and a single query
has a lane of its own, sent while bulk calls keep every bulk connection busy."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_sglang import AllEndpointsDownError, EmbeddingClient
from qwen_sglang.servers import ManagedServer, free_port
from tests.conftest import TOL, make_server

both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
MODEL = "Qwen3-Embedding-test"
TEXTS = [f"endpoint text {i} " + "word " * (i % 23) for i in range(400)]


@pytest.fixture(scope="module")
def second(qwen_model_dir: Path) -> Iterator[ManagedServer]:
    with make_server(qwen_model_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(server: ManagedServer) -> Any:
    """One server's answer for TEXTS: what several must give too."""
    return EmbeddingClient(base_url=server.base_url, model=MODEL).embed(TEXTS)


@both
def test_a_server_killed_during_a_call_costs_no_vector(
    server: ManagedServer, second: ManagedServer, qwen_model_dir: Path, reference: Any, use_async: bool
) -> None:
    victim = make_server(qwen_model_dir).start()
    ports: list[int | None] = []
    http = (
        {"http_async_client": httpx.AsyncClient(event_hooks={"request": [_async_port(ports)]})}
        if use_async
        else {"http_client": httpx.Client(event_hooks={"request": [lambda r: ports.append(r.url.port)]})}
    )
    try:
        urls = [server.base_url, second.base_url, victim.base_url]
        client = EmbeddingClient(base_url=urls, model=MODEL, batch_size=4, max_concurrency=6, **http)
        answered = 0

        def kill_the_third(texts: int, tokens: int) -> None:
            nonlocal answered
            answered += 1
            if answered == 5:  # requests of the call are in flight on every server
                assert victim.pid is not None
                os.killpg(os.getpgid(victim.pid), signal.SIGKILL)

        if use_async:
            got = asyncio.run(client.aembed(TEXTS, on_progress=kill_the_third))
        else:
            got = client.embed(TEXTS, on_progress=kill_the_third)
        assert victim.returncode is not None  # it did die during the call
    finally:
        victim.stop()
    assert victim.port in ports and server.port in ports and second.port in ports  # all three served
    np.testing.assert_array_equal(got.indices, np.arange(len(TEXTS)))
    np.testing.assert_allclose(got.vectors, reference.vectors, atol=TOL)
    assert got.prompt_tokens == reference.prompt_tokens  # each text's answer counted once


def _async_port(ports: list[int | None]) -> Any:
    async def hook(request: httpx.Request) -> None:
        ports.append(request.url.port)

    return hook


@both
def test_every_server_down_is_one_typed_error_naming_each(use_async: bool) -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    client = EmbeddingClient(base_url=urls, model=MODEL, max_retries=1, timeout=5)
    with pytest.raises(AllEndpointsDownError) as info:
        if use_async:
            asyncio.run(client.aembed_documents(["nobody home"]))
        else:
            client.embed_documents(["nobody home"])
    for url in urls:
        assert url in str(info.value)


def test_requests_are_spread_over_the_servers(server: ManagedServer, second: ManagedServer) -> None:
    # One request at a time: each finds both servers idle, so they take turns whatever their speed
    # (with more in flight the least busy gets the next one, and how many each answers is timing).
    posts: list[int | None] = []

    def record(request: httpx.Request) -> None:
        if request.method == "POST":  # not the discovery GETs
            posts.append(request.url.port)

    http = httpx.Client(event_hooks={"request": [record]})
    urls = [server.base_url, second.base_url]
    client = EmbeddingClient(base_url=urls, model=MODEL, batch_size=2, max_concurrency=1, http_client=http)
    got = np.array(client.embed_documents(TEXTS[:40]))
    np.testing.assert_allclose(
        got, EmbeddingClient(base_url=server.base_url, model=MODEL).embed_documents(TEXTS[:40]), atol=TOL
    )
    assert len(posts) == 20 and set(posts) == {server.port, second.port}
    assert all(posts[i] != posts[i + 1] for i in range(19))  # in turn


class _Gate:
    """A proxy in front of a real server that holds every bulk request until a query has gone
    through (or 60 s have passed: then the query waited behind bulk work, and the test fails)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.lock = threading.Condition()
        self.outstanding = 0  # bulk requests arrived and not answered
        self.at_query: int | None = None  # bulk requests outstanding when the query arrived
        self.opened = threading.Event()
        self.timed_out = False


def _gate_handler(gate: _Gate) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._forward(b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            payload = json.loads(body)
            query = any("the query" in str(text) for text in payload.get("input", []))
            if not self.path.endswith("/embeddings") or query:
                if query:
                    with gate.lock:
                        gate.at_query = gate.outstanding
                self._forward(body)
                if query:
                    gate.opened.set()
                return
            with gate.lock:
                gate.outstanding += 1
                gate.lock.notify_all()
            if not gate.opened.wait(timeout=60):
                gate.timed_out = True
                gate.opened.set()
            try:
                self._forward(body)
            finally:
                with gate.lock:
                    gate.outstanding -= 1

        def _forward(self, body: bytes) -> None:
            method = "POST" if body else "GET"
            answer = httpx.request(
                method,
                gate.target + self.path,
                content=body or None,
                timeout=60,
                headers={"content-type": "application/json"},
            )
            self.send_response(answer.status_code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@both
def test_a_query_is_sent_while_bulk_calls_keep_every_bulk_connection_busy(
    server: ManagedServer, use_async: bool
) -> None:
    gate = _Gate(server.root_url)
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _gate_handler(gate))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
    # 2 in flight per call, 4 calls at once: more bulk requests than the 6 bulk connections
    client = EmbeddingClient(base_url=url, model=MODEL, batch_size=1, max_concurrency=2)
    client.discover()
    jobs = [[f"bulk {k} {i}" for i in range(6)] for k in range(4)]
    try:
        if use_async:
            bulk, query = asyncio.run(_async_calls(client, jobs, gate))
        else:
            bulk, query = _sync_calls(client, jobs, gate)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert not gate.timed_out, "the query waited for the bulk requests to be answered"
    assert gate.at_query == 6  # sent while every bulk connection held a request
    direct = EmbeddingClient(base_url=server.base_url, model=MODEL)
    np.testing.assert_allclose(query, direct.embed_query("the query"), atol=TOL)
    for texts, vectors in zip(jobs, bulk, strict=True):
        np.testing.assert_allclose(vectors, direct.embed_documents(texts), atol=TOL)


def _wait_for_bulk(gate: _Gate, count: int) -> None:
    with gate.lock:
        assert gate.lock.wait_for(lambda: gate.outstanding >= count, timeout=60), gate.outstanding


def _sync_calls(client: EmbeddingClient, jobs: list[list[str]], gate: _Gate) -> tuple[list[Any], Any]:
    results: list[Any] = [None] * len(jobs)

    def run(k: int) -> None:
        results[k] = client.embed_documents(jobs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for thread in threads:
        thread.start()
    _wait_for_bulk(gate, 6)
    query = client.embed_query("the query")
    for thread in threads:
        thread.join(timeout=120)
    return results, query


async def _async_calls(client: EmbeddingClient, jobs: list[list[str]], gate: _Gate) -> tuple[list[Any], Any]:
    tasks = [asyncio.create_task(client.aembed_documents(texts)) for texts in jobs]
    await asyncio.to_thread(_wait_for_bulk, gate, 6)
    query = await client.aembed_query("the query")
    return list(await asyncio.gather(*tasks)), query
