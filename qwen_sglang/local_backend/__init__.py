"""The local backend: HTTP servers that speak SGLang's API, on CPU.

SGLang's CPU backend needs Intel AMX/AVX-512, so laptops, CI runners and most cloud CPUs cannot
run it. These servers run the same models with PyTorch instead and answer like SGLang: the same
endpoints, request and response shapes, 400 messages and JSON error body, ``/health`` and
``/ready`` readiness (503 until the model is loaded and warmed).

- embeddings (sentence-transformers): `LocalBackendConfig`, `ModelRunner` (``runner.py``: the
  micro-batching model worker), `create_app` (``app.py``: ``/v1/embeddings`` and discovery);
- the reranker (transformers, ``/v1/score`` and ``/v1/rerank``): ``rerank.py``;
- what both put between the network and the model: ``guards.py`` (Host header, API key,
  content type, body size and JSON shape limits, slow clients, SIGTERM, the ready line).

Start one with ``qwen-sglang serve --backend local --model PATH_OR_NAME`` (``--task rerank`` for a
reranker). It binds 127.0.0.1 unless told otherwise. Hostile input is refused before it costs
much: bodies over ``max_request_bytes`` (checked on ``Content-Length``, then while streaming), more
than ``max_request_tokens`` tokens, malformed JSON, lone surrogates, non-JSON content types (a web
page cannot post ``text/plain`` to it) and Host headers other than ``localhost``, an IP address,
the bound host or ``allowed_hosts`` (DNS rebinding) get a 4xx; connections that send no request
within ``header_timeout`` are closed; work for a client that went away is dropped; SIGTERM stops
it within seconds.

Needs the ``local`` extra: ``pip install 'qwen-sglang[local]'``.
"""

from __future__ import annotations

from qwen_sglang.local_backend.app import create_app
from qwen_sglang.local_backend.guards import serve_app
from qwen_sglang.local_backend.runner import LocalBackendConfig, ModelRunner
from qwen_sglang.servers.models_path import check_model_arg, is_hub_id, resolve_model_path

__all__ = [
    "LocalBackendConfig",
    "ModelRunner",
    "check_model_arg",
    "create_app",
    "is_hub_id",
    "resolve_model_path",
    "serve",
]


def serve(config: LocalBackendConfig) -> int:
    """Run the local embedding backend until interrupted. Returns the process exit code.

    ``config.port`` 0 binds a free port (printed, and set in ``config``). Raises `ServerStartError`
    (port taken) and `ModelNotAvailableError` (no such model) before anything is printed.
    """
    check_model_arg(config.model)
    runner = ModelRunner(config)
    return serve_app(config, create_app(config, runner), runner, what="embedding")
