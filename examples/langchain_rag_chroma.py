"""RAG over Chroma with LangChain and Qwen3-Embedding on SGLang (or the local backend).

    python examples/langchain_rag_chroma.py [--llm-base-url http://127.0.0.1:30002/v1] [--model DIR]
        [--rerank-url http://127.0.0.1:30001/v1 [--rerank-candidates 10]]

Starts a managed embedding server, indexes the shipped English/Chinese corpus into a persistent
embedded Chroma through ``QwenSGLangEmbeddings`` and answers with an LCEL chain
(retriever -> prompt -> chat model -> answer with cited sources). With ``--llm-base-url`` any
OpenAI-compatible chat server (for example SGLang serving a chat model) writes the answer;
without it the answer is the best retrieved passage, and the output says so. With
``--rerank-url`` (a Qwen3-Reranker server: ``qwen-sglang serve --task rerank``) the retriever
fetches ``--rerank-candidates`` passages and ``QwenSGLangReranker`` keeps the best 3.

This is what ``qwen-sglang demo`` runs; the chain is in ``qwen_sglang/cli/demo.py`` (``run_demo``).
"""

from __future__ import annotations

import argparse

from qwen_sglang.cli.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description="RAG over Chroma with LangChain and Qwen3-Embedding")
    parser.add_argument("--model", default=None, help="embedding model directory or hub id")
    parser.add_argument("--backend", choices=["auto", "sglang", "local"], default="auto")
    parser.add_argument("--persist-dir", default=None, help="Chroma directory (default: temporary)")
    parser.add_argument("--llm-base-url", default=None, help="OpenAI-compatible chat server")
    parser.add_argument("--llm-model", default="default")
    parser.add_argument("--question", action="append", default=None)
    parser.add_argument("--rerank-url", default=None, help="a Qwen3-Reranker server: rerank the candidates")
    parser.add_argument("--rerank-candidates", type=int, default=10, help="passages retrieved for the reranker")
    args = parser.parse_args()
    run_demo(
        model=args.model,
        backend=args.backend,
        persist_dir=args.persist_dir,
        questions=args.question,
        llm_base_url=args.llm_base_url,
        llm_model=args.llm_model,
        rerank_url=args.rerank_url,
        rerank_candidates=args.rerank_candidates,
    )


if __name__ == "__main__":
    main()
