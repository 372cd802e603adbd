"""The docs-test machinery (tests/docs_blocks.py), and the Chinese pages kept in step with the English ones."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.docs_blocks import adapt, console_steps, output_matches, parse_blocks


def test_blocks_directives_and_hidden_setup(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "Text.\n\n<!-- docs-test: skip: needs a GPU -->\n```bash\nqwen-sglang serve\n```\n\n"
        "<!-- docs-test: setup\nx = 1\n-->\n```python\nprint(x)\n```\n\n"
        "<!-- docs-test: server=none -->\nA paragraph in between.\n\n```console\n$ echo hi\nhi\n```\n\n"
        "- item\n\n  ```py\n  y = 2\n  ```\n\n```text\nnot code\n```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(page)
    assert [(b.lang, b.line) for b in blocks] == [
        ("bash", 4),
        ("python", 11),
        ("console", 18),
        ("py", 25),
        ("text", 29),
    ]
    assert blocks[0].directive("skip") == "needs a GPU" and blocks[0].directive("gpu") is None
    assert blocks[1].setup == "x = 1" and blocks[1].code == "print(x)\n"
    assert blocks[2].directives == []  # a paragraph between directive and fence cancels it
    assert blocks[3].code == "y = 2\n"  # indentation of a list item removed
    assert [b.runnable for b in blocks] == [True, True, True, True, False]


def test_console_steps_and_output_matching() -> None:
    steps = console_steps("$ qwen-sglang doctor \\\n    --base-url X\nline one\n  OK    a   b\n$ true\n")
    assert steps == [("qwen-sglang doctor --base-url X", "line one\n  OK    a   b"), ("true", "")]
    assert output_matches("OK a b", "  OK    a\n   b  ")
    assert output_matches("start\n...\nend", "start\nmiddle\nlines\nend\n")
    assert output_matches("speed ... vectors/s", "speed 1365 vectors/s")
    assert not output_matches("speed ... vectors/s", "speed 1365 texts/s")
    assert not output_matches("OK vectors", "FAIL vectors")
    assert output_matches("", "anything")


def test_adapt_points_blocks_at_the_test_server() -> None:
    code = (
        'QwenSGLangEmbeddings(base_url="http://127.0.0.1:30000/v1", model="Qwen/Qwen3-Embedding-4B", dimensions=1024)\n'
        "qwen-sglang serve --model /models/Qwen3-Embedding-0.6B --dimensions 64 --dimensions 2560,1024,256\n"
        "evaluate(data, dimensions=[2560, 1024, 256])\n"
    )
    out = adapt(code, lang="python", root_url="http://127.0.0.1:5555", model_dir="/m/test")
    assert out == (
        'QwenSGLangEmbeddings(base_url="http://127.0.0.1:5555/v1", model="/m/test", dimensions=64)\n'
        "qwen-sglang serve --model /m/test --dimensions 64 --dimensions 128,112,96\n"
        "evaluate(data, dimensions=[128, 112, 96])\n"
    )
    # console blocks keep model names: their output is what is shown
    assert "Qwen/Qwen3-Embedding-4B" in adapt(code, lang="console", root_url="u", model_dir="/m")


ZH_PAGES = sorted((REPO / "docs").rglob("*.zh.md"))
_HEADING = re.compile(r"^(#{2,6})\s+(.*?)\s*(?:\{#([\w-]+)\})?\s*$")


def _slug(text: str) -> str:
    """The id Python-Markdown's toc gives a heading (its default slugify, inline code unwrapped)."""
    text = unicodedata.normalize("NFKD", text.replace("`", "")).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _headings(path: Path) -> list[str]:
    """``"## id"`` for each heading below the title, outside fenced blocks: its explicit or generated id."""
    found: list[str] = []
    fence = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"^\s*(`{3,}|~{3,})", line)
        if opening and (not fence or opening.group(1).startswith(fence)):
            fence = "" if fence else opening.group(1)
            continue
        m = None if fence else _HEADING.match(line)
        if m:
            found.append(f"{m.group(1)} {m.group(3) or _slug(m.group(2))}")
    return found


def _skeleton(path: Path) -> tuple[list[tuple[str, str, list[str], str]], list[str], set[str]]:
    text = path.read_text(encoding="utf-8")
    blocks = [(b.lang, b.code, b.directives, b.setup) for b in parse_blocks(path)]
    anchors = set(re.findall(r"\{#([\w-]+)\}", text))
    return blocks, _headings(path), anchors


def test_headings_get_the_ids_markdown_gives_them(tmp_path: Path) -> None:
    assert _slug("Ids: how a JSON-lines `id` relates") == "ids-how-a-json-lines-id-relates"
    assert _slug("An agent's retrieval tool") == "an-agents-retrieval-tool"
    assert _slug("From OpenAILike / OpenAIEmbedding") == "from-openailike-openaiembedding"
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n## A `b` c\n\n```bash\n## not a heading\n```\n\n### 其他 {#other}\n", encoding="utf-8")
    assert _headings(page) == ["## a-b-c", "### other"]


def test_there_are_chinese_pages() -> None:
    names = {p.name for p in ZH_PAGES}
    assert {"quickstart.zh.md", "server.zh.md", "troubleshooting.zh.md"} <= names


@pytest.mark.parametrize("zh", ZH_PAGES, ids=[p.name for p in ZH_PAGES])
def test_chinese_page_is_in_step_with_the_english_one(zh: Path) -> None:
    en = zh.with_name(zh.name.replace(".zh.md", ".md"))
    assert en.exists(), f"{zh.name} has no English page"
    en_blocks, en_headings, en_anchors = _skeleton(en)
    zh_blocks, zh_headings, zh_anchors = _skeleton(zh)
    # the same code, directives and hidden setup, in the same order: a change to one page's code
    # must be made to the other
    for i, (a, b) in enumerate(zip(parse_blocks(en), parse_blocks(zh), strict=False)):
        assert (a.lang, a.code, a.directives, a.setup) == (b.lang, b.code, b.directives, b.setup), (
            f"block {i + 1}: {en.name}:{a.line} differs from {zh.name}:{b.line}"
        )
    assert zh_blocks == en_blocks, f"{zh.name}: {len(zh_blocks)} code blocks, {en.name} has {len(en_blocks)}"
    # the same sections, each with the English heading's id (a Chinese heading carries it as
    # {#id}), so links into the page, from either language, land on the same section
    for i, (want, got) in enumerate(zip(en_headings, zh_headings, strict=False)):
        assert got == want, f"{zh.name}: heading {i + 1} is '{got}', {en.name} has '{want}' (end it with {{#id}})"
    assert len(zh_headings) == len(en_headings), (
        f"{zh.name}: {len(zh_headings)} headings, {en.name} has {len(en_headings)}"
    )
    assert en_anchors <= zh_anchors, f"{zh.name} lacks anchors {en_anchors - zh_anchors}"


def _docstring_examples() -> list[tuple[str, str]]:
    """The ```python blocks of every docstring in the three packages (what the API reference shows)."""
    import ast

    found: list[tuple[str, str]] = []
    for package in ("qwen_sglang", "langchain_qwen_sglang", "llama_index_qwen_sglang"):
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in [tree, *ast.walk(tree)]:
                if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                doc = ast.get_docstring(node)
                for i, code in enumerate(re.findall(r"```python\n(.*?)```", doc or "", flags=re.S)):
                    name = getattr(node, "name", "<module>")
                    found.append((f"{path.relative_to(REPO)}:{name}[{i}]", code))
    return found


DOCSTRING_EXAMPLES = _docstring_examples()


def test_docstrings_have_examples() -> None:
    names = " ".join(n for n, _ in DOCSTRING_EXAMPLES)
    for cls in ("QwenSGLangEmbeddings", "QwenSGLangEmbedding", "SGLangServer", "EmbeddingClient"):
        assert cls in names


@pytest.mark.parametrize(("where", "code"), DOCSTRING_EXAMPLES, ids=[n for n, _ in DOCSTRING_EXAMPLES])
def test_docstring_examples_are_valid_python(where: str, code: str) -> None:
    # the API reference's examples are fragments (they assume a server and earlier lines), so they
    # are compiled, not run; the pages' blocks, which run, show the same calls
    import ast
    import textwrap

    compile(textwrap.dedent(code), where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
