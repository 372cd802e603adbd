"""N managed workers behind ``sglang-router``, as one managed object: `ManagedRouter`.

Each worker is a managed server (`qwen_sglang.servers.SGLangServer` on its own GPU, or a local
backend on CPU) with its own process group and watchdog; the router (``python -m
sglang_router.launch_router``, the ``router`` extra) is one more, `RouterProcess`. `ManagedRouter`
starts the workers together and waits until every one is ready, then starts the router and waits
for its ``/readiness`` (all workers healthy); any failure stops what was started. One `stop`
(or the end of a ``with`` block, ``atexit``, SIGTERM of the owner, and the watchdogs when the
owner is SIGKILLed) leaves no process of the router or of any worker.

Keys as for every managed server: workers that require a key get it as they always do (the local
backends by environment, SGLang in a private config file), and the router, which sends it to them
and passes the clients' bearer header on, gets it through the environment of a small launcher
(`qwen_sglang.cli.router_main`), never its command line; clients use the same key.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from qwen_sglang.errors import ConfigurationError, QwenSGLangError, ServerStartError
from qwen_sglang.servers.keys import SERVER_API_KEY_ENV
from qwen_sglang.servers.lifecycle import ClientFactory, ManagedServer
from qwen_sglang.servers.options import Flag, render_flags

__all__ = ["ManagedRouter", "RouterOptions", "RouterProcess", "router_available"]

logger = logging.getLogger("qwen_sglang.servers")

Policy = Literal["round_robin", "random", "cache_aware", "power_of_two"]


def router_available() -> bool:
    """Whether ``sglang_router`` can be imported by this interpreter (found without importing it)."""
    try:
        return importlib.util.find_spec("sglang_router") is not None
    except (ImportError, ValueError):
        return False


class RouterOptions(BaseModel):
    """The options of `RouterProcess` (``sglang_router.launch_router`` flags)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True)

    policy: Annotated[Policy, Flag("--policy")] = "round_robin"
    """How requests are spread: round_robin (default: embedding requests share no prefix),
    cache_aware (SGLang's default, for prompts that share prefixes), random, power_of_two."""
    log_level: Annotated[str, Flag("--log-level", omit="info")] = "info"
    """The router's log level."""
    model_path: Annotated[str | None, Flag("--model-path")] = None
    """A local model folder the router loads its tokenizer from (its ``tokenizer.json``: the
    router reads no other format and does not start without one), so that its ``/v1/tokenize``
    answers from the start (without it, only once the router has fetched its workers' tokenizer,
    and never for keyed workers). `ManagedRouter` passes its workers' model folder when it holds
    a ``tokenizer.json``."""


class RouterProcess(ManagedServer):
    """``sglang-router`` in front of ``worker_urls``, with the lifecycle of a managed server."""

    backend: ClassVar[str] = "router"
    options_model: ClassVar[type[RouterOptions]] = RouterOptions
    #: sglang-router answers ``/readiness`` 200 once its workers are healthy (``/health``: itself only).
    ready_paths: ClassVar[tuple[str, ...]] = ("/readiness", "/health")
    launcher_args: ClassVar[frozenset[str]] = ManagedServer.launcher_args | {"worker_urls"}
    options: RouterOptions

    def __init__(self, model: str, *, worker_urls: Sequence[str], **kwargs: Any) -> None:
        if isinstance(worker_urls, str) or not worker_urls:
            raise ConfigurationError("worker_urls must be a non-empty list of worker root URLs")
        super().__init__(model, **kwargs)
        self.worker_urls = [str(u).rstrip("/") for u in worker_urls]

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "qwen_sglang.cli.router_main", "--worker-urls", *self.worker_urls]
        argv += ["--host", self.host, "--port", str(self.port)]
        return argv + render_flags(self.options) + self.extra_args

    def _secret_env(self) -> dict[str, str]:
        return {SERVER_API_KEY_ENV: self.api_key.get_secret_value()} if self.api_key is not None else {}

    def validate(self) -> None:
        if not router_available():
            raise ServerStartError("sglang-router is not installed for this Python: pip install 'qwen-sglang[router]'")


class ManagedRouter(ClientFactory):
    """N managed workers and ``sglang-router`` in front of them, started, watched and stopped as one.

    Setup:
        ```bash
        pip install 'qwen-sglang[router]'
        ```

    Instantiate:
        ```python
        from qwen_sglang.servers import ManagedRouter, SGLangServer

        workers = [
            SGLangServer("Qwen/Qwen3-Embedding-4B", env={"CUDA_VISIBLE_DEVICES": str(gpu)}, mem_fraction_static=0.3)
            for gpu in range(2)
        ]
        with ManagedRouter(workers) as router:
            client = router.get_client()          # one URL for all workers
            vectors = client.embed_documents(["hello"])
        ```

    Also `ManagedRouter.for_gpus` (one SGLang worker per GPU) and ``qwen-sglang serve --router
    --workers N``. The handle is the router's (`base_url`, `pid`, `returncode`, `logs_tail`), plus
    `workers`; `wait` returns when the router or any worker exits.
    """

    backend: ClassVar[str] = "router"

    def __init__(
        self,
        workers: Sequence[ManagedServer],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        policy: Policy = "round_robin",
        startup_timeout: float | None = None,
        log_path: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        workers = list(workers)
        if not workers or not all(isinstance(w, ManagedServer) for w in workers):
            raise ConfigurationError("workers must be a non-empty list of managed servers (SGLangServer, ...)")
        if len({w.model for w in workers}) != 1:
            raise ConfigurationError("the workers of one router must serve the same model (and served name)")
        keys = {w.api_key.get_secret_value() if w.api_key is not None else None for w in workers}
        if len(keys) != 1:
            raise ConfigurationError("the workers of one router must share one api_key (or all have none)")
        self.workers = workers
        self._served_context: int | None = None
        self.router = RouterProcess(
            workers[0].model,
            worker_urls=["http://127.0.0.1:0"],  # the workers' URLs once they listen (`start`)
            host=host,
            port=port,
            api_key=workers[0].api_key,
            policy=policy,
            model_path=_tokenizer_folder(workers[0].model_path),
            startup_timeout=startup_timeout,
            log_path=log_path,
            extra_args=extra_args,
        )

    @classmethod
    def for_gpus(cls, model: str | os.PathLike[str], gpus: Sequence[int], **options: Any) -> ManagedRouter:
        """One `qwen_sglang.servers.SGLangServer` per GPU (``CUDA_VISIBLE_DEVICES``), ``options`` for each."""
        from qwen_sglang.servers.sglang import SGLangServer

        env = dict(options.pop("env", None) or {})
        workers = [SGLangServer(model, env={**env, "CUDA_VISIBLE_DEVICES": str(gpu)}, **options) for gpu in gpus]
        return cls(workers)

    # ------------------------------------------------------------------ the handle
    @property
    def base_url(self) -> str:
        return self.router.base_url

    @property
    def root_url(self) -> str:
        return self.router.root_url

    @property
    def model(self) -> str:
        return self.router.model

    @property
    def api_key(self) -> SecretStr | None:
        """The workers' key: the router passes the clients' bearer header on to them."""
        return self.router.api_key

    @property
    def pid(self) -> int | None:
        return self.router.pid

    @property
    def returncode(self) -> int | None:
        """The router's exit status, else the first exited worker's; None while all run."""
        for member in (self.router, *self.workers):
            if member.returncode is not None:
                return member.returncode
        return None

    @property
    def served_context(self) -> int | None:
        """The context its workers serve (the smallest ``max_model_len`` of their ``/v1/models``,
        read at `start`; ``None`` before). The router's own ``/v1/models`` has none, so its clients
        take it from here (`qwen_sglang.settings.ServedContextHandle`) to cut long texts as a
        worker's clients would; clients in other processes need ``max_tokens`` one below it."""
        return self._served_context

    def is_running(self) -> bool:
        return all(member.is_running() for member in (self.router, *self.workers))

    def logs_tail(self, lines: int = 40) -> str:
        return self.router.logs_tail(lines)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the router or any worker exits; its exit status (`TimeoutError` after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for member in (self.router, *self.workers):
                if member.pid is None or member.returncode is not None:
                    return member.wait()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the router and its workers still run after {timeout}s")
            time.sleep(0.2)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ManagedRouter:
        """Start every worker (together), wait until all are ready, then the router; on any
        failure stop everything started and raise `ServerStartError`."""
        try:
            with concurrent.futures.ThreadPoolExecutor(len(self.workers)) as pool:
                for done in [pool.submit(worker.start) for worker in self.workers]:
                    done.result()
            self._served_context = _served_context(self.workers)
            self.router.worker_urls = [worker.root_url for worker in self.workers]
            self.router.start()
        except BaseException:
            self.stop()
            raise
        logger.info("router ready at %s in front of %d workers", self.base_url, len(self.workers))
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the router, then every worker (each its whole process group)."""
        self.router.stop(timeout)
        with concurrent.futures.ThreadPoolExecutor(len(self.workers)) as pool:
            list(pool.map(lambda worker: worker.stop(timeout), self.workers))

    def __enter__(self) -> ManagedRouter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        # before start, reading base_url would fix the router's port (a URL handed out): a repr hands nothing out
        url = self.base_url if self.router.pid is not None else None
        return f"ManagedRouter(model={self.model!r}, base_url={url!r}, workers={len(self.workers)}, {state})"


def _served_context(workers: Sequence[ManagedServer]) -> int | None:
    """The smallest served context the ready workers report (a worker that does not say, or
    cannot be asked, counts for nothing: its clients fall back to the model's context)."""
    lengths = []
    for worker in workers:
        try:
            with worker.get_client(max_retries=0) as client:
                facts = client.discover()
        except QwenSGLangError as exc:
            logger.warning("could not read the served context of worker %s: %s", worker.base_url, exc)
            continue
        if facts.max_model_len is not None:
            lengths.append(facts.max_model_len)
    return min(lengths, default=None)


def _tokenizer_folder(model: str) -> str | None:
    """``model`` when it names a local folder holding a ``tokenizer.json`` (the router reads its
    tokenizer there without network), else ``None``: the router reads no other tokenizer format
    (vocab.json + merges.txt, vocab.txt, sentencepiece) and dies at start-up when given a folder
    without one, while the workers serve such a folder fine."""
    return model if os.path.isfile(os.path.join(model, "tokenizer.json")) else None
