"""LlamaIndex end to end: VectorStoreIndex over a real (embedded) Chroma, real server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llama_index_qwen_sglang import QwenSGLangEmbedding
from qwen_sglang.servers import ManagedServer
from tests.conftest import TOL

FACTS = {
    "paris": "Paris is the capital of France and home to the Eiffel Tower.",
    "photosynthesis": "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "python": "Python is a programming language known for its readable syntax and large standard library.",
    "everest": "Mount Everest, in the Himalayas, is the highest mountain above sea level.",
    "coffee": "Coffee is brewed from roasted beans and contains caffeine, a stimulant.",
    "moon": "The Moon orbits the Earth roughly every 27 days and causes the ocean tides.",
}
QUESTIONS = {
    "Which city has the Eiffel Tower?": "paris",
    "How do plants make sugar from light?": "photosynthesis",
    "What is the tallest mountain on Earth?": "everest",
    "What causes tides in the ocean?": "moon",
}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_vector_store_index_over_chroma_answers_from_the_right_node(
    minilm_server: ManagedServer, tmp_path: Path, use_async: bool
) -> None:
    import chromadb
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    embed_model = QwenSGLangEmbedding(server=minilm_server, query_instruction=None, batch_size=2, max_concurrency=3)
    assert embed_model.model_name == "all-MiniLM-L6-v2"
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    collection = client.get_or_create_collection("facts")
    store = ChromaVectorStore(chroma_collection=collection)
    docs = [Document(text=text, doc_id=key, metadata={"key": key}) for key, text in FACTS.items()]
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
        use_async=use_async,
    )
    assert collection.count() == len(FACTS)
    retriever = index.as_retriever(similarity_top_k=1)
    for question, key in QUESTIONS.items():
        nodes = asyncio.run(retriever.aretrieve(question)) if use_async else retriever.retrieve(question)
        assert nodes[0].metadata["key"] == key, (question, nodes[0].text)


def test_batch_and_single_paths_agree_with_the_core(server: ManagedServer) -> None:
    emb = QwenSGLangEmbedding(base_url=server.base_url, model="Qwen3-Embedding-test", embed_batch_size=3, batch_size=2)
    texts = [f"node {i}" for i in range(7)]
    batch = np.array(emb.get_text_embedding_batch(texts))
    core = np.array(emb.client.embed_documents(texts))
    np.testing.assert_allclose(batch, core, atol=TOL)
    np.testing.assert_allclose(emb.get_text_embedding(texts[0]), core[0], atol=TOL)
    q = np.array(emb.get_query_embedding("a question"))
    np.testing.assert_allclose(q, emb.client.embed_query("a question"), atol=TOL)
    aq = np.array(asyncio.run(emb.aget_query_embedding("a question")))
    np.testing.assert_allclose(aq, q, atol=TOL)


def test_api_key_never_reaches_llama_index_events(qwen_model_dir: Path) -> None:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent

    from tests.conftest import make_server

    seen: list[str] = []

    class Catch(BaseEventHandler):
        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            seen.append(repr(event) + str(event.model_dump()))

    dispatcher = get_dispatcher()
    handler = Catch()
    dispatcher.add_event_handler(handler)
    try:
        with make_server(qwen_model_dir, api_key="sk-li-secret-777") as srv:
            emb = QwenSGLangEmbedding(server=srv)
            emb.get_text_embedding_batch(["a", "b"])
            emb.get_query_embedding("q")
    finally:
        dispatcher.event_handlers.remove(handler)
    assert seen, "no events were emitted"
    assert not any("sk-li-secret-777" in s for s in seen)
