"""A retriever exposed as an agent tool, in LangChain and in LlamaIndex.

    python examples/agent_retrieval_tool.py [--question "..."] [--rerank-url http://127.0.0.1:30001/v1]

An agent decides to call a tool by name with a query string; here the script makes that call
itself, exactly as an agent would, and prints what the tool returns (the passages an LLM would
read). Hand the same tool objects to any tool-calling agent (LangChain ``create_agent``,
LlamaIndex ``FunctionAgent``) to let a model decide. With ``--rerank-url`` (a Qwen3-Reranker
server) each tool retrieves 10 candidates and returns the 2 the reranker ranks best
(LangChain: ``ContextualCompressionRetriever`` from ``langchain-classic``; LlamaIndex: the
tool's ``node_postprocessors``).
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_core.tools import create_retriever_tool
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.tools import RetrieverTool

from langchain_qwen_sglang import QwenSGLangEmbeddings, QwenSGLangReranker
from llama_index_qwen_sglang import QwenSGLangEmbedding, QwenSGLangRerank
from qwen_sglang.cli.demo import demo_server

DESCRIPTION = "Search a small encyclopedia (English and Chinese) for passages about a topic."


def main() -> None:
    parser = argparse.ArgumentParser(description="A retriever as an agent tool, in both frameworks")
    parser.add_argument("--model", default=None, help="embedding model directory or hub id")
    parser.add_argument("--backend", choices=["auto", "sglang", "local"], default="auto")
    parser.add_argument("--question", default="How do bees tell each other where flowers are?")
    parser.add_argument("--rerank-url", default=None, help="a Qwen3-Reranker server: rerank 10 candidates")
    args = parser.parse_args()
    k = 10 if args.rerank_url else 2

    with demo_server(args.model, args.backend) as demo:
        corpus = demo.corpus()  # the passages the model reads (English only for the MiniLM fallback)
        # LangChain: a vector-store retriever wrapped by create_retriever_tool
        embeddings = QwenSGLangEmbeddings(server=demo.server, query_instruction=demo.instruction)
        store = InMemoryVectorStore(embeddings)
        store.add_texts([r["text"] for r in corpus], metadatas=[{"id": r["id"]} for r in corpus])
        retriever: Any = store.as_retriever(search_kwargs={"k": k})
        if args.rerank_url:
            from langchain_classic.retrievers import ContextualCompressionRetriever

            reranker = QwenSGLangReranker(base_url=args.rerank_url, top_n=2)
            retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=retriever)
        lc_tool = create_retriever_tool(retriever, "search_corpus", DESCRIPTION)
        print(f"LangChain tool {lc_tool.name!r} called with {args.question!r}:")
        print(lc_tool.invoke({"query": args.question}))

        # LlamaIndex: a VectorStoreIndex retriever wrapped by RetrieverTool
        embed_model = QwenSGLangEmbedding(server=demo.server, query_instruction=demo.instruction)
        index = VectorStoreIndex.from_documents(
            [Document(text=r["text"], metadata={"id": r["id"]}) for r in corpus], embed_model=embed_model
        )
        postprocessors: list[Any] | None = None
        if args.rerank_url:
            postprocessors = [QwenSGLangRerank(base_url=args.rerank_url, top_n=2)]
        li_tool = RetrieverTool.from_defaults(
            retriever=index.as_retriever(similarity_top_k=k),
            name="search_corpus",
            description=DESCRIPTION,
            node_postprocessors=postprocessors,
        )
        output = li_tool.call(args.question)
        print(f"\nLlamaIndex tool {li_tool.metadata.name!r} called with {args.question!r}:")
        print(output.content)


if __name__ == "__main__":
    main()
