"""A client used before ``os.fork()``: parent and child each get their own connections (real forks)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import numpy as np
import pytest

from qwen_sglang import EmbeddingClient
from qwen_sglang.server import ManagedServer
from tests.conftest import TOL

CALLS = 60


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
