"""The client engine's own rules, at the protocol level (httpx.MockTransport): what it does with
answers (re-normalising, refusing duplicates), what it learns from the discovery answers
(SGLang 0.5.17+'s embedding block, ``dp_size``, the served context) and that settings changed
after construction apply. Each runs the sync and the async path (``use_async``)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_sglang import ConfigurationError, EmbeddingClient, MalformedResponseError
from tests.unit.test_discovery import SGLANG
from tests.unit.test_protocol import Recorder, both, embed, ok_body, vec


def client_for(rec: Recorder, **kwargs: Any) -> EmbeddingClient:
    transport = httpx.MockTransport(rec)
    kwargs.setdefault("base_url", "http://mock:30000/v1")
    return EmbeddingClient(
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
        **kwargs,
    )


def bf16(v: np.ndarray) -> np.ndarray:
    """``v`` rounded to bfloat16 (8 bits of mantissa), as SGLang's answers are."""
    bits = v.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.view(np.float32)


@both
def test_answers_rounded_to_bf16_are_given_back_at_unit_length(use_async: bool) -> None:
    # SGLang's vectors are unit length before bf16 rounding, off by up to ~0.3% after it
    dim = 1024
    sent = [bf16(vec(i, dim)) for i in range(4)]
    assert max(abs(float(np.linalg.norm(v)) - 1.0) for v in sent) > 1e-4  # the error being corrected

    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        data = [{"embedding": sent[i].tolist(), "index": i} for i in range(len(payload["input"]))]
        return httpx.Response(200, json={"data": data})

    out = np.array(embed(client_for(Recorder(handler), model="m"), ["a", "b", "c", "d"], use_async))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    for got, v in zip(out, sent, strict=True):  # the direction is the server's
        np.testing.assert_allclose(got, v / np.linalg.norm(v), atol=1e-7)


REASONS = {
    "duplicate index": r"index 0 appears twice",
    "index out of range": r"entry 1 has index 5",
    "fewer vectors": r"1 embeddings for 2 inputs",
}


@both
@pytest.mark.parametrize("case", list(REASONS))
def test_malformed_answers_name_their_reason(case: str, use_async: bool) -> None:
    # the error type alone does not show which check caught the answer (a NaN check caught a
    # duplicate index by accident once): the message names the reason
    from tests.unit.test_protocol import MALFORMED

    body = json.dumps(MALFORMED[case](2)).encode()
    rec = Recorder(lambda r, p: httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    with pytest.raises(MalformedResponseError, match=REASONS[case]):
        embed(client_for(rec, model="m"), ["a", "b"], use_async)


@both
def test_show_progress_draws_a_bar_advancing_per_text(use_async: bool, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))))
    client = client_for(rec, model="m", batch_size=2, show_progress=True)
    embed(client, [f"text {i}" for i in range(5)], use_async)
    err = capsys.readouterr().err
    assert "Embedding" in err and "5/5" in err
    quiet = client_for(rec, model="m", batch_size=2, show_progress=False)
    embed(quiet, [f"text {i}" for i in range(5)], use_async)
    assert "Embedding" not in capsys.readouterr().err


def sglang_with(**info: Any) -> dict[str, Any]:
    """SGLang's discovery answers with ``info`` merged into ``/model_info`` (``server_info`` and
    ``models`` keys go to those endpoints instead)."""
    answers = json.loads(json.dumps(SGLANG))
    answers["/server_info"].update(info.pop("server_info", {}))
    if "models" in info:
        answers["/v1/models"]["data"][0].update(info.pop("models"))
    answers["/model_info"].update(info)
    return answers


def dims_sent(rec: Recorder) -> list[Any]:
    return [r.get("dimensions") for r in rec.requests if "input" in r]


@both
def test_a_server_that_says_it_cannot_truncate_gets_no_dimensions_field(use_async: bool) -> None:
    # SGLang 0.5.17+ says so in /model_info: no request is spent learning it from a 400
    answers = sglang_with(embedding={"supports_dimensions": False, "matryoshka_dimensions": None})
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), answers)
    client = client_for(rec, dimensions=256)
    out = np.array(embed(client, ["a", "b"], use_async))
    assert out.shape == (2, 256)
    assert dims_sent(rec) == [None]
    assert client.client_side_dimensions
    np.testing.assert_allclose(out[0], vec(0, 2560)[:256] / np.linalg.norm(vec(0, 2560)[:256]), atol=1e-6)


@both
def test_matryoshka_dimensions_named_by_the_server_bound_the_widths(use_async: bool) -> None:
    answers = sglang_with(embedding={"supports_dimensions": True, "matryoshka_dimensions": [256, 1024]})
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), p.get("dimensions", 2560))), answers)
    client = client_for(rec, dimensions=512)
    with pytest.raises(ConfigurationError, match=r"dimensions=512 is not one .* \[256, 1024\]"):
        embed(client, ["a"], use_async)
    assert dims_sent(rec) == []  # refused before any embedding request
    assert np.array(embed(client, ["a"], use_async, dimensions=256)).shape == (1, 256)
    assert dims_sent(rec) == [256]


def test_concurrency_grows_with_the_servers_data_parallel_ranks() -> None:
    rec = Recorder(
        lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), sglang_with(server_info={"dp_size": 2})
    )
    client = client_for(rec)
    assert client.request_shape["max_concurrency"] == 8  # before the server is known
    client.embed_query("q")
    assert client.request_shape["max_concurrency"] == 16  # 8 in flight per rank
    explicit = client_for(rec, max_concurrency=4)
    explicit.embed_query("q")
    assert explicit.request_shape["max_concurrency"] == 4  # a setting given still wins
    single = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), sglang_with())
    one = client_for(single)
    one.embed_query("q")
    assert one.request_shape["max_concurrency"] == 8


@both
def test_long_texts_are_cut_at_the_served_context_minus_one(use_async: bool) -> None:
    # /v1/models' max_model_len is the served context (SGLang refuses an input of exactly that
    # many tokens); /v1/tokenize's is the tokenizer's, much larger: the served one counts
    served = 40

    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "prompt" in payload:  # /v1/tokenize: one id per word, the end token when asked
            end = [151643] if payload["add_special_tokens"] else []
            tokens = [[*range(1, len(p.split()) + 1), *end] for p in payload["prompt"]]
            return httpx.Response(200, json={"tokens": tokens, "max_model_len": 32768})
        return httpx.Response(200, json=ok_body(len(payload["input"]), 2560))

    rec = Recorder(handler, sglang_with(models={"max_model_len": served}))
    client = client_for(rec, long_text="truncate")
    embed(client, ["word " * 100], use_async)
    sent = [r["input"][0] for r in rec.requests if "input" in r]
    assert len(sent) == 1 and isinstance(sent[0], list)
    assert len(sent[0]) == served - 1 and sent[0][-1] == 151643


@pytest.mark.parametrize("assign", ["field", "settings"])
def test_settings_changed_after_construction_apply_at_the_next_call(assign: str) -> None:
    rec = Recorder(
        lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), p.get("dimensions", 2560))), sglang_with()
    )
    client = client_for(rec)
    assert len(client.embed_query("q")) == 2560
    if assign == "field":
        client.settings.dimensions = 64
    else:
        client.settings = client.settings.model_copy(update={"dimensions": 64})
    assert len(client.embed_query("q")) == 64
    assert dims_sent(rec) == [None, 64]
    assert rec.discovered.count("/model_info") == 1  # what was learned is kept


def test_a_bad_assignment_is_refused_and_leaves_the_settings_as_they_were() -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), sglang_with())
    client = client_for(rec, model="Qwen/Qwen3-Embedding-4B", dimensions=256)
    with pytest.raises(ConfigurationError, match="outside the Matryoshka range"):
        client.settings.dimensions = 99999
    with pytest.raises(ValueError, match="batch_size") as construction:
        type(client.settings)(batch_size=0)
    with pytest.raises(type(construction.value), match="batch_size"):  # as at construction
        client.settings.batch_size = 0
    assert client.settings.dimensions == 256 and client.settings.batch_size == 32
    assert len(client.embed_query("q")) == 256
    with pytest.raises(ConfigurationError, match="server is read when the settings are made"):
        client.settings.server = None


def test_sync_and_async_calls_share_what_was_learned() -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), sglang_with())
    client = client_for(rec)
    client.embed_query("q")
    asyncio.run(client.aembed_query("q"))
    assert rec.discovered.count("/model_info") == 1


def test_a_new_base_url_is_asked_again_and_what_was_learned_is_not_carried_over() -> None:
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        dim = 2560 if request.url.host == "four" else 1024
        return httpx.Response(200, json=ok_body(len(payload["input"]), dim))

    answers = sglang_with()
    rec = Recorder(handler, answers)
    client = client_for(rec, base_url="http://four:30000/v1")
    assert len(client.embed_query("q")) == 2560
    rec.discovery = sglang_with(models={"id": "small", "root": "small"})
    rec.discovery["/model_info"]["model_path"] = "/models/Qwen3-Embedding-0.6B"
    client.settings.base_url = "http://six:30000/v1"
    assert len(client.embed_query("q")) == 1024  # its width, not the first server's
    assert rec.discovered.count("/model_info") == 2
    assert client.model == "small" and client.embedding_dim == 1024
    assert rec.requests[-1]["model"] == "small"


def priorities_sent(rec: Recorder) -> list[Any]:
    return [r.get("priority", "none") for r in rec.requests if "input" in r]


@pytest.mark.parametrize(("scheduling", "want"), [(True, 10), (False, "none"), (None, "none"), ("yes", "none")])
def test_only_single_queries_to_a_priority_scheduling_server_carry_a_priority(scheduling: Any, want: Any) -> None:
    # SGLang ignores (or, with --abort-on-priority-when-disabled, aborts on) a priority it does
    # not schedule by: the field goes only where /server_info says enable_priority_scheduling
    info = {} if scheduling is None else {"enable_priority_scheduling": scheduling}
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), sglang_with(server_info=info))
    client = client_for(rec)
    client.embed_query("q")
    asyncio.run(client.aembed_query("q"))
    client.embed_documents(["a", "b"])
    client.embed_queries(["q1", "q2"])  # several queries are bulk work
    assert priorities_sent(rec) == [want, want, "none", "none"]


@both
@pytest.mark.parametrize(("setting", "want"), [({"query_priority": 3}, 3), ({"query_priority": None}, "none")])
def test_query_priority_is_the_setting_and_none_sends_none(use_async: bool, setting: dict[str, Any], want: Any) -> None:
    answers = sglang_with(server_info={"enable_priority_scheduling": True})
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), answers)
    client = client_for(rec, **setting)
    if use_async:
        asyncio.run(client.aembed_query("q"))
    else:
        client.embed_query("q")
    assert priorities_sent(rec) == [want]


def router_answers(*dp_sizes: str) -> dict[str, Any]:
    """sglang-router 0.3.2's discovery answers (measured on 2x H200 and on CPU): /server_info
    404, /get_server_info {"router_manager": true, ...}, /workers with each worker's dp_size as
    a string; /model_info and /v1/models are a worker's."""
    answers = json.loads(json.dumps(SGLANG))
    del answers["/server_info"]
    answers["/get_server_info"] = {"router_manager": True, "routers_count": 1, "workers_count": len(dp_sizes)}
    worker = {"url": "http://127.0.0.1:32000", "is_healthy": True}
    answers["/workers"] = {"workers": [{**worker, "metadata": {"dp_size": dp}} for dp in dp_sizes]}
    return answers


def test_concurrency_behind_an_sglang_router_grows_with_its_workers_ranks() -> None:
    answers = router_answers("2", "1", "2")
    answers["/workers"]["workers"][2]["is_healthy"] = False
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), answers)
    client = client_for(rec)
    client.embed_query("q")
    # every listed worker counts, one marked unhealthy for a moment too: the client is sized once
    assert client.server_facts is not None and client.server_facts.dp_size == 5
    assert client.request_shape["max_concurrency"] == 40  # 8 per rank


@both
def test_behind_a_router_single_queries_carry_the_priority(use_async: bool) -> None:
    # the router has no /server_info to say its workers schedule by priority, and forwards the
    # field (the managed router's workers do; SGLang without priority scheduling ignores it)
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)), router_answers("1", "1"))
    client = client_for(rec)
    if use_async:
        asyncio.run(client.aembed_query("q"))
    else:
        client.embed_query("q")
    client.embed_documents(["a", "b"])
    assert priorities_sent(rec) == [10, "none"]


@both
def test_a_server_that_refuses_a_priority_gets_queries_without_one(use_async: bool) -> None:
    # SGLang with --abort-on-priority-when-disabled (0.5.17: HTTP 503): the request's fault, not
    # the server's: sent again at once without a priority, not retried after a pause or taken for
    # a server going down, and later queries carry none
    refusal = "Using priority is disabled for this server. Please send a new request without a priority."

    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "priority" in payload:
            return httpx.Response(503, json={"object": "error", "message": refusal, "code": 503})
        return httpx.Response(200, json=ok_body(len(payload["input"]), 2560))

    rec = Recorder(handler, router_answers("1", "1"))
    client = client_for(rec, max_retries=0)
    for _ in range(2):
        if use_async:
            asyncio.run(client.aembed_query("q"))
        else:
            client.embed_query("q")
    assert priorities_sent(rec) == [10, "none", "none"]


@both
def test_a_router_without_a_tokenizer_yet_does_not_fail_the_call(use_async: bool) -> None:
    # sglang-router 0.3.2 answers /v1/tokenize 400 "No tokenizers available" for seconds after
    # readiness (always with keyed workers): texts go as they are, the workers apply their limit
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "prompt" in payload:
            msg = "No tokenizers available. Use POST /v1/tokenizers to add one."
            return httpx.Response(400, json={"error": {"message": msg, "code": 400}})
        return httpx.Response(200, json=ok_body(len(payload["input"]), 2560))

    rec = Recorder(handler, sglang_with(models={"max_model_len": 40}))
    out = embed(client_for(rec, long_text="chunk"), ["word " * 100, "short"], use_async)
    assert len(out) == 2
    assert [r["input"] for r in rec.requests if "input" in r] == [["word " * 100, "short"]]


ROUTER_END = 151643  # Qwen3's <|endoftext|>


def router_tokenizer(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
    """sglang-router 0.3.2's /v1/tokenize: it ignores add_special_tokens (never adds the end
    token its workers' tokenizers add), and reads the end token's text as that token."""
    if "prompt" in payload:
        ids = [[ROUTER_END] if t == "<|endoftext|>" else [100 + len(w) for w in t.split()] for t in payload["prompt"]]
        return httpx.Response(200, json={"tokens": ids, "count": [len(i) for i in ids]})
    return httpx.Response(200, json=ok_body(len(payload["input"]), 2560))


@both
def test_behind_a_router_windows_of_a_qwen3_model_end_with_its_end_token(use_async: bool) -> None:
    # Qwen3-Embedding pools the end token: a window sent as token ids without it is embedded
    # wrongly, and the router's tokenizer would never show it
    answers = router_answers("1")
    answers["/v1/models"]["data"][0]["max_model_len"] = 40
    rec = Recorder(router_tokenizer, answers)
    client = client_for(rec, long_text="chunk")
    embed(client, ["word " * 100], use_async)
    windows = [w for r in rec.requests if "input" in r for w in r["input"]]
    assert len(windows) > 1
    assert all(isinstance(w, list) and w[-1] == ROUTER_END and w.count(ROUTER_END) == 1 for w in windows)
    assert all(len(w) < 40 for w in windows)
    assert client.count_tokens(["a b c"]) == [4]  # the end token counts, as a worker would


@both
def test_behind_a_router_an_unknown_models_long_texts_go_as_they_are(
    use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # no way to learn its special tokens through the router: no windows without them; the
    # workers apply their own limit, and the log says long_text cannot apply
    answers = router_answers("1")
    answers["/v1/models"]["data"][0]["max_model_len"] = 40
    answers["/model_info"].update(model_type="bert", architectures=["BertModel"])
    rec = Recorder(router_tokenizer, answers)
    client = client_for(rec, long_text="chunk")
    with caplog.at_level("WARNING", logger="qwen_sglang"):
        embed(client, ["word " * 100, "short"], use_async)
    assert [r["input"] for r in rec.requests if "input" in r] == [["word " * 100, "short"]]
    assert "cannot tell the special tokens" in caplog.text


@both
def test_windows_the_limit_shortens_share_proportionally_fewer_tokens(use_async: bool) -> None:
    # chunk_overlap=128 (default) with a 64-token limit once made one window per token
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "prompt" in payload:
            end = [ROUTER_END] if payload.get("add_special_tokens") else []
            ids = [[int(w) if w.isdigit() else 7 for w in t.split()] + end for t in payload["prompt"]]
            return httpx.Response(200, json={"tokens": ids})
        return httpx.Response(200, json=ok_body(len(payload["input"]), 2560))

    rec = Recorder(handler, sglang_with(models={"max_model_len": 65}))
    text = " ".join(str(1000 + i) for i in range(1000))
    embed(client_for(rec, long_text="chunk"), [text], use_async)
    windows = [w for r in rec.requests if "input" in r for w in r["input"]]
    assert 1000 / 63 < len(windows) < 1000 / 50  # 63 tokens each, a few shared with the next
    body = [w[:-1] for w in windows]  # without the end token
    assert body[0][0] == 1000 and body[-1][-1] == 1999
    assert all(len(set(a) & set(b)) <= 4 for a, b in itertools.pairwise(body))  # 128 x 64 / 2048


@both
@pytest.mark.parametrize("long_text", ["chunk", "truncate"])
def test_a_limit_that_leaves_no_room_beside_the_special_tokens_is_refused(use_async: bool, long_text: str) -> None:
    # a BERT-style tokenizer wraps text in [CLS] ... [SEP]: max_tokens=2 left windows of no text
    def handler(request: httpx.Request, payload: dict[str, Any]) -> httpx.Response:
        if "prompt" in payload:
            wrap = payload.get("add_special_tokens")
            ids = [([101] if wrap else []) + [7] * len(t.split()) + ([102] if wrap else []) for t in payload["prompt"]]
            return httpx.Response(200, json={"tokens": ids})
        return httpx.Response(200, json=ok_body(len(payload["input"]), 2560))

    rec = Recorder(handler, sglang_with())
    with pytest.raises(ConfigurationError, match="max_tokens=2 leaves no room"):
        embed(client_for(rec, long_text=long_text, max_tokens=2), ["a few words here"], use_async)
    assert not [r for r in rec.requests if "input" in r]
