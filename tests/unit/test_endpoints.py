"""Several servers behind one client, at the protocol level (httpx.MockTransport routes by host):
which server each attempt goes to, failover without a pause, servers marked down and probed
again. Real processes: tests/integration/test_endpoints.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from qwen_sglang import AllEndpointsDownError, APIConnectionError, EmbeddingClient
from qwen_sglang.client import endpoints as endpoints_module
from qwen_sglang.client import shells
from tests.unit.test_protocol import both, error, ok_body

URLS = ["http://a:30000/v1", "http://b:30000/v1", "http://c:30000/v1"]


class Hosts:
    """Answers embedding requests per host: ``down`` hosts refuse connections, ``busy`` ones
    answer 503; every embedding request's host is recorded."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.busy: set[str] = set()
        self.hosts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "GET":
            return error(404, "Not Found")
        self.hosts.append(host)
        if host in self.busy:
            return error(503, "loading", {"Retry-After": "5"})
        return httpx.Response(200, json=ok_body(len(json.loads(request.content)["input"])))


def make(hosts: Hosts, **kwargs: Any) -> EmbeddingClient:
    transport = httpx.MockTransport(hosts)
    return EmbeddingClient(
        base_url=kwargs.pop("base_url", URLS),
        model="m",
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
        **kwargs,
    )


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []

    async def fake_async_sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(shells.time, "sleep", pauses.append)
    monkeypatch.setattr(shells.asyncio, "sleep", fake_async_sleep)
    return pauses


def embed(client: EmbeddingClient, texts: list[str], use_async: bool) -> list[list[float]]:
    if use_async:
        return asyncio.run(client.aembed_documents(texts))
    return client.embed_documents(texts)


@both
def test_one_request_at_a_time_goes_round_the_servers(use_async: bool, slept: list[float]) -> None:
    hosts = Hosts()
    embed(make(hosts, batch_size=1, max_concurrency=1), [f"t{i}" for i in range(9)], use_async)
    assert sorted(hosts.hosts) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert all(hosts.hosts[i] not in hosts.hosts[i + 1 : i + 3] for i in range(7))  # in turn


@both
def test_a_dead_server_costs_one_attempt_and_no_pause(use_async: bool, slept: list[float]) -> None:
    hosts = Hosts()
    hosts.down.add("b")
    out = embed(make(hosts, batch_size=1, max_concurrency=1), [f"t{i}" for i in range(8)], use_async)
    assert len(out) == 8 and slept == []  # the request went to another server at once
    assert "b" not in hosts.hosts and hosts.hosts.count("a") == hosts.hosts.count("c") == 4


@both
def test_a_server_answering_503_is_left_for_another(use_async: bool, slept: list[float]) -> None:
    hosts = Hosts()
    hosts.busy.add("a")
    out = embed(make(hosts, batch_size=1, max_concurrency=1), [f"t{i}" for i in range(6)], use_async)
    assert len(out) == 6 and slept == []
    assert hosts.hosts.count("a") == 1  # asked once, then left alone while it is down


def test_a_server_marked_down_is_probed_again_later(monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    now = [1000.0]
    monkeypatch.setattr(endpoints_module.time, "monotonic", lambda: now[0])
    hosts = Hosts()
    hosts.down.add("a")
    client = make(hosts, base_url=URLS[:2], batch_size=1, max_concurrency=1)
    client.embed_documents(["t0", "t1", "t2"])
    assert hosts.hosts == ["b", "b", "b"]
    hosts.down.clear()  # it is back, but still marked down: not asked yet
    client.embed_documents(["t3"])
    assert hosts.hosts[-1] == "b"
    now[0] += 1.5  # past its first pause (1 s): probed by the next request, then used again
    client.embed_documents(["t4", "t5", "t6", "t7"])
    assert hosts.hosts[-4:].count("a") == 2


@both
def test_all_servers_down_is_one_typed_error_naming_each(use_async: bool, slept: list[float]) -> None:
    hosts = Hosts()
    hosts.down.update({"a", "b", "c"})
    with pytest.raises(AllEndpointsDownError) as info:
        embed(make(hosts, max_retries=2), ["t"], use_async)
    for url in URLS:
        assert url in str(info.value)
    assert len(slept) == 2  # each round of the three is one retry, with its pause


def test_a_lone_server_keeps_its_retries() -> None:
    hosts = Hosts()
    hosts.down.add("a")
    with pytest.raises(APIConnectionError) as info:
        make(hosts, base_url=URLS[0], max_retries=0).embed_documents(["t"])
    assert not isinstance(info.value, AllEndpointsDownError)


def test_concurrency_defaults_grow_with_the_servers() -> None:
    client = make(Hosts())
    client.discover()
    assert client.request_shape["max_concurrency"] == 24  # 8 per server
    assert make(Hosts(), max_concurrency=5).request_shape["max_concurrency"] == 5
