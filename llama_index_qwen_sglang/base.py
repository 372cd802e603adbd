"""LlamaIndex ``BaseEmbedding`` for Qwen3-Embedding served by SGLang."""

from __future__ import annotations

from typing import Any, ClassVar

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr, model_validator

from qwen_sglang.client import EmbeddingClient
from qwen_sglang.settings import AdapterSettings, QwenSGLangSettings

__all__ = ["QwenSGLangEmbedding"]


class QwenSGLangEmbedding(BaseEmbedding, AdapterSettings):
    """Qwen3-Embedding models served by SGLang (or the local backend), for LlamaIndex.

    Takes the same arguments as LangChain's ``QwenSGLangEmbeddings`` (one settings model for
    both). Queries get Qwen3's instruction, texts are sent raw. ``embed_batch_size`` is how many
    texts LlamaIndex hands over per call; the core then splits them into requests of
    ``batch_size`` with up to ``max_concurrency`` in flight.

    Setup:
        ```bash
        pip install 'qwen-sglang[llama-index]'
        qwen-sglang serve --model Qwen/Qwen3-Embedding-4B
        ```

    Key init args:
        model, dimensions, query_instruction, base_url, api_key, batch_size, max_concurrency,
        timeout, max_retries, show_progress, server: as in `qwen_sglang.QwenSGLangSettings`.
        embed_batch_size: texts per call from LlamaIndex to the core (default 1024).

    Instantiate:
        ```python
        from llama_index.core import Settings
        from llama_index_qwen_sglang import QwenSGLangEmbedding

        Settings.embed_model = QwenSGLangEmbedding(dimensions=1024)
        ```

    Embed:
        ```python
        vector = Settings.embed_model.get_query_embedding("What does SGLang do?")
        vectors = Settings.embed_model.get_text_embedding_batch(["SGLang serves models."])
        ```

    Async:
        ```python
        vector = await Settings.embed_model.aget_query_embedding("What does SGLang do?")
        ```
    """

    embed_batch_size: int = Field(default=1024, gt=0, le=2048, description="Texts per call to the core client.")

    _client: EmbeddingClient = PrivateAttr()

    @model_validator(mode="after")
    def _build_client(self) -> QwenSGLangEmbedding:
        """Runs at construction (the client is made) and after every assignment of a field
        (validated; the client's settings are replaced, so the next call uses the new value)."""
        self.require_aligned_output("LlamaIndex")
        if self.model_name in ("", "unknown"):
            # Written to the dict: an assignment would run this validator again.
            self.__dict__["model_name"] = self.model or "unknown"
        if self.__pydantic_private__ and "_client" in self.__pydantic_private__:
            self._client.settings = self.core_settings()
        else:
            self._client = EmbeddingClient(self.core_settings())
        return self

    serialized_keys: ClassVar[frozenset[str]] = frozenset({"class_name"})
    """LlamaIndex's serialiser writes ``class_name`` into every dump: a dump builds the object again."""

    @classmethod
    def class_name(cls) -> str:
        return "QwenSGLangEmbedding"

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # LlamaIndex's own unpickling passes every field to __init__; the settings' way passes
        # the fields that were set, so what was not set is derived again (the key from the
        # environment, the request shape from the server), as for a new object.
        QwenSGLangSettings.__setstate__(self, state)

    @property
    def client(self) -> EmbeddingClient:
        """The core client doing the work."""
        return self._client

    @property
    def embedding_dim(self) -> int | None:
        """Width of the vectors (known before the first call for presets or ``dimensions``)."""
        return self._client.embedding_dim

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._client.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._client.aembed_query(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._client.embed_documents([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._client.aembed_documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._client.embed_documents(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._client.aembed_documents(texts)

    def __del__(self) -> None:  # pragma: no cover - best effort
        private: Any = getattr(self, "__pydantic_private__", None) or {}
        if isinstance(private, dict) and private.get("_client") is not None:
            private["_client"].close()
