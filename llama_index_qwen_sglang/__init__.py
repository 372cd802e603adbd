"""LlamaIndex integration of qwen-sglang: ``QwenSGLangEmbedding``."""

from llama_index_qwen_sglang.base import QwenSGLangEmbedding

__all__ = ["QwenSGLangEmbedding"]
