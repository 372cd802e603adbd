"""The served model, learned or checked at the first call, as a user meets it (real local-backend
servers, the real CLI): no ``--model`` needed, a wrong one refused before any work, Qwen3's query
instruction only for models that use it, and the server's preferred request shape."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_qwen_sglang import QwenSGLangEmbeddings
from llama_index_qwen_sglang import QwenSGLangEmbedding
from qwen_sglang import EmbeddingClient, LocalEmbeddingServer, ModelMismatchError
from qwen_sglang.instructions import DEFAULT_TASK
from qwen_sglang.servers import ManagedServer, free_port
from tests.conftest import BACKEND, TOL

QWEN_PROMPT = f"Instruct: {DEFAULT_TASK}\nQuery:"
QUESTION = "which flag makes SGLang serve an embedding model?"


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "QWEN_SGLANG_MODEL"} | (env or {})
    cmd = [sys.executable, "-m", "qwen_sglang", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=environment, check=False)


def vectors(out: subprocess.CompletedProcess[str]) -> list[list[float]]:
    return [json.loads(line)["embedding"] for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def custom_name_server(qwen_model_dir: Path) -> Iterator[ManagedServer]:
    """The Qwen3 test model served as ``--served-model-name embed``: nothing in its name says Qwen."""
    if BACKEND != "local":
        pytest.skip("served by the local backend")
    with LocalEmbeddingServer(qwen_model_dir, served_model_name="embed") as srv:
        yield srv


# ------------------------------------------------------------------ the model a server serves
def test_cli_embed_without_model_uses_the_served_one(minilm_server: ManagedServer) -> None:
    out = cli("embed", "--base-url", minilm_server.base_url, "hello", "world")
    assert out.returncode == 0, out.stderr
    assert [len(v) for v in vectors(out)] == [384, 384]
    # the same vectors as a client told the model
    told = EmbeddingClient(base_url=minilm_server.base_url, model="all-MiniLM-L6-v2")
    np.testing.assert_allclose(vectors(out), told.embed_documents(["hello", "world"]), atol=TOL)


def test_cli_refuses_a_model_the_server_does_not_serve_even_with_dimensions(minilm_server: ManagedServer) -> None:
    args = ("embed", "--base-url", minilm_server.base_url, "--dimensions", "256")
    out = cli(*args, "--model", "Qwen/Qwen3-Embedding-0.6B", stdin="some text\n")
    assert out.returncode == 1 and out.stdout == ""
    assert (
        "serves 'all-MiniLM-L6-v2'" in out.stderr
        and "not the configured model 'Qwen/Qwen3-Embedding-0.6B'" in out.stderr
    )
    assert "--model all-MiniLM-L6-v2" in out.stderr and "QWEN_SGLANG_MODEL" in out.stderr
    # the same model set in the environment: the message says where it came from
    env = cli(*args, stdin="some text\n", env={"QWEN_SGLANG_MODEL": "Qwen/Qwen3-Embedding-4B"})
    assert env.returncode == 1 and "'Qwen/Qwen3-Embedding-4B' (from QWEN_SGLANG_MODEL)" in env.stderr
    # no model: the served one, at the asked width
    ok = cli(*args, stdin="some text\n")
    assert ok.returncode == 0, ok.stderr
    assert [len(v) for v in vectors(ok)] == [256]


@pytest.mark.parametrize("framework", ["langchain", "llama_index", "core"])
def test_wrong_model_raises_before_any_text_is_sent(minilm_server: ManagedServer, framework: str) -> None:
    kwargs: dict[str, Any] = {
        "base_url": minilm_server.base_url,
        "model": "Qwen/Qwen3-Embedding-0.6B",
        "dimensions": 256,
    }
    obj: Any = {"langchain": QwenSGLangEmbeddings, "llama_index": QwenSGLangEmbedding, "core": EmbeddingClient}[
        framework
    ](**kwargs)
    embed_query = obj.get_query_embedding if framework == "llama_index" else obj.embed_query
    for _ in range(2):  # at every call, not only the first
        with pytest.raises(ModelMismatchError, match="serves 'all-MiniLM-L6-v2'") as info:
            embed_query("what is SGLang?")
        assert info.value.configured == "Qwen/Qwen3-Embedding-0.6B" and info.value.served == "all-MiniLM-L6-v2"
    client = obj if framework == "core" else obj.client
    assert client.prompt_tokens == 0  # nothing was embedded
    with pytest.raises(ModelMismatchError):
        asyncio.run(client.aembed_documents(["a"]))


@pytest.mark.parametrize("spelling", ["name", "path", "path/", "custom"])
def test_the_same_model_under_its_other_names_is_accepted(
    spelling: str, server: ManagedServer, custom_name_server: ManagedServer, qwen_model_dir: Path
) -> None:
    # a preset-like name vs the served path whose last component equals it; the path itself; a
    # custom served name configured explicitly
    target = custom_name_server if spelling == "custom" else server
    model = {"name": qwen_model_dir.name, "path": str(qwen_model_dir), "path/": f"{qwen_model_dir}/"}.get(
        spelling, "embed"
    )
    client = EmbeddingClient(base_url=target.base_url, model=model)
    assert len(client.embed_query("hello")) == 128
    facts = client.server_facts
    assert facts is not None and client.model in facts.served_names


def test_objects_built_before_the_server_runs_learn_its_model(qwen_model_dir: Path) -> None:
    if BACKEND != "local":
        pytest.skip("served by the local backend")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    # nothing listens yet: building the objects must not touch the network
    lc, li, core = QwenSGLangEmbeddings(base_url=url), QwenSGLangEmbedding(base_url=url), EmbeddingClient(base_url=url)
    assert lc.model is None and core.model is None and core.server_facts is None
    with LocalEmbeddingServer(qwen_model_dir, port=port, served_model_name="embed"):
        assert len(lc.embed_query(QUESTION)) == 128
        assert len(li.get_text_embedding("a document")) == 128
        assert len(asyncio.run(core.aembed_query(QUESTION))) == 128
    assert lc.client.model == li.client.model == core.model == "embed"


# ------------------------------------------------------------------ the query instruction
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("model", [None, "embed"], ids=["learned", "configured"])
def test_qwen3_under_a_custom_served_name_keeps_its_instruction(
    custom_name_server: ManagedServer, model: str | None, use_async: bool
) -> None:
    embeddings = QwenSGLangEmbeddings(base_url=custom_name_server.base_url, model=model)
    query = asyncio.run(embeddings.aembed_query(QUESTION)) if use_async else embeddings.embed_query(QUESTION)
    np.testing.assert_allclose(query, embeddings.embed_documents([QWEN_PROMPT + QUESTION])[0], atol=TOL)
    assert embeddings.client.query_prompt == QWEN_PROMPT
    # an explicit setting always wins, None included
    plain = QwenSGLangEmbeddings(base_url=custom_name_server.base_url, model=model, query_instruction=None)
    np.testing.assert_allclose(plain.embed_query(QUESTION), plain.embed_documents([QUESTION])[0], atol=TOL)


def test_a_model_without_qwen_instructions_gets_none_by_default(
    minilm_server: ManagedServer, caplog: pytest.LogCaptureFixture
) -> None:
    embeddings = QwenSGLangEmbedding(base_url=minilm_server.base_url)
    with caplog.at_level("WARNING", logger="qwen_sglang"):
        first = embeddings.get_query_embedding(QUESTION)
        embeddings.get_query_embedding("another question")
    np.testing.assert_allclose(first, embeddings.get_text_embedding(QUESTION), atol=TOL)
    notes = [r.getMessage() for r in caplog.records if "without an instruction" in r.getMessage()]
    assert len(notes) == 1 and "query_instruction='retrieval'" in notes[0]  # once, saying how to turn it on
    # asked for explicitly, it is applied
    qa = QwenSGLangEmbedding(base_url=minilm_server.base_url, query_instruction="qa")
    prompt = "Instruct: Given a question, retrieve passages that answer the question\nQuery:"
    np.testing.assert_allclose(qa.get_query_embedding(QUESTION), qa.get_text_embedding(prompt + QUESTION), atol=TOL)
    # the CLI: the same vectors, and the note on stderr
    out = cli("embed", "--base-url", minilm_server.base_url, "--query", QUESTION)
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(vectors(out)[0], first, atol=TOL)
    assert out.stderr.count("without an instruction") == 1 and "--task" in out.stderr


# ------------------------------------------------------------------ the request shape
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_url_only_client_takes_the_local_backends_request_shape(server: ManagedServer, use_async: bool) -> None:
    if BACKEND != "local":
        pytest.skip("the local backend advertises a request shape; SGLang does not")
    texts = [f"passage {i} about bees and their waggle dance" for i in range(100)]

    def requests_for(client: EmbeddingClient) -> int:
        calls: list[int] = []
        embed = client.aembed if use_async else client.embed
        result: Any = embed(texts, on_progress=lambda n, tokens: calls.append(n))
        result = asyncio.run(result) if use_async else result
        assert result.vectors.shape == (100, 128) and sum(calls) == 100
        return len(calls)

    learned = EmbeddingClient(base_url=server.base_url)
    assert requests_for(learned) == 1  # one request of 100 texts, not 4 of 32
    advertised = {"batch_size": 4096, "max_batch_tokens": 1 << 20, "max_concurrency": 1}  # its own caps
    assert learned.request_shape == advertised
    # explicit settings win, each on its own
    told = EmbeddingClient(base_url=server.base_url, batch_size=10, max_concurrency=4)
    assert requests_for(told) == 10
    assert told.request_shape == advertised | {"batch_size": 10, "max_concurrency": 4}
    # the frameworks' classes and a client made with server= take the same shape, from the server
    lc = QwenSGLangEmbeddings(base_url=server.base_url)
    lc.embed_documents(texts[:3])
    managed = EmbeddingClient(server=server)
    assert requests_for(managed) == 1
    assert lc.client.request_shape == managed.request_shape == advertised


def test_a_learned_budget_the_server_refuses_is_split_not_failed(qwen_model_dir: Path) -> None:
    # digits are one token each: the client's UTF-8 estimate is a third of the real count, so the
    # budget the local backend advertises (its own cap) lets a 413 through; the client splits
    if BACKEND != "local":
        pytest.skip("the local backend's per-request token cap")
    texts = [" ".join(f"{i:03d}{j:03d}" for j in range(20)) for i in range(60)]  # ~140 tokens each
    with LocalEmbeddingServer(qwen_model_dir, extra_args=["--max-request-tokens", "2000"]) as srv:
        client = EmbeddingClient(base_url=srv.base_url)
        got = client.embed_documents(texts)
        assert client.request_shape["max_batch_tokens"] < 2000  # lowered after the refusal
        one_by_one = EmbeddingClient(base_url=srv.base_url, batch_size=1).embed_documents(texts)
    np.testing.assert_allclose(got, one_by_one, atol=TOL)
