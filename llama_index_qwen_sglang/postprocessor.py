"""LlamaIndex node postprocessor for Qwen3-Reranker served by SGLang."""

from __future__ import annotations

from typing import Any, ClassVar

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr, model_validator

from qwen_sglang.errors import InvalidInputError
from qwen_sglang.rerank import RerankClient, RerankResult
from qwen_sglang.settings import AdapterSettings, QwenSGLangSettings

__all__ = ["QwenSGLangRerank"]


class QwenSGLangRerank(BaseNodePostprocessor, AdapterSettings):
    """Qwen3-Reranker served by SGLang (or the local backend), as a LlamaIndex node postprocessor.

    Rescores the retrieved nodes with Qwen3-Reranker (P("yes"), Qwen's exact prompt and formula),
    sets each ``NodeWithScore.score`` to it and keeps the best ``top_n``. The text scored is what
    the embedding saw (``MetadataMode.EMBED``). Everything else is the core's
    `qwen_sglang.RerankClient`.

    Setup:
        ```bash
        pip install 'qwen-sglang[llama-index]'
        qwen-sglang serve --task rerank --model Qwen/Qwen3-Reranker-0.6B --port 30001
        ```

    Key init args:
        top_n: Optional[int]
            How many nodes to keep, best first (default 3; ``None`` keeps all, reordered).
        instruction: Optional[str]
            The task instruction (``None``: Qwen's default for web search).
        base_url, api_key, model, batch_size, max_concurrency, timeout, max_retries,
        empty_text, long_text, server: as in `qwen_sglang.QwenSGLangSettings`.

    Instantiate:
        ```python
        from llama_index_qwen_sglang import QwenSGLangRerank

        rerank = QwenSGLangRerank(base_url="http://127.0.0.1:30001/v1", top_n=3)
        ```

    Use in a query engine:
        ```python
        engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
        ```

    Async:
        ```python
        nodes = await rerank.apostprocess_nodes(nodes, query_str="What does SGLang do?")
        ```
    """

    top_n: int | None = Field(default=3, gt=0, description="Nodes to keep, best first (None: all).")
    instruction: str | None = Field(default=None, description="Task instruction (None: Qwen's default).")

    _client: RerankClient = PrivateAttr()

    @model_validator(mode="after")
    def _build_client(self) -> QwenSGLangRerank:
        """Runs at construction (the client is made) and after every assignment of a field
        (validated; the client's settings and instruction are replaced, so the next call uses the
        new values, and its connections and what it learned of the server are kept)."""
        if self.__pydantic_private__ and "_client" in self.__pydantic_private__:
            self._client.settings = self.core_settings()
            self._client.instruction = self.instruction
        else:
            self._client = RerankClient(self.core_settings(), instruction=self.instruction)
        return self

    serialized_keys: ClassVar[frozenset[str]] = frozenset({"class_name"})
    """LlamaIndex's serialiser writes ``class_name`` into every dump: a dump builds the object again."""

    @classmethod
    def class_name(cls) -> str:
        return "QwenSGLangRerank"

    def __setstate__(self, state: dict[Any, Any]) -> None:
        QwenSGLangSettings.__setstate__(self, state)

    @property
    def client(self) -> RerankClient:
        """The core client doing the work."""
        return self._client

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._inputs(nodes, query_bundle)
        if not nodes:
            return []
        return _ranked(nodes, self._client.rerank(query, texts, top_n=self._top_n(nodes)))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._inputs(nodes, query_bundle)
        if not nodes:
            return []
        return _ranked(nodes, await self._client.arerank(query, texts, top_n=self._top_n(nodes)))

    def _inputs(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        if query_bundle is None:
            raise InvalidInputError("QwenSGLangRerank needs the query: pass query_bundle or query_str")
        return query_bundle.query_str, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _top_n(self, nodes: list[NodeWithScore]) -> int | None:
        return None if self.top_n is None else min(self.top_n, len(nodes))

    def __del__(self) -> None:  # pragma: no cover - best effort
        private: Any = getattr(self, "__pydantic_private__", None) or {}
        if isinstance(private, dict) and private.get("_client") is not None:
            private["_client"].close()


def _ranked(nodes: list[NodeWithScore], results: list[RerankResult]) -> list[NodeWithScore]:
    return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in results]
