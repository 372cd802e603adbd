"""The LangChain and LlamaIndex rerankers end to end: real servers, a real (embedded) Chroma.

Retrieval runs on the real-semantics embedding model (all-MiniLM-L6-v2, local backend); the
retrieved candidates are reranked by the test reranker (local reranker backend). The reranker's
weights are random, so what is checked is the plumbing: the framework hands the retrieved
documents to the reranker, and gets back the best ``top_n`` of them in the order and with the
scores that the core `RerankClient` gives for the same texts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from langchain_qwen_sglang import QwenSGLangEmbeddings, QwenSGLangReranker
from llama_index_qwen_sglang import QwenSGLangEmbedding, QwenSGLangRerank
from qwen_sglang import InvalidInputError, RerankClient
from qwen_sglang.servers import ManagedServer
from tests.integration.test_llama_index import FACTS, QUESTIONS

K = 4  # candidates retrieved
TOP_N = 2


def expected_ranking(rerank_server: ManagedServer, query: str, texts: list[str]) -> list[tuple[str, float]]:
    results = RerankClient(base_url=rerank_server.base_url).rerank(query, texts, top_n=min(TOP_N, len(texts)))
    return [(texts[r.index], r.score) for r in results]


def close(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    return [t for t, _ in got] == [t for t, _ in want] and all(
        abs(a - b) <= 1e-6 for (_, a), (_, b) in zip(got, want, strict=True)
    )


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_langchain_contextual_compression_retriever_over_chroma(
    minilm_server: ManagedServer, rerank_server: ManagedServer, tmp_path: Path, use_async: bool
) -> None:
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document

    embeddings = QwenSGLangEmbeddings(server=minilm_server, query_instruction=None)
    store = Chroma(collection_name="facts", embedding_function=embeddings, persist_directory=str(tmp_path / "db"))
    store.add_documents([Document(page_content=t, metadata={"key": k}) for k, t in FACTS.items()], ids=list(FACTS))
    base = store.as_retriever(search_kwargs={"k": K})
    reranker = QwenSGLangReranker(server=rerank_server, top_n=TOP_N)
    retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)
    for question in QUESTIONS:
        candidates = base.invoke(question)
        assert len(candidates) == K
        docs = asyncio.run(retriever.ainvoke(question)) if use_async else retriever.invoke(question)
        got = [(d.page_content, d.metadata["relevance_score"]) for d in docs]
        assert close(got, expected_ranking(rerank_server, question, [d.page_content for d in candidates]))
        assert all(d.metadata["key"] in FACTS for d in docs)  # the documents' own metadata kept


def test_langchain_reranker_top_n_and_inputs(rerank_server: ManagedServer) -> None:
    from langchain_core.documents import Document

    docs = [Document(page_content=FACTS["paris"], metadata={"key": "paris"})]
    reranker = QwenSGLangReranker(base_url=rerank_server.base_url, top_n=3)
    out = reranker.compress_documents(docs, "Eiffel Tower")
    assert len(out) == 1 and "relevance_score" in out[0].metadata  # fewer than top_n: all kept
    assert "relevance_score" not in docs[0].metadata  # the input is not changed
    assert reranker.compress_documents([], "Eiffel Tower") == []
    every = QwenSGLangReranker(base_url=rerank_server.base_url, top_n=None)
    many = [Document(page_content=t) for t in FACTS.values()]
    assert len(every.compress_documents(many, "Eiffel Tower")) == len(FACTS)
    with pytest.raises(InvalidInputError, match="query is empty"):
        reranker.compress_documents(docs, " ")
    assert reranker.client.instruction is None
    assert QwenSGLangReranker(base_url=rerank_server.base_url, instruction="Judge").client.instruction == "Judge"
    # an assignment reaches the next call through the same client (a new one each time left the
    # old one's connections open and asked the server again)
    client = reranker.client
    reranker.instruction = "Judge whether the document names a landmark"
    judged = reranker.compress_documents(docs, "Eiffel Tower")
    assert reranker.client is client and client.instruction == "Judge whether the document names a landmark"
    direct = RerankClient(base_url=rerank_server.base_url, instruction=client.instruction)
    assert judged[0].metadata["relevance_score"] == direct.rerank("Eiffel Tower", [FACTS["paris"]])[0].score


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_llama_index_query_engine_over_chroma(
    minilm_server: ManagedServer, rerank_server: ManagedServer, tmp_path: Path, use_async: bool
) -> None:
    import chromadb
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.schema import MetadataMode
    from llama_index.vector_stores.chroma import ChromaVectorStore

    embed_model = QwenSGLangEmbedding(server=minilm_server, query_instruction=None)
    collection = chromadb.PersistentClient(path=str(tmp_path / "chroma")).get_or_create_collection("facts")
    index = VectorStoreIndex.from_documents(
        [Document(text=text, doc_id=key, metadata={"key": key}) for key, text in FACTS.items()],
        storage_context=StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection)),
        embed_model=embed_model,
    )
    rerank = QwenSGLangRerank(server=rerank_server, top_n=TOP_N)
    engine = index.as_query_engine(similarity_top_k=K, node_postprocessors=[rerank], llm=MockLLM())
    retriever = index.as_retriever(similarity_top_k=K)
    for question in QUESTIONS:
        candidates = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in retriever.retrieve(question)]
        response = asyncio.run(engine.aquery(question)) if use_async else engine.query(question)
        got = [(n.node.get_content(metadata_mode=MetadataMode.EMBED), n.score or 0.0) for n in response.source_nodes]
        assert close(got, expected_ranking(rerank_server, question, candidates))


def test_llama_index_rerank_of_ingested_nodes_scores_the_text_that_was_embedded(
    server: ManagedServer, rerank_server: ManagedServer, tmp_path: Path
) -> None:
    """Nodes written by `ingest` carry ``source``, ``chunk`` and ``title`` metadata that their
    embedding never saw: retrieved from the store, the reranker scores their text as embedded
    (it scored "source: /abs/path\\nchunk: 0\\ntitle: …" before each text, the file's path in
    Qwen's prompt); the LLM still sees the metadata."""
    import chromadb
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import MetadataMode
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from llama_index_qwen_sglang import LlamaIndexStoreTarget
    from qwen_sglang import EmbeddingClient
    from qwen_sglang.ingest import ingest

    for key, text in FACTS.items():
        (tmp_path / f"{key}.txt").write_text(text, encoding="utf-8")
    collection = chromadb.PersistentClient(path=str(tmp_path / "db")).get_or_create_collection("facts")
    vector_store = ChromaVectorStore(chroma_collection=collection)
    client = EmbeddingClient(base_url=server.base_url)
    ingest([tmp_path], client=client, store=LlamaIndexStoreTarget(vector_store), show_progress=False)
    index = VectorStoreIndex.from_vector_store(vector_store, embed_model=QwenSGLangEmbedding(server=server))
    rerank = QwenSGLangRerank(server=rerank_server, top_n=TOP_N)
    question = next(iter(QUESTIONS))
    candidates = index.as_retriever(similarity_top_k=K).retrieve(question)
    texts = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in candidates]
    assert set(texts) <= set(FACTS.values())
    assert all(
        n.node.get_content(metadata_mode=MetadataMode.EMBED) == t for n, t in zip(candidates, texts, strict=True)
    )
    assert all("source: " in n.node.get_content(metadata_mode=MetadataMode.LLM) for n in candidates)
    got = [(n.node.get_content(), n.score or 0.0) for n in rerank.postprocess_nodes(candidates, query_str=question)]
    assert close(got, expected_ranking(rerank_server, question, texts))


def test_llama_index_rerank_inputs(rerank_server: ManagedServer) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    rerank = QwenSGLangRerank(base_url=rerank_server.base_url, top_n=5)
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in list(FACTS.values())[:2]]
    out = rerank.postprocess_nodes(nodes, query_str="Eiffel Tower")
    assert len(out) == 2 and all(n.score is not None and 0 <= n.score <= 1 for n in out)
    assert [n.score for n in nodes] == [0.5, 0.5]  # the input nodes keep their scores
    assert rerank.postprocess_nodes([], query_str="Eiffel Tower") == []
    with pytest.raises(InvalidInputError, match="needs the query"):
        rerank.postprocess_nodes(nodes)
    assert QwenSGLangRerank.class_name() == "QwenSGLangRerank"
    client = rerank.client
    rerank.top_n, rerank.instruction = 1, "Judge whether the node names a landmark"
    assert len(rerank.postprocess_nodes(nodes, query_str="Eiffel Tower")) == 1
    assert rerank.client is client and client.instruction == "Judge whether the node names a landmark"
    other = rerank.model_copy(update={"instruction": "Judge"})  # its own client, with the update
    assert other.client is not client and other.client.instruction == "Judge" and client.instruction != "Judge"
