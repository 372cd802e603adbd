"""The local reranker backend as a real process, against an independent reference.

The reference is Qwen's own recipe (QwenLM/Qwen3-Embedding README), written out here with
transformers: the three prompt parts tokenised separately, the body truncated to fit, left-padded
batches, the logits of the next token, a softmax over "no"/"yes" in fp32. The server must give the
same P(yes) to 1e-5 on ``/v1/score`` when sent the prompt ids built by
`qwen_sglang.rerank_format`, and answer SGLang's shapes and errors on ``/v1/score`` and
``/v1/rerank``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwen_sglang.rerank_format import RerankTemplate, format_body
from qwen_sglang.servers import ManagedServer
from tests.conftest import RERANK_CONTEXT
from tests.integration.rerank_servers import LocalRerankServer
from tests.unit.test_rerank_format import QWEN_INSTRUCTION, QWEN_PREFIX, QWEN_SUFFIX

MAX_LENGTH = RERANK_CONTEXT - 1  # SGLang refuses a prompt of exactly the context length
TOL = 1e-5

QUERIES = [
    ("what does the giant panda eat?", None),
    ("熊猫吃什么", None),
    ("rust borrow checker error E0502", "Given a compiler error, retrieve posts that fix it"),
]
DOCUMENTS = [
    "The giant panda's diet is 99% bamboo.",
    "大熊猫主要以竹子为食，偶尔吃小动物。",  # noqa: RUF001 - Chinese punctuation
    "cannot borrow `v` as mutable because it is also borrowed as immutable",
    "Bananas are yellow 🍌 and rich in potassium.",
    "A long report. " + "The quarterly numbers went up and then down again. " * 60,  # truncated
    "<|im_end|> a document that contains a special-token string",
]


def post(server: ManagedServer, route: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(server.root_url + route, json=body, timeout=120, **kw)


class QwenReference:
    """Qwen's reference scoring, in-process (transformers, fp32)."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.yes = self.tok.convert_tokens_to_ids("yes")
        self.no = self.tok.convert_tokens_to_ids("no")

    def ids(self, pairs: list[tuple[str, str, str | None]], max_length: int, *, suffix: str = QWEN_SUFFIX) -> Any:
        prefix_ids = self.tok.encode(QWEN_PREFIX, add_special_tokens=False)
        suffix_ids = self.tok.encode(suffix, add_special_tokens=False)
        texts = [
            f"<Instruct>: {QWEN_INSTRUCTION if i is None else i}\n<Query>: {q}\n<Document>: {d}" for q, d, i in pairs
        ]
        inputs = self.tok(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix_ids) - len(suffix_ids),
        )
        return [prefix_ids + list(ids) + suffix_ids for ids in inputs["input_ids"]]

    def scores_of_ids(self, ids: list[list[int]]) -> tuple[list[float], list[tuple[float, float]]]:
        """P(yes) over {yes, no}, and (P(yes), P(no)) over the whole vocabulary."""
        torch = self.torch
        batch = self.tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        with torch.no_grad():
            # the last position's logits, as the recipe's logits[:, -1, :] (without the others' memory)
            logits = self.model(**batch, logits_to_keep=1).logits[:, -1, :].float()
        pair = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1)
        p = torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().tolist()
        full = torch.softmax(logits, dim=-1)
        return p, [(float(full[r, self.yes]), float(full[r, self.no])) for r in range(len(ids))]

    def scores(self, pairs: list[tuple[str, str, str | None]], max_length: int = MAX_LENGTH) -> list[float]:
        return self.scores_of_ids(self.ids(pairs, max_length))[0]


@pytest.fixture(scope="module")
def reference(qwen_reranker_dir: Path) -> QwenReference:
    return QwenReference(qwen_reranker_dir)


def server_tokenizer(server: ManagedServer) -> Callable[[list[str]], list[list[int]]]:
    """Tokenise through the server's ``/v1/tokenize`` without special tokens (what a client does)."""

    def tokenize(texts: list[str]) -> list[list[int]]:
        r = post(server, "/v1/tokenize", {"prompt": texts, "add_special_tokens": False})
        r.raise_for_status()
        tokens: list[list[int]] = r.json()["tokens"]
        return tokens

    return tokenize


def client_ids(
    server: ManagedServer, pairs: list[tuple[str, str, str | None]]
) -> tuple[RerankTemplate, list[list[int]]]:
    tokenize = server_tokenizer(server)
    template = RerankTemplate.from_tokenizer(tokenize)
    bodies = tokenize([format_body(q, d, i) for q, d, i in pairs])
    return template, [template.pair_ids(b, max_length=MAX_LENGTH) for b in bodies]


PAIRS = [(q, d, i) for q, i in QUERIES for d in DOCUMENTS]


def test_score_route_reproduces_qwens_formula(rerank_server: ManagedServer, reference: QwenReference) -> None:
    template, ids = client_ids(rerank_server, PAIRS)
    assert ids == reference.ids(PAIRS, MAX_LENGTH)  # the same prompt ids as Qwen's recipe
    assert max(len(x) for x in ids) == MAX_LENGTH  # the long document was truncated, to the limit
    expected, full = reference.scores_of_ids(ids)
    assert max(expected) - min(expected) > 0.2, "the test model's scores should spread"
    n_prefix = len(template.prefix_ids)
    body = {
        "query": ids[0][:n_prefix],  # SGLang concatenates query + item
        "items": [x[n_prefix:] for x in ids],
        "label_token_ids": [template.yes_id, template.no_id],
        "apply_softmax": True,
    }
    r = post(rerank_server, "/v1/score", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "scoring" and answer["model"] == "default"
    assert answer["usage"]["prompt_tokens"] == sum(len(x) for x in ids)
    got = [s[0] for s in answer["scores"]]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= TOL
    assert all(abs(s[0] + s[1] - 1) < 1e-12 for s in answer["scores"])
    # without apply_softmax: the probabilities over the whole vocabulary
    raw = post(rerank_server, "/v1/score", {**body, "apply_softmax": False}).json()["scores"]
    for (py, pn), (ry, rn) in zip(raw, full, strict=True):
        assert py == pytest.approx(ry, rel=1e-4) and pn == pytest.approx(rn, rel=1e-4)


def test_text_and_item_first_inputs_build_the_same_prompts(rerank_server: ManagedServer) -> None:
    pairs = [p for p in PAIRS if len(p[1]) < 200]  # untruncated: the text prompt is the same then
    template, ids = client_ids(rerank_server, pairs)
    labels = [template.yes_id, template.no_id]
    by_ids = post(rerank_server, "/v1/score", {"query": [], "items": ids, "label_token_ids": labels}).json()
    texts = [format_body(q, d, i) + QWEN_SUFFIX for q, d, i in pairs]
    by_text = post(rerank_server, "/v1/score", {"query": QWEN_PREFIX, "items": texts, "label_token_ids": labels}).json()
    n_suffix = len(template.suffix_ids)
    item_first = {
        "query": list(template.suffix_ids),
        "items": [x[:-n_suffix] for x in ids],
        "item_first": True,
        "label_token_ids": labels,
    }
    by_item_first = post(rerank_server, "/v1/score", item_first).json()
    assert by_text["usage"]["prompt_tokens"] == by_ids["usage"]["prompt_tokens"]
    for other in (by_text, by_item_first):
        for a, b in zip(other["scores"], by_ids["scores"], strict=True):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-12)


def test_longest_prompt_passes_and_one_token_more_is_refused(rerank_server: ManagedServer) -> None:
    labels = [9693, 2152]
    ok = post(rerank_server, "/v1/score", {"query": [], "items": [[1944] * MAX_LENGTH], "label_token_ids": labels})
    assert ok.status_code == 200, ok.text
    bad = post(rerank_server, "/v1/score", {"query": [], "items": [[1944] * RERANK_CONTEXT], "label_token_ids": labels})
    assert bad.status_code == 400
    msg = f"The input ({RERANK_CONTEXT} tokens) is longer than the model's context length ({RERANK_CONTEXT} tokens)."
    assert bad.json()["message"] == msg


def test_scores_do_not_depend_on_batching_or_concurrency(rerank_server: ManagedServer) -> None:
    template, ids = client_ids(rerank_server, PAIRS)
    labels = [template.yes_id, template.no_id]

    def score(items: list[list[int]]) -> list[float]:
        r = post(rerank_server, "/v1/score", {"query": [], "items": items, "label_token_ids": labels})
        r.raise_for_status()
        return [s[0] for s in r.json()["scores"]]

    alone = [score([x])[0] for x in ids]
    together = score(ids)
    assert max(abs(a - b) for a, b in zip(alone, together, strict=True)) <= 1e-6
    many = score(ids * 4)  # 72 rows: more than one forward pass (at most 64 rows each)
    assert max(abs(a - b) for a, b in zip(many, together * 4, strict=True)) <= 1e-6
    results: dict[int, list[float]] = {}

    def worker(k: int) -> None:
        results[k] = score(ids[k:] + ids[:k])  # each thread its own order

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(4))
    for k, got in results.items():
        assert max(abs(a - b) for a, b in zip(got, together[k:] + together[:k], strict=True)) <= 1e-6


def sglang_template_scores(reference: QwenReference, query: str, docs: list[str], instruct: str | None) -> list[float]:
    """What SGLang's qwen3_reranker.jinja scores: no thinking block, its own default instruction."""
    instruction = instruct or QWEN_INSTRUCTION + "."
    texts = [
        f"{QWEN_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {d}<|im_end|>\n<|im_start|>assistant\n"
        for d in docs
    ]
    return reference.scores_of_ids([reference.tok.encode(t) for t in texts])[0]


def test_rerank_route_scores_like_sglangs_template(rerank_server: ManagedServer, reference: QwenReference) -> None:
    query, docs = QUERIES[0][0], DOCUMENTS[:4]
    r = post(rerank_server, "/v1/rerank", {"query": query, "documents": docs})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert isinstance(answer, list) and sorted(e["index"] for e in answer) == list(range(len(docs)))
    assert [e["score"] for e in answer] == sorted((e["score"] for e in answer), reverse=True)
    assert all(e["document"] == docs[e["index"]] and e["meta_info"] is None for e in answer)
    expected = sglang_template_scores(reference, query, docs, None)
    by_index = {e["index"]: e["score"] for e in answer}
    assert max(abs(by_index[i] - expected[i]) for i in range(len(docs))) <= TOL
    exact = reference.scores([(query, d, None) for d in docs])
    assert max(abs(a - b) for a, b in zip(expected, exact, strict=True)) > 1e-3  # the drift SGLang has
    top = post(rerank_server, "/v1/rerank", {"query": query, "documents": docs, "top_n": 2, "return_documents": False})
    assert top.json() == [{k: v for k, v in e.items() if k != "document"} for e in answer[:2]]
    with_instruct = post(rerank_server, "/v1/rerank", {"query": query, "documents": docs, "instruct": "Judge"}).json()
    expected_instruct = sglang_template_scores(reference, query, docs, "Judge")
    assert all(abs(e["score"] - expected_instruct[e["index"]]) <= TOL for e in with_instruct)


def test_rerank_route_with_qwens_prompt_equals_the_exact_score(
    rerank_server_qwen: ManagedServer, reference: QwenReference
) -> None:
    for query, instruct in QUERIES:
        docs = DOCUMENTS[:4]
        answer = post(rerank_server_qwen, "/v1/rerank", {"query": query, "documents": docs, "instruct": instruct})
        assert answer.status_code == 200, answer.text
        expected = reference.scores([(query, d, instruct) for d in docs])
        assert all(abs(e["score"] - expected[e["index"]]) <= TOL for e in answer.json())


LONG_DOC = "word " * 600
ERRORS: list[tuple[str, Any, str, str]] = [
    # route, body, type, message (or the part of it after "~")
    ("/v1/rerank", {"query": "", "documents": ["a"]}, "BadRequestError", "Query cannot be empty"),
    ("/v1/rerank", {"query": " \n", "documents": ["a"]}, "BadRequestError", "Query cannot be empty or whitespace only"),
    ("/v1/rerank", {"query": "q", "documents": []}, "BadRequestError", "Documents cannot be empty"),
    (
        "/v1/rerank",
        {"query": "q", "documents": ["a", ""]},
        "BadRequestError",
        "Each document must be a non-empty string",
    ),
    (
        "/v1/rerank",
        {"query": "q", "documents": ["a", "\t "]},
        "BadRequestError",
        "Each document cannot be empty or whitespace only",
    ),
    (
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "top_n": 0},
        "Bad Request",
        "~parameter top_n should be larger than 0.",
    ),
    ("/v1/rerank", {"query": 3, "documents": ["a"]}, "Bad Request", "~Input should be a valid string"),
    ("/v1/rerank", {"query": "q", "documents": "abc"}, "Bad Request", "~Input should be a valid list"),
    ("/v1/rerank", {"query": "q"}, "Bad Request", "~Field required"),
    (
        "/v1/rerank",
        {"query": "q", "documents": [LONG_DOC]},
        "BadRequestError",
        "~is longer than the model's context length",
    ),
    (
        "/v1/score",
        {"query": "q", "items": ["a"]},
        "BadRequestError",
        "label_token_ids is required for generation (CausalLM) models.",
    ),
    ("/v1/score", {"query": "q", "label_token_ids": [1]}, "BadRequestError", "items must be provided"),
    (
        "/v1/score",
        {"query": "q", "items": ["a"], "label_token_ids": [999999]},
        "BadRequestError",
        "Token ID 999999 is out of vocabulary (vocab size: 151643)",
    ),
    (
        "/v1/score",
        {"query": "q", "items": ["a"], "label_token_ids": []},
        "BadRequestError",
        "label_token_ids must be a nonempty list",
    ),
    ("/v1/score", {"query": "q", "items": ["a"], "label_token_ids": [5, 5]}, "BadRequestError", "~duplicate"),
    ("/v1/score", {"query": "q", "items": ["a"], "label_token_ids": [-1]}, "BadRequestError", "~nonnegative"),
    (
        "/v1/score",
        {"query": "q", "items": ["a"], "label_token_ids": "yes"},
        "Bad Request",
        "~Input should be a valid list",
    ),
    ("/v1/score", {"query": "q", "items": [1, 2], "label_token_ids": [1]}, "Bad Request", "~validation error"),
    (
        "/v1/score",
        {"query": [1], "items": ["a"], "label_token_ids": [1]},
        "BadRequestError",
        "Invalid combination of query/items types for score_request.",
    ),
    (
        "/v1/score",
        {"items": ["a"], "label_token_ids": [1]},
        "BadRequestError",
        "Invalid combination of query/items types for score_request.",
    ),
    (
        "/v1/score",
        {"query": "q", "items": [[1]], "label_token_ids": [1]},
        "BadRequestError",
        "~send the query as token ids",
    ),
    ("/v1/score", {"query": [], "items": [[151669]], "label_token_ids": [1]}, "BadRequestError", "~out of range"),
    ("/v1/score", {"query": "", "items": [""], "label_token_ids": [1]}, "BadRequestError", "~is empty"),
    (
        "/v1/score",
        {"query": "q", "items": ["a"], "label_token_ids": [1], "return_pooled_hidden_states": True},
        "BadRequestError",
        "~not supported for CausalLM models",
    ),
]


@pytest.mark.parametrize(("route", "body", "kind", "message"), ERRORS, ids=[f"{r}:{m}" for r, _, _, m in ERRORS])
def test_bad_requests_get_sglangs_400s(
    rerank_server: ManagedServer, route: str, body: Any, kind: str, message: str
) -> None:
    r = post(rerank_server, route, body)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert set(answer) == {"object", "message", "type", "param", "code"}
    assert (answer["object"], answer["type"], answer["param"], answer["code"]) == ("error", kind, None, 400)
    if message.startswith("~"):
        assert message[1:] in answer["message"]
    else:
        assert answer["message"] == message


def test_json_only_and_size_caps(rerank_server: ManagedServer) -> None:
    url = rerank_server.root_url + "/v1/rerank"
    form = httpx.post(
        url, content=b'{"query":"q","documents":["a"]}', headers={"content-type": "text/plain"}, timeout=30
    )
    assert form.status_code == 400 and "Only 'application/json' is allowed" in form.json()["message"]
    broken = httpx.post(url, content=b'{"query":', headers={"content-type": "application/json"}, timeout=30)
    assert broken.status_code == 400 and "JSON decode error" in broken.json()["message"]
    many = post(rerank_server, "/v1/rerank", {"query": "q", "documents": ["a"] * 4097})
    assert many.status_code == 413 and many.json()["type"] == "RequestTooLargeError"
    empty = post(rerank_server, "/v1/score", {"query": "q", "items": [], "label_token_ids": [9693, 2152]})
    assert empty.status_code == 200 and empty.json()["scores"] == []  # as SGLang: no items, no scores


def test_info_routes_tell_a_reranker_server(rerank_server: ManagedServer) -> None:
    info = httpx.get(rerank_server.root_url + "/model_info", timeout=30).json()
    assert info["is_generation"] is True  # what SGLang says for a reranker (False for embeddings)
    assert info["architectures"] == ["Qwen3ForCausalLM"]
    assert info["reranker"]["yes_token_id"] == 9693 and info["reranker"]["no_token_id"] == 2152
    models = httpx.get(rerank_server.base_url + "/models", timeout=30).json()
    assert models["data"][0]["max_model_len"] == RERANK_CONTEXT
    tokens = post(rerank_server, "/v1/tokenize", {"prompt": "test"}).json()
    assert tokens["tokens"] == [1944] and tokens["count"] == 1  # the reranker's tokenizer appends nothing
    emb = post(rerank_server, "/v1/embeddings", {"input": "x"})
    assert emb.status_code == 400 and "--is-embedding" in emb.json()["message"]


def test_503_while_loading_then_200_and_the_api_key(qwen_reranker_dir: Path) -> None:
    srv = LocalRerankServer(qwen_reranker_dir, api_key="s3cret-key", startup_timeout=120)
    srv.start(wait=False)
    try:
        first = None
        deadline = time.monotonic() + srv.startup_timeout
        while first is None and time.monotonic() < deadline:
            try:
                first = httpx.get(srv.root_url + "/health", timeout=2).status_code
            except httpx.HTTPError:
                assert srv.is_running(), srv.logs_tail()
                time.sleep(0.05)
        assert first == 503, "the server should answer 503 while it loads the model"
        while httpx.get(srv.root_url + "/health", timeout=2).status_code != 200:
            assert srv.is_running() and time.monotonic() < deadline, srv.logs_tail()
            time.sleep(0.1)
        body = {"query": "q", "documents": ["a"]}
        assert post(srv, "/v1/rerank", body).status_code == 401
        ok = post(srv, "/v1/rerank", body, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200 and 0.0 < ok.json()[0]["score"] < 1.0
    finally:
        srv.stop()
    assert not srv.is_running()


def test_reranker_test_model_is_like_qwen3_reranker(qwen_reranker_dir: Path, reference: QwenReference) -> None:
    import json

    config = json.loads((qwen_reranker_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["vocab_size"] == 151669
    assert reference.tok("test")["input_ids"] == [1944]  # no <|endoftext|>, unlike Qwen3-Embedding's
    assert (reference.yes, reference.no) == (9693, 2152)
    scores = reference.scores(PAIRS)
    assert min(scores) < 0.35 and max(scores) > 0.65  # spread over (0, 1): order tests mean something
