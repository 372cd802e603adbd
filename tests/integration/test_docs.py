"""Every code block of the README and the docs runs here, so the docs cannot rot.

The rules (directives, how blocks are pointed at the test server) are in tests/docs_blocks.py and
docs/testing.md. Python blocks of a page share one namespace; a block run on its own (``-k``) first
runs the page's earlier Python blocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from qwen_sglang.servers import ManagedServer, free_port
from tests.conftest import BACKEND, REPO
from tests.docs_blocks import Block, adapt, console_steps, output_matches, parse_blocks
from tests.integration.broken_servers import broken_server

PAGES = [REPO / "README.md", REPO / "README.zh-CN.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCKS = [b for page in PAGES for b in parse_blocks(page) if b.runnable]
SHOWN_URL = "http://127.0.0.1:30000"
#: Where blocks find the reranker server (docs/reranking.md): the test reranker's address.
RERANK_URL = "http://127.0.0.1:30001"


class Page:
    """A page's shared Python namespace, working directory and the blocks run so far."""

    def __init__(self, cwd: Path) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.cwd = cwd
        self.ran: set[int] = set()


_pages: dict[Path, Page] = {}
_current: list[Path] = []


def _page(block: Block, factory: pytest.TempPathFactory) -> Page:
    if _current != [block.path]:
        # chromadb caches clients by the path string: "./chroma" of the last page is another directory
        if "chromadb" in sys.modules:
            sys.modules["chromadb"].api.client.SharedSystemClient.clear_system_cache()
        _current[:] = [block.path]
    if block.path not in _pages:
        cwd = factory.mktemp(block.path.stem.replace(".", "-"))
        for name in ("docs", "examples"):  # what the snippets read (never written: outputs go to cwd)
            (cwd / name).symlink_to(REPO / name, target_is_directory=True)
        _pages[block.path] = Page(cwd)
    return _pages[block.path]


def _server_root(name: str, request: pytest.FixtureRequest, stack: ExitStack) -> str:
    if name == "default":
        srv: ManagedServer = request.getfixturevalue("server")
        return srv.root_url
    if name == "no-matryoshka":
        return str(request.getfixturevalue("server_no_mrl").root_url)
    if name == "none":
        return f"http://127.0.0.1:{free_port()}"
    if name.startswith("broken-"):
        return str(stack.enter_context(broken_server(name.removeprefix("broken-"))))[: -len("/v1")]  # type: ignore[arg-type]
    raise AssertionError(f"unknown server {name!r} in a docs-test directive")


def _shims(page: Page) -> Path:
    """``qwen-sglang`` and ``python`` as this interpreter runs them: the checkout's CLI, installed or not."""
    shims = page.cwd.parent / f"{page.cwd.name}-bin"
    if not shims.exists():
        shims.mkdir()
        for name, argv in (("qwen-sglang", f'"{sys.executable}" -m qwen_sglang'), ("python", f'"{sys.executable}"')):
            (shims / name).write_text(f'#!/bin/sh\nexec {argv} "$@"\n', encoding="utf-8")
            (shims / name).chmod(0o755)
    return shims


def _shell(code: str, page: Page, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(_shims(page)), str(Path(sys.executable).parent), env.get("PATH", "")])
    # `python examples/x.py` imports the checkout (and whatever PYTHONPATH already held)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=page.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _skip_reason(block: Block) -> str | None:
    """Why ``block`` does not run with the backend under test, or None."""
    reason = block.directive("skip")
    if reason is not None:
        return reason or "marked skip"
    if block.directive("gpu") is not None and BACKEND != "sglang":
        return "needs SGLang on a CUDA GPU: runs with QWEN_SGLANG_TEST_BACKEND=sglang"
    if block.directive("local") is not None and BACKEND != "local":
        return "shows the local CPU backend's output"
    return None


def _run(block: Block, page: Page, root: str, model_dir: str, rerank_root: str = "") -> None:
    where = f"{block.path.relative_to(REPO)}:{block.line}"
    target = block.directive("write")
    if target:
        (page.cwd / target).write_text(block.code, encoding="utf-8")
        page.ran.add(block.line)
        return
    code = adapt(block.code, lang=block.lang, root_url=root, model_dir=model_dir)
    if rerank_root:
        code = code.replace(RERANK_URL, rerank_root)
    if block.setup:
        setup = adapt(block.setup, lang="python", root_url=root, model_dir=model_dir)
        exec(compile(setup, f"{where} (setup)", "exec"), page.namespace)
    if block.lang in ("python", "py"):
        exec(compile(code, where, "exec"), page.namespace)
    elif block.lang in ("bash", "sh", "shell"):
        out = _shell(code, page, timeout=float(block.directive("timeout") or 600))
        assert out.returncode == 0, f"{where} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    elif block.lang == "console":
        for shown_cmd, expected in console_steps(block.code):
            cmd = adapt(shown_cmd, lang="console", root_url=root, model_dir=model_dir)
            out = _shell(cmd, page, timeout=float(block.directive("timeout") or 600))
            shown = (out.stdout + out.stderr).replace(root, SHOWN_URL)
            assert output_matches(expected, shown), f"{where}: `{shown_cmd}` printed\n{shown}\nexpected\n{expected}"
    page.ran.add(block.line)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.path.relative_to(REPO)}:{b.line}" for b in BLOCKS])
def test_docs_code_block(
    block: Block,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = _skip_reason(block)
    if reason is not None:
        pytest.skip(reason)
    # names in blocks become the test model; on SGLang its bf16 copy, as released checkpoints are
    model_dir = request.getfixturevalue("qwen_model_dir_bf16" if BACKEND == "sglang" else "qwen_model_dir")
    page = _page(block, tmp_path_factory)
    monkeypatch.chdir(page.cwd)
    if block.directive("write"):
        _run(block, page, "", str(model_dir))
        return
    with ExitStack() as stack:
        root = _server_root(block.directive("server") or "default", request, stack)
        monkeypatch.setenv("QWEN_SGLANG_BASE_URL", root + "/v1")
        monkeypatch.setenv("QWEN_SGLANG_MODEL", str(model_dir))
        rerank_root = ""
        if any(RERANK_URL in b.code for b in BLOCKS if b.path == block.path and b.line <= block.line):
            rerank_root = request.getfixturevalue("rerank_server").root_url
        # the page's earlier Python blocks first, when this block runs alone
        for earlier in BLOCKS:
            if (
                earlier.path == block.path
                and earlier.line < block.line
                and earlier.line not in page.ran
                and (earlier.lang in ("python", "py") or earlier.directive("write"))
                and _skip_reason(earlier) is None
            ):
                _run(earlier, page, root, str(model_dir), rerank_root)
        _run(block, page, root, str(model_dir), rerank_root)
