"""What ``qwen-sglang doctor`` reports (`Check`, `ServerReport`), and the start failures it recognises in a server log.

`diagnose_log` is also what a managed server's start error uses to name the cause of a failed start.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Literal

from qwen_sglang.servers.ports import PORT_TAKEN

__all__ = ["LOG_SIGNATURES", "Check", "Kind", "ServerReport", "Status", "diagnose_log"]

Status = Literal["ok", "warn", "fail", "info", "skip"]
#: What a server serves, as ``doctor`` tells it.
Kind = Literal["embedding", "reranker", "generation"]

#: Start failures recognised in a server log: (regular expression on the lower-cased log, what
#: happened, the fix). The first match wins, so the specific come before the general.
LOG_SIGNATURES: list[tuple[str, str, str]] = [
    (
        PORT_TAKEN,
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
    kind: Kind | None = None
    """``"embedding"``, ``"reranker"`` or ``"generation"`` (None: the server did not say)."""

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
