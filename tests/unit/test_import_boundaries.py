"""The layers of docs/architecture.md, pinned: the core imports no framework, no optional
dependency, no adapter and no application module, at import time or later.

Core: every module under ``qwen_sglang/`` except the application layer (``cli/``,
``local_backend/``, ``testing/``, ``__main__.py``) and the adapters under ``integrations/``.
Two checks per core module: it imports in a fresh interpreter where every optional dependency
raises on import (a meta-path finder), and its source holds no import of those (not even inside a
function, where the first check cannot see it). The Chroma integration is an adapter: importing
``qwen_sglang.integrations.chroma`` still needs no chromadb (each function imports it when called),
and without chromadb its embedding function is a message naming the extra, not a traceback.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import qwen_sglang

PACKAGE = Path(qwen_sglang.__file__).parent
#: Optional dependencies (top-level package names; ``langchain*`` and ``llama_index*`` by prefix).
BLOCKED = ("fastapi", "starlette", "uvicorn", "chromadb", "torch", "transformers", "sentence_transformers")
BLOCKED += ("matplotlib", "ray")
BLOCKED_PREFIXES = ("langchain", "llama_index")
#: Application modules (and the test kit) the core may not import.
APPLICATION = ("qwen_sglang.cli", "qwen_sglang.local_backend", "qwen_sglang.testing")
NOT_CORE = ("cli", "local_backend", "testing", "integrations", "__main__.py")

#: A finder that makes every blocked import fail (installed or not), as on a base install.
BLOCKER = f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in {BLOCKED!r} or top.startswith({BLOCKED_PREFIXES!r}):
            raise ImportError(f"{{name}} is blocked: the core must not import it")
        return None
sys.meta_path.insert(0, Blocker())
"""


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> list[str]:
    """Every core module, by name."""
    return sorted(_module(p) for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in NOT_CORE)


def forbidden_imports(source: str) -> list[str]:
    """``line: module`` of every import in ``source`` (anywhere in it) the core may not make."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            adapter = top in ("langchain_qwen_sglang", "llama_index_qwen_sglang") or name.startswith(
                "qwen_sglang.integrations"
            )
            app = any(name == a or name.startswith(a + ".") for a in APPLICATION)
            if top in BLOCKED or top.startswith(BLOCKED_PREFIXES) or adapter or app:
                found.append(f"{node.lineno}: {name}")
    return found


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_core_is_found() -> None:
    modules = core_modules()
    for expected in ("qwen_sglang", "qwen_sglang.client", "qwen_sglang.ingest.pipeline", "qwen_sglang.eval.run"):
        assert expected in modules
    assert not [m for m in modules if m.split(".")[1:2] in (["cli"], ["local_backend"], ["testing"], ["integrations"])]


def test_every_core_module_imports_with_every_optional_dependency_blocked() -> None:
    code = "import importlib, traceback\n"
    code += f"for name in {core_modules()!r}:\n"
    code += "    try:\n        importlib.import_module(name)\n"
    code += "    except Exception as exc:\n        print(f'{name}: {type(exc).__name__}: {exc}')\n"
    out = run_blocked(code)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


@pytest.mark.parametrize("module", core_modules())
def test_no_core_module_imports_a_framework_an_adapter_or_the_application(module: str) -> None:
    spec_path = PACKAGE.parent.joinpath(*module.split("."))
    path = spec_path / "__init__.py" if spec_path.is_dir() else spec_path.with_suffix(".py")
    assert forbidden_imports(path.read_text(encoding="utf-8")) == []


def test_the_ast_check_sees_imports_inside_functions() -> None:
    source = "def f():\n    import chromadb\n    from langchain_core.documents import Document\n"
    source += "    from qwen_sglang.testing import fake\n    from qwen_sglang.ingest import ingest\n"
    assert forbidden_imports(source) == ["2: chromadb", "3: langchain_core.documents", "4: qwen_sglang.testing"]


def test_the_chroma_integration_loads_without_chromadb_and_names_the_extra() -> None:
    code = """
from qwen_sglang.errors import ConfigurationError
import qwen_sglang.integrations.chroma as chroma
for attempt in (lambda: chroma.QwenSGLangEmbeddingFunction, lambda: chroma.open_collection("db", "docs")):
    try:
        attempt()
    except ConfigurationError as exc:
        print(exc)
"""
    out = run_blocked(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all('pip install "qwen-sglang[chroma]"' in line for line in lines), out.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["ingest", ".", "--collection", "c", "--persist-dir", "db"], "chroma"),
        (["eval", "--demo-data"], "eval"),
        (["demo"], "langchain,chroma"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(argv: list[str], extra: str, tmp_path: Path) -> None:
    code = f"from qwen_sglang.cli import main\nsys.exit(main({argv!r}))"
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert out.returncode == 1, out.stderr
    assert f'pip install "qwen-sglang[{extra}]"' in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "db").exists()
