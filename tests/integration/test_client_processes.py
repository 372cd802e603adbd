"""A client across processes: used before ``os.fork()`` (real forks), and pickled."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from qwen_sglang import ConfigurationError, EmbeddingClient
from qwen_sglang.servers import ManagedServer
from tests.conftest import TOL

CALLS = 60
_ONE_VECTOR = {"data": [{"index": 0, "embedding": [0.6, 0.8]}]}


def _texts(tag: str) -> list[str]:
    return [f"{tag} text {i} " + "word " * (i % 25) for i in range(CALLS)]


def _check(embed: Callable[[list[str]], list[list[float]]], texts: list[str], want: np.ndarray) -> int:
    """One request per text; the number of answers that are not the text's own vector."""
    wrong = 0
    for i, text in enumerate(texts):
        got = np.asarray(embed([text])[0], dtype=np.float32)
        wrong += not np.allclose(got, want[i], atol=TOL)
    return wrong


def _wait(pid: int, seconds: float) -> int:
    """The child's exit status; killed (and failed) if it outlives ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_parent_and_forked_child_never_get_each_others_vectors(server: ManagedServer, use_async: bool) -> None:
    """Both processes embed 60 texts one request at a time, at once, after a fork. With the
    parent's pooled connection shared, they read each other's answers or broken ones (400
    "Invalid HTTP request", disconnects); each process must use connections of its own."""
    client = EmbeddingClient(base_url=server.base_url, model="Qwen3-Embedding-test", max_concurrency=1, max_retries=0)
    parent_texts, child_texts = _texts("parent"), _texts("child")
    loop = asyncio.new_event_loop()
    if use_async:  # a long-lived loop, as a worker keeps one: its pooled connection is inherited too

        def embed(texts: list[str]) -> list[list[float]]:
            return loop.run_until_complete(client.aembed_documents(texts))
    else:
        embed = client.embed_documents
    want_parent = np.asarray(embed(parent_texts), dtype=np.float32)  # also leaves a pooled keep-alive connection
    want_child = np.asarray(embed(child_texts), dtype=np.float32)
    pid = os.fork()
    if pid == 0:  # the child: exit status = wrong answers (capped), 100 on any exception
        try:
            code = min(_check(embed, child_texts, want_child), 99)
        except BaseException:
            code = 100
        os._exit(code)
    try:
        wrong = _check(embed, parent_texts, want_parent)
    finally:
        child = _wait(pid, 120)
        loop.close()
    assert (wrong, child) == (0, 0)


def test_a_given_http_client_is_refused_in_a_forked_child() -> None:
    """The client cannot rebuild an httpx client it was given: in a forked child it says so
    (and what to do) rather than share the parent's connections."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=_ONE_VECTOR))
    client = EmbeddingClient(model="m", http_client=httpx.Client(transport=transport))
    assert len(client.embed_documents(["in the parent"])) == 1
    pid = os.fork()
    if pid == 0:
        try:
            client.embed_documents(["in the child"])
            code = 1
        except ConfigurationError as exc:
            code = 0 if "before os.fork()" in str(exc) else 2
        except BaseException:
            code = 3
        os._exit(code)
    assert _wait(pid, 60) == 0
    assert len(client.embed_documents(["in the parent again"])) == 1


@pytest.mark.parametrize("make", ["langchain", "llama-index"])
def test_an_unpickled_adapter_embeds_like_the_original(server: ManagedServer, make: str) -> None:
    """What a process pool does with an embeddings object: pickle it, load it, use it."""
    from langchain_qwen_sglang import QwenSGLangEmbeddings
    from llama_index_qwen_sglang import QwenSGLangEmbedding

    adapter = QwenSGLangEmbeddings if make == "langchain" else QwenSGLangEmbedding
    original = adapter(base_url=server.base_url, model="Qwen3-Embedding-test", dimensions=64)
    restored = pickle.loads(pickle.dumps(original))
    if make == "langchain":
        want, got = original.embed_query("a question"), restored.embed_query("a question")
    else:
        want, got = original.get_query_embedding("a question"), restored.get_query_embedding("a question")
    assert len(got) == 64
    np.testing.assert_allclose(got, want, atol=TOL)
