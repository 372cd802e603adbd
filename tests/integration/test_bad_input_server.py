"""The rest of the bad-input and security matrix, against a real server."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest

from qwen_sglang import APIConnectionError, EmbeddingClient, InvalidInputError
from qwen_sglang.server import LocalEmbeddingServer, ManagedServer
from tests.conftest import TOL


def test_nul_bytes_are_embedded_as_text(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url, model="x")
    got = client.embed_documents(["before\x00after"])
    r = httpx.post(server.base_url + "/embeddings", json={"input": ["before\x00after"]}, timeout=30)
    np.testing.assert_allclose(got[0], r.json()["data"][0]["embedding"], atol=TOL)


def test_a_10_mb_string_is_measured_and_refused_by_the_error_policy(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url, model="x", long_text="error")
    huge = "token " * (10 * 1024 * 1024 // 6)
    with pytest.raises(InvalidInputError, match=r"index 0 has \d{6,} tokens, more than max_tokens=32768"):
        client.embed_documents([huge])


def test_https_to_an_http_server_is_a_connection_error(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url.replace("http://", "https://"), model="x", max_retries=0)
    with pytest.raises(APIConnectionError, match="could not connect"):
        client.embed_documents(["x"])


def test_local_backend_caps_request_size(server: ManagedServer) -> None:
    r = httpx.post(server.base_url + "/embeddings", json={"input": ["x"] * 4097}, timeout=30)
    assert r.status_code == 413
    assert r.json()["message"] == "Too many inputs in one request: 4097 > 4096"


def test_binding_all_interfaces_without_a_key_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qwen_sglang.server"):
        LocalEmbeddingServer("/m", host="0.0.0.0")
    assert "without an api_key" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qwen_sglang.server"):
        LocalEmbeddingServer("/m", host="0.0.0.0", api_key="k")
        LocalEmbeddingServer("/m")
    assert caplog.text == ""
