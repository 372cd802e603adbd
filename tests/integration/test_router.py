"""A managed router: N workers behind the real ``sglang-router``, started, used and stopped as one.

On CPU the workers are local-backend processes (sglang-router health-checks and routes them like
SGLang workers); on a GPU the same object holds one `SGLangServer` per GPU (bench/dp_scaling.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_sglang import ConfigurationError, InvalidInputError, ServerStartError
from qwen_sglang.servers import LocalEmbeddingServer, ManagedRouter, router_available
from tests.conftest import BACKEND
from tests.integration.process_trees import alive, group_alive, run_owner, session_members, wait_until

pytestmark = [
    pytest.mark.skipif(not router_available(), reason="sglang-router is not installed (the router extra)"),
    pytest.mark.skipif(BACKEND != "local", reason="CPU workers; GPU workers are measured by bench/dp_scaling.py"),
]


def test_a_router_of_two_local_workers_serves_their_vectors(qwen_model_dir: Path) -> None:
    texts = [f"passage number {i} about routers" for i in range(24)]
    with ManagedRouter([LocalEmbeddingServer(qwen_model_dir) for _ in range(2)]) as router:
        assert router.is_running() and len({w.port for w in router.workers}) == 2
        ready = httpx.get(router.root_url + "/readiness", timeout=10).json()
        assert ready["healthy_workers"] == ready["total_workers"] == 2
        client = router.get_client(batch_size=4)
        routed = np.asarray(client.embed_documents(texts))
        # the router is recognised (/get_server_info: router_manager) and sized from /workers
        assert client.server_facts is not None and client.server_facts.dp_size == 2
        assert client.request_shape["max_concurrency"] == 16
        direct = np.asarray(router.workers[1].get_client().embed_documents(texts))
        assert routed.shape == direct.shape and np.allclose(routed, direct, atol=1e-5)
        pids = [router.pid, *(w.pid for w in router.workers)]
    assert router.returncode is not None and not router.is_running()
    assert not any(alive(pid) for pid in pids if pid is not None)


_OWNER = r"""
import json, os, sys, time
from qwen_sglang.servers import LocalEmbeddingServer, ManagedRouter
router = ManagedRouter([LocalEmbeddingServer(sys.argv[1]) for _ in range(2)]).start()
members = [router.router, *router.workers]
print(json.dumps({"url": router.root_url, "pgids": [os.getpgid(m.pid) for m in members]}), flush=True)
time.sleep(600)
"""


def test_killing_the_owner_leaves_no_process_of_the_router_or_its_workers(qwen_model_dir: Path) -> None:
    owner, info = run_owner(_OWNER, str(qwen_model_dir))
    pgids = [int(g) for g in info["pgids"]]  # type: ignore[attr-defined]
    try:
        assert httpx.get(f"{info['url']}/readiness", timeout=10).status_code == 200
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        assert wait_until(lambda: not any(group_alive(g) for g in pgids), 60), "a member outlived its owner"
    finally:
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def test_a_worker_that_cannot_start_stops_the_others(qwen_model_dir: Path, tmp_path: Path) -> None:
    good, bad = LocalEmbeddingServer(qwen_model_dir), LocalEmbeddingServer(qwen_model_dir, extra_args=["--bogus"])
    router = ManagedRouter(
        [good, bad],
    )
    with pytest.raises(ServerStartError):
        router.start()
    assert not good.is_running() and not bad.is_running() and router.pid is None


def test_a_router_of_keyed_workers_keeps_the_key_off_every_command_line(qwen_model_dir: Path) -> None:
    key = "sk-router-worker-5309"
    with ManagedRouter([LocalEmbeddingServer(qwen_model_dir, api_key=key) for _ in range(2)]) as router:
        assert router.api_key is not None and router.api_key.get_secret_value() == key
        assert len(router.get_client().embed_documents(["a", "b", "c"])) == 3  # the client sends the key
        body = {"input": ["x"], "model": router.model}
        assert httpx.post(router.base_url + "/embeddings", json=body, timeout=30).status_code == 401
        for member in (router.router, *router.workers):
            assert key.encode() not in Path(f"/proc/{member.pid}/cmdline").read_bytes()
        assert key not in router.router.display_command() and key not in router.logs_tail(200)


def test_behind_the_router_long_texts_are_cut_as_its_workers_would_and_queries_carry_a_priority(
    qwen_model_dir: Path,
) -> None:
    # the managed router loads its workers' tokenizer (--model-path): /v1/tokenize answers from the
    # start, keyed workers too; its tokenizer adds no end token, which the client adds itself
    long = " ".join(f"token{i}" for i in range(300))
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            sent.append(json.loads(request.content))

    key = "sk-router-tokenizer-77"
    with ManagedRouter([LocalEmbeddingServer(qwen_model_dir, api_key=key)]) as router:
        http = httpx.Client(event_hooks={"request": [record]}, timeout=60)
        routed = router.get_client(http_client=http, long_text="chunk", max_tokens=64)
        direct = router.workers[0].get_client(long_text="chunk", max_tokens=64)
        assert routed.count_tokens([long, "hello"]) == direct.count_tokens([long, "hello"])
        np.testing.assert_allclose(routed.embed_documents([long]), direct.embed_documents([long]), atol=1e-5)
        windows = [w for r in sent for w in r["input"]]
        assert len(windows) > 1 and all(isinstance(w, list) for w in windows)  # token ids, not the text
        routed.embed_query("what is a router?")
        assert sent[-1].get("priority") == 10 and not any("priority" in r for r in sent[:-1])


def test_behind_the_router_texts_are_cut_to_the_workers_served_context(qwen_model_dir: Path) -> None:
    # the router's /v1/models has no max_model_len: a client of a managed router learns the workers'
    # served context from the router, and cuts long texts to it instead of getting the workers' 400
    long = " ".join(f"token{i}" for i in range(300))
    with ManagedRouter([LocalEmbeddingServer(qwen_model_dir, context_length=64) for _ in range(2)]) as router:
        assert router.served_context == 64
        for long_text in ("chunk", "truncate"):
            routed = router.get_client(long_text=long_text).embed_documents([long, "short"])
            expected = router.workers[0].get_client(long_text=long_text).embed_documents([long, "short"])
            np.testing.assert_allclose(routed, expected, atol=1e-5)
        with pytest.raises(InvalidInputError, match="text at index 0"):
            router.get_client(long_text="error").embed_documents([long])
        # a client in another process (the CLI) cannot learn it: --max-tokens, as `serve --router`
        # says, cuts as the workers' own clients do (the commands had no way to set it)
        argv = [sys.executable, "-m", "qwen_sglang", "embed", "--base-url", router.base_url]
        cut = subprocess.run([*argv, "--max-tokens", "63"], input=long, capture_output=True, text=True, timeout=120)
        assert cut.returncode == 0, cut.stderr
        got = json.loads(cut.stdout.splitlines()[0])["embedding"]
        np.testing.assert_allclose(got, router.workers[0].get_client().embed_documents([long])[0], atol=1e-5)


def test_workers_whose_folder_has_no_tokenizer_json_still_start_behind_the_router(
    qwen_model_dir: Path, tmp_path: Path
) -> None:
    # the router reads only tokenizer.json from --model-path and dies at start without one; a model
    # folder whose tokenizer is vocab.json + merges.txt serves fine from the workers: the router
    # must start as it did before it was given the workers' folder
    from transformers import AutoTokenizer

    folder = tmp_path / "model"
    shutil.copytree(qwen_model_dir, folder)
    AutoTokenizer.from_pretrained(qwen_model_dir).backend_tokenizer.model.save(str(folder))
    (folder / "tokenizer.json").unlink()
    with ManagedRouter([LocalEmbeddingServer(folder)]) as router:
        assert len(router.get_client().embed_documents(["a", "b"])) == 2


def test_what_a_router_refuses(qwen_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="share one api_key"):
        ManagedRouter(
            [LocalEmbeddingServer(qwen_model_dir, api_key="sk-worker-1234"), LocalEmbeddingServer(qwen_model_dir)]
        )
    with pytest.raises(ConfigurationError, match="same model"):
        ManagedRouter(
            [LocalEmbeddingServer(qwen_model_dir), LocalEmbeddingServer(qwen_model_dir, served_model_name="x")]
        )
    with pytest.raises(ConfigurationError, match="non-empty"):
        ManagedRouter([])


def test_serve_router_from_the_command_line_stops_everything_on_ctrl_c(qwen_model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "qwen_sglang", "serve", "--backend", "local", "--model", str(qwen_model_dir)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--router", "2", "--port", "0", "--context-length", "64"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: "ready to roll" in log.read_text() or proc.poll() is not None, 240), log.read_text()
        text = log.read_text()
        assert proc.poll() is None, text
        assert "max_tokens=63" in text  # clients in other processes cannot learn the workers' context
        url = next(w for w in text.split() if w.startswith("http://127.0.0.1:") and w.endswith("/v1"))
        assert len(session_members(proc.pid)) >= 7  # serve, the router, 2 workers, 3 watchdogs
        body = {"input": ["hello", "world"], "model": str(qwen_model_dir)}
        assert httpx.post(url + "/embeddings", json=body, timeout=60).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        assert wait_until(lambda: not session_members(proc.pid), 30), "a router or worker process was left"
    finally:
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
