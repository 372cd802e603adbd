"""Both adapters' embedding classes against a real server: a setting assigned after construction
is validated and used by the next call, and what the server says about itself is read from its
answers, not learned from a failed request."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import numpy as np
import pytest

from langchain_qwen_sglang import QwenSGLangEmbeddings
from llama_index_qwen_sglang import QwenSGLangEmbedding
from qwen_sglang import ConfigurationError, EmbeddingClient
from qwen_sglang.servers import ManagedServer
from tests.conftest import TOL

TEXTS = ["SGLang serves Qwen3-Embedding.", "Le chat dort.", "向量数据库"]


def documents(emb: Any, use_async: bool) -> np.ndarray:
    if isinstance(emb, QwenSGLangEmbeddings):
        out = asyncio.run(emb.aembed_documents(TEXTS)) if use_async else emb.embed_documents(TEXTS)
    elif use_async:
        out = asyncio.run(emb.aget_text_embedding_batch(TEXTS))
    else:
        out = emb.get_text_embedding_batch(TEXTS)
    return np.array(out)


def query(emb: Any) -> np.ndarray:
    if isinstance(emb, QwenSGLangEmbeddings):
        return np.array(emb.embed_query("a question"))
    return np.array(emb.get_query_embedding("a question"))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("cls", [QwenSGLangEmbeddings, QwenSGLangEmbedding], ids=["langchain", "llama-index"])
def test_dimensions_assigned_after_construction_are_used_by_the_next_call(
    server: ManagedServer, cls: Any, use_async: bool
) -> None:
    emb = cls(base_url=server.base_url, model="Qwen3-Embedding-test")
    full = documents(emb, use_async)
    assert full.shape == (3, 128)
    emb.dimensions = 64
    got = documents(emb, use_async)
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert got.shape == (3, 64)
    np.testing.assert_allclose(got, prefix, atol=TOL)
    assert emb.embedding_dim == 64 and query(emb).shape == (64,)
    # wider than the served model (learned at the first call): refused at the assignment, and
    # the setting keeps its value
    with pytest.raises(ConfigurationError, match="wider than the 128-d vectors"):
        emb.dimensions = 99999
    assert emb.dimensions == 64 and documents(emb, use_async).shape == (3, 64)
    emb.dimensions = None
    np.testing.assert_allclose(documents(emb, use_async), full, atol=TOL)


@pytest.mark.parametrize("cls", [QwenSGLangEmbeddings, QwenSGLangEmbedding], ids=["langchain", "llama-index"])
def test_a_copy_has_its_own_client_and_its_update_is_used(server: ManagedServer, cls: Any) -> None:
    # pydantic's copy shared the original's client and left `update` unvalidated: the copy answered
    # with the original's settings, and an assignment on the copy changed the original
    emb = cls(base_url=server.base_url, model="Qwen3-Embedding-test", api_key="sk-copy-1")
    narrow = emb.model_copy(update={"dimensions": 64})
    assert narrow.client is not emb.client and narrow.api_key.get_secret_value() == "sk-copy-1"
    assert documents(narrow, False).shape == (3, 64) and documents(emb, False).shape == (3, 128)
    same = copy.copy(emb)
    same.dimensions = 32
    assert documents(same, False).shape == (3, 32) and documents(emb, False).shape == (3, 128)
    with pytest.raises(ConfigurationError, match="dimensions"):
        emb.model_copy(update={"dimensions": 0})


@pytest.mark.parametrize("cls", [QwenSGLangEmbeddings, QwenSGLangEmbedding], ids=["langchain", "llama-index"])
def test_an_out_of_range_width_is_refused_at_assignment_for_a_known_model(cls: Any) -> None:
    emb = cls(model="Qwen/Qwen3-Embedding-0.6B", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigurationError, match="outside the Matryoshka range"):
        emb.dimensions = 99999
    assert emb.dimensions is None and emb.client.settings.dimensions is None


def test_a_server_that_says_it_cannot_truncate_costs_no_failed_request(server_no_mrl: ManagedServer) -> None:
    # the local backend (like SGLang 0.5.17+) says so in /model_info's embedding block
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            sent.append(json.loads(request.content))

    http = httpx.Client(event_hooks={"request": [record]})
    client = EmbeddingClient(base_url=server_no_mrl.base_url, model="Qwen3-Embedding-test", http_client=http)
    got = np.array(client.embed_documents(TEXTS, dimensions=64))
    assert got.shape == (3, 64) and client.client_side_dimensions
    assert [("dimensions" in body) for body in sent] == [False]
    assert client.server_facts is not None and client.server_facts.supports_dimensions is False


@pytest.mark.parametrize("cls", [QwenSGLangEmbeddings, QwenSGLangEmbedding], ids=["langchain", "llama-index"])
def test_a_copy_to_another_url_does_not_take_the_first_urls_credentials(server: ManagedServer, cls: Any) -> None:
    # the user:password of the first URL went with the copy to the other server (an assignment
    # of base_url drops them; a copy must not send them to a host they were not given for)
    emb = cls(base_url=server.base_url.replace("://", "://user:pw@"), model="Qwen3-Embedding-test")
    assert emb.url_credentials is not None
    other = emb.model_copy(update={"base_url": server.base_url})
    assert other.url_credentials is None and other.client.settings.url_credentials is None
    assert documents(other, False).shape == (3, 128)
    assert emb.url_credentials is not None and emb.model_copy().url_credentials is not None
    with pytest.raises(ConfigurationError, match="server"):  # as an assignment: its URL, key and model stayed
        emb.model_copy(update={"server": server})
