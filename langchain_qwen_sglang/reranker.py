"""LangChain document compressor for Qwen3-Reranker served by SGLang."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from qwen_sglang.rerank import RerankClient, RerankResult
from qwen_sglang.settings import AdapterSettings

__all__ = ["QwenSGLangReranker"]


class QwenSGLangReranker(AdapterSettings, BaseDocumentCompressor):
    """Qwen3-Reranker served by SGLang (or the local backend), as a LangChain document compressor.

    Reorders retrieved documents by Qwen3-Reranker's relevance score (P("yes"), Qwen's exact
    prompt and formula), keeps the best ``top_n`` and puts each score in
    ``metadata["relevance_score"]``. Everything else (batching, bounded concurrency, retries,
    truncation, typed errors) is the core's `qwen_sglang.RerankClient`.

    Setup:
        ```bash
        pip install 'qwen-sglang[langchain]'
        qwen-sglang serve --task rerank --model Qwen/Qwen3-Reranker-0.6B --port 30001
        ```

    Key init args:
        top_n: Optional[int]
            How many documents to keep, best first (default 3; ``None`` keeps all, reordered).
            Fewer documents than ``top_n`` are all kept.
        instruction: Optional[str]
            The task instruction (``None``: Qwen's default for web search).
        base_url, api_key, model, batch_size, max_batch_tokens, max_concurrency, timeout,
        max_retries, empty_text, long_text, max_tokens, server:
            As in `qwen_sglang.QwenSGLangSettings`.

    Instantiate:
        ```python
        from langchain_qwen_sglang import QwenSGLangReranker

        reranker = QwenSGLangReranker(base_url="http://127.0.0.1:30001/v1", top_n=3)
        ```

    Use in a retriever:
        ```python
        from langchain_classic.retrievers import ContextualCompressionRetriever

        retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=store.as_retriever(k=20))
        docs = retriever.invoke("What does SGLang do?")
        docs[0].metadata["relevance_score"]
        ```

    Async:
        ```python
        docs = await reranker.acompress_documents(documents, "What does SGLang do?")
        ```
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    top_n: int | None = Field(default=3, gt=0, description="Documents to keep, best first (None: all).")
    instruction: str | None = Field(default=None, description="Task instruction (None: Qwen's default).")

    _client: RerankClient = PrivateAttr()

    @model_validator(mode="after")
    def _build_client(self) -> QwenSGLangReranker:
        """Runs at construction (the client is made) and after every assignment of a field
        (validated; the client's settings and instruction are replaced, so the next call uses the
        new values, and its connections and what it learned of the server are kept)."""
        if self.__pydantic_private__ and "_client" in self.__pydantic_private__:
            self._client.settings = self.core_settings()
            self._client.instruction = self.instruction
        else:
            self._client = RerankClient(self.core_settings(), instruction=self.instruction)
        return self

    @property
    def client(self) -> RerankClient:
        """The core client doing the work."""
        return self._client

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best ``top_n`` documents for ``query``, best first, each with its
        ``metadata["relevance_score"]`` (the input documents are not changed)."""
        docs = list(documents)
        results = self._client.rerank(query, [d.page_content for d in docs], top_n=self._top_n(docs))
        return _ranked(docs, results)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async `compress_documents` (native async, bounded concurrency)."""
        docs = list(documents)
        results = await self._client.arerank(query, [d.page_content for d in docs], top_n=self._top_n(docs))
        return _ranked(docs, results)

    def _top_n(self, docs: list[Document]) -> int | None:
        return None if self.top_n is None or not docs else min(self.top_n, len(docs))

    def __del__(self) -> None:  # pragma: no cover - best effort
        private: Any = getattr(self, "__pydantic_private__", None) or {}
        if isinstance(private, dict) and private.get("_client") is not None:
            private["_client"].close()


def _ranked(docs: list[Document], results: list[RerankResult]) -> list[Document]:
    out = []
    for r in results:
        doc = docs[r.index]
        out.append(doc.model_copy(update={"metadata": {**doc.metadata, "relevance_score": r.score}}))
    return out
