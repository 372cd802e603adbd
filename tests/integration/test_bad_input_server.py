"""The rest of the bad-input and security matrix, against a real server."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_sglang import APIConnectionError, EmbeddingClient, InvalidInputError
from qwen_sglang.servers import SERVER_API_KEY_ENV, LocalEmbeddingServer, ManagedServer, free_port
from tests.conftest import BACKEND, TOL
from tests.integration.process_trees import group_members, wait_until


def test_nul_bytes_are_embedded_as_text(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url)
    got = client.embed_documents(["before\x00after"])
    r = httpx.post(server.base_url + "/embeddings", json={"input": ["before\x00after"]}, timeout=30)
    np.testing.assert_allclose(got[0], r.json()["data"][0]["embedding"], atol=TOL)


def test_a_10_mb_string_is_measured_and_refused_by_the_error_policy(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url, long_text="error")
    huge = "token " * (10 * 1024 * 1024 // 6)
    with pytest.raises(
        InvalidInputError,
        match=r"index 0 has \d{6,} tokens, more than the limit of 32767 \(max_tokens, or one less than the served",
    ):
        client.embed_documents([huge])


def test_https_to_an_http_server_is_a_connection_error(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url.replace("http://", "https://"), max_retries=0)
    with pytest.raises(APIConnectionError, match="could not connect"):
        client.embed_documents(["x"])


def test_local_backend_caps_request_size(server: ManagedServer) -> None:
    r = httpx.post(server.base_url + "/embeddings", json={"input": ["x"] * 4097}, timeout=30)
    assert r.status_code == 413
    assert r.json()["message"] == "Too many inputs in one request: 4097 > 4096"


def test_binding_all_interfaces_without_a_key_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qwen_sglang.servers"):
        LocalEmbeddingServer("/m", host="0.0.0.0")
    assert "without an API key" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qwen_sglang.servers"):
        LocalEmbeddingServer("/m", host="0.0.0.0", api_key="k")
        LocalEmbeddingServer("/m")
    assert caplog.text == ""


# ---------------------------------------------------------------------- the local backend under hostile input (issue 15)

local_only = pytest.mark.skipif(BACKEND != "local", reason="limits of the local backend (SGLang has its own)")
_JSON = {"Content-Type": "application/json"}


def _keepalive_pair(server: ManagedServer, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``body``, then a good request on the same connection: (first status, first body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", "/v1" + path, body=body, headers=_JSON)
        first = conn.getresponse()
        answer = json.loads(first.read())
        sock = conn.sock
        conn.request("POST", "/v1/embeddings", body=b'{"input": "the next request"}', headers=_JSON)
        second = conn.getresponse()
        assert second.status == 200, second.read()
        second.read()
        assert conn.sock is sock, "the server closed the keep-alive connection after the bad request"
        return first.status, answer
    finally:
        conn.close()


@local_only
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/embeddings", b'{"input": ' + b"[" * 100_000, "more than 65536 JSON arrays and objects"),
        ("/embeddings", b'{"input": [' + b",".join([b"[]"] * 70_000) + b"]}", "more than 65536 JSON arrays"),
        ("/embeddings", b'{"input": [' + b",".join([b'"ab"'] * 70_000) + b"]}", "more than 65536 JSON strings"),
        ("/embeddings", b'{"input": [' + b",".join([b"1.5"] * 1_100_000) + b"]}", "more numbers than the token"),
        ("/embeddings", b'{"input": "x \\ud800"}', "Input is not valid Unicode: lone surrogate"),
        ("/embeddings", b'{"input": ["ok", "x \\udfff y"]}', "Input at index 1 is not valid Unicode"),
        ("/tokenize", b'{"prompt": "x \\ud800"}', "prompt is not valid Unicode"),
        ("/tokenize", b'{"prompt": ["ok", "\\ud800"]}', "prompt at index 1 is not valid Unicode"),
        ("/embeddings", b'{"input": ' + b"[" * 50_000, "nested too deeply"),
        ("/embeddings", b'{"input": "x", "encoding_format": []}', "encoding_format must be either 'float' or 'base64'"),
        ("/embeddings", b'{"input": "x", "encoding_format": null}', "encoding_format must be either"),
        ("/tokenize", b'{"prompt": "x", "add_special_tokens": "maybe"}', "add_special_tokens must be a boolean"),
        ("/embeddings", b'{"input": "x", "priority": "high"}', "priority must be an integer"),
        ("/embeddings", b'{"input": "x", "priority": true}', "priority must be an integer"),
        ("/embeddings", b'{"input": "x", "priority": 1.5}', "priority must be an integer"),
    ],
)
def test_bad_input_is_a_400_and_the_connection_lives_on(
    server: ManagedServer, path: str, body: bytes, message: str
) -> None:
    status, answer = _keepalive_pair(server, path, body)
    assert status == (413 if "more " in message else 400) and message in answer["message"]
    assert answer["object"] == "error" and answer["code"] == status


@local_only
def test_brackets_quotes_and_backslashes_inside_texts_are_just_text(server: ManagedServer) -> None:
    texts = ['[[{{ \\" say "hi" ' * 1000] * 20 + ["C:\\dir\\", '"', "\\"]  # 80k brackets, inside strings
    r = httpx.post(server.base_url + "/tokenize", json={"prompt": texts}, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["tokens"]) == 23


@local_only
def test_tokenize_reads_fields_as_sglang_does(server: ManagedServer) -> None:
    status, answer = _keepalive_pair(server, "/tokenize", b'{"prompt": []}')
    assert status == 200 and answer["tokens"] == [] and answer["count"] == []  # SGLang: empty lists
    with_end = httpx.post(server.base_url + "/tokenize", json={"prompt": "hello"}, timeout=30).json()["tokens"]
    for no in (False, "false", "0", 0):  # pydantic's reading of a bool, which SGLang uses
        got = httpx.post(server.base_url + "/tokenize", json={"prompt": "hello", "add_special_tokens": no}, timeout=30)
        assert got.json()["tokens"] == with_end[:-1], no  # no <|endoftext|>


def test_an_internal_error_is_a_500_that_keeps_the_connection(qwen_model_dir: Path) -> None:
    import uvicorn

    from qwen_sglang.local_backend import LocalBackendConfig, ModelRunner, create_app

    class Broken(ModelRunner):  # no model: every tokenisation fails as a bug would
        def start(self) -> None:
            self.ready.set()

        def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
            raise RuntimeError("tokenizer exploded")

    config = LocalBackendConfig(model=str(qwen_model_dir), port=free_port())
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, Broken(config)), host="127.0.0.1", port=config.port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 30)
        conn = http.client.HTTPConnection("127.0.0.1", config.port, timeout=30)
        answers = []
        for _ in range(2):
            conn.request("POST", "/v1/tokenize", body=b'{"prompt": "x"}', headers=_JSON)
            response = conn.getresponse()
            answers.append((response.status, json.loads(response.read())["type"], conn.sock))
        conn.close()
        assert answers[0][:2] == answers[1][:2] == (500, "InternalServerError")
        assert answers[0][2] is answers[1][2], "the 500 closed the keep-alive connection"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@local_only
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_post_bodies_must_be_declared_json(server: ManagedServer, content_type: str | None) -> None:
    # what a web page can send to any URL without a CORS preflight (curl -d sends a form type)
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(server.base_url + "/embeddings", content=b'{"input": "x"}', headers=headers, timeout=30)
    assert r.status_code == 400 and "Only 'application/json' is allowed" in r.json()["message"]
    ok = httpx.post(
        server.base_url + "/embeddings",
        content=b'{"input": "x"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert ok.status_code == 200


@local_only
def test_host_names_a_rebinding_page_would_send_are_refused(server: ManagedServer) -> None:
    def status(host: str) -> int:
        r = httpx.post(server.base_url + "/embeddings", json={"input": "x"}, headers={"Host": host}, timeout=30)
        return r.status_code

    port = server.port
    assert status(f"attacker.example:{port}") == 400
    assert "--allowed-hosts" in httpx.get(server.base_url + "/models", headers={"Host": "x.example"}).json()["message"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"[::1]:{port}", "10.1.2.3"):
        assert status(host) == 200, host


KEY = "sk-local-backend-314159"


@pytest.fixture(scope="module")
def keyed_server(qwen_model_dir: Path) -> Iterator[ManagedServer]:
    if BACKEND != "local":
        pytest.skip("the local backend's key handling")
    with LocalEmbeddingServer(qwen_model_dir, api_key=KEY, allowed_hosts=["embed.internal"]) as srv:
        yield srv


def test_the_api_key_is_on_no_command_line(keyed_server: ManagedServer) -> None:
    assert keyed_server.pid is not None
    members = group_members(os.getpgid(keyed_server.pid))
    assert keyed_server.pid in members
    for pid in members:  # what `ps` shows every local user
        assert KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    shown = keyed_server.display_command()
    assert KEY not in shown and shown.startswith(f"{SERVER_API_KEY_ENV}=*** ")
    url = keyed_server.base_url + "/embeddings"
    assert httpx.post(url, json={"input": "x"}, timeout=30).status_code == 401
    wrong = httpx.post(url, json={"input": "x"}, headers={"Authorization": f"Bearer {KEY[:-1]}0"}, timeout=30)
    assert wrong.status_code == 401
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(url, json={"input": "x"}, headers=headers, timeout=30).status_code == 200
    named = httpx.post(url, json={"input": "x"}, headers={**headers, "Host": "embed.internal"}, timeout=30)
    assert named.status_code == 200  # allowed_hosts
    other = httpx.post(url, json={"input": "x"}, headers={**headers, "Host": "embed.example"}, timeout=30)
    assert other.status_code == 400


def _raw_post_headers(port: int, length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    head = f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{size}\r\n\r\n"
    return head.encode()


@local_only
def test_a_declared_huge_body_is_refused_before_it_is_sent(server: ManagedServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_raw_post_headers(server.port, 1 << 30))  # 1 GiB announced, nothing sent
        answer = b""
        while b"Request body too large" not in answer:  # the head and the body may come apart
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 413") and b"Request body too large" in answer


@local_only
def test_a_streamed_body_is_cut_off_at_the_limit(server: ManagedServer) -> None:
    chunk = b"a" * (1 << 20)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    total, sent = 256, 0  # MiB, far past the 32 MiB limit
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(_raw_post_headers(server.port, None) + b'5\r\n{"inp\r\n')
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += 1
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < total  # answered while the client was still sending: the body was never held whole


@local_only
def test_token_ids_count_against_the_request_limit(server: ManagedServer) -> None:
    # 40 inputs x 30,000 ids = 1.2M tokens (the limit is 1,048,576): refused before any forward pass
    body = b'{"input": [' + b",".join([b"[" + b",".join([b"1000"] * 30_000) + b"]"] * 40) + b"]}"
    r = httpx.post(server.base_url + "/embeddings", content=body, headers=_JSON, timeout=120)
    assert r.status_code == 413 and "token" in r.json()["message"]
    # the 4,096 x 3,000 ids: 61 MB, refused on its Content-Length
    body = b'{"input": [' + b",".join([b"[" + b",".join([b"1000"] * 3000) + b"]"] * 4096) + b"]}"
    r = httpx.post(server.base_url + "/embeddings", content=body, headers=_JSON, timeout=120)
    assert r.status_code == 413


def _send_big_request(port: int) -> socket.socket:
    """1,000 inputs of 1,000 ids (1M tokens, under the limit): some 60 forward passes of work."""
    body = json.dumps({"input": [[1000 + i] * 1000 for i in range(1000)]}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(_raw_post_headers(port, len(body)) + body)
    return sock


@local_only
def test_a_large_request_neither_starves_a_small_one_nor_outlives_its_client(server: ManagedServer) -> None:
    big = _send_big_request(server.port)
    try:
        time.sleep(1.0)  # the worker is on it now
        small = httpx.post(server.base_url + "/embeddings", json={"input": "one word"}, timeout=120)
        assert small.status_code == 200
        assert not select.select([big], [], [], 0)[0], "the small request waited for the large one"
    finally:
        big.close()  # the client goes away: its remaining inputs are dropped
    assert wait_until(lambda: "client went away: dropped" in server.logs_tail(300), 60), server.logs_tail(20)


@local_only
def test_connections_that_send_no_request_are_closed(server: ManagedServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(300)]
    idle[0].sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # slowloris: headers never end
    try:
        ok = httpx.post(server.base_url + "/embeddings", json={"input": "still served"}, timeout=30)
        assert ok.status_code == 200

        def all_closed() -> bool:
            return all(select.select([s], [], [], 0)[0] and s.recv(1) == b"" for s in idle)

        assert wait_until(all_closed, 40), "idle connections are held open"  # header timeout: 10 s
    finally:
        for sock in idle:
            sock.close()


def test_sigterm_stops_a_busy_local_backend_within_seconds(qwen_model_dir: Path) -> None:
    if BACKEND != "local":
        pytest.skip("the local backend's shutdown")
    srv = LocalEmbeddingServer(qwen_model_dir)
    with srv:
        big = _send_big_request(srv.port)
        time.sleep(1.0)
        srv.stop(timeout=15)  # SIGTERM; SIGKILL only if it still runs after 15 s
        answer = big.recv(65536)
        big.close()
    assert srv.returncode != -signal.SIGKILL, "the server ignored SIGTERM until it was killed"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503")


def test_the_backend_refuses_what_sglang_refuses_with_its_messages(qwen_model_dir: Path) -> None:
    """SGLang's ``EmbeddingHandler._validate_request`` and over-long check, message for message."""
    from tests.conftest import make_server

    with make_server(qwen_model_dir, context_length=16) as srv:

        def message(body: dict[str, Any]) -> str:
            r = httpx.post(srv.base_url + "/embeddings", json=body, timeout=30)
            assert r.status_code == 400, r.text
            return str(r.json()["message"])

        assert message({"input": ""}) == "Input cannot be empty"
        assert message({"input": " \n"}) == "Input cannot be empty or whitespace only"
        assert message({"input": ["a", "  "]}) == "Input at index 1 cannot be empty or whitespace only"
        assert message({"input": [[9707], []]}) == "Input at index 1 cannot be empty"
        assert message({"input": "x", "encoding_format": "int8"}) == (
            "encoding_format must be either 'float' or 'base64', got 'int8'"
        )
        # exactly the context length is too long for SGLang (4096 of 4096 refused, 4095 passes)
        assert message({"input": [[9707] * 16]}) == (
            "The input (16 tokens) is longer than the model's context length (16 tokens)."
        )
        ok = httpx.post(srv.base_url + "/embeddings", json={"input": [[9707] * 15]}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert httpx.get(srv.root_url + "/ready", timeout=30).status_code == 200
