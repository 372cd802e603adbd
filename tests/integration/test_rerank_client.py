"""`RerankClient` against the local reranker backend as a real process.

The expected scores come from Qwen's recipe computed independently in this process
(`tests.integration.test_rerank_local.QwenReference`: transformers forward of prefix + body + suffix
ids, the body truncated to fit, softmax over "yes"/"no" in fp32): what the client returns through
the server must match them to 1e-5.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from qwen_sglang import (
    APIConnectionError,
    ConfigurationError,
    InputTypeError,
    InvalidInputError,
    QwenSGLangSettings,
    RerankClient,
    RerankResult,
)
from qwen_sglang.servers import ManagedServer
from tests.integration.test_rerank_local import DOCUMENTS, MAX_LENGTH, QUERIES, TOL, QwenReference

#: A port nothing listens on: a call that gets there would raise APIConnectionError.
DEAD = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="module")
def reference(qwen_reranker_dir: Path) -> QwenReference:
    return QwenReference(qwen_reranker_dir)


def by_index(results: list[RerankResult]) -> dict[int, float]:
    return {r.index: r.score for r in results}


def test_scores_are_qwens_formula_to_1e5(rerank_server: ManagedServer, reference: QwenReference) -> None:
    """Every document (Chinese, emoji, a special-token string, one over the context, cut in its
    body only) gets the reference's P(yes), and the ranking is sorted by it."""
    client = RerankClient(base_url=rerank_server.base_url)
    for query, instruction in QUERIES:
        results = client.rerank(query, DOCUMENTS, instruction=instruction, return_documents=True)
        expected = reference.scores([(query, d, instruction) for d in DOCUMENTS], MAX_LENGTH)
        got = by_index(results)
        assert sorted(got) == list(range(len(DOCUMENTS)))
        assert max(abs(got[i] - expected[i]) for i in range(len(DOCUMENTS))) <= TOL
        assert [r.score for r in results] == sorted(got.values(), reverse=True)
        ranked = [expected[r.index] for r in results]  # the reference's order, up to ties within TOL
        assert all(a >= b - 2 * TOL for a, b in itertools.pairwise(ranked))
        assert all(r.document == DOCUMENTS[r.index] for r in results)


def same(a: list[RerankResult], b: list[RerankResult]) -> bool:
    """The same ranking, scores equal up to fp32 batching noise (rows padded differently)."""
    return [r.index for r in a] == [r.index for r in b] and all(
        abs(x.score - y.score) <= 1e-6 for x, y in zip(a, b, strict=True)
    )


def test_async_batches_and_concurrency_give_the_same_ranking(rerank_server: ManagedServer) -> None:
    query = QUERIES[0][0]
    one = RerankClient(base_url=rerank_server.base_url).rerank(query, DOCUMENTS)
    small = RerankClient(base_url=rerank_server.base_url, batch_size=2, max_concurrency=3)
    assert same(small.rerank(query, DOCUMENTS), one)  # 3 requests in flight, scores put back in place
    assert same(asyncio.run(small.arerank(query, DOCUMENTS)), one)
    assert same(asyncio.run(small.arerank(query, DOCUMENTS, top_n=2)), one[:2])


def test_instruction_per_client_and_per_call(rerank_server: ManagedServer, reference: QwenReference) -> None:
    query, docs = "rust borrow checker error E0502", DOCUMENTS[:4]
    custom = "Given a compiler error, retrieve posts that fix it"
    expected = reference.scores([(query, d, custom) for d in docs], MAX_LENGTH)
    client = RerankClient(base_url=rerank_server.base_url, instruction=custom)
    got = by_index(client.rerank(query, docs))
    assert max(abs(got[i] - expected[i]) for i in range(len(docs))) <= TOL
    default = by_index(client.rerank(query, docs, instruction=None))  # the client's own
    assert default == got
    other = by_index(client.rerank(query, docs, instruction="Judge relevance"))
    assert other != got


def test_long_documents_are_cut_in_the_body_or_refused(rerank_server: ManagedServer, reference: QwenReference) -> None:
    long_doc = "A long report. " + "The quarterly numbers went up and then down again. " * 60
    query = "quarterly numbers"
    expected = reference.scores([(query, long_doc, None)], MAX_LENGTH)[0]
    score = RerankClient(base_url=rerank_server.base_url, long_text="truncate").rerank(query, [long_doc])[0].score
    assert abs(score - expected) <= TOL
    with pytest.raises(InvalidInputError, match="index 1 makes a prompt of .* tokens, more than the limit of 511"):
        RerankClient(base_url=rerank_server.base_url, long_text="error").rerank(query, ["short", long_doc])
    # max_tokens lowers the limit below the served context: the body is cut further
    tighter = RerankClient(base_url=rerank_server.base_url, max_tokens=200).rerank(query, [long_doc])[0].score
    assert abs(tighter - reference.scores([(query, long_doc, None)], 200)[0]) <= TOL


def test_a_query_that_leaves_no_room_for_documents_is_refused_before_scoring(rerank_server: ManagedServer) -> None:
    """Cut to the context, a query (with its instruction) that fills it leaves no token of any
    document: every document would get the same score. Refused, naming the query, before any
    ``/score`` request, whatever ``long_text``; a query that leaves room still ranks."""
    paths: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda request: paths.append(request.url.path)]})
    client = RerankClient(base_url=rerank_server.base_url, long_text="truncate", http_client=http)
    docs = ["SGLang serves language models fast.", "Paris is the capital of France.", "Bananas are yellow."]
    match = "the query and the instruction take .* tokens.* no room for any document"
    with pytest.raises(InvalidInputError, match=match):
        client.rerank("What does SGLang do? " * 150, docs)
    with pytest.raises(InvalidInputError, match=match):
        client.rerank("What does SGLang do?", docs, instruction="Judge the passage carefully. " * 120)
    with pytest.raises(InvalidInputError, match=match):
        asyncio.run(RerankClient(base_url=rerank_server.base_url).arerank("What does SGLang do? " * 150, docs))
    assert paths and not any(path.endswith("/score") for path in paths)
    ranked = client.rerank("What does SGLang do? " * 20, docs)  # room left: the documents decide
    assert len({r.score for r in ranked}) == len(docs)


def test_identical_documents_are_scored_once_and_tie_in_their_order(rerank_server: ManagedServer) -> None:
    """Retrievers merged (or a corpus with copies) hand the reranker the same text twice: it is
    scored once, so its copies get the same score whatever batch or padding they would have had
    (they differed in the last digits and were ordered by that noise), and tie in the documents'
    order, sync and async."""
    sent: list[int] = []

    def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/score"):
            sent.append(len(json.loads(request.content)["items"]))

    docs = ["SGLang serves models.", "Paris is in France.", "SGLang serves models.", "x " * 40]
    docs += ["SGLang serves models.", "Paris is in France."]
    http = httpx.Client(event_hooks={"request": [count]})
    for batch_size in (1, 2, 32):
        client = RerankClient(base_url=rerank_server.base_url, batch_size=batch_size, http_client=http)
        for ranked in (client.rerank("What is SGLang?", docs), asyncio.run(client.arerank("What is SGLang?", docs))):
            scores = by_index(ranked)
            assert scores[0] == scores[2] == scores[4] and scores[1] == scores[5]
            assert [r.index for r in ranked if docs[r.index] == docs[0]] == [0, 2, 4]
            assert sorted(scores) == list(range(len(docs)))
    assert sum(sent) == 3 * 3  # the sync calls: 3 distinct documents each


def test_empty_documents_follow_the_empty_text_policy(rerank_server: ManagedServer) -> None:
    docs = ["The giant panda's diet is 99% bamboo.", " \n", "Bananas are yellow."]
    query = QUERIES[0][0]
    with pytest.raises(InvalidInputError, match="document at index 1 is empty") as info:
        RerankClient(base_url=DEAD).rerank(query, docs)  # refused before any request
    assert info.value.index == 1
    zero = RerankClient(base_url=rerank_server.base_url, empty_text="zero").rerank(query, docs)
    assert zero[-1] == RerankResult(1, 0.0) and len(zero) == 3
    skip = RerankClient(base_url=rerank_server.base_url, empty_text="skip").rerank(query, docs)
    assert [r.index for r in skip] == [r.index for r in zero if r.index != 1]
    assert RerankClient(base_url=DEAD, empty_text="skip").rerank(query, ["", " "]) == []
    assert RerankClient(base_url=DEAD).rerank(query, []) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("", ["d"]), {}, InvalidInputError, "query is empty"),
        ((" \t", ["d"]), {}, InvalidInputError, "query is empty or whitespace only"),
        ((None, ["d"]), {}, InputTypeError, "query must be a str"),
        (("q", "just one str"), {}, InputTypeError, "wrap the document in a list"),
        (("q", ["d", b"bytes"]), {}, InputTypeError, "document at index 1 is bytes"),
        (("q", ["\ud800"]), {}, InvalidInputError, "lone surrogate"),
        (("q", ["d"]), {"top_n": 0}, InvalidInputError, "top_n=0: pass at least 1"),
        (("q", ["d", "e"]), {"top_n": 3}, InvalidInputError, "more than the 2 documents given"),
        (("q", ["d"]), {"top_n": 1.0}, InputTypeError, "top_n must be an int"),
        (("q", ["d"]), {"instruction": 3}, InputTypeError, "instruction must be a str"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    client = RerankClient(base_url=DEAD, max_retries=0)
    with pytest.raises(error, match=match):
        client.rerank(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        asyncio.run(client.arerank(*args, **kwargs))  # type: ignore[arg-type]
    with pytest.raises(APIConnectionError):  # the same client does reach for the server otherwise
        client.rerank("q", ["d"])


def test_an_embedding_server_is_refused_before_scoring(server: ManagedServer) -> None:
    client = RerankClient(base_url=server.base_url)
    with pytest.raises(ConfigurationError, match="as an embedding model .* not a reranker.*--task rerank"):
        client.rerank("q", ["d"])
    with pytest.raises(ConfigurationError, match="not a reranker"):
        asyncio.run(client.adiscover())


def test_settings_pickling_and_repr_keep_no_secret(rerank_server: ManagedServer) -> None:
    settings = QwenSGLangSettings(base_url=rerank_server.base_url, api_key=SecretStr("sk-secret-123"))
    client = RerankClient(settings, instruction="Judge", batch_size=4)
    assert client.settings.batch_size == 4 and client.instruction == "Judge"
    assert "sk-secret" not in repr(client)
    data = pickle.dumps(client)
    assert b"sk-secret" not in data
    copy = pickle.loads(data)
    assert isinstance(copy, RerankClient) and copy.instruction == "Judge" and copy.base_url == client.base_url
    assert client.discover().is_embedding is False and client.model is not None


def test_parent_and_forked_child_never_get_each_others_scores(rerank_server: ManagedServer) -> None:
    """The reranker sends through the embedding client's shells, so it inherits their fork
    safety: after a fork, parent and child score 20 documents one request at a time, at once,
    each on connections of its own (a shared keep-alive connection mixes up answers)."""
    import os

    from tests.integration.test_client_processes import _wait

    client = RerankClient(base_url=rerank_server.base_url, max_concurrency=1, max_retries=0)
    query = QUERIES[0][0]
    docs = {tag: [f"{tag} document {i}: " + "bamboo " * (i % 7) for i in range(20)] for tag in ("parent", "child")}
    want = {tag: [client.rerank(query, [d])[0].score for d in ds] for tag, ds in docs.items()}

    def wrong(tag: str) -> int:
        return sum(
            abs(client.rerank(query, [d])[0].score - w) > 1e-6 for d, w in zip(docs[tag], want[tag], strict=True)
        )

    pid = os.fork()
    if pid == 0:  # the child: exit status = wrong scores (capped), 100 on any exception
        try:
            code = min(wrong("child"), 99)
        except BaseException:
            code = 100
        os._exit(code)
    try:
        parent = wrong("parent")
    finally:
        child = _wait(pid, 120)
    assert (parent, child) == (0, 0)


def test_a_given_http_client_is_refused_in_a_forked_child_naming_the_rerank_client(
    rerank_server: ManagedServer,
) -> None:
    """The reranker's messages name the class the user holds, not the embedding client it sends
    through: after a real fork, a client given an httpx client says "this RerankClient"."""
    import os

    from tests.integration.test_client_processes import _wait

    client = RerankClient(base_url=rerank_server.base_url, http_client=httpx.Client(), max_retries=0)
    assert len(client.rerank("q", ["in the parent"])) == 1
    pid = os.fork()
    if pid == 0:  # the child: 0 = the right message, 2 = another, 3 = no error or another error
        try:
            client.rerank("q", ["in the child"])
            code = 3
        except ConfigurationError as exc:
            text = str(exc)
            code = 0 if "this RerankClient was given" in text and "EmbeddingClient" not in text else 2
        except BaseException:
            code = 3
        os._exit(code)
    assert _wait(pid, 60) == 0
    assert len(client.rerank("q", ["in the parent again"])) == 1


def test_an_embedding_client_given_a_reranker_server_says_so_before_embedding(rerank_server: ManagedServer) -> None:
    """The reverse of the test above: SGLang would answer a 400 asking for ``--is-embedding``,
    the wrong fix for a reranker; the embedding client and both adapters name the right one."""
    from langchain_qwen_sglang import QwenSGLangEmbeddings
    from llama_index_qwen_sglang import QwenSGLangEmbedding
    from qwen_sglang import EmbeddingClient

    client = EmbeddingClient(base_url=rerank_server.base_url)
    with pytest.raises(ConfigurationError, match="serves a reranker .*RerankClient") as info:
        client.embed_documents(["x"])
    assert client.prompt_tokens == 0  # nothing embedded
    with pytest.raises(ConfigurationError, match="serves a reranker"):
        asyncio.run(client.aembed_query("x"))
    assert client.server_facts is not None and client.server_facts.is_reranker
    with pytest.raises(ConfigurationError, match="serves a reranker"):
        QwenSGLangEmbeddings(base_url=rerank_server.base_url).embed_query("x")
    with pytest.raises(ConfigurationError, match="serves a reranker"):
        QwenSGLangEmbedding(base_url=rerank_server.base_url).get_text_embedding("x")
    assert "--is-embedding" not in str(info.value)
