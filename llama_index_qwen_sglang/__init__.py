"""LlamaIndex integration of qwen-sglang: ``QwenSGLangEmbedding`` and the ingest target."""

from llama_index_qwen_sglang.base import QwenSGLangEmbedding
from llama_index_qwen_sglang.store_target import LlamaIndexStoreTarget

__all__ = ["LlamaIndexStoreTarget", "QwenSGLangEmbedding"]
