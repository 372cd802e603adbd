"""Faults and load against real processes: killed servers, slow servers, many callers."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qwen_sglang import APIConnectionError, APITimeoutError, EmbeddingClient
from qwen_sglang.servers import ManagedServer
from tests.conftest import TOL, make_server


def embed_in_background(
    client: EmbeddingClient, texts: list[str]
) -> tuple[threading.Thread, list[object], list[BaseException]]:
    """Start ``client.embed(texts)`` in a thread; its vectors or exception land in the lists.
    Returns once the first request has been answered, so the rest of the call is in flight."""
    result: list[object] = []
    errors: list[BaseException] = []
    answered = threading.Event()

    def call() -> None:
        try:
            result.append(client.embed(texts, on_progress=lambda n, t: answered.set()).tolist())
        except BaseException as exc:
            errors.append(exc)
        finally:
            answered.set()

    worker = threading.Thread(target=call)
    worker.start()
    assert answered.wait(timeout=120), "no request was answered"
    return worker, result, errors


def test_server_killed_mid_call_raises_a_connection_error_and_returns_nothing(qwen_model_dir: Path) -> None:
    texts = [f"document {i} " + "word " * (i % 50) for i in range(5000)]
    with make_server(qwen_model_dir) as srv:
        client = EmbeddingClient(server=srv, batch_size=16, max_concurrency=2, max_retries=2, timeout=30)
        worker, result, errors = embed_in_background(client, texts)
        assert srv.pid is not None
        os.killpg(os.getpgid(srv.pid), signal.SIGKILL)  # the server and its group
        worker.join(timeout=60)
        assert not worker.is_alive(), "the call hung after the server died"
    assert result == []  # nothing partial
    assert len(errors) == 1 and isinstance(errors[0], APIConnectionError)
    message = str(errors[0])
    assert srv.base_url in message and "exited with code" in message  # the managed server is named


def test_a_restarted_server_lets_a_retry_complete(qwen_model_dir: Path) -> None:
    srv = make_server(qwen_model_dir)
    with srv:
        port = srv.port
        client = EmbeddingClient(base_url=srv.base_url, max_retries=1)
        want = np.array(client.embed_documents(["persist me"]))
    with pytest.raises(APIConnectionError):
        client.embed_documents(["persist me"])
    with make_server(qwen_model_dir, port=port):
        np.testing.assert_allclose(np.array(client.embed_documents(["persist me"])), want, atol=TOL)


def test_one_call_survives_a_server_restart_through_its_retries(qwen_model_dir: Path) -> None:
    """The server dies while a call is in flight and comes back on the same port: the call's own
    retries (connection errors are retried with backoff) finish it, with the right vectors."""
    texts = [f"restart text {i} " + "word " * (i % 40) for i in range(3000)]
    first = make_server(qwen_model_dir).start()
    port = first.port
    client = EmbeddingClient(base_url=first.base_url, batch_size=16, max_concurrency=2, max_retries=60, timeout=30)
    worker, done, errors = embed_in_background(client, texts)
    second: ManagedServer | None = None
    try:
        assert worker.is_alive(), "the call finished before the server could be killed"
        assert first.pid is not None
        os.killpg(os.getpgid(first.pid), signal.SIGKILL)  # the server and its group
        first.stop()
        second = make_server(qwen_model_dir, port=port).start()
        worker.join(timeout=300)
        assert not worker.is_alive()
        assert not errors, errors
        assert len(done) == 1 and len(done[0]) == len(texts)
        fresh = EmbeddingClient(base_url=second.base_url)
        sample = list(range(0, len(texts), 97))
        np.testing.assert_allclose(
            np.array(done[0])[sample], np.array(fresh.embed_documents([texts[i] for i in sample])), atol=TOL
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    delay = 3.0
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        time.sleep(self.delay)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    _SlowHandler.calls = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def call_timeout(client: EmbeddingClient, use_async: bool) -> None:
    with pytest.raises(APITimeoutError):
        if use_async:
            asyncio.run(client.aembed_documents(["a", "b", "c"]))
        else:
            client.embed_documents(["a", "b", "c"])


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_slow_server_times_out_with_retries_and_leaks_nothing(slow_server: str, use_async: bool) -> None:
    client = EmbeddingClient(base_url=slow_server, timeout=0.5, max_retries=2, max_concurrency=4, batch_size=1)
    used_workers: list[str] = []
    original = threading.Thread.start

    def spy(self: threading.Thread) -> None:
        if self.name.startswith("qwen-sglang-client"):
            used_workers.append(self.name)
        original(self)

    threading.Thread.start = spy  # type: ignore[method-assign]
    start = time.monotonic()
    try:
        call_timeout(client, use_async)
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    elapsed = time.monotonic() - start
    assert elapsed < 15  # 3 attempts x 0.5 s + backoff, not the server's 3 s each
    assert _SlowHandler.calls >= 3  # retried per policy
    # no client worker thread left behind (the slow server's own handler threads still sleep,
    # and session servers' log pumps run on)
    assert [t.name for t in threading.enumerate() if t.name.startswith("qwen-sglang-client")] == []
    assert used_workers or use_async  # the sync call did run on named client workers
    client.close()


def test_64_async_callers_get_the_sequential_results(server: ManagedServer) -> None:
    texts = [f"caller text {i} " + "x " * (i % 11) for i in range(64)]
    client = EmbeddingClient(base_url=server.base_url)
    reference = np.array(client.embed_documents(texts))
    query_ref = np.array(client.embed_queries(texts))

    async def caller(k: int) -> None:
        for j in range(5):
            i = (k + j) % len(texts)
            if j % 2:
                got = await client.aembed_query(texts[i])
                np.testing.assert_allclose(got, query_ref[i], atol=TOL)
            else:
                docs = await client.aembed_documents([texts[i], texts[(i + 1) % len(texts)]])
                np.testing.assert_allclose(docs, reference[[i, (i + 1) % len(texts)]], atol=TOL)

    async def main() -> None:
        await asyncio.gather(*(caller(k) for k in range(64)))

    asyncio.run(main())


def test_16_threads_share_one_object(server: ManagedServer) -> None:
    from langchain_qwen_sglang import QwenSGLangEmbeddings

    emb = QwenSGLangEmbeddings(base_url=server.base_url, batch_size=3)
    texts = [f"thread {i} text" for i in range(32)]
    reference = np.array(emb.embed_documents(texts))
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for r in range(4):
                idx = [(k + r + j) % 32 for j in range(5)]
                got = np.array(emb.embed_documents([texts[i] for i in idx]))
                np.testing.assert_allclose(got, reference[idx], atol=TOL)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_sync_calls_work_inside_a_running_event_loop(server: ManagedServer) -> None:
    # Jupyter runs cells inside an event loop: the sync API must not need one.
    client = EmbeddingClient(base_url=server.base_url, batch_size=2)

    async def cell() -> int:
        return len(client.embed_documents(["a", "b", "c", "d", "e"]))

    assert asyncio.run(cell()) == 5
