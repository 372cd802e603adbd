"""The discovery step's corners (the behaviours users meet are tested against real servers in
tests/integration/test_served_model.py): what each answer means, what is cached, what is raised."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from qwen_sglang import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    EmbeddingClient,
    ModelMismatchError,
)
from qwen_sglang.client.discovery import (
    ServerFacts,
    default_query_prompt,
    model_aliases,
    parse_facts,
    request_shape,
    same_model,
    served_preset,
)
from qwen_sglang.presets import PRESETS
from tests.unit.test_protocol import Recorder, error, ok_body

QWEN_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
#: What SGLang 0.5.17 answers for Qwen3-Embedding-4B served as --served-model-name embed
#: (srt/entrypoints/http_server.py: /v1/models, /model_info; /server_info has no client_defaults).
SGLANG = {
    "/v1/models": {
        "object": "list",
        "data": [{"id": "embed", "object": "model", "root": "embed", "max_model_len": 32768}],
    },
    "/model_info": {
        "model_path": "/models/Qwen3-Embedding-4B",
        "tokenizer_path": "/models/Qwen3-Embedding-4B",
        "is_generation": False,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
    },
    "/server_info": {"version": "0.5.17", "model_path": "/models/Qwen3-Embedding-4B", "is_embedding": True},
}


def client_for(rec: Recorder, **kwargs: Any) -> EmbeddingClient:
    transport = httpx.MockTransport(rec)
    kwargs.setdefault("base_url", "http://mock:30000/v1")
    return EmbeddingClient(
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
        **kwargs,
    )


def answering(dim: int = 2560) -> Recorder:
    return Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), dim)), dict(SGLANG))


def test_model_aliases_and_same_model() -> None:
    assert model_aliases("/models/Qwen3-Embedding-4B/") == {"/models/qwen3-embedding-4b", "qwen3-embedding-4b"}
    snapshot = "/root/.cache/huggingface/hub/models--Qwen--Qwen3-Embedding-0.6B/snapshots/c54f2e6e"
    assert {"qwen/qwen3-embedding-0.6b", "qwen3-embedding-0.6b"} <= model_aliases(snapshot)
    facts = parse_facts(SGLANG["/v1/models"], SGLANG["/model_info"], None)
    for name in ("embed", "Qwen/Qwen3-Embedding-4B", "/models/Qwen3-Embedding-4B", "qwen3-embedding-4b", "embed:lora1"):
        assert same_model(name, facts), name
    for name in ("Qwen/Qwen3-Embedding-0.6B", "all-MiniLM-L6-v2", "default"):
        assert not same_model(name, facts), name
    assert same_model("anything", ServerFacts())  # nothing to compare with
    assert served_preset([None, "embed", snapshot]) is PRESETS["Qwen/Qwen3-Embedding-0.6B"]
    assert served_preset(["embed", "/models/ft"]) is None


def test_default_query_prompt() -> None:
    qwen3_arch = parse_facts(
        None, {"is_generation": False, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}, None
    )
    assert default_query_prompt(qwen3_arch, None) == QWEN_PROMPT  # whatever its served name
    assert default_query_prompt(ServerFacts(), PRESETS["Qwen/Qwen3-Embedding-8B"]) == QWEN_PROMPT  # a preset by name
    own = ServerFacts(prompts={"query": "query: ", "document": "passage: "})  # e.g. an e5 model on the local backend
    assert default_query_prompt(own, None) == "query: "
    bert = parse_facts(None, {"is_generation": False, "model_type": "bert", "architectures": ["BertModel"]}, None)
    assert default_query_prompt(bert, None) is None
    assert default_query_prompt(ServerFacts(prompts={"query": ""}), None) is None


def test_answers_of_unexpected_shapes_are_ignored() -> None:
    facts = parse_facts(
        {"data": [{"id": 3}, "x", {"id": "m", "max_model_len": "big"}]},
        {"model_path": ["not", "a", "str"], "architectures": "Qwen3ForCausalLM", "is_generation": "no",
         "embedding": {"dimension": -1}, "sentence_transformers": {"prompts": {"query": 5}}},
        {"client_defaults": {"batch_size": "1000", "max_batch_tokens": 0, "max_concurrency": True,
                             "timeout": 1, "base_url": "http://elsewhere", "batch_size2": 5}},
    )  # fmt: skip
    assert facts.served_names == ("m",) and facts.model_path is None and facts.architectures == ()
    assert facts.is_embedding is None and facts.native_dim is None and facts.max_model_len is None
    assert facts.prompts == {} and facts.client_defaults == {}
    huge = parse_facts(None, None, {"client_defaults": {"batch_size": 10**9, "max_concurrency": 2}})
    assert huge.client_defaults == {"max_concurrency": 2}


def test_request_shape_explicit_wins_and_concurrency_is_only_lowered() -> None:
    current = {"batch_size": 32, "max_batch_tokens": 8192, "max_concurrency": 8}
    advertised = {"batch_size": 1000, "max_batch_tokens": 1_000_000, "max_concurrency": 1}
    assert request_shape(advertised, current, set()) == advertised
    assert request_shape(advertised, current | {"batch_size": 64}, {"batch_size"})["batch_size"] == 64
    assert request_shape({"max_concurrency": 64}, current, set())["max_concurrency"] == 8  # the pool's size


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_sglang_is_asked_once_and_keeps_the_gpu_shape(use_async: bool) -> None:
    rec = answering()
    client = client_for(rec)
    assert client.model is None and client.server_facts is None  # nothing asked at construction
    assert rec.discovered == []
    for _ in range(3):
        if use_async:
            asyncio.run(client.aembed_query("q"))
        else:
            client.embed_query("q")
    assert rec.discovered == ["/v1/models", "/model_info", "/server_info"]  # once per client
    assert [r["model"] for r in rec.requests] == ["embed"] * 3  # the served name
    assert rec.requests[0]["input"] == [QWEN_PROMPT + "q"]
    assert client.request_shape == {"batch_size": 32, "max_batch_tokens": 8192, "max_concurrency": 8}
    assert client.preset is PRESETS["Qwen/Qwen3-Embedding-4B"]  # by its path, whatever its served name
    assert client.server_facts is not None and client.server_facts.max_model_len == 32768


def test_a_configured_name_of_the_same_model_sends_the_served_one_and_lora_names_are_kept() -> None:
    for configured in ("Qwen/Qwen3-Embedding-4B", "/models/Qwen3-Embedding-4B"):
        rec = answering()
        client_for(rec, model=configured).embed_documents(["d"])
        assert rec.requests[-1]["model"] == "embed", configured
    rec = answering()
    client_for(rec, model="embed:adapter").embed_documents(["d"])
    assert rec.requests[-1]["model"] == "embed:adapter"
    # SGLang lists LoRA adapters after the base model, with a parent: they are not other models
    rec = answering()
    rec.discovery["/v1/models"] = {"data": [{"id": "embed"}, {"id": "support-ft", "parent": "embed", "root": "/lora"}]}
    client = client_for(rec, model="support-ft")
    client.embed_documents(["d"])
    assert rec.requests[-1]["model"] == "support-ft"
    assert client_for(answering()).discover().adapters == ()


def test_a_server_of_several_models_needs_one_named() -> None:
    # Ollama or a proxy list every model they can serve: the client does not pick one for you
    several = {"/v1/models": {"data": [{"id": "qwen3-embedding:0.6b"}, {"id": "llama3:8b"}]}}
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))), several)
    with pytest.raises(ConfigurationError, match="serves several models \\(qwen3-embedding:0.6b, llama3:8b\\)"):
        client_for(rec).embed_documents(["d"])
    client_for(rec, model="qwen3-embedding:0.6b", query_instruction=None).embed_documents(["d"])
    assert rec.requests[-1]["model"] == "qwen3-embedding:0.6b"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_mismatch_is_raised_at_every_call_without_asking_again(use_async: bool) -> None:
    rec = answering()
    client = client_for(rec, model="Qwen/Qwen3-Embedding-0.6B")
    for _ in range(2):
        with pytest.raises(ModelMismatchError, match="serves 'embed' \\(/models/Qwen3-Embedding-4B\\)"):
            asyncio.run(client.aembed_documents(["d"])) if use_async else client.embed_documents(["d"])
        with pytest.raises(ModelMismatchError):
            client.count_tokens(["d"])
    assert rec.requests == [] and len(rec.discovered) == 3


def test_a_server_that_names_no_model_keeps_working_with_the_default_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder(lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]), 2560)))  # 404 on discovery
    client = client_for(rec)
    with caplog.at_level(logging.WARNING, logger="qwen_sglang"):
        client.embed_query("q")
        client.embed_query("q")
    warnings = [r.getMessage() for r in caplog.records if "names no model" in r.getMessage()]
    assert len(warnings) == 1 and "QWEN_SGLANG_MODEL" in warnings[0]
    assert [r["model"] for r in rec.requests] == ["Qwen/Qwen3-Embedding-4B"] * 2
    assert rec.requests[0]["input"] == [QWEN_PROMPT + "q"]  # the preset's instruction, as before
    assert rec.discovered == ["/v1/models", "/model_info", "/get_model_info", "/server_info", "/get_server_info"]


def sglang(request: httpx.Request) -> httpx.Response:
    """SGLang's discovery answers, and 2560-d vectors (the 4B model)."""
    if request.method == "GET":
        body = SGLANG.get(request.url.path)
        return httpx.Response(200, json=body) if body else error(404, "Not Found")
    return httpx.Response(200, json=ok_body(1, 2560))


def test_auth_errors_are_raised_and_connection_errors_are_not_cached() -> None:
    deny = httpx.MockTransport(lambda request: error(401, "Unauthorized"))
    client = EmbeddingClient(base_url="http://mock:1/v1", http_client=httpx.Client(transport=deny))
    with pytest.raises(AuthenticationError, match="api_key"):
        client.embed_documents(["d"])

    attempts: list[str] = []

    def down_once(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        return sglang(request)

    transport = httpx.MockTransport(down_once)
    client = EmbeddingClient(base_url="http://mock:1/v1", max_retries=0, http_client=httpx.Client(transport=transport))
    with pytest.raises(APIConnectionError, match="/v1/models"):
        client.embed_documents(["d"])
    assert client.server_facts is None  # nothing learned: the next call asks again
    assert len(client.embed_documents(["d"])[0]) == 2560
    assert client.model == "embed"


def test_a_server_without_get_is_one_that_names_no_model() -> None:
    # a stub that implements only POST answers 501 to the discovery GETs: never worth a retry
    gets: list[str] = []

    def post_only(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            gets.append(request.url.path)
            return httpx.Response(501, text="Unsupported method ('GET')")
        return httpx.Response(200, json=ok_body(1, 2560))

    client = EmbeddingClient(
        base_url="http://mock:1/v1", http_client=httpx.Client(transport=httpx.MockTransport(post_only))
    )
    assert len(client.embed_documents(["d"])[0]) == 2560
    assert gets == ["/v1/models", "/model_info", "/get_model_info", "/server_info", "/get_server_info"]  # each once


def test_ingest_ids_tell_a_lora_adapters_vectors_from_the_base_models() -> None:
    # SGLang embeds with a LoRA adapter when the request names it ("base:adapter", or the adapter's
    # id in /v1/models): its vectors are not the base model's, so chunk ids must not carry the
    # base model's path alone (a rerun with another adapter counted every chunk as stored)
    from qwen_sglang.ingest.pipeline import embedding_model

    lora = {"data": [{"id": "embed"}, {"id": "support-ft", "parent": "embed", "root": "/lora"}]}
    names = {}
    for configured in (None, "embed", "Qwen/Qwen3-Embedding-4B", "embed:support-ft", "support-ft"):
        rec = answering()
        rec.discovery["/v1/models"] = lora
        names[configured] = embedding_model(client_for(rec, model=configured))
    assert names[None] == names["embed"] == names["Qwen/Qwen3-Embedding-4B"] == "/models/Qwen3-Embedding-4B"
    assert names["embed:support-ft"] == "embed:support-ft" and names["support-ft"] == "support-ft"
    # a served name with a colon is a model (Ollama), not an adapter: its name, as before
    ollama = Recorder(
        lambda r, p: httpx.Response(200, json=ok_body(len(p["input"]))),
        {"/v1/models": {"data": [{"id": "qwen3-embedding:0.6b"}]}},
    )
    assert embedding_model(client_for(ollama)) == "qwen3-embedding:0.6b"
