"""A LlamaIndex vector store as a target of `qwen_sglang.ingest.ingest`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilter, MetadataFilters

from qwen_sglang.ingest import PAGE, StoreTarget

__all__ = ["LlamaIndexStoreTarget"]

logger = logging.getLogger("qwen_sglang.ingest")


class LlamaIndexStoreTarget(StoreTarget):
    """Any LlamaIndex vector store: nodes carry our vectors; ``get_nodes``/``delete_nodes`` with a
    metadata filter find stored and stale chunks where the store implements them (a store that
    does not: reruns re-embed everything, a warning says so).

    LlamaIndex's ``get_nodes`` has no limit or offset: a changed file's nodes are read in one call
    (filtered on its ``source``), and ``prune=True`` reads every node of the store at once (their
    text and metadata). For stores of millions of chunks, prune through Chroma directly, which
    reads pages of `qwen_sglang.ingest.PAGE`.

    Example:
        ```python
        import chromadb
        from llama_index.vector_stores.chroma import ChromaVectorStore

        from llama_index_qwen_sglang import LlamaIndexStoreTarget
        from qwen_sglang import EmbeddingClient
        from qwen_sglang.ingest import ingest

        collection = chromadb.PersistentClient(path="./chroma-li").get_or_create_collection("docs")
        store = LlamaIndexStoreTarget(ChromaVectorStore(chroma_collection=collection))
        report = ingest(["./docs"], client=EmbeddingClient(), store=store)
        ```
    """

    embeds_itself = False

    def __init__(self, store: BasePydanticVectorStore) -> None:
        self.store = store
        self.can_get = True

    @property
    def lists_sources(self) -> bool:
        """Until the store says it cannot look nodes up."""
        return self.can_get

    def stored_width(self) -> int | None:
        """Unknown: the interface does not say."""
        return None

    def present(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` the store holds (``get_nodes``; none where it is not implemented)."""
        if not self.can_get or not ids:  # get_nodes([]) means "all nodes"
            return set()
        try:
            return {n.node_id for n in self.store.get_nodes(node_ids=ids)}
        except NotImplementedError:
            self.can_get = False
            logger.warning("%s cannot look nodes up: reruns re-embed everything", type(self.store).__name__)
            return set()

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        """Text nodes carrying our vectors. Their metadata is left out of their ``EMBED`` content
        (what LlamaIndex embeds, and what `llama_index_qwen_sglang.QwenSGLangRerank` scores): the
        vector is of the text alone, and the file's path has no place in a reranker's prompt."""
        nodes = [
            TextNode(id_=cid, text=text, metadata=meta, embedding=vec, excluded_embed_metadata_keys=list(meta))
            for cid, text, meta, vec in zip(ids, texts, metadatas, vectors.tolist(), strict=True)
        ]
        self.store.add(nodes)

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        """The nodes whose ``source`` metadata is ``source`` (all nodes: ``None``), in one page
        (``get_nodes`` cannot page). The filter is applied here too: a store whose ``get_nodes``
        ignores ``filters`` would otherwise hand other files' chunks to the purge of this one."""
        if not self.can_get:
            raise NotImplementedError
        filters = None if source is None else MetadataFilters(filters=[MetadataFilter(key="source", value=source)])
        nodes = self.store.get_nodes(node_ids=None, filters=filters)
        found = [(n.node_id, str(n.metadata.get("source", ""))) for n in nodes]
        yield [(cid, src) for cid, src in found if source is None or src == source]

    def delete(self, ids: list[str]) -> None:
        """``delete_nodes``, a page at a time."""
        for start in range(0, len(ids), PAGE):
            self.store.delete_nodes(node_ids=ids[start : start + PAGE])
