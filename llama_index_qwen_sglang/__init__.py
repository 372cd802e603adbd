"""LlamaIndex integration of qwen-sglang: ``QwenSGLangEmbedding``, ``QwenSGLangRerank`` and the ingest target."""

from llama_index_qwen_sglang.base import QwenSGLangEmbedding
from llama_index_qwen_sglang.postprocessor import QwenSGLangRerank
from llama_index_qwen_sglang.store_target import LlamaIndexStoreTarget

__all__ = ["LlamaIndexStoreTarget", "QwenSGLangEmbedding", "QwenSGLangRerank"]
