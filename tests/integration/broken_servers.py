"""Deliberately broken embedding servers, for checking that ``qwen-sglang doctor`` names the fault.

Real HTTP servers on a socket (a thread of this process), speaking just enough of SGLang's API:
``/health``, ``/v1/models`` and ``/v1/embeddings``. Each reproduces one fault users meet with
misconfigured servers; they exist only because no correctly working backend can be made to show it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import numpy as np

Fault = Literal["identical", "batch-dependent", "zero", "nan"]
WIDTH = 64


def _vector(text: str, fault: Fault, longest: int, batch: int) -> list[float]:
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    v = rng.standard_normal(WIDTH)
    if fault == "identical":  # pooling a token that does not depend on the text (pad / BOS)
        v = np.ones(WIDTH)
    elif fault == "batch-dependent" and batch > 1 and len(text) < longest:
        v = np.ones(WIDTH)  # last-token pooling over right padding: shorter texts read a pad token
    elif fault == "zero":
        v = np.zeros(WIDTH)
    elif fault == "nan":
        v = np.full(WIDTH, np.nan)
    norm = np.linalg.norm(v)
    return (v / norm if norm and np.isfinite(norm) else v).tolist()


@contextmanager
def broken_server(fault: Fault) -> Iterator[str]:
    """Serve ``fault`` on 127.0.0.1; yields the base URL (``.../v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": f"broken-{fault}", "object": "model"}]})
            else:
                self._send(404, {"message": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            if self.path != "/v1/embeddings" or any(t == "" for t in texts) or "dimensions" in body:
                self._send(400, {"object": "error", "message": "bad request", "code": 400})
                return
            longest = max(len(t) for t in texts)
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(t, fault, longest, len(texts))}
                for i, t in enumerate(texts)
            ]
            self._send(200, {"object": "list", "data": data, "model": f"broken-{fault}"})

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


#: A canned answer: status, content type, body.
Canned = tuple[int, str, bytes]


@contextmanager
def canned_server(default: Canned, routes: dict[str, Canned] | None = None) -> Iterator[str]:
    """Answer every GET and POST with ``default`` (``routes``: per path); yields the base URL.

    For answers no working server gives: ``{}`` or an HTML page with 200 (a proxy's login page, a
    wrong port), which a diagnosis must report instead of crashing on.
    """
    answers = routes or {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            code, kind, data = answers.get(self.path.split("?", 1)[0], default)
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
