"""LangChain integration of qwen-sglang: ``QwenSGLangEmbeddings``, ``QwenSGLangReranker``, the ingest target
and helpers."""

from langchain_qwen_sglang.embeddings import QwenSGLangEmbeddings
from langchain_qwen_sglang.reranker import QwenSGLangReranker
from langchain_qwen_sglang.store_target import LangChainStoreTarget
from langchain_qwen_sglang.text_splitter import QwenTokenTextSplitter

__all__ = ["LangChainStoreTarget", "QwenSGLangEmbeddings", "QwenSGLangReranker", "QwenTokenTextSplitter"]
