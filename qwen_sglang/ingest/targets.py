"""Where ingested chunks go: the `StoreTarget` protocol, and the Chroma target (duck-typed on a
collection: this module never imports chromadb).

The LangChain and LlamaIndex targets live beside their frameworks
(`langchain_qwen_sglang.LangChainStoreTarget`, `llama_index_qwen_sglang.LlamaIndexStoreTarget`);
any object that implements `StoreTarget` can be given to `qwen_sglang.ingest.ingest` as ``store=``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qwen_sglang.errors import ConfigurationError

__all__ = ["PAGE", "ChromaCollection", "ChromaTarget", "StoreTarget", "as_target"]

#: Ids listed, fetched or deleted per store call.
PAGE = 1000


@runtime_checkable
class StoreTarget(Protocol):
    """A vector store as `qwen_sglang.ingest.ingest` writes to it.

    ``embeds_itself``: the store computes vectors from the texts itself (``write`` gets an empty
    matrix). ``lists_sources``: ``stored`` can list chunks by their ``source`` metadata, so a
    changed file's stale chunks are removed and ``prune`` works.

    Example:
        ```python
        from qwen_sglang.ingest import StoreTarget


        class ListTarget:  # the smallest target: a dict, no listing by source
            embeds_itself = False
            lists_sources = False

            def __init__(self) -> None:
                self.rows: dict[str, str] = {}

            def stored_width(self) -> int | None:
                return None

            def present(self, ids: list[str]) -> set[str]:
                return {i for i in ids if i in self.rows}

            def write(self, ids, texts, metadatas, vectors) -> None:
                self.rows.update(zip(ids, texts))

            def stored(self, source):
                raise NotImplementedError

            def delete(self, ids: list[str]) -> None:
                for i in ids:
                    self.rows.pop(i, None)


        assert isinstance(ListTarget(), StoreTarget)
        ```
    """

    @property
    def embeds_itself(self) -> bool:
        """The store makes its own vectors from the texts."""
        ...

    @property
    def lists_sources(self) -> bool:
        """``stored`` can list the stored chunks by source."""
        ...

    def stored_width(self) -> int | None:
        """Width of the vectors already stored (``None``: empty, or unknown)."""
        ...

    def present(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` the store holds."""
        ...

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        """Add (or replace) these chunks."""
        ...

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        """Pages of ``(id, source)`` of the stored chunks of ``source`` (of all chunks: ``None``).

        Raises ``NotImplementedError`` where the store cannot list its chunks by metadata."""
        ...

    def delete(self, ids: list[str]) -> None:
        """Remove these chunks."""
        ...


@runtime_checkable
class ChromaCollection(Protocol):
    """What `ChromaTarget` uses of a ``chromadb`` collection."""

    def get(self, *args: Any, **kwargs: Any) -> Any: ...

    def upsert(self, *args: Any, **kwargs: Any) -> Any: ...

    def delete(self, *args: Any, **kwargs: Any) -> Any: ...


class ChromaTarget:
    """A Chroma collection: our vectors as float32 arrays, chunks listed by their ``source``."""

    embeds_itself = False
    lists_sources = True

    def __init__(self, collection: ChromaCollection) -> None:
        self.collection = collection

    def stored_width(self) -> int | None:
        """Width of one stored vector, ``None`` for an empty collection."""
        got = self.collection.get(limit=1, include=["embeddings"])
        embeddings = got.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return len(embeddings[0])

    def present(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` the collection holds."""
        return set(self.collection.get(ids=ids, include=[])["ids"]) if ids else set()

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        """Upsert the chunks with our vectors, a page at a time (Chroma refuses an upsert larger
        than its ``max_batch_size``, 5,461 rows)."""
        for start in range(0, len(ids), PAGE):
            end = start + PAGE
            self.collection.upsert(
                ids=ids[start:end],
                embeddings=vectors[start:end],
                documents=texts[start:end],
                metadatas=metadatas[start:end],
            )

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        """Pages of ``(id, source)``, filtered on the ``source`` metadata."""
        where = None if source is None else {"source": source}
        offset = 0
        while True:
            got = self.collection.get(where=where, include=["metadatas"], limit=PAGE, offset=offset)
            if not got["ids"]:
                return
            yield [
                (cid, str((meta or {}).get("source", "")))
                for cid, meta in zip(got["ids"], got["metadatas"], strict=True)
            ]
            offset += len(got["ids"])

    def delete(self, ids: list[str]) -> None:
        """Delete by id, a page at a time."""
        for start in range(0, len(ids), PAGE):
            self.collection.delete(ids=ids[start : start + PAGE])


#: The wrapper each framework's stores need, by the top-level package of the store's class.
_WRAPPERS = {
    "langchain": "langchain_qwen_sglang.LangChainStoreTarget(store)",
    "langchain_core": "langchain_qwen_sglang.LangChainStoreTarget(store)",
    "langchain_community": "langchain_qwen_sglang.LangChainStoreTarget(store)",
    "langchain_chroma": "langchain_qwen_sglang.LangChainStoreTarget(store)",
    "llama_index": "llama_index_qwen_sglang.LlamaIndexStoreTarget(store)",
}


def as_target(store: object) -> StoreTarget:
    """``store`` as a `StoreTarget`: itself when it is one, a Chroma collection wrapped in a
    `ChromaTarget`; anything else is a `ConfigurationError` naming the wrapper to use."""
    if isinstance(store, StoreTarget):
        return store
    if isinstance(store, ChromaCollection):
        return ChromaTarget(store)
    kind = type(store)
    wrapper = _WRAPPERS.get(kind.__module__.split(".")[0])
    hint = (
        f": wrap it as store={wrapper}"
        if wrapper
        else " (a LangChain VectorStore: langchain_qwen_sglang.LangChainStoreTarget(store); a LlamaIndex vector "
        "store: llama_index_qwen_sglang.LlamaIndexStoreTarget(store))"
    )
    raise ConfigurationError(f"store must be a Chroma collection or a StoreTarget, not {kind.__name__}{hint}")
