"""Managed embedding servers: start SGLang (or the local backend) from Python, safely.

One lifecycle serves both backends (`ManagedServer`): a free port when none is given, the
child started with ``sys.executable`` in its own process group and no shell, its output in a log
file whose tail is attached to every start error, readiness only when ``/health`` answers 200
(never ``/v1/models``, which answers before warm-up ends), a liveness check on every poll, and a
stop that sends SIGTERM to the whole group, waits, then SIGKILLs. Context manager and an
``atexit`` fallback make sure no server outlives an exception or Ctrl-C.

Example::

    from qwen_sglang import SGLangServer
    from langchain_qwen_sglang import QwenSGLangEmbeddings

    with SGLangServer("Qwen/Qwen3-Embedding-4B", mem_fraction_static=0.3) as server:
        embeddings = QwenSGLangEmbeddings(server=server)
        vectors = embeddings.embed_documents(["hello"])
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from qwen_sglang.errors import ConfigurationError, ServerStartError

__all__ = [
    "LocalEmbeddingServer",
    "ManagedServer",
    "SGLangServer",
    "MAX_SGLANG_PORT",
    "WRONG_FLAGS",
    "choose_backend",
    "cuda_visible",
    "free_port",
    "launch_server",
    "sglang_available",
]

logger = logging.getLogger("qwen_sglang.server")

#: Flags copied from blog posts that SGLang does not have, with what to use instead.
WRONG_FLAGS: dict[str, str] = {
    "--enable-flashinfer": "it never existed; argparse prefix matching makes it fail or silently "
    "enable --enable-flashinfer-allreduce-fusion. Use attention_backend='flashinfer' "
    "(--attention-backend flashinfer|fa3|triton)",
    "--max-num-batched-tokens": "it is a vLLM flag; SGLang exits with 'unrecognized arguments'. "
    "Use max_prefill_tokens or chunked_prefill_size",
    "--chat-template": "an embedding server needs no chat template, and passing "
    "tokenizer_config.json crashes start-up (KeyError 'sep_style')",
    "--tp": "use tp_size (--tp-size); --tp only works through argparse prefix matching",
}

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


#: SGLang derives a gRPC port as ``port + 10000`` and refuses to start when that exceeds 65535
#: (seen with 0.5.15: "SGLANG_GRPC_PORT (67049) must be between 1 and 65535").
MAX_SGLANG_PORT = 55535


def free_port(host: str = "127.0.0.1", *, max_port: int = 65535) -> int:
    """A TCP port that is free on ``host`` right now (and not above ``max_port``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port <= max_port:
            return port
    for port in range(20000, max_port):  # pragma: no cover - the OS kept giving high ports
        if not _port_in_use(host, port):
            return port
    raise ServerStartError(f"no free port at or below {max_port} on {host}")  # pragma: no cover


def _port_in_use(host: str, port: int) -> bool:
    """Whether a server could not bind ``port``. SO_REUSEADDR as uvicorn and SGLang set it, so a
    port in TIME_WAIT after a stopped server counts as free while a listening one does not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def sglang_available() -> bool:
    """Whether the ``sglang`` package can be imported by this interpreter."""
    return importlib.util.find_spec("sglang") is not None


def cuda_visible() -> bool:
    """Whether a CUDA GPU is visible (``nvidia-smi -L`` lists one), without importing torch."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def _diagnose(log: str) -> str | None:
    """Recognise common start failures in a server log (``qwen_sglang.probe.LOG_SIGNATURES``)."""
    from qwen_sglang.probe import diagnose_log

    found = diagnose_log(log)
    if not found:
        return None
    what = found[0].value.split("\n", 1)[0]
    return f"{what}: {found[0].fix}"


def _pump_output(stream: Any, log_file: Any, secrets: list[bytes], ring: collections.deque[str]) -> None:
    """Copy a child's output to its log file and a ring buffer, line by line, masking secrets."""
    try:
        for line in iter(stream.readline, b""):
            for secret in secrets:
                line = line.replace(secret, b"***")
            log_file.write(line)
            log_file.flush()
            ring.append(line.decode("utf-8", "replace").rstrip("\n"))
    except (OSError, ValueError):  # the log file was closed under us
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()


_RUNNING: weakref.WeakSet[ManagedServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - runs at interpreter exit
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


class ManagedServer:
    """A server process owned by this Python process. Subclasses provide `command`.

    Attributes: `base_url`, `pid`, `log_path`, `logs_tail`,
    `is_running`. Use as a context manager, or call `start` and `stop`.
    """

    backend: str = "?"
    #: Client settings that suit this backend better than the package defaults; a client made
    #: with ``server=`` uses them unless they are given explicitly.
    client_defaults: Mapping[str, Any] = {}

    def __init__(
        self,
        model: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        api_key: str | SecretStr | None = None,
        served_model_name: str | None = None,
        startup_timeout: float = 600.0,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not isinstance(model, str | os.PathLike) or not str(model).strip():
            raise ConfigurationError("model must be a model directory or a model id")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise ConfigurationError(f"port must be an int in 1..65535, got {port!r}")
        if startup_timeout <= 0:
            raise ConfigurationError("startup_timeout must be positive")
        if isinstance(extra_args, str):
            raise ConfigurationError("extra_args must be a sequence of arguments, not one string")
        for arg in extra_args:
            flag = str(arg).split("=", 1)[0]
            if flag in WRONG_FLAGS:
                raise ConfigurationError(f"{flag}: {WRONG_FLAGS[flag]}")
        self.model_path = str(model)
        self.host = host
        self._port = port
        self.api_key: SecretStr | None = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.served_model_name = served_model_name
        self.startup_timeout = startup_timeout
        self.env = dict(env) if env is not None else None
        self.extra_args = [str(a) for a in extra_args]
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._pump: threading.Thread | None = None
        self._ring: collections.deque[str] = collections.deque(maxlen=500)  # last log lines
        self._lock = threading.Lock()
        if host not in _LOCAL_HOSTS and self.api_key is None:
            logger.warning("binding %s without an api_key: anyone who can reach it can use the server", host)

    # ------------------------------------------------------------------ what subclasses define
    def command(self) -> list[str]:
        """The child's argv (no shell is ever involved)."""
        raise NotImplementedError

    def _validate(self) -> None:
        """Checks that need no process (model directory, options)."""

    # ------------------------------------------------------------------ properties
    #: Highest port this backend can use (SGLang needs room for its derived ports).
    max_port = 65535

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port(self.host, max_port=self.max_port)
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, what the embeddings classes need."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")]

    @property
    def model(self) -> str:
        """The model name clients should send (the served name, else the path)."""
        return self.served_model_name or self.model_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log (from memory; from the file past 500)."""
        if self._ring and lines <= len(self._ring):
            return "\n".join(list(self._ring)[-lines:])
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])

    def _secrets(self) -> list[bytes]:
        return [self.api_key.get_secret_value().encode()] if self.api_key is not None else []

    def display_command(self) -> str:
        """The command as a copy-pasteable line, with the API key masked."""
        argv = self.command()
        shown = ["***" if i > 0 and argv[i - 1] == "--api-key" else a for i, a in enumerate(argv)]
        import shlex

        return shlex.join(shown)

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True) -> ManagedServer:
        """Start the server; with ``wait`` block until ``/health`` answers 200."""
        with self._lock:
            if self.is_running():
                return self
            self._validate()
            if _port_in_use(self.host, self.port):
                raise ServerStartError(f"port {self.port} on {self.host} is already in use")
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"qwen-sglang-{self.backend}-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
            argv = self.command()
            env = dict(os.environ)
            if self.env:
                env.update(self.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            self._log_file = self._log_path.open("ab")
            logger.info("starting %s server: %s (log: %s)", self.backend, self.display_command(), self._log_path)
            try:
                self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                self._log_file.close()
                raise ServerStartError(f"could not start {argv[0]}: {exc}") from exc
            # SGLang prints its server arguments, API key included: the output reaches the log
            # file only through this pump, which masks the key.
            self._pump = threading.Thread(
                target=_pump_output,
                args=(self._proc.stdout, self._log_file, self._secrets(), self._ring),
                name=f"qwen-sglang-{self.backend}-log",
                daemon=True,
            )
            self._pump.start()
            _RUNNING.add(self)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll ``/health`` until 200, checking on every loop that the process is alive."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        url = self.root_url + "/health"
        delay = 0.1
        with httpx.Client(timeout=5.0) as client:
            while True:
                proc = self._proc
                if proc is None:
                    raise ServerStartError("the server was not started")
                code = proc.poll()
                if code is not None:
                    if self._pump is not None:
                        self._pump.join(timeout=5)  # let the last lines reach the log
                    tail = self.logs_tail()
                    why = _diagnose(tail)
                    raise ServerStartError(
                        f"the {self.backend} server exited with code {code} during start-up"
                        + (f": {why}" if why else ""),
                        returncode=code,
                        log_tail=tail,
                        log_path=str(self._log_path),
                    )
                try:
                    if client.get(url).status_code == 200:
                        logger.info("%s server ready at %s (pid %s)", self.backend, self.base_url, self.pid)
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    tail = self.logs_tail()
                    raise ServerStartError(
                        f"the {self.backend} server did not become ready within "
                        f"{self.startup_timeout:.0f}s" + (f": {_diagnose(tail)}" if _diagnose(tail) else ""),
                        log_tail=tail,
                        log_path=str(self._log_path),
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group, wait up to ``timeout`` s, then SIGKILL it."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            if proc.poll() is None or pgid is not None:
                self._signal_group(proc, pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("%s server did not stop in %ss; killing it", self.backend, timeout)
                self._signal_group(proc, pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            if self._pump is not None:
                self._pump.join(timeout=10)
                self._pump = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            self._proc = None
            _RUNNING.discard(self)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], pgid: int | None, sig: signal.Signals) -> None:
        try:
            if pgid is not None:
                os.killpg(pgid, sig)
            elif proc.poll() is None:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running() else "stopped"
        return f"{type(self).__name__}(model={self.model_path!r}, base_url={self.base_url!r}, {state})"


class SGLangServer(ManagedServer):
    """Start, wait for and stop a real SGLang embedding server.

    Every option maps to SGLang's real flag (``--is-embedding`` is always passed; Matryoshka
    ``dimensions`` are enabled with ``--json-model-override-args '{"is_matryoshka": true}'``).
    Flags that blog posts get wrong are refused with an explanation (`WRONG_FLAGS`).

    Setup:
        ```bash
        pip install 'qwen-sglang[sglang]'   # on a machine with a CUDA GPU
        ```

    Instantiate:
        ```python
        from qwen_sglang import SGLangServer

        server = SGLangServer("Qwen/Qwen3-Embedding-4B", mem_fraction_static=0.3)
        print(server.display_command())   # the exact command, key masked
        ```

    Use:
        ```python
        with server:
            print(server.base_url)          # http://127.0.0.1:<port>/v1
        ```
    """

    backend = "sglang"
    max_port = MAX_SGLANG_PORT

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tp_size: int = 1,
        dp_size: int = 1,
        mem_fraction_static: float | None = None,
        attention_backend: str | None = None,
        context_length: int | None = None,
        max_running_requests: int | None = None,
        chunked_prefill_size: int | None = None,
        max_prefill_tokens: int | None = None,
        dtype: str = "auto",
        served_model_name: str | None = None,
        api_key: str | SecretStr | None = None,
        matryoshka: bool = True,
        allow_auto_truncate: bool = False,
        disable_radix_cache: bool = False,
        device: str = "cuda",
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 900.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            str(model_path),
            host=host,
            port=port,
            api_key=api_key,
            served_model_name=served_model_name,
            startup_timeout=startup_timeout,
            log_path=log_path,
            env=env,
            extra_args=extra_args,
        )
        if port is not None and port > MAX_SGLANG_PORT:
            raise ConfigurationError(
                f"port must be at most {MAX_SGLANG_PORT} for SGLang, which also opens port + 10000; got {port}"
            )
        for name, count in (("tp_size", tp_size), ("dp_size", dp_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {count!r}")
        if mem_fraction_static is not None and not 0 < mem_fraction_static < 1:
            raise ConfigurationError(f"mem_fraction_static must be in (0, 1), got {mem_fraction_static}")
        checked: tuple[tuple[str, int | None], ...] = (
            ("context_length", context_length),
            ("max_running_requests", max_running_requests),
            ("max_prefill_tokens", max_prefill_tokens),
        )
        for name, value in checked:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        if chunked_prefill_size is not None and (
            not isinstance(chunked_prefill_size, int) or chunked_prefill_size == 0 or chunked_prefill_size < -1
        ):
            raise ConfigurationError("chunked_prefill_size must be a positive int, or -1 to disable chunking")
        if device not in ("cuda", "xpu", "hpu", "npu", "cpu", "musa"):
            raise ConfigurationError(f"device must be one of cuda, xpu, hpu, npu, cpu, musa; got {device!r}")
        self.tp_size = tp_size
        self.dp_size = dp_size
        self.mem_fraction_static = mem_fraction_static
        self.attention_backend = attention_backend
        self.context_length = context_length
        self.max_running_requests = max_running_requests
        self.chunked_prefill_size = chunked_prefill_size
        self.max_prefill_tokens = max_prefill_tokens
        self.dtype = dtype
        self.matryoshka = matryoshka
        self.allow_auto_truncate = allow_auto_truncate
        self.disable_radix_cache = disable_radix_cache
        self.device = device
        self.log_level = log_level

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", self.model_path, "--is-embedding"]
        argv += ["--host", self.host, "--port", str(self.port)]
        argv += ["--tp-size", str(self.tp_size), "--dp-size", str(self.dp_size)]
        options: list[tuple[str, Any]] = [
            ("--mem-fraction-static", self.mem_fraction_static),
            ("--attention-backend", self.attention_backend),
            ("--context-length", self.context_length),
            ("--max-running-requests", self.max_running_requests),
            ("--chunked-prefill-size", self.chunked_prefill_size),
            ("--max-prefill-tokens", self.max_prefill_tokens),
            ("--served-model-name", self.served_model_name),
        ]
        for flag, value in options:
            if value is not None:
                argv += [flag, str(value)]
        if self.dtype != "auto":
            argv += ["--dtype", self.dtype]
        if self.device != "cuda":
            argv += ["--device", self.device]
        if self.matryoshka:
            argv += ["--json-model-override-args", json.dumps({"is_matryoshka": True})]
        if self.allow_auto_truncate:
            argv.append("--allow-auto-truncate")
        if self.disable_radix_cache:
            argv.append("--disable-radix-cache")
        if self.api_key is not None:
            argv += ["--api-key", self.api_key.get_secret_value()]
        argv += ["--log-level", self.log_level]
        return argv + self.extra_args

    def _validate(self) -> None:
        if not sglang_available():
            raise ServerStartError(
                "sglang is not installed for this Python: pip install 'qwen-sglang[sglang]' on a "
                "machine with a CUDA GPU, or use the local backend (LocalEmbeddingServer)"
            )
        path = Path(self.model_path).expanduser()
        from qwen_sglang.local_backend import is_hub_id

        if not path.exists() and not is_hub_id(self.model_path):
            raise ServerStartError(f"model directory {self.model_path!r} does not exist")
        if path.exists() and not (path / "config.json").exists():
            raise ServerStartError(f"{self.model_path!r} holds no config.json: not a model directory")

    @classmethod
    def attach(cls, base_url: str, api_key: str | SecretStr | None = None, *, timeout: float = 10.0) -> Any:
        """Check an existing server without owning its process; returns a `ServerReport`."""
        from qwen_sglang.probe import probe_server

        return probe_server(base_url, api_key=api_key, timeout=timeout)


class LocalEmbeddingServer(ManagedServer):
    """The same lifecycle for the local CPU backend (``qwen-sglang serve --backend local``).

    Instantiate:
        ```python
        from qwen_sglang import LocalEmbeddingServer

        with LocalEmbeddingServer("/models/Qwen3-Embedding-0.6B") as server:
            print(server.base_url)
        ```
    """

    backend = "local"
    #: The local backend is fastest with a few large requests: on CPU it pads and runs what one
    #: request brings, and small concurrent requests compete with it for the same cores (0.78 of
    #: the raw limit with the GPU-tuned defaults, 0.92-0.95 with these; docs/benchmarks.md).
    client_defaults: Mapping[str, Any] = {"batch_size": 1000, "max_batch_tokens": 1_000_000, "max_concurrency": 1}

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str | None = None,
        api_key: str | SecretStr | None = None,
        matryoshka: bool = True,
        context_length: int | None = None,
        device: str = "cpu",
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 600.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            str(model),
            host=host,
            port=port,
            api_key=api_key,
            served_model_name=served_model_name,
            startup_timeout=startup_timeout,
            log_path=log_path,
            env=env,
            extra_args=extra_args,
        )
        if context_length is not None and (not isinstance(context_length, int) or context_length < 2):
            raise ConfigurationError(f"context_length must be an int >= 2, got {context_length!r}")
        self.matryoshka = matryoshka
        self.context_length = context_length
        self.device = device
        self.log_level = log_level

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "qwen_sglang", "serve", "--backend", "local", "--model", self.model_path]
        argv += ["--host", self.host, "--port", str(self.port), "--log-level", self.log_level]
        argv += ["--device", self.device]
        if self.served_model_name:
            argv += ["--served-model-name", self.served_model_name]
        if not self.matryoshka:
            argv.append("--no-matryoshka")
        if self.context_length is not None:
            argv += ["--context-length", str(self.context_length)]
        if self.api_key is not None:
            argv += ["--api-key", self.api_key.get_secret_value()]
        return argv + self.extra_args

    def _validate(self) -> None:
        from qwen_sglang.errors import ModelNotAvailableError
        from qwen_sglang.local_backend import check_model_arg

        try:
            check_model_arg(self.model_path)
        except ModelNotAvailableError as exc:
            raise ServerStartError(str(exc)) from None


def choose_backend() -> tuple[Literal["sglang", "local"], str]:
    """What ``backend="auto"`` means here, and why: SGLang with a CUDA GPU, else the local backend."""
    has_sglang, has_gpu = sglang_available(), cuda_visible()
    if has_sglang and has_gpu:
        return "sglang", "sglang is installed and a CUDA GPU is visible"
    return "local", "no CUDA GPU is visible" if not has_gpu else "sglang is not installed"


def launch_server(
    model: str | os.PathLike[str],
    backend: Literal["auto", "sglang", "local"] = "auto",
    *,
    start: bool = True,
    **options: Any,
) -> ManagedServer:
    """Create (and by default start) a managed server.

    ``backend="auto"`` picks SGLang when it is importable and a CUDA GPU is visible, otherwise
    the local backend, and logs which and why. Options are those of `SGLangServer` or
    `LocalEmbeddingServer`; with ``"auto"``, options the chosen backend does not have (GPU
    tuning such as ``mem_fraction_static`` on the CPU backend) are left out and logged, so one call
    works on both kinds of machine. With an explicit backend they are an error.
    """
    if backend == "auto":
        backend, why = choose_backend()
        logger.info("backend=auto chose the %s backend: %s", backend, why)
        cls = SGLangServer if backend == "sglang" else LocalEmbeddingServer
        accepted = set(inspect.signature(cls.__init__).parameters)
        dropped = sorted(k for k in options if k not in accepted)
        if dropped:
            logger.info("the %s backend has no %s: left out", backend, ", ".join(dropped))
            options = {k: v for k, v in options.items() if k in accepted}
    server: ManagedServer
    if backend == "sglang":
        server = SGLangServer(model, **options)
    elif backend == "local":
        server = LocalEmbeddingServer(model, **options)
    else:
        raise ConfigurationError(f"backend must be 'auto', 'sglang' or 'local', not {backend!r}")
    return server.start() if start else server
