"""LangChain integration of qwen-sglang: ``QwenSGLangEmbeddings`` and helpers."""

from langchain_qwen_sglang.embeddings import QwenSGLangEmbeddings

__all__ = ["QwenSGLangEmbeddings"]
