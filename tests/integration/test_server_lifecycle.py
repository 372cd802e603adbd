"""Managed servers as real processes: start, readiness, teardown, failures, CLI, doctor, attach."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from qwen_sglang import ConfigurationError, ServerStartError
from qwen_sglang.servers import (
    LocalEmbeddingServer,
    LocalRerankServer,
    ManagedServer,
    SGLangServer,
    cuda_visible,
    free_port,
    launch_server,
)
from tests.conftest import BACKEND, make_server
from tests.integration.process_trees import TreeServer, alive, group_alive, run_owner, wait_until


def wait_gone(pgid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.1)
    return False


def test_start_ready_embed_stop_leaves_nothing(qwen_model_dir: Path) -> None:
    srv = make_server(qwen_model_dir)
    with srv:
        assert srv.is_running()
        pid = srv.pid
        assert pid is not None
        pgid = os.getpgid(pid)
        assert pgid not in (pid, os.getpgrp())  # a group of its own, held by its watchdog
        assert httpx.get(srv.root_url + "/health").status_code == 200
        from qwen_sglang import EmbeddingClient

        client = EmbeddingClient(server=srv)  # URL, key and model name from the server
        assert client.base_url == srv.base_url
        assert len(client.embed_query("hi")) == 128
        assert srv.log_path is not None and srv.log_path.exists()
    assert not srv.is_running()
    assert wait_gone(pgid)


def test_exception_inside_context_manager_still_stops_the_server(qwen_model_dir: Path) -> None:
    srv = make_server(qwen_model_dir)
    with pytest.raises(RuntimeError, match="boom"), srv:
        pgid = os.getpgid(srv.pid)  # type: ignore[arg-type]
        raise RuntimeError("boom")
    assert wait_gone(pgid)


def test_crash_during_start_gives_the_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "Qwen3-Embedding-broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen3", "hidden_size": "not a number"}')
    srv = LocalEmbeddingServer(broken, startup_timeout=120)
    with pytest.raises(ServerStartError) as info:
        srv.start()
    err = info.value
    assert err.returncode not in (None, 0)
    assert "could not load the model" in err.log_tail
    assert "last lines of the server log" in str(err)
    assert not srv.is_running()


def test_port_already_in_use(qwen_model_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"port {port} .* already in use"):
            LocalEmbeddingServer(qwen_model_dir, port=port).start()


def test_wrong_model_path_fails_before_starting_anything() -> None:
    srv = LocalEmbeddingServer("/nonexistent/Qwen3-Embedding-nope")
    with pytest.raises(ServerStartError, match="does not exist"):
        srv.start()
    assert srv.pid is None


def test_sglang_backend_without_sglang_says_how_to_install() -> None:
    if SGLangServer is None or __import__("importlib").util.find_spec("sglang") is not None:
        pytest.skip("sglang is installed here")
    with pytest.raises(ServerStartError, match=r"pip install 'qwen-sglang\[sglang\]'"):
        SGLangServer("/models/Qwen3-Embedding-4B").start()


def test_launch_server_for_a_reranker(qwen_reranker_dir: Path) -> None:
    srv = launch_server(qwen_reranker_dir, backend="local", task="rerank", start=False)
    assert isinstance(srv, LocalRerankServer)
    argv = srv.command()
    assert argv[argv.index("--task") + 1] == "rerank" and "--no-matryoshka" not in argv
    sglang = launch_server(qwen_reranker_dir, backend="sglang", task="rerank", start=False)
    assert isinstance(sglang, SGLangServer) and "--is-embedding" not in sglang.command()
    with pytest.raises(ConfigurationError, match="task must be"):
        launch_server(qwen_reranker_dir, task="classify", start=False)  # type: ignore[arg-type]


def test_auto_backend_picks_local_without_a_gpu(qwen_model_dir: Path) -> None:
    if cuda_visible():
        pytest.skip("a GPU is visible here")
    srv = launch_server(qwen_model_dir, start=False)
    assert isinstance(srv, LocalEmbeddingServer)
    # the README's one call for both machines: GPU tuning is left out on CPU with auto...
    srv = launch_server(qwen_model_dir, start=False, mem_fraction_static=0.3, attention_backend="triton", port=31234)
    assert isinstance(srv, LocalEmbeddingServer) and srv.port == 31234
    # ...and is an error when the backend is named
    with pytest.raises(ConfigurationError, match="LocalEmbeddingServer has no option 'mem_fraction_static'"):
        launch_server(qwen_model_dir, "local", start=False, mem_fraction_static=0.3)


def test_ctrl_c_on_the_cli_leaves_nothing_behind(qwen_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qwen_sglang",
            "serve",
            "--backend",
            "local",
            "--model",
            str(qwen_model_dir),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 130)  # 130: the conventional Ctrl-C exit
        assert wait_gone(proc.pid)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "The server is fired up and ready to roll!" in (tmp_path / "serve.log").read_text()


def run_doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwen_sglang", "doctor", *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_doctor_on_a_healthy_server(server: ManagedServer) -> None:
    out = run_doctor("--base-url", server.base_url)
    assert out.returncode == 0, out.stdout + out.stderr
    for row in (
        "reachable",
        "healthy",
        "embedding model",
        "served model",
        "native width",
        "matryoshka",
        "base64",
        "context length",
        "version",
    ):
        assert row in out.stdout
    assert "128" in out.stdout and "enabled" in out.stdout and "all checks passed" in out.stdout
    report = json.loads(run_doctor("--base-url", server.base_url, "--json").stdout)
    assert report["native_dim"] == 128 and report["matryoshka"] is True and report["ok"] is True


def test_doctor_on_a_server_without_matryoshka(server_no_mrl: ManagedServer) -> None:
    out = run_doctor("--base-url", server_no_mrl.base_url)
    assert "WARN  matryoshka" in out.stdout and "disabled" in out.stdout
    assert "is_matryoshka" in out.stdout  # the fix
    assert out.returncode == 0  # the client copes, so it is a warning


def test_doctor_on_nothing_fails_with_a_fix() -> None:
    out = run_doctor("--base-url", f"http://127.0.0.1:{free_port()}/v1", "--timeout", "2")
    assert out.returncode == 1
    assert "FAIL  reachable" in out.stdout and "qwen-sglang serve" in out.stdout


def test_attach_reports_capabilities_without_owning_the_process(server: ManagedServer) -> None:
    report = SGLangServer.attach(server.base_url)
    assert report.ok and report.native_dim == 128 and report.matryoshka
    # base64 answers exist from SGLang 0.5.17 (0.5.15 ignores the field); the local backend has them
    if BACKEND == "local":
        assert report.base64 is True
    else:
        major_minor_patch = tuple(int(x) for x in (report.version or "0.0.0").split(".")[:3])
        assert report.base64 is (major_minor_patch >= (0, 5, 17))
    assert report.context_length and report.context_length > 1000
    assert server.is_running()


class _Chatty(ManagedServer):
    """A child that prints its arguments (as SGLang does, API key included) and exits."""

    backend = "chatty"

    def command(self) -> list[str]:
        key = self.api_key.get_secret_value() if self.api_key else ""
        script = "import sys; print('server_args: api_key=%r' % sys.argv[1]); raise SystemExit(3)"
        return [sys.executable, "-c", script, key]


def test_api_key_printed_by_the_child_is_masked_in_the_log() -> None:
    srv = _Chatty("/m", api_key="sk-printed-by-child-31337", startup_timeout=30)
    with pytest.raises(ServerStartError) as info:
        srv.start()
    assert info.value.returncode == 3
    assert "api_key='***'" in info.value.log_tail
    assert srv.log_path is not None
    text = srv.log_path.read_text()
    assert "server_args" in text and "sk-printed-by-child-31337" not in text
    assert "sk-printed-by-child-31337" not in str(info.value)


def test_a_client_made_from_a_server_gets_the_request_sizes_of_its_backend(server: ManagedServer) -> None:
    import numpy as np

    from langchain_qwen_sglang import QwenSGLangEmbeddings
    from qwen_sglang import EmbeddingClient

    texts = [f"sized text {i} " + "word " * (i % 30) for i in range(300)]
    reference = np.array(EmbeddingClient(base_url=server.base_url, model=server.model).embed_documents(texts))
    made = EmbeddingClient(server=server)
    np.testing.assert_allclose(
        np.array(made.embed_documents(texts)), reference, atol=1e-5 if BACKEND == "local" else 2e-2
    )
    # the shape comes from the server itself at the first call, as for a client given its URL
    if BACKEND == "local":  # few large requests: what the local backend is fastest with
        assert made.request_shape == {"batch_size": 4096, "max_batch_tokens": 1 << 20, "max_concurrency": 1}
    else:  # SGLang advertises none: the package defaults (measured best on a GPU)
        assert made.request_shape == {"batch_size": 32, "max_batch_tokens": 8192, "max_concurrency": 8}
    # explicit settings win, in the core and in the adapters
    told = EmbeddingClient(server=server, batch_size=16)
    told.embed_documents(texts[:2])
    assert told.request_shape["batch_size"] == 16
    adapter = QwenSGLangEmbeddings(server=server, max_concurrency=4)
    adapter.embed_documents(texts[:2])
    assert adapter.client.request_shape["max_concurrency"] == 4


# ---------------------------------------------------------------------- no orphans (issue 15)

_OWNER_LOCAL = r"""
import json, os, sys, time
from qwen_sglang.servers import LocalEmbeddingServer
server = LocalEmbeddingServer(sys.argv[1]).start()
print(json.dumps({"pid": server.pid, "pgid": os.getpgid(server.pid), "url": server.root_url}), flush=True)
time.sleep(600)
"""

_OWNER_TREE = r"""
import json, os, signal, sys, time
from tests.integration.process_trees import TreeServer
if sys.argv[1] == "app-handler":
    def on_term(signum, frame):
        print("the application's handler ran", flush=True)
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
with TreeServer() as server:
    info = {"pid": server.pid, "pgid": os.getpgid(server.pid), "scheduler": server.scheduler_pid()}
    print(json.dumps(info), flush=True)
    time.sleep(600)
"""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def test_an_owner_killed_by_sigkill_takes_its_server_with_it(qwen_model_dir: Path) -> None:
    owner, info = run_owner(_OWNER_LOCAL, str(qwen_model_dir))
    pgid = int(info["pgid"])  # type: ignore[call-overload]
    try:
        assert httpx.get(f"{info['url']}/health", timeout=10).status_code == 200
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        # the watchdog notices at once and stops the group: SIGTERM, then SIGKILL after the grace
        assert wait_until(lambda: not group_alive(pgid), 40), "the server outlived the process that owned it"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{info['url']}/health", timeout=2)
    finally:
        _kill_group(pgid)


def test_sigterm_of_the_owner_runs_the_normal_stop_then_dies_of_it() -> None:
    owner, info = run_owner(_OWNER_TREE, "default")
    pgid, scheduler = int(info["pgid"]), int(info["scheduler"])  # type: ignore[call-overload]
    try:
        assert alive(scheduler)
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=60) == -signal.SIGTERM  # the default disposition, as without us
        # stopped *before* the owner died (the normal stop, not the watchdog after it)
        assert not group_alive(pgid) and not alive(scheduler)
    finally:
        _kill_group(pgid)


def test_sigterm_goes_to_the_applications_own_handler_first() -> None:
    owner, info = run_owner(_OWNER_TREE, "app-handler")
    pgid = int(info["pgid"])  # type: ignore[call-overload]
    try:
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=60) == 0  # its handler raised SystemExit(0); `with` stopped the server
        assert owner.stdout is not None and "the application's handler ran" in owner.stdout.read()
        assert not group_alive(pgid)
    finally:
        _kill_group(pgid)


def test_a_failed_start_stops_the_children_of_the_server() -> None:
    srv = TreeServer(fail=True)
    with pytest.raises(ServerStartError) as info:
        srv.start()
    assert info.value.returncode == 3
    scheduler = srv.scheduler_pid()  # started by the server before it failed; in its group
    try:
        assert wait_until(lambda: not alive(scheduler), 30), "the failed server's child was left running"
    finally:
        _kill(scheduler)


def test_stop_after_the_server_was_sigkilled_stops_its_children() -> None:
    srv = TreeServer()
    srv.start()
    try:
        scheduler = srv.scheduler_pid()
        assert srv.pid is not None
        os.kill(srv.pid, signal.SIGKILL)
        assert wait_until(lambda: not srv.is_running(), 10)
    finally:
        srv.stop()
    try:
        assert wait_until(lambda: not alive(scheduler), 30), "the killed server's child was left running"
    finally:
        _kill(scheduler)
    assert srv.returncode == -signal.SIGKILL


def test_returncode_and_wait_are_the_public_handle_on_the_process() -> None:
    srv = TreeServer()
    assert srv.returncode is None
    with pytest.raises(ServerStartError, match="not started"):
        srv.wait()
    with srv:
        assert srv.returncode is None and srv.pid is not None
        with pytest.raises(TimeoutError, match="still runs"):
            srv.wait(timeout=0.2)
        os.kill(srv.pid, signal.SIGTERM)  # stopped from outside, as a user or a supervisor would
        assert srv.wait(timeout=30) == -signal.SIGTERM
        assert srv.returncode == -signal.SIGTERM
    assert srv.returncode == -signal.SIGTERM and srv.wait() == -signal.SIGTERM  # kept after stop()


def test_a_server_started_from_a_thread_outlives_the_thread() -> None:
    # PR_SET_PDEATHSIG would fire when the *thread* that forked exits; the watchdog watches the process
    started: list[ManagedServer] = []
    thread = threading.Thread(target=lambda: started.append(TreeServer().start()))
    thread.start()
    thread.join()
    with started[0] as srv:
        time.sleep(1.0)  # give a thread-bound parent-death signal the time it would need
        assert srv.is_running() and httpx.get(srv.root_url + "/health", timeout=5).status_code == 200


def test_a_forked_child_never_stops_its_parents_server() -> None:
    with TreeServer() as srv:
        child = os.fork()
        if child == 0:  # what a multiprocessing worker inherits: the object, not the process
            try:
                srv.stop()
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert srv.is_running() and httpx.get(srv.root_url + "/health", timeout=5).status_code == 200


# ---------------------------------------------------------------------- serve, as a user runs it (issue 16)

_BLOCK_LOCAL_EXTRA = r"""
import importlib.abc, sys

class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "sentence_transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
"""


def run_cli(*args: str, prelude: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = prelude + "\nimport sys\nfrom qwen_sglang.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def test_serve_checks_the_model_before_it_says_it_serves() -> None:
    out = run_cli("serve", "--backend", "local", "--model", "/nope/Qwen3-Embedding-0.6B", "--port", "0")
    assert out.returncode == 1
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert "serving" not in out.stdout


def test_serve_on_a_busy_port_names_it_and_the_way_out(qwen_model_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        out = run_cli("serve", "--backend", "local", "--model", str(qwen_model_dir), "--port", str(port))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr and "--port 0" in out.stderr
    assert "Errno" not in out.stderr and "Traceback" not in out.stderr and "serving" not in out.stdout


def test_serve_without_the_local_extra_says_what_to_install(qwen_model_dir: Path) -> None:
    out = run_cli("serve", "--backend", "local", "--model", str(qwen_model_dir), prelude=_BLOCK_LOCAL_EXTRA)
    assert out.returncode == 1
    assert "pip install 'qwen-sglang[local]'" in out.stderr and "Traceback" not in out.stderr
    # the managed servers' checks need no web framework either (core modules only)
    check = _BLOCK_LOCAL_EXTRA + (
        "from qwen_sglang.servers import LocalEmbeddingServer, ServerStartError\n"
        "try:\n    LocalEmbeddingServer(sys.argv[1]).start()\n"
        "except ServerStartError as exc:\n    print(exc)\n"
        "print('fastapi imported:', 'fastapi' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check, str(qwen_model_dir)], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'qwen-sglang[local]'" in out.stdout and "fastapi imported: False" in out.stdout


_BLOCK_ROUTER = r"""
import importlib.abc, sys

class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "sglang_router":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
"""


def test_serve_router_without_the_router_extra_says_what_to_install(qwen_model_dir: Path) -> None:
    out = run_cli("serve", "--backend", "local", "--model", str(qwen_model_dir), "--router", "2", prelude=_BLOCK_ROUTER)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "pip install 'qwen-sglang[router]'" in out.stderr and "Traceback" not in out.stderr
    assert "ready to roll" not in out.stdout


def test_serve_port_0_and_a_key_file(qwen_model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-a-file-271828\n")
    key_file.chmod(0o600)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qwen_sglang", "serve", "--backend", "local", "--model", str(qwen_model_dir)]
            + ["--port", "0", "--api-key-file", str(key_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: "ready to roll" in log.read_text() or proc.poll() is not None, 180)
        text = log.read_text()
        assert proc.poll() is None, text
        url = next(w for w in text.split() if w.startswith("http://127.0.0.1:") and w.endswith("/v1"))
        assert not url.endswith(":0/v1")  # the port the system picked, not 0
        assert httpx.post(url + "/embeddings", json={"input": "x"}, timeout=30).status_code == 401
        ok = httpx.post(url + "/embeddings", json={"input": "x"}, headers=_bearer("sk-from-a-file-271828"), timeout=30)
        assert ok.status_code == 200
        assert b"sk-from-a-file-271828" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


_ECHO_ARGS = r"""
import os, stat, sys
import yaml
argv = sys.argv[1:]
print("argv:", " ".join(argv))
if "--config" in argv:
    path = argv[argv.index("--config") + 1]
    print("config mode:", oct(stat.S_IMODE(os.stat(path).st_mode)))
    print("config:", yaml.safe_load(open(path)))
raise SystemExit(3)
"""


class _SGLangEcho(SGLangServer):
    """SGLangServer's own launch, with a child that reports what it received instead of serving."""

    def validate(self) -> None:
        pass

    def command(self) -> list[str]:
        return [sys.executable, "-c", _ECHO_ARGS, *super().command()[3:]]  # in place of -m sglang.launch_server


def test_sglang_gets_its_key_in_a_private_config_file() -> None:
    srv = _SGLangEcho("/m", api_key="sk-sglang-secret-777", startup_timeout=30, sglang_version="0.5.5")
    with pytest.raises(ServerStartError) as info:
        srv.start()
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in info.value.log_tail.splitlines()}
    assert "--api-key" not in lines["argv"] and "--config" in lines["argv"]  # what ps shows
    assert lines["config mode"] == "0o600"
    assert lines["config"] == "{'api-key': '***'}"  # the key itself, masked by the log pump
    assert not Path(lines["argv"].split("--config ")[1].split()[0]).exists()  # removed at stop


def test_older_sglang_gets_its_key_on_argv_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    srv = _SGLangEcho("/m", api_key="sk-sglang-secret-778", startup_timeout=30, sglang_version="0.5.4")
    with pytest.raises(ServerStartError) as info, caplog.at_level(logging.WARNING, logger="qwen_sglang.servers"):
        srv.start()
    assert "--api-key ***" in info.value.log_tail and "visible to local users in ps" in caplog.text


_READY_BEHIND_A_KEY = r"""
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        # /ready answers 401 without the key (as a server may that keeps only /health open); /health 200
        self.send_response({"/ready": 401, "/health": 200}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class _ReadyBehindAKey(ManagedServer):
    backend = "stub"

    def command(self) -> list[str]:
        return [sys.executable, "-c", _READY_BEHIND_A_KEY, str(self.port)]


def test_readiness_falls_back_to_health_when_ready_is_not_open() -> None:
    with _ReadyBehindAKey("/stub", startup_timeout=30) as srv:  # a 401 on /ready would never turn 200
        assert srv.is_running()


_TAKEN_ONCE = r"""
import http.server, os, sys
marker = sys.argv[2]
if not os.path.exists(marker):  # the first start: another process bound the picked port first
    open(marker, "w").close()
    print("OSError: [Errno 98] Address already in use", flush=True)
    raise SystemExit(1)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class _TakenOnce(ManagedServer):
    backend = "stub"
    marker = ""

    def command(self) -> list[str]:
        return [sys.executable, "-c", _TAKEN_ONCE, str(self.port), self.marker]


def test_a_picked_port_taken_before_the_server_binds_it_is_picked_again(tmp_path: Path) -> None:
    srv = _TakenOnce("/stub", startup_timeout=30)
    srv.marker = str(tmp_path / "started-once")
    first = srv.port
    with srv:
        assert srv.is_running() and srv.port != first
    given = _TakenOnce("/stub", port=free_port(), startup_timeout=30)  # a port the user chose is not changed
    given.marker = str(tmp_path / "given-once")
    with pytest.raises(ServerStartError, match="port is already in use"):
        given.start()


def test_a_port_whose_url_a_client_holds_is_not_moved_before_start(tmp_path: Path) -> None:
    # a client made before start holds the URL (and the server's key): moving the server to
    # another port sent its requests, key included, to whatever process took the old one
    srv = _TakenOnce("/stub", api_key="sk-moved-port-4411", startup_timeout=30)
    srv.marker = str(tmp_path / "started-before")
    Path(srv.marker).touch()  # the stub binds at once
    client = srv.get_client()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", srv.port))
        squatter.listen()
        with pytest.raises(ServerStartError, match="make clients after start"):
            srv.start()
    assert srv.base_url == client.base_url and srv.pid is None


def test_a_port_picked_early_and_taken_before_start_is_picked_again(tmp_path: Path) -> None:
    # a URL read before start (a router's worker list, a log line) picks the port; another
    # process listening there by start() used to fail the start instead of picking another
    srv = _TakenOnce("/stub", startup_timeout=30)
    srv.marker = str(tmp_path / "started-before")
    Path(srv.marker).touch()  # the stub binds at once
    early = srv.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", early))
        squatter.listen()
        with srv:
            assert srv.is_running() and srv.port != early
