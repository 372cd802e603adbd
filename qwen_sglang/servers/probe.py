"""Diagnose a running embedding server: what ``qwen-sglang doctor`` and ``SGLangServer.attach`` report.

`probe_server` runs `CHECKS`, a table of small check functions, in order. Each reads what it needs
through `Probe` (GETs that answer ``None`` for anything but a 200 JSON object, embedding requests
whose answers are read field by field), so a server answering ``{}`` or an HTML page gets a row
that says so, never a crash. A check that fails at a gate (unreachable, 401) ends the probe with
the rest marked "not checked"; checks that need vectors are "not checked" when none came back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from pydantic import SecretStr

from qwen_sglang._urls import root_url
from qwen_sglang.client.discovery import ServerFacts, parse_facts, same_model
from qwen_sglang.presets import find_preset
from qwen_sglang.servers.answers import Reply, json_object, positive_field, text_field
from qwen_sglang.servers.options import NEWEST_READ, VERIFIED_ON_GPU, parse_version
from qwen_sglang.servers.report import LOG_SIGNATURES, Check, Kind, ServerReport, diagnose_log
from qwen_sglang.settings import normalize_base_url, redact_url

__all__ = ["CHECKS", "LOG_SIGNATURES", "Check", "CheckSpec", "Probe", "ServerReport", "diagnose_log", "probe_server"]


_UNAUTHORIZED = object()


@dataclass
class Probe:
    """What the checks share: the HTTP client, the server's URLs, the report they fill, and the
    configured model to compare (``model``)."""

    http: httpx.Client
    base: str
    root: str
    report: ServerReport
    model: str | None = None
    health: httpx.Response | None = None
    plain: Reply | None = None
    info: dict[str, Any] | None = None
    """``/model_info``'s object, when it answered one."""

    def get(self, path: str) -> httpx.Response | None:
        try:
            return self.http.get(self.root + path)
        except httpx.HTTPError:
            return None

    def get_json(self, *paths: str) -> Any:
        """The first of ``paths`` that answers a JSON object; `_UNAUTHORIZED` on a 401; else None."""
        for path in paths:
            response = self.get(path)
            if response is not None and response.status_code == 401:
                return _UNAUTHORIZED
            data = json_object(response)
            if data is not None:
                return data
        return None

    def embed(self, payload: dict[str, Any]) -> Reply:
        body = {"model": self.report.served_model_name or "default", **payload}
        try:
            return Reply.of(self.http.post(self.base + "/embeddings", json=body))
        except httpx.HTTPError:
            return Reply(None)

    def vectors(self, texts: Sequence[str]) -> np.ndarray | None:
        rows = self.embed({"input": list(texts), "encoding_format": "float"}).vectors()
        if rows is None or len(rows) != len(texts) or len({len(r) for r in rows}) != 1:
            return None
        return np.asarray(rows, dtype=np.float64)


CheckResult = Check | list[Check] | None
CheckFn = Callable[[Probe], CheckResult]


@dataclass(frozen=True)
class CheckSpec:
    """One entry of `CHECKS`. ``gate``: a failure ends the probe; ``needs_vectors``: skipped when
    the server gave no vectors; ``row``: the check always reports a row (so "not checked" when skipped)."""

    name: str
    run: CheckFn
    gate: bool = False
    needs_vectors: bool = False
    row: bool = True


# --------------------------------------------------------------------------------------- checks
def _reachable(p: Probe) -> Check:
    try:
        p.health = p.http.get(p.root + "/health")
    except httpx.HTTPError as exc:
        fix = "start a server (qwen-sglang serve --model MODEL) or check the host and port"
        return Check("reachable", "fail", f"no ({type(exc).__name__})", fix)
    return Check("reachable", "ok", "yes")


def _healthy(p: Probe) -> Check:
    """``/ready`` where the server has it (SGLang 0.5.23, the local backends), else ``/health``."""
    ready = p.get("/ready")
    path, answer = ("/ready", ready) if ready is not None and ready.status_code in (200, 503) else ("/health", p.health)
    code = answer.status_code if answer is not None else "no answer"
    if code == 200:
        return Check("healthy", "ok", f"200 on {path}")
    fix = "the server is still loading or warming up: wait, then run doctor again"
    return Check("healthy", "fail", f"{code} on {path}", fix)


def _api_key(p: Probe) -> Check | None:
    info = p.get_json("/model_info", "/get_model_info")
    if info is _UNAUTHORIZED:
        return Check(
            "api key", "fail", "401 Unauthorized", "pass the server's --api-key (QWEN_SGLANG_API_KEY or --api-key)"
        )
    p.report.model_path = text_field(info, "model_path")
    if isinstance(info, dict) and isinstance(info.get("is_generation"), bool):
        p.report.is_embedding = not info["is_generation"]
    p.info = info if isinstance(info, dict) else None
    return None


def _discovery(p: Probe) -> None:
    """What ``/v1/models`` and ``/server_info`` say (no row of its own)."""
    models = p.get_json("/v1/models")
    data = models.get("data") if isinstance(models, dict) else None
    entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    p.report.served_model_name = text_field(entry, "id")
    p.report.context_length = positive_field(entry, "max_model_len")
    info = p.get_json("/server_info", "/get_server_info")
    version = info.get("version") if isinstance(info, dict) else None
    p.report.version = str(version) if isinstance(version, str | int | float) and version != "" else None
    p.report.kind = _kind(parse_facts(models, p.info, info))


def _kind(facts: ServerFacts) -> Kind | None:
    """What the server serves, by the client's own rule (`ServerFacts.is_reranker`, so that doctor
    and the clients never disagree): a reranker, else what ``is_generation`` says (``None``: the
    server did not say)."""
    if facts.is_reranker:
        return "reranker"
    if facts.is_embedding is None:
        return None
    return "embedding" if facts.is_embedding else "generation"


def _reranker(p: Probe) -> list[Check]:
    """A reranker server: ``/v1/score`` answers, and the embedding checks do not apply."""
    body = {"query": "doctor", "items": ["probe"], "label_token_ids": [0, 1], "apply_softmax": True}
    try:
        answer = json_object(p.http.post(p.base + "/score", json=body))
    except httpx.HTTPError:
        answer = None
    scores = (answer or {}).get("scores")
    served = p.report.served_model_name or p.report.model_path or "a reranker"
    if isinstance(scores, list) and len(scores) == 1:
        found = Check("reranker", "ok", f"yes: {served} scores pairs on /v1/score")
    else:
        fix = (
            "check the server log; SGLang serves Qwen3-Reranker without --is-embedding "
            "(qwen-sglang serve --task rerank)"
        )
        found = Check("reranker", "fail", f"{served} looks like a reranker, but /v1/score did not answer scores", fix)
    note = (
        "use it with a reranker (QwenSGLangReranker, qwen-sglang rerank); embedding clients need a "
        "Qwen3-Embedding server (qwen-sglang serve --model Qwen/Qwen3-Embedding-0.6B)"
    )
    return [
        found,
        Check("embedding model", "info", "no: this is a reranker server (the embedding checks are skipped)", note),
    ]


def _embedding_model(p: Probe) -> Check | list[Check]:
    if p.report.kind == "reranker":
        return _reranker(p)
    p.plain = reply = p.embed({"input": ["qwen-sglang doctor probe"]})
    rows = reply.vectors()
    if rows:
        p.report.native_dim = len(rows[0])
        p.report.is_embedding = True
    elif "is-embedding" in reply.message() or "is_embedding" in reply.message():
        p.report.is_embedding = False
    if p.report.is_embedding is False:
        fix = "restart SGLang with --is-embedding (qwen-sglang serve always passes it)"
        return Check("embedding model", "fail", "no: the model runs as a generation model", fix)
    if p.report.native_dim:
        return Check("embedding model", "ok", "yes")
    fix = "check the server log; is base_url the embedding server?"
    return Check("embedding model", "fail", f"/v1/embeddings failed ({reply.describe()})", fix)


def _served_model(p: Probe) -> Check:
    name = p.report.served_model_name
    return Check("served model", "ok" if name else "warn", name or "unknown", "the server has no /v1/models")


def _native_width(p: Probe) -> Check:
    dim = p.report.native_dim
    return Check("native width", "ok" if dim else "skip", str(dim or "unknown"))


def _configured_model(p: Probe) -> Check | None:
    """The model the client is configured with against the served one: another width, or a name
    the client's `same_model` rule does not accept (the client refuses it: ModelMismatchError)."""
    if not p.model:
        return None
    report, model = p.report, p.model
    served = report.served_model_name or report.model_path or "unknown"
    preset = find_preset(model)
    if report.kind == "reranker" and (preset is not None or "embedding" in model.lower()):
        return Check(
            "configured model",
            "fail",
            f"{model} is an embedding model, and this server serves a reranker ({served}): an embedding "
            "client pointed here fails on its first request",
            f"point base_url at the server of {model}; use this one with the reranker (QwenSGLangReranker)",
        )
    if preset and report.native_dim and report.native_dim != preset.native_dim:
        return Check(
            "configured model",
            "fail",
            f"{model} makes {preset.native_dim}-d vectors; this server makes {report.native_dim}-d ({served})",
            f"point base_url at the server of {model}, or set model to the served one ({served})",
        )
    names = (report.served_model_name,) if report.served_model_name else ()
    if not same_model(model, ServerFacts(served_names=names, model_path=report.model_path)):
        return Check(
            "configured model",
            "fail",
            f"{model} is not the served model ({served}): a client configured so refuses the server",
            f"set model to the served one ({served}) or leave it unset, or point base_url at a server of {model}",
        )
    return Check("configured model", "ok", model)


def _vectors_check(p: Probe) -> Check:
    """Two different texts in one request, and the first alone: zero, NaN, identical, batch-dependent."""
    texts = [
        "The cat sat on the mat.",
        "GPU memory for the KV pool is reserved when the server starts, long before the first request.",
    ]
    both, alone = p.vectors(texts), p.vectors(texts[:1])
    if both is None or alone is None:
        return Check("vectors", "skip", "not checked (the server did not answer a two-text request)")
    if not np.isfinite(both).all() or not np.isfinite(alone).all():
        fix = "float16 overflows in Qwen3: serve with --dtype bfloat16 (or auto)"
        return Check("vectors", "fail", "NaN or infinite values", fix)
    norms = np.linalg.norm(both, axis=1)
    if (norms < 1e-6).any() or np.linalg.norm(alone) < 1e-6:
        fix = (
            "the server's pooling or weights are broken: check the model directory and --is-embedding; "
            "with sentence-transformers or TEI, use the model's own pooling config (last token)"
        )
        return Check("vectors", "fail", "all-zero vectors for non-empty texts", fix)
    unit = both / norms[:, None]
    between = float(unit[0] @ unit[1])
    same_text = float(unit[0] @ (alone[0] / np.linalg.norm(alone[0])))
    if between > 0.9999:
        fix = (
            "the server pools a token that does not depend on the text (a pad or BOS token): Qwen3-Embedding "
            "needs last-token pooling of the end token; serve it with SGLang --is-embedding or the model's "
            "own sentence-transformers config"
        )
        return Check("vectors", "fail", f"two different texts got the same vector (cosine {between:.4f})", fix)
    if same_text < 0.99:
        fix = (
            "right-padded batches with last-token pooling read a pad token: use left padding "
            "(padding_side='left') or SGLang, which does not pad"
        )
        return Check(
            "vectors", "fail", f"a text's vector changes with its batch (cosine {same_text:.3f} to itself alone)", fix
        )
    return Check("vectors", "ok", f"distinct, batch-independent (cosine {between:.2f} between two texts)")


def _matryoshka(p: Probe) -> Check:
    width = min(32, p.report.native_dim or 32)
    rows = p.embed({"input": ["probe"], "dimensions": width, "encoding_format": "float"}).vectors()
    if rows is None:
        p.report.matryoshka = False
        fix = (
            "start SGLang with --json-model-override-args '{\"is_matryoshka\": true}' "
            "(qwen-sglang serve does by default); the client truncates meanwhile"
        )
        return Check("matryoshka", "warn", "disabled (dimensions rejected)", fix)
    p.report.matryoshka = len(rows[0]) == width
    value = "enabled" if p.report.matryoshka else f"ignored (returned {len(rows[0])}-d)"
    fix = "SGLang < 0.5.5 ignores dimensions: upgrade; the client truncates meanwhile"
    return Check("matryoshka", "ok" if p.report.matryoshka else "warn", value, fix)


def _base64(p: Probe) -> Check:
    reply = p.embed({"input": ["probe"], "encoding_format": "base64"})
    p.report.base64 = reply.is_base64() and reply.vectors() is not None
    fix = "SGLang >= 0.5.17 answers base64 (smaller, faster); the client falls back to float"
    return Check(
        "base64", "ok" if p.report.base64 else "warn", "supported" if p.report.base64 else "not supported", fix
    )


def _empty_input(p: Probe) -> Check:
    reply = p.embed({"input": [""], "encoding_format": "float"})
    if reply.ok:
        return Check("empty input", "info", "accepted by the server")
    fix = (
        "the client refuses empty texts before sending (InvalidInputError names the index); "
        "empty_text='zero' gives them zero vectors instead"
    )
    status = reply.status if reply.status is not None else "no answer"
    return Check("empty input", "info", f"{status}: the server rejects empty strings (SGLang does)", fix)


def _context_length(p: Probe) -> Check:
    ctx = p.report.context_length
    value = f"{ctx} tokens" if ctx else "unknown"
    return Check("context length", "ok" if ctx else "warn", value, "the server does not report max_model_len")


def _version(p: Probe) -> Check:
    """The server's version, and whether it is newer than any this project verified on a GPU."""
    shown = p.report.version
    if not shown:
        return Check("version", "skip", "not exposed")
    newest = VERIFIED_ON_GPU[-1]
    try:
        at = parse_version(shown)
    except ValueError:  # the local backend ("qwen-sglang-local X"), or another server
        return Check("version", "ok", shown)
    if shown.startswith("qwen-sglang") or at <= parse_version(newest):
        return Check("version", "ok", shown)
    read = at <= parse_version(NEWEST_READ)
    known = (
        f"its source was read up to {NEWEST_READ} (docs/compatibility.md: the embedding route matches {newest})"
        if read
        else f"newer than {NEWEST_READ}, the newest whose source was read"
    )
    return Check(
        "version",
        "warn",
        f"{shown}: newer than the newest SGLang verified on a GPU ({newest}); {known}",
        f"if something misbehaves, try sglang=={newest} and tell the project (docs/compatibility.md)",
    )


def _speed(p: Probe) -> Check:
    """One request of 16 texts of about 40 tokens: what a bulk job can expect per request."""
    sentence = "Embedding servers turn text into vectors that a vector store can search quickly. "
    texts = [f"Passage {i}. " + sentence * 3 for i in range(16)]
    p.embed({"input": texts[:2], "encoding_format": "float"})  # warm-up
    start = time.perf_counter()
    reply = p.embed({"input": texts, "encoding_format": "float"})
    elapsed = time.perf_counter() - start
    if not reply.ok:
        return Check("speed", "skip", "not measured")
    rate = len(texts) / elapsed if elapsed > 0 else math.inf
    value = f"{rate:.0f} vectors/s (16 texts of ~45 tokens in one request: {elapsed * 1000:.0f} ms)"
    if not (p.report.version or "").startswith("qwen-sglang-local"):
        return Check("speed", "ok", value)
    return Check(
        "speed",
        "info",
        value + "\nthe local CPU backend: bulk jobs are bound by the CPU",
        "send few large requests (clients adopt the shape this server advertises; "
        "qwen-sglang ingest --batch-size 1000 --max-batch-tokens 1000000 --max-concurrency 1), "
        "or serve on a GPU with SGLang",
    )


#: What ``doctor`` checks, in order (the rows of its report).
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("reachable", _reachable, gate=True),
    CheckSpec("healthy", _healthy),
    CheckSpec("api key", _api_key, gate=True, row=False),
    CheckSpec("discovery", _discovery, row=False),
    CheckSpec("embedding model", _embedding_model),
    CheckSpec("served model", _served_model),
    CheckSpec("native width", _native_width),
    CheckSpec("configured model", _configured_model, row=False),
    CheckSpec("vectors", _vectors_check, needs_vectors=True),
    CheckSpec("matryoshka", _matryoshka, needs_vectors=True),
    CheckSpec("base64", _base64, needs_vectors=True),
    CheckSpec("empty input", _empty_input, needs_vectors=True),
    CheckSpec("context length", _context_length),
    CheckSpec("version", _version),
    CheckSpec("speed", _speed, needs_vectors=True),
)


def run_checks(probe: Probe, checks: Sequence[CheckSpec] = CHECKS) -> None:
    """Run ``checks`` in order into ``probe.report`` (a failed gate marks the rest "not checked")."""
    rows = probe.report.checks
    stopped = False
    for spec in checks:
        if stopped or (spec.needs_vectors and not probe.report.native_dim):
            if spec.row:
                rows.append(Check(spec.name, "skip", "not checked"))
            continue
        found = spec.run(probe)
        found = [found] if isinstance(found, Check) else found or []
        rows.extend(found)
        stopped = spec.gate and any(c.status == "fail" for c in found)


def probe_server(
    base_url: str,
    api_key: str | SecretStr | None = None,
    *,
    model: str | None = None,
    timeout: float = 10.0,
) -> ServerReport:
    """Probe ``base_url``: health, model, width, vectors, Matryoshka, base64, empty input, context, version, speed.

    ``model`` is the name the client is configured with: it is compared with the served one as the
    client compares them, and its preset's width with the served width (the usual cause of "wrong
    width" errors: the client points at another model's server).
    """
    base = normalize_base_url(base_url)
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    report = ServerReport(base_url=redact_url(base))  # credentials in the URL are sent, never shown
    with httpx.Client(timeout=timeout, headers=headers) as http:
        run_checks(Probe(http, base, root_url(base), report, model))
    return report
