"""RAG over Chroma with LlamaIndex and Qwen3-Embedding on SGLang (or the local backend).

    python examples/llama_index_rag_chroma.py [--persist-dir DIR] [--question "..."]
        [--rerank-url http://127.0.0.1:30001/v1 [--rerank-candidates 10]]

``Settings.embed_model = QwenSGLangEmbedding(...)``, a ``VectorStoreIndex`` over a persistent
``ChromaVectorStore``, and a retriever answering with cited sources. No LLM is configured, so the
answer is the best retrieved passage (extractive, and said so): plug any LlamaIndex LLM into
``index.as_query_engine(llm=...)`` for generated answers. With ``--rerank-url`` (a
Qwen3-Reranker server) the retriever fetches ``--rerank-candidates`` nodes and
``QwenSGLangRerank`` keeps the best 3 (the same postprocessor goes into
``as_query_engine(node_postprocessors=[...])``).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile

import chromadb
from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.vector_stores.chroma import ChromaVectorStore

from llama_index_qwen_sglang import QwenSGLangEmbedding, QwenSGLangRerank
from qwen_sglang.cli.demo import DEMO_QUESTIONS, demo_server


def main() -> None:
    parser = argparse.ArgumentParser(description="RAG over Chroma with LlamaIndex and Qwen3-Embedding")
    parser.add_argument("--model", default=None, help="embedding model directory or hub id")
    parser.add_argument("--backend", choices=["auto", "sglang", "local"], default="auto")
    parser.add_argument("--persist-dir", default=None)
    parser.add_argument("--question", action="append", default=None)
    parser.add_argument("--rerank-url", default=None, help="a Qwen3-Reranker server: rerank the candidates")
    parser.add_argument("--rerank-candidates", type=int, default=10, help="nodes retrieved for the reranker")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        demo = stack.enter_context(demo_server(args.model, args.backend))
        Settings.embed_model = QwenSGLangEmbedding(server=demo.server, query_instruction=demo.instruction)
        directory = args.persist_dir or tempfile.mkdtemp(prefix="li-chroma-")
        if args.persist_dir is None:  # a temporary store: removed at the end
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
        chroma = chromadb.PersistentClient(path=directory)
        collection = chroma.get_or_create_collection("llama_index_demo", metadata={"hnsw:space": "cosine"})
        storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
        documents = [
            Document(text=r["text"], doc_id=r["id"], metadata={"id": r["id"], "title": r["title"]})
            for r in demo.corpus()  # the passages the model reads (English only for the MiniLM fallback)
        ]
        index = VectorStoreIndex.from_documents(documents, storage_context=storage)
        print(f"Indexed {collection.count()} passages into Chroma")

        rerank = QwenSGLangRerank(base_url=args.rerank_url, top_n=3) if args.rerank_url else None
        retriever = index.as_retriever(similarity_top_k=args.rerank_candidates if rerank else 3)
        for question in args.question or [q for q, _ in DEMO_QUESTIONS]:
            nodes = retriever.retrieve(question)
            if rerank is not None:
                nodes = rerank.postprocess_nodes(nodes, query_str=question)
            print(f"\nQ: {question}")
            print(f"A (extractive: the best retrieved passage): {nodes[0].text} [{nodes[0].metadata['id']}]")
            print("Sources: " + ", ".join(f"[{n.metadata['id']}] {n.score:.3f}" for n in nodes))


if __name__ == "__main__":
    main()
