"""A Chroma-native embedding function, for Chroma users without LangChain or LlamaIndex.

Import it from `qwen_sglang.integrations.chroma` (which loads this module, and chromadb, on first use).

Example::

    import chromadb
    from qwen_sglang.integrations.chroma import QwenSGLangEmbeddingFunction

    ef = QwenSGLangEmbeddingFunction(base_url="http://127.0.0.1:30000/v1", dimensions=1024)
    collection = chromadb.PersistentClient("db").get_or_create_collection(
        "docs", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=["a"], documents=["SGLang serves Qwen3-Embedding."])
    collection.query(query_texts=["Who serves the model?"], n_results=1)   # instructed query

Documents are embedded raw, query texts with Qwen3's instruction (Chroma calls ``embed_query``
for ``query_texts``). Vectors are handed to Chroma as float32 numpy arrays. Needs the ``chroma``
extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space

from qwen_sglang.client import EmbeddingClient
from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["QwenSGLangEmbeddingFunction"]

_CONFIG_FIELDS = ("base_url", "model", "dimensions", "query_instruction", "batch_size", "max_concurrency", "timeout")


class QwenSGLangEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma ``EmbeddingFunction`` backed by `qwen_sglang.EmbeddingClient`.

    Key init args: any `qwen_sglang.QwenSGLangSettings` field (``base_url``, ``model``,
    ``dimensions``, ``query_instruction``, ...), or ``client=`` an existing client.
    """

    def __init__(self, client: EmbeddingClient | None = None, **settings: Any) -> None:
        if client is not None and settings:
            raise TypeError("pass either client= or settings, not both")
        self.client = client if client is not None else EmbeddingClient(QwenSGLangSettings(**settings))

    def __call__(self, input: Documents) -> Embeddings:
        vectors = self.client.embed(list(input), kind="document").vectors
        return [np.asarray(row, dtype=np.float32) for row in vectors]

    def embed_query(self, input: Documents) -> Embeddings:
        vectors = self.client.embed(list(input), kind="query").vectors
        return [np.asarray(row, dtype=np.float32) for row in vectors]

    @staticmethod
    def name() -> str:
        return "qwen_sglang"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """Serializable settings (never the API key: it is read from the environment again): the
        URL and the settings given explicitly; those left unset are learned from the server again
        (the model, its query instruction, the request shape)."""
        s = self.client.settings
        given = s.explicit_fields | {"base_url"}
        return {name: getattr(s, name) for name in _CONFIG_FIELDS if name in given}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> QwenSGLangEmbeddingFunction:
        return QwenSGLangEmbeddingFunction(**{k: v for k, v in config.items() if k in _CONFIG_FIELDS})
