"""LangChain ``Embeddings`` for Qwen3-Embedding served by SGLang."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, PrivateAttr, model_validator

from qwen_sglang.client import EmbeddingClient
from qwen_sglang.settings import AdapterSettings

__all__ = ["QwenSGLangEmbeddings"]


class QwenSGLangEmbeddings(AdapterSettings, Embeddings):
    """Qwen3-Embedding models served by SGLang (or the local backend), for LangChain.

    Queries get Qwen3's instruction (``Instruct: {task}\\nQuery:{text}``), documents are sent
    raw; batching, bounded concurrency (sync and async), retries, Matryoshka ``dimensions`` with
    a client-side fallback, base64 transport and long-text handling all come from the shared
    core, `qwen_sglang.EmbeddingClient`.

    Setup:
        Install the package and start a server (SGLang on a GPU, the local backend on CPU):

        ```bash
        pip install 'qwen-sglang[langchain]'
        qwen-sglang serve --model Qwen/Qwen3-Embedding-4B
        export QWEN_SGLANG_BASE_URL=http://127.0.0.1:30000/v1   # the default
        ```

    Key init args — embedding params:
        model: str
            Model name (default ``Qwen/Qwen3-Embedding-4B``, env ``QWEN_SGLANG_MODEL``).
        dimensions: Optional[int]
            Matryoshka output width, validated against the model's range (32..native).
        query_instruction: Optional[str]
            Task for queries, or a preset name (``"retrieval"``, ``"sts"``, ...); ``None`` disables it.

    Key init args — client params:
        base_url: str
            Server URL (env ``QWEN_SGLANG_BASE_URL``).
        api_key: Optional[SecretStr]
            Bearer key (env ``QWEN_SGLANG_API_KEY``); keyless servers need none.
        batch_size, max_batch_tokens, max_concurrency, timeout, max_retries, show_progress
            Batching, concurrency and retry knobs.
        server: Optional[ManagedServer]
            A server started from Python; its URL, key and model name are used.

    Instantiate:
        ```python
        from langchain_qwen_sglang import QwenSGLangEmbeddings

        embeddings = QwenSGLangEmbeddings(dimensions=1024)
        ```

    Embed single text:
        ```python
        vector = embeddings.embed_query("What does SGLang do?")
        print(len(vector))
        ```

        ```text
        1024
        ```

    Embed multiple texts:
        ```python
        vectors = embeddings.embed_documents(["SGLang serves models.", "Qwen3 embeds text."])
        print(len(vectors), len(vectors[0]))
        ```

        ```text
        2 1024
        ```

    Async:
        ```python
        vector = await embeddings.aembed_query("What does SGLang do?")
        vectors = await embeddings.aembed_documents(["SGLang serves models."])
        ```
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    _client: EmbeddingClient = PrivateAttr()

    @model_validator(mode="after")
    def _build_client(self) -> QwenSGLangEmbeddings:
        """Runs at construction (the client is made) and after every assignment of a field
        (validated; the client's settings are replaced, so the next call uses the new value)."""
        self.require_aligned_output("LangChain")
        if self.__pydantic_private__ and "_client" in self.__pydantic_private__:
            self._client.settings = self.core_settings()
        else:
            self._client = EmbeddingClient(self.core_settings())
        return self

    @property
    def client(self) -> EmbeddingClient:
        """The core client doing the work (shared settings, learned server capabilities)."""
        return self._client

    @property
    def embedding_dim(self) -> int | None:
        """Width of the vectors (known before the first call for presets or ``dimensions``)."""
        return self._client.embedding_dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (no instruction)."""
        return self._client.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed a query with the Qwen3 instruction."""
        return self._client.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents asynchronously (native async, bounded concurrency)."""
        return await self._client.aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Embed a query asynchronously."""
        return await self._client.aembed_query(text)

    def embed_queries(self, texts: list[str], *, task: str | None = None) -> list[list[float]]:
        """Embed several queries, optionally with another task than ``query_instruction``."""
        return self._client.embed_queries(texts, task=task)

    def __del__(self) -> None:  # pragma: no cover - best effort
        client: Any = getattr(self, "__pydantic_private__", None) or {}
        if isinstance(client, dict) and client.get("_client") is not None:
            client["_client"].close()
