"""The local backend: an HTTP server that speaks SGLang's embedding API, on CPU.

SGLang's CPU backend needs Intel AMX/AVX-512, so laptops, CI runners and most cloud CPUs cannot
run it. This server runs the same model with sentence-transformers and PyTorch instead and
answers like SGLang: the same endpoints, request and response shapes, 400 messages and JSON error
body, ``/health`` readiness (503 until the model is loaded and warmed), Matryoshka truncation
(truncate, then L2-normalise) and base64 encoding.

Start it with ``qwen-sglang serve --backend local --model PATH_OR_NAME``. It binds 127.0.0.1
unless told otherwise. Concurrent requests are queued to one model worker that merges them into
shared forward passes (micro-batching), so results never mix and the CPU stays busy.

Needs the ``local`` extra: ``pip install 'qwen-sglang[local]'``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from qwen_sglang._version import __version__
from qwen_sglang.errors import ModelNotAvailableError

__all__ = [
    "LocalBackendConfig",
    "ModelRunner",
    "check_model_arg",
    "create_app",
    "is_hub_id",
    "resolve_model_path",
    "serve",
]

logger = logging.getLogger("qwen_sglang.local_backend")

READY_LINE = "The server is fired up and ready to roll!"


@dataclass
class LocalBackendConfig:
    """Options of the local backend (the CLI's ``serve --backend local`` flags)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 30000
    served_model_name: str | None = None
    api_key: str | None = field(default=None, repr=False)
    matryoshka: bool = True
    context_length: int | None = None
    device: str = "cpu"
    max_batch_tokens: int = 16384
    """Most (padded) tokens in one forward pass."""
    batch_window: float = 0.05
    """Seconds to wait for more requests to merge into a forward pass."""
    max_inputs_per_request: int = 4096
    max_request_chars: int = 32_000_000
    log_level: str = "info"


def is_hub_id(model: str) -> bool:
    """Whether ``model`` looks like a Hugging Face repository id (``org/name``), not a path."""
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~")) and "\\" not in model


def check_model_arg(model: str) -> None:
    """Fail fast, before any server starts, for a local path that does not hold a model."""
    if Path(model).expanduser().exists() or not is_hub_id(model):
        resolve_model_path(model)


def resolve_model_path(model: str) -> Path:
    """Return a local directory for ``model``: the path itself, or a hub snapshot.

    Raises `ModelNotAvailableError` with a clear message when the directory does not exist
    and the model cannot be obtained from the Hugging Face hub (offline machines).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelNotAvailableError(f"{path} is a directory but holds no model (no config.json)")
        return path.resolve()
    if not is_hub_id(model):
        raise ModelNotAvailableError(f"model directory {model!r} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with the local extra
        raise ModelNotAvailableError(f"{model!r} is not a local directory and huggingface_hub is missing") from exc
    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        logger.debug("%s is not in the local hub cache (%s); trying a download", model, exc)
    try:
        return Path(snapshot_download(model, etag_timeout=10))
    except Exception as exc:
        raise ModelNotAvailableError(
            f"model {model!r} is not in the local Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Pass a local "
            "model directory, or download it where a model hub is reachable."
        ) from None


class ModelRunner:
    """Loads the model and runs queued embedding work in one worker thread (micro-batching)."""

    def __init__(self, config: LocalBackendConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.model_path: str = config.model
        self.dim = 0
        self.context_length = 0
        self.vocab_size = 0
        self._queue: queue.Queue[tuple[list[list[int]], Future[np.ndarray]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="qwen-sglang-model", daemon=True)
        self.forward_passes = 0
        self.in_flight = 0  # embedding requests received and not yet answered

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    # ------------------------------------------------------------------ model
    def _load(self) -> None:
        path = resolve_model_path(self.config.model)
        self.model_path = str(path)
        logger.info("loading %s on %s", path, self.config.device)
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.model = SentenceTransformer(str(path), device=self.config.device)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelNotAvailableError(f"{path} does not produce sentence embeddings (no pooling module)")
        self.dim = int(dim)
        hf_config = getattr(self.model[0], "auto_model", None)
        hf_config = getattr(hf_config, "config", None)
        ctx = self.config.context_length or getattr(hf_config, "max_position_embeddings", None)
        self.context_length = int(ctx or self.model.max_seq_length or 512)
        self.vocab_size = int(getattr(hf_config, "vocab_size", None) or len(self.tokenizer))
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        self.embed_ids([self.tokenize(["warm up"], True)[0]])  # first forward pass
        logger.info("model ready: %d-d, context %d tokens", self.dim, self.context_length)

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        enc = self.tokenizer(texts, add_special_tokens=add_special_tokens, truncation=False, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    def embed_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Embed token-id lists (sorted by length into forward passes of bounded size)."""
        torch = self._torch
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        start = 0
        budget = self.config.max_batch_tokens
        while start < len(order):
            end = start + 1
            while end < len(order) and len(batch[order[end]]) * (end - start + 1) <= budget:
                end += 1
            chunk = [batch[i] for i in order[start:end]]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                lo = width - len(ids) if self.left_pad else 0
                input_ids[row, lo : lo + len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, lo : lo + len(ids)] = 1
            with torch.inference_mode():
                features = self.model({"input_ids": input_ids, "attention_mask": mask})
                emb = features["sentence_embedding"].float()
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out[order[start:end]] = emb.cpu().numpy()
            self.forward_passes += 1
            start = end
        return out

    # ------------------------------------------------------------------ worker
    def submit(self, batch: list[list[int]]) -> Future[np.ndarray]:
        fut: Future[np.ndarray] = Future()
        self._queue.put((batch, fut))
        return fut

    def _main(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # reported by /health and the serve command
            self.failed = exc
            logger.error("could not load the model: %s", exc)
            self.ready.set()
            return
        self.ready.set()
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            tokens = sum(len(ids) for ids in job[0])
            # Merge what is waiting into the same forward passes (sorted together, texts need far
            # less padding than apart). Requests already received but still being tokenised are
            # waited for, up to batch_window; a lone client never waits.
            deadline = time.monotonic() + self.config.batch_window
            while tokens < self.config.max_batch_tokens * 4:
                expecting = self.in_flight > len(jobs)
                try:
                    wait = max(0.0, deadline - time.monotonic()) if expecting else 0.0
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                tokens += sum(len(ids) for ids in nxt[0])
            merged = [ids for batch, _ in jobs for ids in batch]
            try:
                vectors = self.embed_ids(merged)
            except BaseException as exc:
                for _, fut in jobs:
                    fut.set_exception(exc)
                continue
            offset = 0
            for batch, fut in jobs:
                fut.set_result(vectors[offset : offset + len(batch)])
                offset += len(batch)


class _BadRequestError(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _parse_inputs(raw: Any) -> tuple[list[str | list[int]], bool]:
    """Normalise ``input`` like SGLang: str | list[str] | list[int] | list[list[int]]."""
    if raw is None:
        raise _BadRequestError("Input cannot be empty")
    if isinstance(raw, str):
        if not raw.strip():
            raise _BadRequestError("Input cannot be empty")
        return [raw], True
    if not isinstance(raw, list):
        raise _BadRequestError(f"Invalid input type: {type(raw).__name__}")
    if not raw:
        raise _BadRequestError("Input cannot be empty")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return [list(raw)], False
    items: list[str | list[int]] = []
    for i, x in enumerate(raw):
        if isinstance(x, str):
            if not x.strip():
                raise _BadRequestError(f"Input at index {i} cannot be empty or whitespace only")
            items.append(x)
        elif isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x):
            if not x:
                raise _BadRequestError(f"Input at index {i} cannot be empty or whitespace only")
            items.append(list(x))
        else:
            raise _BadRequestError(f"Input at index {i} has an invalid type: {type(x).__name__}")
    kinds = {isinstance(x, str) for x in items}
    if len(kinds) > 1:
        raise _BadRequestError("Input cannot mix text and token ids")
    return items, isinstance(items[0], str)


def create_app(config: LocalBackendConfig, runner: ModelRunner | None = None) -> Any:
    """Build the FastAPI application (the model loads in the background once it starts)."""
    runner = runner or ModelRunner(config)
    served = config.served_model_name

    def error(message: str, status: int = 400, kind: str = "BadRequestError", **headers: str) -> Any:
        body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
        return JSONResponse(body, status_code=status, headers=headers or None)

    def not_ready() -> Any:
        if runner.failed is not None:
            return error(f"The model failed to load: {runner.failed}", 500, "InternalServerError")
        return error("The server is still loading the model", 503, "ServiceUnavailableError", **{"Retry-After": "1"})

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="qwen-sglang local backend", version=__version__, lifespan=lifespan)
    app.state.runner = runner

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        needs_key = bool(config.api_key) and not request.url.path.startswith("/health")
        if needs_key and request.headers.get("authorization", "") != f"Bearer {config.api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return await call_next(request)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > config.max_request_chars * 4 + 1024:
            raise _BadRequestError("Request body too large", 413, "RequestTooLargeError")
        try:
            data = json.loads(raw)
        except ValueError:
            raise _BadRequestError("Request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _BadRequestError("Request body must be a JSON object")
        return data

    def model_name() -> str:
        return served or runner.model_path

    @app.exception_handler(_BadRequestError)
    async def bad_request(request: Request, exc: _BadRequestError) -> Any:
        return error(str(exc), exc.status, exc.kind)

    @app.get("/health")
    async def health() -> Any:
        ok = runner.ready.is_set() and runner.failed is None
        return Response(status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models() -> Any:
        entry = {
            "id": model_name(),
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": model_name(),
            "max_model_len": runner.context_length or None,
        }
        return {"object": "list", "data": [entry]}

    def info() -> dict[str, Any]:
        return {
            "model_path": runner.model_path,
            "tokenizer_path": runner.model_path,
            "is_generation": False,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "embedding": {
                "dimension": runner.dim or None,
                "supports_dimensions": config.matryoshka,
                "matryoshka_dimensions": None,
                "normalize": True,
            },
        }

    app.get("/model_info")(info)
    app.get("/get_model_info")(info)

    def server_info() -> dict[str, Any]:
        override = {"is_matryoshka": True} if config.matryoshka else {}
        return {
            "version": f"qwen-sglang-local {__version__}",
            "backend": "local",
            "model_path": runner.model_path,
            "served_model_name": model_name(),
            "is_embedding": True,
            "context_length": runner.context_length or None,
            "json_model_override_args": json.dumps(override),
            "device": config.device,
            "supports_base64": True,
            "host": config.host,
            "port": config.port,
        }

    app.get("/server_info")(server_info)
    app.get("/get_server_info")(server_info)

    async def tokenize(request: Request) -> Any:
        data = await body_of(request)
        if not runner.ready.is_set() or runner.failed is not None:
            return not_ready()
        prompt = data.get("prompt")
        single = isinstance(prompt, str)
        prompts = [prompt] if single else prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise _BadRequestError("prompt must be a string or a list of strings")
        add_special = bool(data.get("add_special_tokens", True))
        tokens = await run_in_threadpool(runner.tokenize, prompts, add_special)
        counts = [len(t) for t in tokens]
        return {
            "tokens": tokens[0] if single else tokens,
            "count": counts[0] if single else counts,
            "max_model_len": runner.context_length,
        }

    app.post("/v1/tokenize")(tokenize)
    app.post("/tokenize")(tokenize)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        data = await body_of(request)
        if not runner.ready.is_set() or runner.failed is not None:
            return not_ready()
        runner.in_flight += 1  # only the event loop thread changes it
        try:
            return await embed_request(data)
        finally:
            runner.in_flight -= 1

    async def embed_request(data: dict[str, Any]) -> Any:
        items, is_text = _parse_inputs(data.get("input"))
        if len(items) > config.max_inputs_per_request:
            raise _BadRequestError(
                f"Too many inputs in one request: {len(items)} > {config.max_inputs_per_request}",
                413,
                "RequestTooLargeError",
            )
        if is_text and sum(len(x) for x in items) > config.max_request_chars:
            raise _BadRequestError(
                f"Request too large: more than {config.max_request_chars} characters",
                413,
                "RequestTooLargeError",
            )
        fmt = data.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _BadRequestError(f"Unsupported encoding_format {fmt!r}: use 'float' or 'base64'")
        dims = data.get("dimensions")
        if dims is not None:
            if not config.matryoshka:
                raise _BadRequestError(
                    f"Model '{runner.model_path}' does not support matryoshka representation, "
                    "changing output dimensions will lead to poor results."
                )
            if isinstance(dims, bool) or not isinstance(dims, int):
                raise _BadRequestError("dimensions must be an integer")
            if dims < 1:
                raise _BadRequestError("Requested dimensions must be greater than 0")
            if dims > runner.dim:
                raise _BadRequestError(f"Provided dimensions are greater than max embedding dimension: {runner.dim}")
        if is_text:
            ids_list = await run_in_threadpool(runner.tokenize, [str(x) for x in items], True)
        else:
            ids_list = [x for x in items if isinstance(x, list)]
            for ids in ids_list:
                if min(ids) < 0 or max(ids) >= runner.vocab_size:
                    raise _BadRequestError(f"Token id out of range [0, {runner.vocab_size})")
        for ids in ids_list:
            if len(ids) > runner.context_length:
                raise _BadRequestError(
                    f"The input ({len(ids)} tokens) is longer than the model's context length "
                    f"({runner.context_length} tokens)."
                )
        future = runner.submit(ids_list)
        vectors = await asyncio.wrap_future(future)
        if dims is not None and dims < vectors.shape[1]:
            vectors = vectors[:, :dims].copy()
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        data_out: list[dict[str, Any]] = []
        for i, vec in enumerate(vectors):
            emb: Any = (
                base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else vec.tolist()
            )
            data_out.append({"object": "embedding", "embedding": emb, "index": i})
        n_tokens = sum(len(ids) for ids in ids_list)
        return {
            "object": "list",
            "data": data_out,
            "model": runner.model_path,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "completion_tokens": 0},
        }

    return app


def serve(config: LocalBackendConfig) -> int:
    """Run the local backend until interrupted. Returns the process exit code."""
    import uvicorn

    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logger.warning(
            "binding %s without --api-key: anyone who can reach this port can use the server",
            config.host,
        )
    check_model_arg(config.model)
    runner = ModelRunner(config)
    app = create_app(config, runner)
    server = uvicorn.Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False)
    )

    def watch() -> None:
        runner.ready.wait()
        if runner.failed is not None:
            server.should_exit = True
        else:
            print(READY_LINE, flush=True)

    threading.Thread(target=watch, name="qwen-sglang-ready", daemon=True).start()
    server.run()
    if runner.failed is not None:
        print(f"error: {runner.failed}", flush=True)
        return 1
    return 0 if server.started else 1
