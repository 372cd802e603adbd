"""The local backend for rerankers: SGLang's ``/v1/score`` and ``/v1/rerank`` on CPU.

A Qwen3-Reranker is a causal language model scored by its next-token logits (see
`qwen_sglang.rerank_format`). SGLang serves it WITHOUT ``--is-embedding``; this server loads the
same model with transformers' ``AutoModelForCausalLM`` on CPU (fp32 unless told otherwise) and
answers like SGLang 0.5.17: the same routes, request fields, response shapes, 400 messages and
JSON error body (``{"object":"error","message":…,"type":"BadRequestError","param":null,"code":400}``),
``/health`` 503 until the model is loaded and warmed, ``/model_info`` with ``is_generation: true``
(what tells a reranker server from an embedding server on SGLang too, plus a ``reranker`` block
only this backend gives), and SGLang's 400 on ``/v1/embeddings`` for a generation model.

- ``POST /v1/score``: P(label token | query + item) for each item, from the next-token
  log-probabilities over the whole vocabulary (``apply_softmax`` renormalises over the labels).
  With the client-built prompt ids (`qwen_sglang.rerank_format.RerankTemplate.pair_ids`) and
  ``label_token_ids=[yes, no]``, ``apply_softmax=true``, ``scores[i][0]`` is Qwen's exact score.
- ``POST /v1/rerank``: SGLang's route for decoder rerankers. By default (``rerank_prompt="sglang"``)
  it renders what SGLang renders with the ``qwen3_reranker.jinja`` chat template it is launched
  with: Qwen's prompt WITHOUT the ``<think>\\n\\n</think>\\n\\n`` suffix, and a default instruction
  ending in a period, so its scores drift from Qwen's like SGLang's do. ``rerank_prompt="qwen"``
  uses Qwen's exact prompt instead. Either way the answer is SGLang's bare list sorted by score.

Pairs from concurrent requests are merged, sorted by length and run in left-padded forward
passes of at most ``max_batch_tokens`` padded tokens, each row with its own position ids, so a
pair's score does not depend on what it was batched with. Bodies must be JSON (``Content-Type:
application/json``); requests are capped in bytes, items and tokens.

Run it with ``python -m qwen_sglang.local_backend.rerank --model DIR`` (binds 127.0.0.1:30000). Needs the
``local`` extra: ``pip install 'qwen-sglang[local]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from qwen_sglang._version import __version__
from qwen_sglang.local_backend.guards import HTTPError, new_app, serve_app
from qwen_sglang.local_backend.rerank_runner import LocalRerankConfig, RerankRunner
from qwen_sglang.rerank_format import PREFIX, format_body, p_yes
from qwen_sglang.servers.models_path import check_model_arg

__all__ = [
    "LocalRerankConfig",
    "RerankRunner",
    "SGLANG_TEMPLATE_DEFAULT_INSTRUCTION",
    "SGLANG_TEMPLATE_SUFFIX",
    "create_app",
    "main",
    "serve",
    "sglang_template_prompt",
]

logger = logging.getLogger("qwen_sglang.local_backend.rerank")

#: The default instruction of SGLang's ``examples/chat_template/qwen3_reranker.jinja`` (it ends
#: with a period; Qwen's reference instruction does not).
SGLANG_TEMPLATE_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query."
#: What that template puts after the document: no ``<think>\n\n</think>\n\n`` (Qwen's has it).
SGLANG_TEMPLATE_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


def sglang_template_prompt(query: str, document: str, instruct: str | None) -> str:
    """The text SGLang 0.5.x renders for one pair on ``/v1/rerank`` with ``qwen3_reranker.jinja``.

    SGLang passes ``instruct`` to the template only when it is truthy, so ``None`` and ``""`` both
    give the template's default instruction. The string is tokenised as a whole.
    """
    instruction = instruct or SGLANG_TEMPLATE_DEFAULT_INSTRUCTION
    return f"{PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}{SGLANG_TEMPLATE_SUFFIX}"


# ---------------------------------------------------------------------- requests (SGLang 0.5.17)
class ScoreRequest(BaseModel):
    """``POST /v1/score`` (SGLang's ``ScoringRequest``; unknown fields are ignored, as there)."""

    query: str | list[int] | None = None
    items: str | list[str] | list[list[int]] | None = None
    label_token_ids: list[int] | None = None
    apply_softmax: bool = False
    item_first: bool = False
    return_pooled_hidden_states: bool = False
    embed_override_token_id: int | None = None
    query_embed_overrides: list[list[float]] | None = None
    item_embed_overrides: list[list[list[float]] | None] | None = None
    model: str = "default"


class RerankRequest(BaseModel):
    """``POST /v1/rerank`` (SGLang's ``V1RerankReqInput``, text only)."""

    query: str
    documents: list[str]
    instruct: str | None = None
    top_n: int | None = None
    return_documents: bool = True

    @field_validator("top_n")
    @classmethod
    def _top_n_positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            # SGLang's text; pydantic prefixes "Value error, " once more
            raise ValueError("Value error, parameter top_n should be larger than 0.")
        return v


class _TokenizeRequest(BaseModel):
    """``POST /v1/tokenize`` (the ``prompt`` form)."""

    prompt: str | list[str]
    add_special_tokens: bool = True


def _validation_error(errors: Sequence[Any]) -> HTTPError:
    """SGLang's answer to a body FastAPI cannot validate: 400, type "Bad Request", the message
    ``str(RequestValidationError)`` followed by the error list."""
    exc = RequestValidationError(errors)
    exc_str, errors_str = str(exc), str(exc.errors())
    message = f"{exc_str} {errors_str}" if errors_str and errors_str != exc_str else exc_str
    return HTTPError(message, 400, "Bad Request")


def _parse_body(raw: bytes, content_type: str, model: type[BaseModel], limit: int) -> Any:
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        msg = "Unsupported Media Type: Only 'application/json' is allowed"
        raise _validation_error([{"loc": ["header", "content-type"], "msg": msg, "type": "value_error"}])
    if len(raw) > limit:
        raise HTTPError(f"Request body too large: more than {limit} bytes", 413, "RequestTooLargeError")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        pos = getattr(exc, "pos", 0)
        err = {"type": "json_invalid", "loc": ("body", pos), "msg": "JSON decode error", "input": {}}
        raise _validation_error([err]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise _validation_error(errors) from None


def _check_labels(labels: list[int], label_vocab: int) -> list[int]:
    """Label token checks of SGLang 0.5.17 and 0.5.23 together (the stricter of each)."""
    if not labels:
        raise HTTPError("label_token_ids must be a nonempty list")
    if any(t < 0 for t in labels):
        raise HTTPError("label_token_ids must contain nonnegative integers")
    if len(set(labels)) != len(labels):
        raise HTTPError("label_token_ids must not contain duplicate tokens")
    for t in labels:
        if t >= label_vocab:
            raise HTTPError(f"Token ID {t} is out of vocabulary (vocab size: {label_vocab})")
    return labels


def _label_scores(logprobs: list[float], apply_softmax: bool) -> list[float]:
    """SGLang's conversion: probabilities over the vocabulary, or a softmax over the labels."""
    if not apply_softmax:
        return [math.exp(x) for x in logprobs]
    top = max(logprobs)
    weights = [math.exp(x - top) for x in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def _score_response(sequences: list[list[int]], scores: list[list[float]], req: ScoreRequest) -> dict[str, Any]:
    """SGLang's ``ScoringResponse`` (as its ``model_dump()``)."""
    n_tokens = sum(len(ids) for ids in sequences)
    usage = {
        "prompt_tokens": n_tokens,
        "total_tokens": n_tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }
    return {"scores": scores, "pooled_hidden_states": None, "model": req.model, "usage": usage, "object": "scoring"}


class _Service:
    """What the routes do, with the runner and the limits."""

    def __init__(self, config: LocalRerankConfig, runner: RerankRunner) -> None:
        self.config = config
        self.runner = runner

    def model_name(self) -> str:
        return self.config.served_model_name or self.runner.model_path

    def check_ready(self) -> None:
        if self.runner.failed is not None:
            raise HTTPError(f"The model failed to load: {self.runner.failed}", 500, "InternalServerError")
        if not self.runner.ready.is_set():
            raise HTTPError("The server is still loading the model", 503, "ServiceUnavailableError")

    def check_sizes(self, sequences: list[list[int]]) -> None:
        """SGLang's over-long check per prompt (a prompt must stay below the context length),
        then this backend's per-request caps."""
        ctx = self.runner.context_length
        for ids in sequences:
            if len(ids) >= ctx:
                raise HTTPError(
                    f"The input ({len(ids)} tokens) is longer than the model's context length ({ctx} tokens)."
                )
        total = sum(len(ids) for ids in sequences)
        if total > self.config.max_request_tokens:
            raise HTTPError(
                f"Request too large: {total} prompt tokens > {self.config.max_request_tokens}",
                413,
                "RequestTooLargeError",
            )

    def check_count(self, n: int) -> None:
        if n > self.config.max_items_per_request:
            raise HTTPError(
                f"Too many items in one request: {n} > {self.config.max_items_per_request}",
                413,
                "RequestTooLargeError",
            )

    async def score_sequences(self, sequences: list[list[int]], labels: list[int]) -> list[list[float]]:
        self.check_sizes(sequences)
        return await asyncio.wrap_future(self.runner.submit(sequences, labels))

    async def score_ids(self, req: ScoreRequest) -> list[list[int]]:
        """The token ids of each query + item pair, as SGLang builds them."""
        items = req.items
        assert items is not None  # checked by score()
        if isinstance(req.query, str) and (isinstance(items, str) or all(isinstance(x, str) for x in items)):
            texts = [items] if isinstance(items, str) else [str(x) for x in items]
            self.check_count(len(texts))
            prompts = [f"{x}{req.query}" if req.item_first else f"{req.query}{x}" for x in texts]
            return await run_in_threadpool(self.runner.tokenize, prompts, True)
        if isinstance(req.query, str):
            raise HTTPError(
                "query is text but items are token ids: SGLang would score the text of the Python list "
                "(send the query as token ids too)"
            )
        if isinstance(req.query, list) and not isinstance(items, str) and all(isinstance(x, list) for x in items):
            self.check_count(len(items))
            query = req.query
            seqs = [[*x, *query] if req.item_first else [*query, *x] for x in items if isinstance(x, list)]
            for i, ids in enumerate(seqs):
                bad = [t for t in ids if not 0 <= t < self.runner.vocab_size]
                if bad:
                    raise HTTPError(f"Token id {bad[0]} of item {i} is out of range [0, {self.runner.vocab_size})")
            return seqs
        raise HTTPError("Invalid combination of query/items types for score_request.")

    async def score(self, req: ScoreRequest) -> dict[str, Any]:
        """Answer ``/v1/score``; the checks come in SGLang's order."""
        if req.embed_override_token_id is not None or req.query_embed_overrides or req.item_embed_overrides:
            raise HTTPError("embedding overrides are not supported by the local backend")
        if req.label_token_ids is None:
            raise HTTPError("label_token_ids is required for generation (CausalLM) models.")
        if req.items is None:
            raise HTTPError("items must be provided")
        if req.items == []:  # SGLang answers no items with no scores, before any other check
            return _score_response([], [], req)
        labels = _check_labels(req.label_token_ids, self.runner.label_vocab_size)
        sequences = await self.score_ids(req)
        if req.return_pooled_hidden_states:
            raise HTTPError(
                "return_pooled_hidden_states is not supported for CausalLM models. It requires a model "
                "with a task-specific head (e.g. SequenceClassification or RewardModel)."
            )
        for i, ids in enumerate(sequences):
            if not ids:
                raise HTTPError(f"The input of item {i} is empty (query + item has no tokens)")
        logprobs = await self.score_sequences(sequences, labels)
        return _score_response(sequences, [_label_scores(lp, req.apply_softmax) for lp in logprobs], req)

    @staticmethod
    def validate_rerank(req: RerankRequest) -> None:
        """SGLang's ``OpenAIServingRerank._validate_request`` messages."""
        if not req.query:
            raise HTTPError("Query cannot be empty")
        if not req.query.strip():
            raise HTTPError("Query cannot be empty or whitespace only")
        if not req.documents:
            raise HTTPError("Documents cannot be empty")
        for doc in req.documents:
            if not doc:
                raise HTTPError("Each document must be a non-empty string")
            if not doc.strip():
                raise HTTPError("Each document cannot be empty or whitespace only")

    def rerank_ids(self, req: RerankRequest) -> list[list[int]]:
        if self.config.rerank_prompt == "sglang":
            texts = [sglang_template_prompt(req.query, doc, req.instruct) for doc in req.documents]
            return self.runner.tokenize(texts, True)
        template = self.runner.template
        assert template is not None  # set before ready
        bodies = [format_body(req.query, doc, req.instruct or None) for doc in req.documents]
        return [[*template.prefix_ids, *ids, *template.suffix_ids] for ids in self.runner.tokenize(bodies, False)]

    async def rerank(self, req: RerankRequest) -> list[dict[str, Any]]:
        self.validate_rerank(req)
        self.check_count(len(req.documents))
        template = self.runner.template
        assert template is not None
        sequences = await run_in_threadpool(self.rerank_ids, req)
        logprobs = await self.score_sequences(sequences, [template.yes_id, template.no_id])
        results = []
        for i, (yes, no) in enumerate(logprobs):
            entry: dict[str, Any] = {"score": p_yes(yes, no)}
            if req.return_documents:
                entry["document"] = req.documents[i]
            results.append({**entry, "index": i, "meta_info": None})
        results.sort(key=lambda e: e["score"], reverse=True)  # stable: ties keep their order
        return results[: req.top_n] if req.top_n is not None else results

    def model_info(self) -> dict[str, Any]:
        template = self.runner.template
        return {
            "model_path": self.runner.model_path,
            "tokenizer_path": self.runner.model_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": self.runner.model_type,
            "architectures": self.runner.architectures,
            # only this backend says so; on SGLang, is_generation=true is the signal
            "reranker": {
                "yes_token_id": template.yes_id if template else None,
                "no_token_id": template.no_id if template else None,
                "rerank_prompt": self.config.rerank_prompt,
                "exact_route": "/v1/score",
            },
        }

    def server_info(self) -> dict[str, Any]:
        return {
            "version": f"qwen-sglang-local {__version__}",
            "backend": "local",
            "task": "rerank",
            "model_path": self.runner.model_path,
            "served_model_name": self.model_name(),
            "is_embedding": False,
            "context_length": self.runner.context_length or None,
            "rerank_prompt": self.config.rerank_prompt,
            "device": self.config.device,
            "dtype": self.config.dtype,
            "host": self.config.host,
            "port": self.config.port,
        }


def create_app(config: LocalRerankConfig, runner: RerankRunner | None = None) -> Any:
    """Build the FastAPI application (the model loads in the background once it starts)."""
    runner = runner or RerankRunner(config)
    svc = _Service(config, runner)

    app = new_app("qwen-sglang local reranker", config, runner)

    async def parsed(request: Request, model: type[BaseModel]) -> Any:
        raw = await request.body()
        body = _parse_body(raw, request.headers.get("content-type", ""), model, config.max_request_bytes)
        svc.check_ready()
        return body

    @app.get("/v1/models")
    async def models() -> Any:
        name = svc.model_name()
        entry = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "sglang", "root": name}
        return {"object": "list", "data": [{**entry, "max_model_len": runner.context_length or None}]}

    app.get("/model_info")(svc.model_info)
    app.get("/get_model_info")(svc.model_info)
    app.get("/server_info")(svc.server_info)
    app.get("/get_server_info")(svc.server_info)

    async def tokenize(request: Request) -> Any:
        data = await parsed(request, _TokenizeRequest)
        prompts = [data.prompt] if isinstance(data.prompt, str) else data.prompt
        tokens = await run_in_threadpool(runner.tokenize, prompts, data.add_special_tokens)
        single = isinstance(data.prompt, str)
        counts = [len(t) for t in tokens]
        return {
            "tokens": tokens[0] if single else tokens,
            "count": counts[0] if single else counts,
            "max_model_len": runner.tokenizer_max_length,  # like SGLang: the tokenizer's limit
        }

    app.post("/v1/tokenize")(tokenize)
    app.post("/tokenize")(tokenize)

    @app.post("/v1/score")
    async def score(request: Request) -> Any:
        return await svc.score(await parsed(request, ScoreRequest))

    async def rerank(request: Request) -> Any:
        return await svc.rerank(await parsed(request, RerankRequest))

    app.api_route("/v1/rerank", methods=["POST", "PUT"])(rerank)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        svc.check_ready()
        raise HTTPError(
            "This model does not appear to be an embedding model by default. "
            "Please add `--is-embedding` when launching the server or try another model."
        )

    return app


def serve(config: LocalRerankConfig) -> int:
    """Run the local reranker backend until interrupted. Returns the process exit code.

    Prints SGLang's ready line once the model is loaded and warmed (what managed launchers wait
    for besides ``/health``), and exits 1 when the model cannot be loaded.
    """
    check_model_arg(config.model)
    runner = RerankRunner(config)
    return serve_app(config, create_app(config, runner), runner, what="reranker")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qwen_sglang.local_backend.rerank --model DIR [--port N] [--rerank-prompt qwen]``."""
    p = argparse.ArgumentParser(
        prog="python -m qwen_sglang.local_backend.rerank",
        description="Serve a Qwen3-Reranker on CPU with SGLang's /v1/score and /v1/rerank",
    )
    p.add_argument("--model", required=True, help="model directory (a Qwen3-Reranker)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--api-key", default=None, help="require this bearer key on /v1/* (health stays open)")
    p.add_argument("--rerank-prompt", choices=["sglang", "qwen"], default="sglang", help="what /v1/rerank renders")
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-batch-tokens", type=int, default=16384)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = LocalRerankConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        api_key=args.api_key,
        rerank_prompt=args.rerank_prompt,
        context_length=args.context_length,
        device=args.device,
        dtype=args.dtype,
        max_batch_tokens=args.max_batch_tokens,
        log_level=args.log_level,
    )
    return serve(config)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
