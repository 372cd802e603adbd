"""LangChain integration of qwen-sglang: ``QwenSGLangEmbeddings`` and helpers."""

from langchain_qwen_sglang.embeddings import QwenSGLangEmbeddings
from langchain_qwen_sglang.text_splitter import QwenTokenTextSplitter

__all__ = ["QwenSGLangEmbeddings", "QwenTokenTextSplitter"]
