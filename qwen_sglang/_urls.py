"""The URL rules shared by the client, managed servers and the doctor."""

from __future__ import annotations

__all__ = ["root_url"]


def root_url(base_url: str) -> str:
    """The server root of an OpenAI-style ``base_url`` (``.../v1`` without ``/v1``): where SGLang
    serves ``/health``, ``/model_info`` and ``/server_info``. Other paths are kept (a proxy path)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url
