"""Diagnose a running embedding server: what ``qwen-sglang doctor`` and ``SGLangServer.attach`` report."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from qwen_sglang.settings import normalize_base_url

__all__ = ["Check", "ServerReport", "probe_server"]

Status = Literal["ok", "warn", "fail", "skip"]


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
        marks = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "skip": "-"}
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = [f"qwen-sglang doctor: {self.base_url}", ""]
        for c in self.checks:
            lines.append(f"  {marks[c.status]:<5} {c.name:<{width}}  {c.value}")
            if c.fix and c.status in ("warn", "fail"):
                lines.append(f"  {'':<5} {'':<{width}}  fix: {c.fix}")
        lines.append("")
        lines.append("all checks passed" if self.ok else "problems found: see the fixes above")
        return "\n".join(lines)


def probe_server(base_url: str, api_key: str | SecretStr | None = None, *, timeout: float = 10.0) -> ServerReport:
    """Probe ``base_url`` (health, model info, embeddings, Matryoshka, base64, context, version)."""
    base = normalize_base_url(base_url)
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    report = ServerReport(base_url=base)
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
                "matryoshka",
                "base64",
                "context length",
                "version",
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
        else:
            add(Check("matryoshka", "skip", "not checked"))
            add(Check("base64", "skip", "not checked"))

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
    return report
