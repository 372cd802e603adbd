"""The local embedding backend's HTTP application: SGLang's embedding API (`create_app`).

The same endpoints, request and response shapes, 400 messages and JSON error body as SGLang
(``srt/entrypoints/openai/serving_embedding.py``), ``/health`` and ``/ready`` readiness (503 until
the model is loaded and warmed), Matryoshka truncation (truncate, then L2-normalise) and base64.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from qwen_sglang._vectors import normalize_rows
from qwen_sglang._version import __version__
from qwen_sglang.local_backend.guards import (
    HTTPError,
    check_text,
    error_response,
    new_app,
    parse_json,
    read_body,
    too_large,
)
from qwen_sglang.local_backend.runner import Job, LocalBackendConfig, ModelRunner, ShuttingDownError

__all__ = ["create_app"]


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _parse_inputs(raw: Any) -> tuple[list[str | list[int]], bool]:
    """Normalise ``input`` like SGLang: str | list[str] | list[int] | list[list[int]], refused with
    SGLang's messages (``EmbeddingHandler._validate_request``): ``""`` "Input cannot be empty", a
    whitespace-only string "... or whitespace only", an empty id list "Input at index i cannot be empty"."""
    if not raw:
        raise HTTPError("Input cannot be empty")
    if isinstance(raw, str):
        if not raw.strip():
            raise HTTPError("Input cannot be empty or whitespace only")
        check_text(raw, "Input")
        return [raw], True
    if not isinstance(raw, list):
        raise HTTPError(f"Invalid input type: {type(raw).__name__}")
    if _is_ids(raw):
        return [list(raw)], False
    items: list[str | list[int]] = []
    for i, x in enumerate(raw):
        if isinstance(x, str):
            if not x.strip():
                raise HTTPError(f"Input at index {i} cannot be empty or whitespace only")
            check_text(x, f"Input at index {i}")
            items.append(x)
        elif _is_ids(x):
            if not x:
                raise HTTPError(f"Input at index {i} cannot be empty")
            items.append(list(x))
        else:
            raise HTTPError(f"Input at index {i} has an invalid type: {type(x).__name__}")
    odd = next((i for i, x in enumerate(items) if isinstance(x, str) != isinstance(items[0], str)), None)
    if odd is not None:
        texts = isinstance(items[0], str)
        raise HTTPError("All items in input list must be strings" if texts else f"Input at index {odd} must be a list")
    return items, isinstance(items[0], str)


_BOOL = TypeAdapter(bool)


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean field read as SGLang's pydantic models read it (``"false"`` is False); 400 otherwise."""
    if name not in data:
        return default
    try:
        return _BOOL.validate_python(data[name])
    except ValidationError:
        raise HTTPError(f"{name} must be a boolean, got {data[name]!r}") from None


def _encoding_format(data: dict[str, Any]) -> str:
    fmt = data.get("encoding_format", "float")
    if not isinstance(fmt, str) or fmt not in ("float", "base64"):
        raise HTTPError(f"encoding_format must be either 'float' or 'base64', got {fmt!r}")
    return fmt


def _check_priority(priority: Any) -> None:
    """SGLang's request ``priority`` (an integer or null): accepted and checked, not used for
    ordering (this backend serves pending inputs shortest first, and a single query is one short
    input)."""
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise HTTPError(f"priority must be an integer, got {priority!r}")


async def _until_done_or_gone(job: Job, request: Request) -> np.ndarray | None:
    """The job's vectors, or None when the client disconnected first (the job is then dropped)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result: asyncio.Future[np.ndarray] = asyncio.wrap_future(job.future)
    gone: asyncio.Future[None] = asyncio.ensure_future(disconnected())
    waiters: set[asyncio.Future[Any]] = {result, gone}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # server shutdown cancelled this answer
        job.cancelled = True
        raise
    finally:
        gone.cancel()
    if not result.done():
        job.cancelled = True
        return None
    return result.result()


def create_app(config: LocalBackendConfig, runner: ModelRunner | None = None) -> Any:
    """Build the FastAPI application (the model loads in the background once it starts)."""
    runner = runner or ModelRunner(config)
    app = new_app("qwen-sglang local backend", config, runner)

    def not_ready() -> JSONResponse | None:
        if runner.failed is not None:
            return error_response(f"The model failed to load: {runner.failed}", 500, "InternalServerError")
        if not runner.ready.is_set():
            return error_response("The server is still loading the model", 503, "ServiceUnavailableError")
        return None

    async def body_of(request: Request) -> dict[str, Any]:
        return parse_json(await read_body(request, config), config.max_request_tokens + 64)

    @app.get("/v1/models")
    async def models() -> Any:
        name = config.served_model_name or runner.model_path
        entry = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "sglang", "root": name}
        return {"object": "list", "data": [{**entry, "max_model_len": runner.context_length or None}]}

    described: dict[str, Any] = {}

    def info() -> Any:
        if (refusal := not_ready()) is not None:
            return refusal  # before the model is loaded neither its path nor its config is known
        described.update(described or _model_info(config, runner))
        return described

    def server_info() -> dict[str, Any]:
        return _server_info(config, runner)

    async def tokenize(request: Request) -> Any:
        data = await body_of(request)
        return not_ready() or await _tokenize(data, config, runner)

    for path, route in (("/model_info", info), ("/get_model_info", info)):
        app.get(path)(route)
    for path, route in (("/server_info", server_info), ("/get_server_info", server_info)):
        app.get(path)(route)
    for path in ("/v1/tokenize", "/tokenize"):
        app.post(path)(tokenize)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        data = await body_of(request)
        if (refusal := not_ready()) is not None:
            return refusal
        if runner.stopping:
            return error_response("The server is shutting down", 503, "ServiceUnavailableError")
        runner.in_flight += 1  # only the event loop thread changes it
        try:
            vectors, tokens, fmt = await _embed(data, request, config, runner)
        except ShuttingDownError as exc:
            return error_response(str(exc), 503, "ServiceUnavailableError")
        finally:
            runner.in_flight -= 1
        if vectors is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        return _embedding_response(vectors, tokens, fmt, runner.model_path)

    return app


def _model_info(config: LocalBackendConfig, runner: ModelRunner) -> dict[str, Any]:
    """SGLang 0.5.17's ``/model_info`` (model_type and architectures from the model's HF config), the
    native width, and the model's sentence-transformers prompts: what a client needs to know which
    model this is and how its queries are written."""
    hf_config: dict[str, Any] = {}
    for candidate in ("config.json", "0_Transformer/config.json"):
        try:
            loaded = json.loads((Path(runner.model_path) / candidate).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        hf_config = loaded if isinstance(loaded, dict) else {}
        break
    architectures = hf_config.get("architectures")
    return {
        "model_path": runner.model_path,
        "tokenizer_path": runner.model_path,
        "is_generation": False,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": hf_config.get("model_type"),
        "architectures": architectures if isinstance(architectures, list) else None,
        "embedding": {
            "dimension": runner.dim or None,
            "supports_dimensions": config.matryoshka,
            "matryoshka_dimensions": None,
            "normalize": True,
        },
        "sentence_transformers": {
            "prompts": dict(runner.model.prompts),
            "default_prompt_name": runner.model.default_prompt_name,
        },
    }


def _server_info(config: LocalBackendConfig, runner: ModelRunner) -> dict[str, Any]:
    override = {"is_matryoshka": True} if config.matryoshka else {}
    return {
        "version": f"qwen-sglang-local {__version__}",
        "backend": "local",
        "model_path": runner.model_path,
        "served_model_name": config.served_model_name or runner.model_path,
        "is_embedding": True,
        "context_length": runner.context_length or None,
        "json_model_override_args": json.dumps(override),
        "device": config.device,
        "supports_base64": True,
        # Requests may carry SGLang's integer "priority" (checked, then served shortest input
        # first like every request): clients send it on their single queries.
        "enable_priority_scheduling": True,
        "host": config.host,
        "port": config.port,
        # The request shape this backend is fastest with, in the client's setting names: a padded
        # forward pass over length-sorted texts wastes least with a few large requests, and small
        # concurrent ones compete with it for the same cores (docs/benchmarks.md). Clients use it
        # unless their settings say otherwise. Their token budget is an estimate from UTF-8 length:
        # a request it lets over this server's cap (digit-heavy text) gets a 413, which the client
        # answers by splitting.
        "client_defaults": {
            "batch_size": config.max_inputs_per_request,
            "max_batch_tokens": config.max_request_tokens,
            "max_concurrency": 1,
        },
    }


async def _tokenize(data: dict[str, Any], config: LocalBackendConfig, runner: ModelRunner) -> dict[str, Any]:
    """``/v1/tokenize``: ``prompt`` a string or a list of strings (``[]`` gives empty lists, as SGLang)."""
    prompt = data.get("prompt")
    single = isinstance(prompt, str)
    prompts = [prompt] if single else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise HTTPError("prompt must be a string or a list of strings")
    if sum(len(p) for p in prompts) > config.max_request_chars:
        raise too_large(f"Request too large: more than {config.max_request_chars} characters")
    for i, text in enumerate(prompts):
        check_text(text, "prompt" if single else f"prompt at index {i}")
    add_special = _flag(data, "add_special_tokens", True)
    tokens = await run_in_threadpool(runner.tokenize, prompts, add_special)
    counts = [len(t) for t in tokens]
    return {
        "tokens": tokens[0] if single else tokens,
        "count": counts[0] if single else counts,
        "max_model_len": runner.context_length,
    }


def _check_dimensions(dims: Any, config: LocalBackendConfig, runner: ModelRunner) -> None:
    if not config.matryoshka:
        raise HTTPError(
            f"Model '{runner.model_path}' does not support matryoshka representation, "
            "changing output dimensions will lead to poor results."
        )
    if isinstance(dims, bool) or not isinstance(dims, int):
        raise HTTPError("dimensions must be an integer")
    if dims < 1:
        raise HTTPError("Requested dimensions must be greater than 0")
    if dims > runner.dim:
        raise HTTPError(f"Provided dimensions are greater than max embedding dimension: {runner.dim}")


async def _token_ids(
    items: list[str | list[int]], is_text: bool, config: LocalBackendConfig, runner: ModelRunner
) -> list[list[int]]:
    """The inputs as token ids, within the request's token limit and the model's context and vocabulary."""
    if is_text:
        if sum(len(x) for x in items) > config.max_request_chars:
            raise too_large(f"Request too large: more than {config.max_request_chars} characters")
        ids_list = await run_in_threadpool(runner.tokenize, [str(x) for x in items], True)
    else:
        ids_list = [x for x in items if isinstance(x, list)]
    total = sum(len(ids) for ids in ids_list)
    if total > config.max_request_tokens:
        raise too_large(
            f"Request too large: {total} tokens, more than {config.max_request_tokens} in one request; "
            "send fewer inputs per request"
        )
    for ids in ids_list:
        if len(ids) >= runner.context_length:  # SGLang refuses exactly the context length too
            raise HTTPError(
                f"The input ({len(ids)} tokens) is longer than the model's context length "
                f"({runner.context_length} tokens)."
            )
        if not is_text and (min(ids) < 0 or max(ids) >= runner.vocab_size):
            raise HTTPError(f"Token id out of range [0, {runner.vocab_size})")
    return ids_list


async def _embed(
    data: dict[str, Any], request: Request, config: LocalBackendConfig, runner: ModelRunner
) -> tuple[np.ndarray | None, int, str]:
    """Validate an embeddings request, run it; (vectors or None if the client left, tokens, format)."""
    items, is_text = _parse_inputs(data.get("input"))
    if len(items) > config.max_inputs_per_request:
        raise too_large(f"Too many inputs in one request: {len(items)} > {config.max_inputs_per_request}")
    fmt = _encoding_format(data)
    _check_priority(data.get("priority"))
    dims = data.get("dimensions")
    if dims is not None:
        _check_dimensions(dims, config, runner)
    ids_list = await _token_ids(items, is_text, config, runner)
    vectors = await _until_done_or_gone(runner.submit(ids_list), request)
    if vectors is not None and dims is not None and dims < vectors.shape[1]:
        vectors = normalize_rows(vectors[:, :dims].copy())
    return vectors, sum(len(ids) for ids in ids_list), fmt


def _embedding_response(vectors: np.ndarray, n_tokens: int, fmt: str, model_path: str) -> dict[str, Any]:
    data_out: list[dict[str, Any]] = []
    for i, vec in enumerate(vectors):
        emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else vec.tolist()
        data_out.append({"object": "embedding", "embedding": emb, "index": i})
    return {
        "object": "list",
        "data": data_out,
        "model": model_path,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "completion_tokens": 0},
    }
