"""Diagnose a running embedding server: what ``qwen-sglang doctor`` and ``SGLangServer.attach`` report."""

from __future__ import annotations

import base64
import math
import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import SecretStr

from qwen_sglang._urls import root_url
from qwen_sglang.presets import find_preset
from qwen_sglang.settings import normalize_base_url, redact_url

__all__ = ["LOG_SIGNATURES", "Check", "ServerReport", "diagnose_log", "probe_server"]

Status = Literal["ok", "warn", "fail", "info", "skip"]

#: Start failures recognised in a server log: (regular expression on the lower-cased log, what
#: happened, the fix). The first match wins, so the specific come before the general.
LOG_SIGNATURES: list[tuple[str, str, str]] = [
    (
        r"address already in use|errno 98",
        "the port is already in use",
        "pick another port, or stop the other server (ss -ltnp | grep PORT)",
    ),
    (
        r"no module named '?sglang",
        "sglang is not installed for this Python",
        "pip install 'qwen-sglang[sglang]' on the GPU machine, or use --backend local on CPU",
    ),
    (
        r"not enough memory\. please try to increase --mem-fraction-static|not enough memory",
        "the weights and a KV pool did not fit in mem_fraction_static x the GPU's *total* memory "
        "(SGLang counts from the total, so another process on the GPU shrinks what is left)",
        "raise --mem-fraction-static (weights / total memory + 0.1 is enough for embeddings), free the GPU "
        "(nvidia-smi), or use a smaller model or --tp-size",
    ),
    (
        r"out of memory|outofmemoryerror",
        "CUDA ran out of memory outside the reserved pool (activations of a large prefill batch, "
        "CUDA graphs, or another process)",
        "lower --mem-fraction-static (0.3 for the 4B model on 80 GB), --max-prefill-tokens or "
        "--chunked-prefill-size, and the client's max_batch_tokens",
    ),
    (
        r"does not exist|not a local folder|repository not found|repositorynotfound|no such file|"
        r"is not a valid model identifier|modelnotavailable|could not be downloaded|holds no model|"
        r"we couldn't connect to 'https://huggingface.co'|localentrynotfounderror",
        "the model could not be found or downloaded",
        "pass a local directory that holds config.json and the weights, or a hub id on a machine "
        "that can download it (HF_HUB_OFFLINE=1 needs the model in the cache)",
    ),
    (
        r"unrecognized arguments|ambiguous option",
        "SGLang rejected a flag",
        "see the wrong flags in docs/server.md (--enable-flashinfer, --max-num-batched-tokens, --tp)",
    ),
    (
        r"no cuda gpus are available|found no nvidia driver|cuda driver",
        "no usable CUDA GPU",
        "use the local backend on CPU (qwen-sglang serve --backend local)",
    ),
    (  # last: optional imports can log this beside the real cause
        r"modulenotfounderror: no module named",
        "a Python module the server imports is missing",
        "install it into the server's environment (a normal pip install of sglang brings its dependencies)",
    ),
]


def diagnose_log(log: str) -> list[Check]:
    """Recognise a failed start in a server log: one ``fail`` check per known cause found."""
    lowered = log.lower()
    checks: list[Check] = []
    for pattern, what, fix in LOG_SIGNATURES:
        match = re.search(pattern, lowered)
        if match:
            line = next((ln.strip() for ln in log.splitlines() if re.search(pattern, ln.lower())), "")
            checks.append(Check("start log", "fail", what + (f'\n"{line[:160]}"' if line else ""), fix))
            break
    return checks


@dataclass
class Check:
    """One row of the report."""

    name: str
    status: Status
    value: str
    fix: str = ""


@dataclass
class ServerReport:
    """What a server is and can do, with a fix for every problem found."""

    base_url: str
    checks: list[Check] = field(default_factory=list)
    served_model_name: str | None = None
    model_path: str | None = None
    native_dim: int | None = None
    matryoshka: bool | None = None
    base64: bool | None = None
    context_length: int | None = None
    version: str | None = None
    is_embedding: bool | None = None

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return all(c.status != "fail" for c in self.checks)

    def table(self) -> str:
        """The report as a fixed-width text table."""
        marks = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "info": "INFO", "skip": "-"}
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        pad = " " * (2 + 5 + 1 + width + 2)
        wrap = max(40, 100 - len(pad))
        lines = [f"qwen-sglang doctor: {self.base_url}", ""]
        for c in self.checks:
            body = [
                w for part in c.value.split("\n") for w in textwrap.wrap(part, wrap, break_on_hyphens=False) or [""]
            ]
            if c.fix and c.status in ("warn", "fail", "info"):
                label = "note" if c.status == "info" else "fix"
                body += textwrap.wrap(f"{label}: {c.fix}", wrap, subsequent_indent="  ", break_on_hyphens=False)
            lines.append(f"  {marks[c.status]:<5} {c.name:<{width}}  {body[0]}")
            lines.extend(pad + b for b in body[1:])
        lines.append("")
        lines.append("all checks passed" if self.ok else "problems found: see the fixes above")
        return "\n".join(lines)


def probe_server(
    base_url: str,
    api_key: str | SecretStr | None = None,
    *,
    model: str | None = None,
    timeout: float = 10.0,
) -> ServerReport:
    """Probe ``base_url``: health, model, width, vectors, Matryoshka, base64, empty input, context, version, speed.

    ``model`` is the name the client is configured with: its preset's width is compared with the
    served one (the usual cause of "wrong width" errors: the client points at another model's server).
    """
    base = normalize_base_url(base_url)
    root = root_url(base)
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    report = ServerReport(base_url=redact_url(base))  # credentials in the URL are sent, never shown
    add = report.checks.append

    with httpx.Client(timeout=timeout, headers=headers) as http:
        try:
            health = http.get(root + "/health")
        except httpx.HTTPError as exc:
            add(
                Check(
                    "reachable",
                    "fail",
                    f"no ({type(exc).__name__})",
                    "start a server (qwen-sglang serve --model MODEL) or check the host and port",
                )
            )
            for name in (
                "healthy",
                "embedding model",
                "served model",
                "native width",
                "vectors",
                "matryoshka",
                "base64",
                "empty input",
                "context length",
                "version",
                "speed",
            ):
                add(Check(name, "skip", "not checked"))
            return report
        add(Check("reachable", "ok", "yes"))
        if health.status_code == 200:
            add(Check("healthy", "ok", "200 on /health"))
        else:
            add(
                Check(
                    "healthy",
                    "fail",
                    f"{health.status_code} on /health",
                    "the server is still loading or warming up: wait, then run doctor again",
                )
            )

        def get_json(*paths: str) -> Any:
            for path in paths:
                try:
                    r = http.get(root + path)
                except httpx.HTTPError:
                    continue
                if r.status_code == 401:
                    return {"__unauthorized__": True}
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        continue
            return None

        info = get_json("/model_info", "/get_model_info")
        if isinstance(info, dict) and info.get("__unauthorized__"):
            add(
                Check(
                    "api key",
                    "fail",
                    "401 Unauthorized",
                    "pass the server's --api-key (QWEN_SGLANG_API_KEY or --api-key)",
                )
            )
            return report
        if isinstance(info, dict):
            report.model_path = info.get("model_path")
            if "is_generation" in info:
                report.is_embedding = not info["is_generation"]

        def embed(payload: dict[str, Any]) -> httpx.Response | None:
            try:
                return http.post(base + "/embeddings", json={"model": report.served_model_name or "default", **payload})
            except httpx.HTTPError:
                return None

        models = get_json("/v1/models")
        if isinstance(models, dict) and models.get("data"):
            entry = models["data"][0]
            report.served_model_name = entry.get("id")
            if entry.get("max_model_len"):
                report.context_length = int(entry["max_model_len"])

        plain = embed({"input": ["qwen-sglang doctor probe"]})
        message = ""
        if plain is not None and plain.status_code != 200:
            try:
                message = str(plain.json().get("message", plain.text))
            except ValueError:
                message = plain.text
        if plain is not None and plain.status_code == 200:
            vec = plain.json()["data"][0]["embedding"]
            report.native_dim = len(vec) if isinstance(vec, list) else len(base64.b64decode(vec)) // 4
            report.is_embedding = True
        elif "is-embedding" in message or "is_embedding" in message:
            report.is_embedding = False
        if report.is_embedding is False:
            add(
                Check(
                    "embedding model",
                    "fail",
                    "no: the model runs as a generation model",
                    "restart SGLang with --is-embedding (qwen-sglang serve always passes it)",
                )
            )
        elif report.is_embedding:
            add(Check("embedding model", "ok", "yes"))
        else:
            status = plain.status_code if plain is not None else "no answer"
            add(
                Check(
                    "embedding model",
                    "fail",
                    f"/v1/embeddings failed ({status}: {message[:120]})",
                    "check the server log; is base_url the embedding server?",
                )
            )
        add(
            Check(
                "served model",
                "ok" if report.served_model_name else "warn",
                report.served_model_name or "unknown",
                "the server has no /v1/models",
            )
        )
        add(Check("native width", "ok" if report.native_dim else "skip", str(report.native_dim or "unknown")))
        if model:
            _check_configured_model(report, model)
        if report.native_dim:
            _check_vectors(report, embed)
        else:
            add(Check("vectors", "skip", "not checked"))

        if report.native_dim:
            probe_dim = min(32, report.native_dim)
            r = embed({"input": ["probe"], "dimensions": probe_dim, "encoding_format": "float"})
            if r is not None and r.status_code == 200:
                width = len(r.json()["data"][0]["embedding"])
                report.matryoshka = width == probe_dim
                add(
                    Check(
                        "matryoshka",
                        "ok" if report.matryoshka else "warn",
                        "enabled" if report.matryoshka else f"ignored (returned {width}-d)",
                        "SGLang < 0.5.5 ignores dimensions: upgrade; the client truncates meanwhile",
                    )
                )
            else:
                report.matryoshka = False
                add(
                    Check(
                        "matryoshka",
                        "warn",
                        "disabled (dimensions rejected)",
                        "start SGLang with --json-model-override-args '{\"is_matryoshka\": true}' "
                        "(qwen-sglang serve does by default); the client truncates meanwhile",
                    )
                )
            r = embed({"input": ["probe"], "encoding_format": "base64"})
            report.base64 = bool(
                r is not None and r.status_code == 200 and isinstance(r.json()["data"][0]["embedding"], str)
            )
            add(
                Check(
                    "base64",
                    "ok" if report.base64 else "warn",
                    "supported" if report.base64 else "not supported",
                    "SGLang >= 0.5.17 answers base64 (smaller, faster); the client falls back to float",
                )
            )
            r = embed({"input": [""], "encoding_format": "float"})
            if r is not None and r.status_code == 200:
                add(Check("empty input", "info", "accepted by the server"))
            else:
                add(
                    Check(
                        "empty input",
                        "info",
                        f"{r.status_code if r is not None else 'no answer'}: the server rejects empty strings "
                        "(SGLang does)",
                        "the client refuses empty texts before sending (InvalidInputError names the index); "
                        "empty_text='zero' gives them zero vectors instead",
                    )
                )
        else:
            add(Check("matryoshka", "skip", "not checked"))
            add(Check("base64", "skip", "not checked"))
            add(Check("empty input", "skip", "not checked"))

        add(
            Check(
                "context length",
                "ok" if report.context_length else "warn",
                f"{report.context_length} tokens" if report.context_length else "unknown",
                "the server does not report max_model_len",
            )
        )
        server_info = get_json("/server_info", "/get_server_info")
        if isinstance(server_info, dict) and server_info.get("version"):
            report.version = str(server_info["version"])
        add(Check("version", "ok" if report.version else "skip", report.version or "not exposed"))
        if report.native_dim:
            _check_speed(report, embed)
        else:
            add(Check("speed", "skip", "not checked"))
    return report


Embed = Callable[[dict[str, Any]], httpx.Response | None]


def _vectors(r: httpx.Response | None) -> np.ndarray | None:
    if r is None or r.status_code != 200:
        return None
    try:
        rows = sorted(r.json()["data"], key=lambda d: d["index"])
        return np.asarray([d["embedding"] for d in rows], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        return None


def _check_configured_model(report: ServerReport, model: str) -> None:
    preset = find_preset(model)
    served = report.served_model_name or report.model_path or "unknown"
    if preset and report.native_dim and report.native_dim != preset.native_dim:
        report.checks.append(
            Check(
                "configured model",
                "fail",
                f"{model} makes {preset.native_dim}-d vectors; this server makes {report.native_dim}-d ({served})",
                f"point base_url at the server of {model}, or set model to the served one ({served})",
            )
        )
    else:  # SGLang does not check the name, so a different name of the same width works
        report.checks.append(Check("configured model", "ok", model))


def _check_vectors(report: ServerReport, embed: Embed) -> None:
    """Two different texts in one request, and the first alone: zero, NaN, identical, batch-dependent."""
    texts = [
        "The cat sat on the mat.",
        "GPU memory for the KV pool is reserved when the server starts, long before the first request.",
    ]
    both = _vectors(embed({"input": texts, "encoding_format": "float"}))
    alone = _vectors(embed({"input": texts[:1], "encoding_format": "float"}))
    add = report.checks.append
    if both is None or alone is None or both.shape[0] != 2:
        add(Check("vectors", "skip", "not checked (the server did not answer a two-text request)"))
        return
    norms = np.linalg.norm(both, axis=1)
    if not np.isfinite(both).all() or not np.isfinite(alone).all():
        add(
            Check(
                "vectors",
                "fail",
                "NaN or infinite values",
                "float16 overflows in Qwen3: serve with --dtype bfloat16 (or auto)",
            )
        )
        return
    if (norms < 1e-6).any() or np.linalg.norm(alone) < 1e-6:
        add(
            Check(
                "vectors",
                "fail",
                "all-zero vectors for non-empty texts",
                "the server's pooling or weights are broken: check the model directory and --is-embedding; "
                "with sentence-transformers or TEI, use the model's own pooling config (last token)",
            )
        )
        return
    unit = both / norms[:, None]
    between = float(unit[0] @ unit[1])
    same_text = float(unit[0] @ (alone[0] / np.linalg.norm(alone[0])))
    if between > 0.9999:
        add(
            Check(
                "vectors",
                "fail",
                f"two different texts got the same vector (cosine {between:.4f})",
                "the server pools a token that does not depend on the text (a pad or BOS token): Qwen3-Embedding "
                "needs last-token pooling of the end token; serve it with SGLang --is-embedding or the model's "
                "own sentence-transformers config",
            )
        )
    elif same_text < 0.99:
        add(
            Check(
                "vectors",
                "fail",
                f"a text's vector changes with its batch (cosine {same_text:.3f} to itself alone)",
                "right-padded batches with last-token pooling read a pad token: use left padding "
                "(padding_side='left') or SGLang, which does not pad",
            )
        )
    else:
        add(Check("vectors", "ok", f"distinct, batch-independent (cosine {between:.2f} between two texts)"))


def _check_speed(report: ServerReport, embed: Embed) -> None:
    """One request of 16 texts of about 40 tokens: what a bulk job can expect per request."""
    sentence = "Embedding servers turn text into vectors that a vector store can search quickly. "
    texts = [f"Passage {i}. " + sentence * 3 for i in range(16)]
    embed({"input": texts[:2], "encoding_format": "float"})  # warm-up
    start = time.perf_counter()
    r = embed({"input": texts, "encoding_format": "float"})
    elapsed = time.perf_counter() - start
    if r is None or r.status_code != 200:
        report.checks.append(Check("speed", "skip", "not measured"))
        return
    rate = len(texts) / elapsed if elapsed > 0 else math.inf
    value = f"{rate:.0f} vectors/s (16 texts of ~45 tokens in one request: {elapsed * 1000:.0f} ms)"
    if (report.version or "").startswith("qwen-sglang-local"):
        report.checks.append(
            Check(
                "speed",
                "info",
                value + "\nthe local CPU backend: bulk jobs are bound by the CPU",
                "send few large requests (a client made with server=LocalEmbeddingServer does; "
                "qwen-sglang ingest --request-size 1000 --request-tokens 1000000 --max-concurrency 1), "
                "or serve on a GPU with SGLang",
            )
        )
    else:
        report.checks.append(Check("speed", "ok", value))
