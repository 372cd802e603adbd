"""A LangChain ``VectorStore`` as a target of `qwen_sglang.ingest.ingest`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.vectorstores import VectorStore

from qwen_sglang.errors import ConfigurationError
from qwen_sglang.ingest import StoreTarget

__all__ = ["LangChainStoreTarget"]


@runtime_checkable
class _AddsEmbeddings(Protocol):
    """Stores that take precomputed vectors (``add_embeddings`` is not part of ``VectorStore``)."""

    def add_embeddings(self, *args: Any, **kwargs: Any) -> Any: ...


class LangChainStoreTarget(StoreTarget):
    """Any LangChain ``VectorStore``: ``get_by_ids`` finds stored chunks; vectors go in through
    ``add_embeddings`` where the store has it, else the store embeds the texts itself with its
    own embeddings object (give it a ``QwenSGLangEmbeddings``). The ``VectorStore`` interface has
    no metadata query, so a changed file's old chunks cannot be found and stay (use Chroma
    directly, or a LlamaIndex store, to have them replaced), and ``prune`` is refused.

    Example:
        ```python
        from langchain_core.vectorstores import InMemoryVectorStore

        from langchain_qwen_sglang import LangChainStoreTarget, QwenSGLangEmbeddings
        from qwen_sglang.ingest import ingest

        embeddings = QwenSGLangEmbeddings(base_url="http://127.0.0.1:30000/v1")
        store = LangChainStoreTarget(InMemoryVectorStore(embeddings))
        report = ingest(["./docs"], client=embeddings.client, store=store)
        ```
    """

    lists_sources = False

    def __init__(self, store: VectorStore) -> None:
        """Wrap ``store``.

        Raises:
            ConfigurationError: The store has no ``get_by_ids`` (optional in ``VectorStore``):
                what is stored could not be skipped.
        """
        if type(store).get_by_ids is VectorStore.get_by_ids:
            raise ConfigurationError(
                f"{type(store).__name__} has no get_by_ids: ingest cannot tell which chunks it already holds "
                "(a rerun would add them all again). Use a store that implements it (Chroma, FAISS, "
                "InMemoryVectorStore, ...) or a LlamaIndex store through llama_index_qwen_sglang.LlamaIndexStoreTarget"
            )
        self.store = store

    @property
    def embeds_itself(self) -> bool:
        """True for stores without ``add_embeddings``: they embed the texts with their own embeddings."""
        return not isinstance(self.store, _AddsEmbeddings)

    def stored_width(self) -> int | None:
        """Unknown: the interface does not say."""
        return None

    def present(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` the store holds (``get_by_ids``)."""
        return {d.id for d in self.store.get_by_ids(ids) if d.id is not None} if ids else set()

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        """``add_embeddings`` with our vectors, or ``add_texts`` where the store embeds itself."""
        if isinstance(self.store, _AddsEmbeddings):
            self.store.add_embeddings(list(zip(texts, vectors.tolist(), strict=True)), metadatas=metadatas, ids=ids)
        else:
            self.store.add_texts(texts, metadatas=metadatas, ids=ids)

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        """Not possible: a ``VectorStore`` has no metadata query."""
        raise NotImplementedError

    def delete(self, ids: list[str]) -> None:
        """Delete by id."""
        self.store.delete(ids=ids)
