"""The managed lifecycle every backend shares: `ManagedServer`.

A free port when none is given, the child started with ``sys.executable`` and no shell, its
output in a log file whose tail is attached to every start error, readiness only when ``/ready``
(SGLang 0.5.23) or else ``/health`` answers 200 (never ``/v1/models``, which answers before
warm-up ends), a liveness check on every poll, and a stop that sends SIGTERM to the whole process
group, waits, then SIGKILLs it.

No server outlives the Python process that started it: the server runs in a process group held
by a small watchdog process (``qwen_sglang/servers/watchdog.py``) that stops the group when its
owner exits in any way, SIGKILL included. SIGTERM of the owner runs the normal stop (the handler
is chained to the application's own), and the context manager and an ``atexit`` hook stop it on
an exception, Ctrl-C or a normal exit.

A started server is the handle clients use (`qwen_sglang.settings.ServerHandle`): its URL,
model name and key, its process's ``pid``, ``returncode`` and ``wait()``, its log, and
`ManagedServer.get_client` / `ManagedServer.client_settings` for a client of it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, cast

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from qwen_sglang._urls import root_url
from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError, ServerStartError
from qwen_sglang.servers import owner
from qwen_sglang.servers.keys import SERVER_API_KEY_ENV, check_api_key
from qwen_sglang.servers.options import check_extra_args, parse_options, split_options
from qwen_sglang.servers.ports import free_port, port_in_use, port_in_use_message, port_taken, warn_if_public
from qwen_sglang.servers.report import diagnose_log
from qwen_sglang.servers.watchdog import group_members
from qwen_sglang.settings import QwenSGLangSettings, ServerHandle

__all__ = ["ClientFactory", "ManagedServer", "NoOptions"]

logger = logging.getLogger("qwen_sglang.servers")

#: How many times `ManagedServer.start` tries another port when the one it picked was taken first.
PORT_RETRIES = 2


class NoOptions(BaseModel):
    """The options model of a backend that has none beyond the lifecycle's."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _diagnose(log: str) -> str | None:
    """The first known start failure in a server log, with its fix (`qwen_sglang.servers.probe.LOG_SIGNATURES`)."""
    found = diagnose_log(log)
    if not found:
        return None
    what = found[0].value.split("\n", 1)[0]
    return f"{what}: {found[0].fix}"


def _pump_output(stream: IO[bytes], log_file: IO[bytes], secrets: list[bytes], ring: collections.deque[str]) -> None:
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


#: The watchdog that holds each server's process group; run as a script, never imported there.
_WATCHDOG = Path(__file__).with_name("watchdog.py")


class ClientFactory:
    """`client_settings` and `get_client` for anything clients can be pointed at (a managed server,
    a managed router): the settings model takes the URL, model name and key from ``self``."""

    def client_settings(self, **overrides: Any) -> QwenSGLangSettings:
        """Settings for a client of this server: its URL, model name and key, plus ``overrides``
        (any other setting, or these replaced). The request shape its backend prefers comes from
        the server itself at the client's first call.

        Example:
            ```python
            settings = server.client_settings(dimensions=256)
            ```
        """
        # the classes that mix this in are ServerHandles (the settings model checks it)
        return QwenSGLangSettings(server=cast(ServerHandle, self), **overrides)

    def get_client(
        self,
        *,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        **overrides: Any,
    ) -> EmbeddingClient:
        """An `qwen_sglang.EmbeddingClient` of this server (`client_settings` with ``overrides``;
        ``http_client`` / ``http_async_client`` as for `qwen_sglang.EmbeddingClient`).

        Example:
            ```python
            with LocalEmbeddingServer("/models/Qwen3-Embedding-0.6B") as server:
                client = server.get_client()
                vectors = client.embed_documents(["hello"])
            ```
        """
        settings = self.client_settings(**overrides)
        return EmbeddingClient(settings, http_client=http_client, http_async_client=http_async_client)


class ManagedServer(ClientFactory):
    """A server process owned by this Python process. Subclasses provide `command`.

    Attributes: `base_url`, `model`, `api_key`, `pid`, `returncode`, `log_path`, `logs_tail`,
    `is_running`, `wait`, `options` (the backend's options model). Use as a context manager, or
    call `start` and `stop`; `get_client` gives a client of it.

    The server never outlives its owner (see the module docstring): a watchdog process holds
    its process group and stops it when this process exits, however it exits.
    """

    backend: ClassVar[str] = "?"
    #: The backend's options: a model whose fields carry their flags (`qwen_sglang.servers.options`).
    options_model: ClassVar[type[BaseModel]] = NoOptions
    #: Highest port this backend can use (SGLang needs room for its derived ports).
    max_port: ClassVar[int] = 65535
    #: Seconds `start` waits for readiness unless ``startup_timeout`` is given.
    default_startup_timeout: ClassVar[float] = 600.0
    #: The keyword arguments of the constructor besides the options (a test pins them to the signature).
    launcher_args: ClassVar[frozenset[str]] = frozenset(
        {"host", "port", "api_key", "served_model_name", "startup_timeout", "log_path", "env", "extra_args"}
    )
    #: Where readiness is read, in order of preference (a path answering 404, 405 or 401 is skipped).
    ready_paths: ClassVar[tuple[str, ...]] = ("/ready", "/health")
    #: Seconds `stop` (and the watchdog) wait after SIGTERM before SIGKILL.
    stop_timeout: float = 20.0
    options: BaseModel

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        api_key: str | SecretStr | None = None,
        served_model_name: str | None = None,
        startup_timeout: float | None = None,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        **options: Any,
    ) -> None:
        if not isinstance(model, str | os.PathLike) or not str(model).strip():
            raise ConfigurationError("model must be a model directory or a model id")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise ConfigurationError(f"port must be an int in 1..65535, got {port!r}")
        if port is not None and port > self.max_port:
            raise ConfigurationError(
                f"port must be at most {self.max_port} for the {self.backend} backend, which also opens "
                f"port + 10000; got {port}"
            )
        self.startup_timeout = self.default_startup_timeout if startup_timeout is None else startup_timeout
        if self.startup_timeout <= 0:
            raise ConfigurationError("startup_timeout must be positive")
        self.extra_args = check_extra_args(extra_args, allowed=self.allowed_extra_flags())
        self.options = parse_options(self.options_model, options, owner=type(self).__name__)
        self.model_path = str(model)
        self.host = host
        self._port = port
        self._port_given = port is not None
        self._url_shared = False  # base_url/root_url read before start: the port may not move
        self.api_key: SecretStr | None = SecretStr(api_key) if isinstance(api_key, str) else api_key
        if self.api_key is not None:
            check_api_key(self.api_key.get_secret_value())
        self.served_model_name = served_model_name
        self.env = dict(env) if env is not None else None
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None
        self._returncode: int | None = None
        self._secret_files: list[Path] = []
        self._log_file: IO[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._ring: collections.deque[str] = collections.deque(maxlen=500)  # last log lines
        self._lock = threading.RLock()  # re-entered by the SIGTERM handler, which runs in the main thread
        warn_if_public(host, self.api_key is not None, logger)

    @classmethod
    def split_options(cls, options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``options`` this backend takes (lifecycle arguments and its `options_model`), and the
        names of those it lacks: what ``launch_server(backend="auto")`` leaves out."""
        backend_only, unknown = split_options(cls.options_model, options)
        launcher = {k: options[k] for k in unknown if k in cls.launcher_args}
        return {**launcher, **backend_only}, [k for k in unknown if k not in cls.launcher_args]

    # ------------------------------------------------------------------ what subclasses define
    def allowed_extra_flags(self) -> frozenset[str]:
        """Flags of `qwen_sglang.servers.WRONG_FLAGS` this server may get in ``extra_args`` after all."""
        return frozenset()

    def command(self) -> list[str]:
        """The child's argv (no shell is ever involved)."""
        raise NotImplementedError

    def validate(self) -> None:
        """Check what needs no process (model directory, installed packages); `start` calls it first.

        Raises `ServerStartError` naming the fix.
        """

    def _secret_env(self) -> dict[str, str]:
        """Environment variables that carry secrets to the child (shown masked by `display_command`)."""
        return {}

    def _launch_argv(self, argv: list[str]) -> list[str]:
        """The argv actually executed: `command` with secrets moved out of it where the backend allows."""
        return argv

    # ------------------------------------------------------------------ the handle
    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port(self.host, max_port=self.max_port)
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, what the embeddings classes need. Read before `start` (a
        client made early), it fixes the port: `start` fails rather than move the server away
        from a URL that was handed out (its requests, and the key, would reach another process)."""
        if self._proc is None:
            self._url_shared = True
        return self._url()

    @property
    def root_url(self) -> str:
        return root_url(self.base_url)

    def _url(self) -> str:
        """`base_url`, for this object's own use (which hands nothing out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{host}:{self.port}/v1"

    def _may_move(self) -> bool:
        """Whether `start` may pick another port: one it picked itself, whose URL nobody holds."""
        return not self._port_given and not self._url_shared

    @property
    def model(self) -> str:
        """The model name clients should send (the served name, else the path)."""
        return self.served_model_name or self.model_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The server process's exit status once it has exited, else None (running, or never started).

        Negative ``-N`` means killed by signal N, as in `subprocess`. Kept after `stop`.
        """
        if self._proc is not None:
            return self._proc.poll()
        return self._returncode

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Block until the server process exits (by itself, or stopped elsewhere); its exit status.

        Raises `TimeoutError` when it still runs after ``timeout`` seconds, and
        `ServerStartError` when it was never started.

        Example:
            ```python
            server.start()
            code = server.wait()   # e.g. serve until the server dies, then report
            ```
        """
        proc = self._proc
        if proc is None:
            if self._returncode is not None:
                return self._returncode
            raise ServerStartError(f"the {self.backend} server was not started: call start() first")
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the {self.backend} server (pid {proc.pid}) still runs after {timeout}s") from None

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
        env = [f"{name}=***" for name in self._secret_env()]
        return " ".join([*env, shlex.join(shown)])

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True) -> ManagedServer:
        """Start the server; with ``wait`` block until it is ready (`wait_ready`).

        A port picked here (none given) is free when picked, but another process can take it
        before the server binds it (a client's outgoing connection, another server): such a start
        is tried again on another free port, up to `PORT_RETRIES` times.
        """
        for attempt in range(PORT_RETRIES + 1):
            picked = self._may_move()
            try:
                return self._start_once(wait)
            except ServerStartError as exc:
                if not (wait and picked and port_taken(exc.log_tail)) or attempt == PORT_RETRIES:
                    raise
                logger.warning("port %s was taken before the %s server bound it: another one", self._port, self.backend)
                self._port = None
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, wait: bool) -> ManagedServer:
        with self._lock:
            if self.is_running():
                return self
            self.validate()
            if port_in_use(self.host, self.port) and self._may_move():
                self._port = None  # picked earlier, taken since: pick another
            if port_in_use(self.host, self.port):
                message = port_in_use_message(self.host, self.port)
                if not self._port_given:
                    message = (
                        f"port {self.port} on {self.host}, picked when the server's URL was read before start "
                        "(a client made before start holds it), is taken by another process since: make clients "
                        "after start(), or give port="
                    )
                raise ServerStartError(message)
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"qwen-sglang-{self.backend}-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
            logger.info("starting %s server: %s (log: %s)", self.backend, self.display_command(), self._log_path)
            log_file = self._log_file = self._log_path.open("ab")
            try:
                proc = self._spawn(self._launch_argv(self.command()), self._child_env())
            except BaseException:
                log_file.close()
                self._remove_secret_files()
                raise
            # SGLang prints its server arguments, API key included: the output reaches the log
            # file only through this pump, which masks the key.
            assert proc.stdout is not None
            self._pump = threading.Thread(
                target=_pump_output,
                args=(proc.stdout, log_file, self._secrets(), self._ring),
                name=f"qwen-sglang-{self.backend}-log",
                daemon=True,
            )
            self._pump.start()
            owner.adopt(self)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(SERVER_API_KEY_ENV, None)  # the key is this object's, not the environment's
        env.update(self.env or {})
        env.update(self._secret_env())
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start the watchdog as the leader of a new process group, then the server inside it."""
        self._owner_pid = os.getpid()
        watchdog_argv = [sys.executable, "-I", str(_WATCHDOG), str(os.getpid()), str(self.stop_timeout)]
        try:
            watchdog = self._watchdog = subprocess.Popen(  # noqa: S603 - argv list, no shell
                watchdog_argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=self._log_file,
                process_group=0,
            )
        except OSError as exc:
            raise ServerStartError(f"could not start the server's watchdog ({sys.executable}): {exc}") from exc
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=watchdog.pid,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            watchdog.kill()
            watchdog.wait()
            self._watchdog = None
            raise ServerStartError(f"could not start {argv[0]}: {exc}") from exc
        return self._proc

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the first of `ready_paths` the server has (``/ready``: SGLang 0.5.23 and the local
        backends; else ``/health``) until 200, checking on every loop that the process is alive."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        paths = list(self.ready_paths)
        delay = 0.1
        with httpx.Client(timeout=5.0) as client:
            while True:
                self._check_alive()
                try:
                    status = client.get(self.root_url + paths[0]).status_code
                except httpx.HTTPError:
                    status = None
                if status in (401, 403, 404, 405) and len(paths) > 1:  # not there, or not open: the next one
                    paths.pop(0)
                    continue
                if status == 200:
                    logger.info("%s server ready at %s (pid %s)", self.backend, self.base_url, self.pid)
                    self._remove_secret_files()  # read at start-up; not left on disk
                    return
                if time.monotonic() > deadline:
                    tail = self.logs_tail()
                    why = _diagnose(tail)
                    raise ServerStartError(
                        f"the {self.backend} server did not become ready within "
                        f"{self.startup_timeout:.0f}s" + (f": {why}" if why else ""),
                        log_tail=tail,
                        log_path=str(self._log_path),
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)

    def _check_alive(self) -> None:
        """`ServerStartError` (exit code, log tail, diagnosis) when the process exited during start-up."""
        proc = self._proc
        if proc is None:
            raise ServerStartError("the server was not started")
        code = proc.poll()
        if code is None:
            return
        if self._pump is not None:
            self._pump.join(timeout=5)  # let the last lines reach the log
        tail = self.logs_tail()
        why = _diagnose(tail)
        raise ServerStartError(
            f"the {self.backend} server exited with code {code} during start-up" + (f": {why}" if why else ""),
            returncode=code,
            log_tail=tail,
            log_path=str(self._log_path),
        )

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the server's process group, wait up to ``timeout`` s (`stop_timeout`), then SIGKILL it.

        The group is the one remembered at start (held by the watchdog), so the server's own
        children are stopped too when the server itself has already exited or was SIGKILLed.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if os.getpid() == self._owner_pid:  # not in a forked copy of the owner
                deadline = time.monotonic() + timeout
                self._signal_group(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("%s server did not stop in %ss; killing it", self.backend, timeout)
                self._wait_for_members(deadline)
                self._signal_group(signal.SIGKILL)
                for child in (proc, self._watchdog):
                    if child is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            child.wait(timeout=10)
                self._returncode = proc.returncode
            if self._pump is not None:
                self._pump.join(timeout=10)
                self._pump = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            self._remove_secret_files()
            self._proc = self._watchdog = None
            owner.release(self)

    def _group_held(self) -> bool:
        """Whether the remembered group id still names this server's group (its watchdog lives)."""
        return self._watchdog is not None and self._watchdog.poll() is None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._watchdog is not None and self._group_held():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._watchdog.pid, sig)
        elif self._proc is not None and self._proc.poll() is None:  # the watchdog was killed by hand
            logger.warning("the watchdog of the %s server is gone: signalling the server alone", self.backend)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._proc.send_signal(sig)

    def _wait_for_members(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the group's other members, such as SGLang's schedulers, to exit."""
        if self._watchdog is None or not self._group_held():
            return
        watchdog = self._watchdog.pid
        while time.monotonic() < deadline:
            members = group_members(watchdog)
            if members is None or not members - {watchdog}:
                return
            time.sleep(0.05)

    def _remove_secret_files(self) -> None:
        for path in self._secret_files:
            with contextlib.suppress(OSError):
                path.unlink()
        self._secret_files.clear()

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running() else "stopped"
        return f"{type(self).__name__}(model={self.model_path!r}, base_url={self._url()!r}, {state})"
