"""LangChain's standard integration suite, unmodified, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from langchain_qwen_sglang import QwenSGLangEmbeddings
from qwen_sglang.servers import ManagedServer


@pytest.fixture(autouse=True)
def _point_at_server(server: ManagedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The suite builds the model from class properties; the URL of the session server comes
    # in through the environment, as it would in an app.
    monkeypatch.setenv("QWEN_SGLANG_BASE_URL", server.base_url)
    monkeypatch.setenv("QWEN_SGLANG_MODEL", "Qwen3-Embedding-test")
    yield


class TestQwenSGLangEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[QwenSGLangEmbeddings]:
        return QwenSGLangEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"dimensions": 64}


def test_vectors_are_plain_python_floats_of_the_requested_width(server: ManagedServer) -> None:
    emb = QwenSGLangEmbeddings(base_url=server.base_url, model="Qwen3-Embedding-test", dimensions=64)
    vec = emb.embed_query("hello")
    assert len(vec) == 64 and all(type(x) is float for x in vec)
    assert emb.embedding_dim == 64
