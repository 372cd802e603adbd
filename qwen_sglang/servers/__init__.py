"""Managed embedding servers: start SGLang (or the local backend) from Python, safely.

One lifecycle serves both backends (`ManagedServer`): a free port when none is given, the
child started with ``sys.executable`` and no shell, its output in a log file whose tail is
attached to every start error, readiness only when ``/health`` answers 200 (never
``/v1/models``, which answers before warm-up ends), a liveness check on every poll, and a stop
that sends SIGTERM to the whole process group, waits, then SIGKILLs it.

No server outlives the Python process that started it: the server runs in a process group held
by a small watchdog process (``qwen_sglang/servers/watchdog.py``) that stops the group when its owner
exits in any way, SIGKILL included. SIGTERM of the owner runs the normal stop (the handler is
chained to the application's own), and the context manager and an ``atexit`` hook stop it on an
exception, Ctrl-C or a normal exit. API keys never reach the command line of the local backend
(an environment variable) nor of SGLang (a private config file).

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

from qwen_sglang._urls import root_url
from qwen_sglang.errors import ConfigurationError, ServerStartError
from qwen_sglang.servers.models_path import check_model_arg, is_hub_id
from qwen_sglang.servers.watchdog import group_members

__all__ = [
    "LocalEmbeddingServer",
    "ManagedServer",
    "SGLangServer",
    "MAX_SGLANG_PORT",
    "SERVER_API_KEY_ENV",
    "WRONG_FLAGS",
    "check_api_key",
    "choose_backend",
    "cuda_visible",
    "free_port",
    "launch_server",
    "local_extra_hint",
    "missing_local_extra",
    "port_in_use_message",
    "read_api_key",
    "sglang_available",
]

logger = logging.getLogger("qwen_sglang.servers")

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

#: The environment variable the local backend reads its API key from (``qwen-sglang serve``
#: reads it for SGLang too). Unlike ``--api-key KEY``, it is not shown by ``ps`` to other users.
SERVER_API_KEY_ENV = "QWEN_SGLANG_SERVER_API_KEY"

#: What the local backend imports: the ``local`` extra, plus torch, which the user installs.
_LOCAL_MODULES = ("fastapi", "uvicorn", "sentence_transformers", "torch")


def check_api_key(key: str) -> str:
    """Return ``key`` if an HTTP client can send it as ``Authorization: Bearer KEY``; else raise.

    Raises `ConfigurationError` (empty, or characters other than printable ASCII, such as a
    newline pasted with it).
    """
    if not key:
        raise ConfigurationError("the API key is empty")
    if not all(33 <= ord(c) <= 126 for c in key):
        raise ConfigurationError(
            "the API key must be printable ASCII without spaces or newlines (it travels in an HTTP header)"
        )
    return key


def read_api_key(key: str | None = None, key_file: str | os.PathLike[str] | None = None) -> str | None:
    """The server's API key: ``key``, else the first line of ``key_file``, else `SERVER_API_KEY_ENV`.

    A key file (``chmod 600``, or a Docker/Kubernetes secret) and the environment variable keep
    the key out of the command line, which every local user can read with ``ps``.
    Raises `ConfigurationError` when both ``key`` and ``key_file`` are given, or the key is not
    usable (`check_api_key`).

    Example:
        ```python
        from qwen_sglang.servers import read_api_key

        key = read_api_key(key_file="/run/secrets/embedding-key")
        ```
    """
    if key is not None and key_file is not None:
        raise ConfigurationError("give the API key once: --api-key or --api-key-file, not both")
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"could not read the API key file {key_file}: {exc}") from None
        lines = text.strip().splitlines()
        return check_api_key(lines[0].strip() if lines else "")
    if key is None:
        key = os.environ.get(SERVER_API_KEY_ENV) or None
    return check_api_key(key) if key is not None else None


def missing_local_extra() -> list[str]:
    """The modules of the local backend this interpreter cannot import (found without importing)."""
    missing = []
    for name in _LOCAL_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def local_extra_hint(missing: Sequence[str]) -> str:
    """How to install what `missing_local_extra` reports."""
    hint = f"the local backend needs {', '.join(missing)}: pip install 'qwen-sglang[local]'"
    if "torch" in missing:
        hint += " and a CPU build of torch (pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    return hint


def port_in_use_message(host: str, port: int) -> str:
    """The error for a busy port, with the two ways out."""
    return (
        f"port {port} on {host} is already in use (another server?): choose another port, or let a "
        "free one be picked (--port 0 on the command line, no port= in Python)"
    )


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


def _sglang_reads_config() -> bool:
    """Whether the installed SGLang reads ``--config FILE.yaml`` (0.5.5 and later)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("sglang").split("+")[0].split(".")
        numbers = tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in release[:3])
    except (PackageNotFoundError, ValueError):
        return False
    return numbers >= (0, 5, 5)


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
    """Recognise common start failures in a server log (``qwen_sglang.servers.probe.LOG_SIGNATURES``)."""
    from qwen_sglang.servers.probe import diagnose_log

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
#: The watchdog that holds each server's process group; run as a script, never imported there.
_WATCHDOG = Path(__file__).with_name("watchdog.py")


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


# A forked child (multiprocessing) inherits this module's state but owns none of the servers.
os.register_at_fork(after_in_child=_RUNNING.clear)


class _SigtermChain:
    """SIGTERM of the owner runs the normal stop, without breaking the application's own handler.

    Installed (main thread only) when a server starts, over SIG_DFL or a Python handler; never
    over SIG_IGN or a handler set outside Python. On SIGTERM it calls the previous handler
    when there is one (the application decides; its exit path stops the servers through
    ``with`` or ``atexit``); over SIG_DFL it stops every running server, then dies of SIGTERM as
    the default would. Put back when the last server stops, unless something replaced it meanwhile.
    """

    previous: Any = None
    installed = False

    @classmethod
    def install(cls) -> None:
        if threading.current_thread() is not threading.main_thread() or cls.installed:
            return
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_IGN or current is None:
            return
        cls.previous = current
        signal.signal(signal.SIGTERM, cls.handle)
        cls.installed = True

    @classmethod
    def uninstall(cls) -> None:
        if not cls.installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == cls.handle:
            signal.signal(signal.SIGTERM, cls.previous)
        cls.installed, cls.previous = False, None

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        previous = cls.previous
        if callable(previous):
            previous(signum, frame)
            return
        _stop_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


class ManagedServer:
    """A server process owned by this Python process. Subclasses provide `command`.

    Attributes: `base_url`, `pid`, `returncode`, `log_path`, `logs_tail`,
    `is_running`, `wait`. Use as a context manager, or call `start` and `stop`.

    The server never outlives its owner (see the module docstring): a watchdog process holds
    its process group and stops it when this process exits, however it exits.
    """

    backend: str = "?"
    #: Client settings that suit this backend better than the package defaults; a client made
    #: with ``server=`` uses them unless they are given explicitly.
    client_defaults: Mapping[str, Any] = {}
    #: Seconds `stop` (and the watchdog) wait after SIGTERM before SIGKILL.
    stop_timeout: float = 20.0

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
        if self.api_key is not None:
            check_api_key(self.api_key.get_secret_value())
        self.served_model_name = served_model_name
        self.startup_timeout = startup_timeout
        self.env = dict(env) if env is not None else None
        self.extra_args = [str(a) for a in extra_args]
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None
        self._returncode: int | None = None
        self._secret_files: list[Path] = []
        self._log_file: Any = None
        self._pump: threading.Thread | None = None
        self._ring: collections.deque[str] = collections.deque(maxlen=500)  # last log lines
        self._lock = threading.RLock()  # re-entered by the SIGTERM handler, which runs in the main thread
        if host not in _LOCAL_HOSTS and self.api_key is None:
            logger.warning("binding %s without an api_key: anyone who can reach it can use the server", host)

    # ------------------------------------------------------------------ what subclasses define
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
        return root_url(self.base_url)

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
        import shlex

        argv = self.command()
        shown = ["***" if i > 0 and argv[i - 1] == "--api-key" else a for i, a in enumerate(argv)]
        env = [f"{name}=***" for name in self._secret_env()]
        return " ".join([*env, shlex.join(shown)])

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True) -> ManagedServer:
        """Start the server; with ``wait`` block until ``/health`` answers 200."""
        with self._lock:
            if self.is_running():
                return self
            self.validate()
            if _port_in_use(self.host, self.port):
                raise ServerStartError(port_in_use_message(self.host, self.port))
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"qwen-sglang-{self.backend}-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
            env = dict(os.environ)
            env.pop(SERVER_API_KEY_ENV, None)  # the key is this object's, not the environment's
            env.update(self.env or {})
            env.update(self._secret_env())
            env.setdefault("PYTHONUNBUFFERED", "1")
            logger.info("starting %s server: %s (log: %s)", self.backend, self.display_command(), self._log_path)
            self._log_file = self._log_path.open("ab")
            try:
                self._spawn(self._launch_argv(self.command()), env)
            except BaseException:
                self._log_file.close()
                self._remove_secret_files()
                raise
            # SGLang prints its server arguments, API key included: the output reaches the log
            # file only through this pump, which masks the key.
            self._pump = threading.Thread(
                target=_pump_output,
                args=(self._proc.stdout if self._proc else None, self._log_file, self._secrets(), self._ring),
                name=f"qwen-sglang-{self.backend}-log",
                daemon=True,
            )
            self._pump.start()
            _RUNNING.add(self)
            _SigtermChain.install()
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        """Start the watchdog as the leader of a new process group, then the server inside it."""
        self._owner_pid = os.getpid()
        watchdog_argv = [sys.executable, "-I", str(_WATCHDOG), str(os.getpid()), str(self.stop_timeout)]
        try:
            self._watchdog = subprocess.Popen(  # noqa: S603 - argv list, no shell
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
                process_group=self._watchdog.pid,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
            raise ServerStartError(f"could not start {argv[0]}: {exc}") from exc

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
                        self._remove_secret_files()  # read at start-up; not left on disk
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
            _RUNNING.discard(self)
            if not _RUNNING:
                _SigtermChain.uninstall()

    def _group_held(self) -> bool:
        """Whether the remembered group id still names this server's group (its watchdog lives)."""
        return self._watchdog is not None and self._watchdog.poll() is None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._group_held():
            assert self._watchdog is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._watchdog.pid, sig)
        elif self._proc is not None and self._proc.poll() is None:  # the watchdog was killed by hand
            logger.warning("the watchdog of the %s server is gone: signalling the server alone", self.backend)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._proc.send_signal(sig)

    def _wait_for_members(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the group's other members, such as SGLang's schedulers, to exit."""
        if not self._group_held():
            return
        assert self._watchdog is not None
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

    def validate(self) -> None:
        if not sglang_available():
            raise ServerStartError(
                "sglang is not installed for this Python: pip install 'qwen-sglang[sglang]' on a "
                "machine with a CUDA GPU, or use the local backend (LocalEmbeddingServer)"
            )
        path = Path(self.model_path).expanduser()
        if not path.exists() and not is_hub_id(self.model_path):
            raise ServerStartError(f"model directory {self.model_path!r} does not exist")
        if path.exists() and not (path / "config.json").exists():
            raise ServerStartError(f"{self.model_path!r} holds no config.json: not a model directory")

    def _launch_argv(self, argv: list[str]) -> list[str]:
        """SGLang takes its key only as ``--api-key``; from 0.5.5 a ``--config`` YAML file may carry it.

        The key goes to a file only this user can read (removed once the server is ready, or at
        stop), so ``ps`` shows ``--config FILE`` instead of the key.
        """
        if self.api_key is None or "--api-key" not in argv:
            return argv
        if "--config" in argv or not _sglang_reads_config():
            logger.warning(
                "SGLang gets the API key on its command line (visible to local users in ps): %s",
                "extra_args has its own --config" if "--config" in argv else "sglang older than 0.5.5",
            )
            return argv
        i = argv.index("--api-key")
        fd, name = tempfile.mkstemp(prefix="qwen-sglang-args-", suffix=".yaml")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"api-key": argv[i + 1]}))  # JSON is YAML; the key stays a string
        self._secret_files.append(Path(name))
        return [*argv[:i], *argv[i + 2 :], "--config", name]

    @classmethod
    def attach(cls, base_url: str, api_key: str | SecretStr | None = None, *, timeout: float = 10.0) -> Any:
        """Check an existing server without owning its process; returns a `ServerReport`."""
        from qwen_sglang.servers.probe import probe_server

        return probe_server(base_url, api_key=api_key, timeout=timeout)


class LocalEmbeddingServer(ManagedServer):
    """The same lifecycle for the local CPU backend (``qwen-sglang serve --backend local``).

    Instantiate:
        ```python
        from qwen_sglang import LocalEmbeddingServer

        with LocalEmbeddingServer("/models/Qwen3-Embedding-0.6B") as server:
            print(server.base_url)
        ```

    An ``api_key`` reaches the server through the `SERVER_API_KEY_ENV` environment variable, not
    its command line; ``allowed_hosts`` adds names the server answers to besides ``localhost``,
    IP addresses and ``host`` (``["*"]``: any), for clients that reach it through a DNS name.
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
        allowed_hosts: Sequence[str] = (),
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
        if isinstance(allowed_hosts, str) or any(not h or "," in h for h in allowed_hosts):
            raise ConfigurationError("allowed_hosts must be a list of host names, for example ['gpu-box.lan']")
        self.matryoshka = matryoshka
        self.context_length = context_length
        self.allowed_hosts = [str(h) for h in allowed_hosts]
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
        if self.allowed_hosts:
            argv += ["--allowed-hosts", ",".join(self.allowed_hosts)]
        return argv + self.extra_args

    def _secret_env(self) -> dict[str, str]:
        return {SERVER_API_KEY_ENV: self.api_key.get_secret_value()} if self.api_key is not None else {}

    def validate(self) -> None:
        from qwen_sglang.errors import ModelNotAvailableError

        missing = missing_local_extra()
        if missing:
            raise ServerStartError(local_extra_hint(missing))
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
