"""A rerank call with no server: request items, truncation, batches, answers, ranking; and the
corners no real server produces, through an in-process transport (a 413 for a batch, answers
of the wrong shape)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from qwen_sglang import (
    APIConnectionError,
    MalformedResponseError,
    QwenSGLangSettings,
    RequestTooLargeError,
    RerankClient,
    RerankResult,
)
from qwen_sglang.rerank.plan import Pair, RerankCall, batches, parse_scores, score_payload
from qwen_sglang.rerank_format import PREFIX, SUFFIX, RerankTemplate, format_body
from qwen_sglang.settings import DEFAULT_MODEL, DEFAULT_RERANK_MODEL

TEMPLATE = RerankTemplate(prefix_ids=(1, 2, 3), suffix_ids=(7, 8), yes_id=9693, no_id=2152)


def call(docs: list[str], **kw: Any) -> RerankCall:
    options: dict[str, Any] = {"instruction": None, "top_n": None, "return_documents": False, "empty_text": "raise"}
    return RerankCall.create("what is a panda?", docs, **(options | kw))


def test_text_items_carry_qwens_prompt_split_at_the_document() -> None:
    c = call(["A bear.", "大熊猫"])
    pairs = c.pairs(TEMPLATE, 100_000, {}, "chunk")
    payload = score_payload("m", c, TEMPLATE, pairs)
    assert [payload["query"] + item for item in payload["items"]] == [
        PREFIX + format_body("what is a panda?", d) + SUFFIX for d in ["A bear.", "大熊猫"]
    ]
    assert payload["label_token_ids"] == [9693, 2152] and payload["apply_softmax"] is True
    assert payload["model"] == "m"


def test_only_documents_that_may_not_fit_are_measured_and_cut_in_the_body() -> None:
    c = call(["short", "x" * 400])
    limit = 200
    assert c.suspects(TEMPLATE, limit) == [1]  # the short one has fewer bytes than 200 - 5 tokens
    assert c.suspects(TEMPLATE, None) == []  # the limit is not known: the server applies its own
    body_ids = list(range(100, 500))
    pairs = c.pairs(TEMPLATE, limit, {1: body_ids}, "chunk")
    assert pairs[0].text == "short" + SUFFIX
    assert pairs[1].ids == body_ids[: limit - 5] + [7, 8]  # the first body tokens, then the suffix
    assert pairs[1].cost == limit
    payload = score_payload(None, c, TEMPLATE, [pairs[1]])
    assert payload["query"] == [1, 2, 3] and "model" not in payload
    assert c.pairs(TEMPLATE, limit, {1: body_ids[:50]}, "chunk")[1].text is not None  # measured: it fits


def test_batches_respect_count_and_budget_and_never_mix_text_and_ids() -> None:
    pairs = [
        Pair(0, text="a", cost=10),
        Pair(1, text="b", cost=10),
        Pair(2, ids=[1], cost=10),
        Pair(3, text="c", cost=50),
    ]
    assert [[p.k for p in b] for b in batches(pairs, 8, 1000)] == [[0, 1], [2], [3]]
    assert [[p.k for p in b] for b in batches(pairs[:2], 1, 1000)] == [[0], [1]]
    assert [[p.k for p in b] for b in batches([pairs[3], pairs[0]], 8, 40)] == [[3], [0]]


def test_ranking_is_stable_and_empty_documents_score_zero_last() -> None:
    c = call(["a", "", "b", "c"], empty_text="zero", return_documents=True, top_n=3)
    assert c.rows == [0, 2, 3] and c.zero == [1]
    assert c.results([0.5, 0.9, 0.5]) == [
        RerankResult(2, 0.9, "b"),
        RerankResult(0, 0.5, "a"),
        RerankResult(3, 0.5, "c"),
    ]
    c = call(["a", "", "b"], empty_text="zero")
    assert [r.index for r in c.results([0.0, 0.0])] == [0, 1, 2]  # ties keep the documents' order


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"data": []}, "no 'scores' list"),
        ({"scores": [[0.5, 0.5]]}, "1 scores for 2 documents"),
        ({"scores": [[0.1] * 8, [0.1] * 8]}, "8 values, not \\[P\\(yes\\), P\\(no\\)\\].*embedding model"),
        ({"scores": [[0.5, 0.5], [True, False]]}, "not numbers"),
        ({"scores": [[0.5, 0.5], [float("nan"), 0.5]]}, "finite and within"),
        ({"scores": [[1.5, -0.5], [0.5, 0.5]]}, "finite and within"),
        ({"scores": [[1e-12, 7e-14], [0.5, 0.5]]}, "does not sum to 1: the server ignored apply_softmax"),
    ],
)
def test_malformed_score_answers_are_refused(body: Any, match: str) -> None:
    with pytest.raises(MalformedResponseError, match=match):
        parse_scores(body, 2, "http://x/v1/score")


def test_a_good_answer_gives_p_yes() -> None:
    assert parse_scores({"scores": [[0.25, 0.75], [1, 0]]}, 2, "u") == [0.25, 1.0]


class FakeReranker:
    """An in-process reranker server: discovery, /v1/tokenize (one id per byte), /v1/score
    (P(yes) = 1 / number of items in the request), refusing requests of more than ``cap`` items."""

    def __init__(self, cap: int = 100, rows: Any = None, nameless: bool = False) -> None:
        self.cap = cap
        self.rows = rows
        self.nameless = nameless  # 404 on every discovery endpoint
        self.sizes: list[int] = []
        self.models: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            self.models.append(json.loads(request.content).get("model"))
        if self.nameless and request.method == "GET":
            return httpx.Response(404, json={"message": "Not Found"})
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "rr", "max_model_len": 4096}]})
        if path == "/model_info":
            return httpx.Response(200, json={"model_path": "rr", "is_generation": True})
        if path == "/v1/tokenize":
            prompts = json.loads(request.content)["prompt"]
            return httpx.Response(
                200,
                json={"tokens": [[9693] if p == "yes" else [2152] if p == "no" else list(p.encode()) for p in prompts]},
            )
        if path == "/v1/score":
            items = json.loads(request.content)["items"]
            self.sizes.append(len(items))
            if len(items) > self.cap:
                return httpx.Response(413, json={"message": "too many items"})
            rows = self.rows if self.rows is not None else [[1 / len(items), 1 - 1 / len(items)] for _ in items]
            return httpx.Response(200, json={"scores": rows})
        return httpx.Response(404, json={"message": "no"})


def test_a_413_sends_the_batch_again_in_halves() -> None:
    server = FakeReranker(cap=2)
    client = RerankClient(base_url="http://fake/v1", http_client=httpx.Client(transport=httpx.MockTransport(server)))
    results = client.rerank("q", ["a", "b", "c", "d", "e"])
    assert server.sizes == [5, 2, 3, 1, 2]  # 5 refused; 2 ok; 3 refused; then 1 and 2
    assert sorted(r.index for r in results) == [0, 1, 2, 3, 4]
    assert results[0] == RerankResult(2, 1.0)  # the batch of one scored 1.0
    with pytest.raises(RequestTooLargeError):
        RerankClient(
            base_url="http://fake/v1", http_client=httpx.Client(transport=httpx.MockTransport(FakeReranker(cap=0)))
        ).rerank("q", ["a"])


def test_a_server_that_names_no_model_gets_the_reranker_default(caplog: pytest.LogCaptureFixture) -> None:
    """The reranker shares the embedding client's discovery: a nameless server is assumed to
    serve the RERANKER default (warned once, sent in every request), not the embedding one."""
    server = FakeReranker(nameless=True)
    client = RerankClient(base_url="http://fake/v1", http_client=httpx.Client(transport=httpx.MockTransport(server)))
    with caplog.at_level(logging.WARNING, logger="qwen_sglang"):
        client.rerank("q", ["a", "b"])
        client.rerank("q", ["c"])
    warnings = [r.getMessage() for r in caplog.records if "names no model" in r.getMessage()]
    assert len(warnings) == 1 and DEFAULT_RERANK_MODEL in warnings[0] and "QWEN_SGLANG_RERANK_MODEL" in warnings[0]
    assert DEFAULT_MODEL not in caplog.text
    assert client.model == DEFAULT_RERANK_MODEL and set(server.models) == {DEFAULT_RERANK_MODEL}


def test_a_reranker_that_cannot_connect_names_the_reranker_server_and_how_to_start_one() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client = RerankClient(
        base_url="http://fake/v1", max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(APIConnectionError) as info:
        client.rerank("q", ["a"])
    text = str(info.value)
    assert "could not connect to the reranker server at http://fake" in text
    assert f"qwen-sglang serve --task rerank --model {DEFAULT_RERANK_MODEL}" in text and "Embedding" not in text


def test_an_embedding_shaped_answer_is_refused() -> None:
    server = FakeReranker(rows=[[0.1] * 16])
    client = RerankClient(base_url="http://fake/v1", http_client=httpx.Client(transport=httpx.MockTransport(server)))
    with pytest.raises(MalformedResponseError, match="16 values"):
        client.rerank("q", ["a"])


def test_the_embedding_servers_environment_does_not_name_the_reranker(monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_sglang.rerank.client import reranker_settings

    monkeypatch.setenv("QWEN_SGLANG_MODEL", "Qwen/Qwen3-Embedding-4B")
    monkeypatch.setenv("QWEN_SGLANG_BASE_URL", "http://embed:30000/v1")
    monkeypatch.delenv("QWEN_SGLANG_RERANK_MODEL", raising=False)
    monkeypatch.delenv("QWEN_SGLANG_RERANK_BASE_URL", raising=False)
    s = reranker_settings()
    assert s.model is None and s.base_url == "http://embed:30000/v1"  # learned from the server
    monkeypatch.setenv("QWEN_SGLANG_RERANK_MODEL", "Qwen/Qwen3-Reranker-0.6B")
    monkeypatch.setenv("QWEN_SGLANG_RERANK_BASE_URL", "http://rerank:30001/v1")
    s = reranker_settings(batch_size=4)
    assert (s.model, s.base_url, s.batch_size) == ("Qwen/Qwen3-Reranker-0.6B", "http://rerank:30001/v1", 4)
    s = reranker_settings(QwenSGLangSettings(base_url="http://given:1/v1", model="m"), timeout=5.0)
    assert (s.model, s.base_url, s.timeout) == ("m", "http://given:1/v1", 5.0)
    assert RerankClient(base_url="http://given:1/v1").model == "Qwen/Qwen3-Reranker-0.6B"


@pytest.mark.parametrize("kind", ["client", "langchain", "llama-index"])
def test_pickles_and_reprs_of_the_rerankers_carry_no_secret(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from langchain_qwen_sglang import QwenSGLangReranker
    from llama_index_qwen_sglang import QwenSGLangRerank

    monkeypatch.delenv("QWEN_SGLANG_API_KEY", raising=False)
    key, password = "sk-rerank-secret-123", "pa55-rerank-secret"
    make: Any = {"client": RerankClient, "langchain": QwenSGLangReranker, "llama-index": QwenSGLangRerank}[kind]
    options = {"instruction": "Judge"} if kind == "client" else {"instruction": "Judge", "top_n": 2}
    for secret, obj in (
        (key, make(api_key=key, batch_size=5, **options)),
        (password, make(base_url=f"http://alice:{password}@h/v1", **options)),
    ):
        shown = repr(obj) + str(obj) + ("" if kind == "client" else obj.model_dump_json())
        assert secret not in shown
        data = pickle.dumps(obj)
        assert secret.encode() not in data
        restored = pickle.loads(data)
        client = restored if kind == "client" else restored.client
        assert isinstance(client, RerankClient) and client.instruction == "Judge"
        assert client.settings.api_key is None and client.settings.url_credentials is None
        if kind != "client":
            assert restored.client is not obj.client and restored.top_n == 2


@pytest.mark.parametrize(
    ("models", "info", "server_info", "reranker"),
    [
        # SGLang serving Qwen3-Reranker without --is-embedding: a generation model named as a reranker
        (
            {"data": [{"id": "Qwen/Qwen3-Reranker-0.6B"}]},
            {"model_path": "Qwen/Qwen3-Reranker-0.6B", "is_generation": True},
            None,
            True,
        ),
        ({"data": [{"id": "rr"}]}, {"model_path": "/m/qwen3-reranker-4b", "is_generation": True}, None, True),
        # a chat model, and an embedding model whose name says reranker: not rerankers
        ({"data": [{"id": "Qwen/Qwen3-8B"}]}, {"model_path": "Qwen/Qwen3-8B", "is_generation": True}, None, False),
        ({"data": [{"id": "my-reranker"}]}, {"model_path": "x", "is_generation": False}, None, False),
        # the local backend says so, whatever the name
        ({"data": [{"id": "m"}]}, {"model_path": "m", "is_generation": True, "reranker": {}}, None, True),
        ({"data": [{"id": "m"}]}, {"model_path": "m", "is_generation": True}, {"task": "rerank"}, True),
        (None, None, None, False),  # a server that says nothing
    ],
)
def test_a_reranker_server_is_told_from_the_discovery_answers(
    models: Any, info: Any, server_info: Any, reranker: bool
) -> None:
    from qwen_sglang.client.discovery import parse_facts

    assert parse_facts(models, info, server_info).is_reranker is reranker


@pytest.mark.parametrize(
    ("documents", "match"),
    [({"a", "b"}, "whose order is arbitrary"), ({"doc-1": "A bear."}, r"list\(d.values\(\)\)")],
    ids=["set", "dict"],
)
def test_documents_without_an_order_of_their_own_are_refused(documents: Any, match: str) -> None:
    # a result's index points into the documents: a set has no order to point into, and a dict
    # would be ranked by its keys
    from qwen_sglang import InputTypeError

    with pytest.raises(InputTypeError, match=match):
        call(documents)
