"""qwen-sglang: Qwen3-Embedding served by SGLang, for LangChain, LlamaIndex and plain Python.

The core needs no framework: `EmbeddingClient` talks to any SGLang (or local backend)
embedding server, `RerankClient` to a Qwen3-Reranker server; `QwenSGLangSettings` holds the
settings both framework adapters share.
"""

from qwen_sglang._version import __version__
from qwen_sglang.client import EmbeddingClient, EmbeddingResult, ServerFacts
from qwen_sglang.errors import (
    AllEndpointsDownError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InputTypeError,
    InternalServerError,
    InvalidInputError,
    MalformedResponseError,
    ModelMismatchError,
    ModelNotAvailableError,
    NotFoundError,
    QwenSGLangError,
    RateLimitError,
    RequestTooLargeError,
    ServerStartError,
)
from qwen_sglang.instructions import DEFAULT_TASK, TASKS, format_query
from qwen_sglang.presets import PRESETS, ModelPreset, find_preset
from qwen_sglang.rerank import RerankClient, RerankResult
from qwen_sglang.servers import LocalEmbeddingServer, ManagedServer, SGLangServer, launch_server
from qwen_sglang.settings import QwenSGLangSettings

__all__ = [
    "APIConnectionError",
    "AllEndpointsDownError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "DEFAULT_TASK",
    "EmbeddingClient",
    "EmbeddingResult",
    "InputTypeError",
    "InternalServerError",
    "InvalidInputError",
    "LocalEmbeddingServer",
    "MalformedResponseError",
    "ManagedServer",
    "ModelMismatchError",
    "ModelNotAvailableError",
    "ModelPreset",
    "NotFoundError",
    "PRESETS",
    "QwenSGLangError",
    "QwenSGLangSettings",
    "RateLimitError",
    "RequestTooLargeError",
    "RerankClient",
    "RerankResult",
    "SGLangServer",
    "ServerFacts",
    "ServerStartError",
    "TASKS",
    "__version__",
    "find_preset",
    "format_query",
    "launch_server",
]
