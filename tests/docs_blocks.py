"""Code blocks of the Markdown docs, and how the docs tests run them.

Every fenced ``python``, ``bash``/``sh`` and ``console`` block of README*.md and docs/**/*.md runs
in the tests against a real local-backend server (tests/integration/test_docs.py). Other fences
(``text``, ``json``, ``toml``...) are data or output, not code. An HTML comment on the line before
a fence, invisible on GitHub and in the built site, steers the block:

``<!-- docs-test: skip: REASON -->``
    not run; the test is reported as skipped with REASON.
``<!-- docs-test: gpu -->``
    needs SGLang on a CUDA GPU: run when ``QWEN_SGLANG_TEST_BACKEND=sglang``, skipped otherwise.
``<!-- docs-test: local -->``
    shows the local CPU backend's own output: skipped when the suite runs against SGLang.
``<!-- docs-test: server=NAME -->``
    run against another server of the test suite (``no-matryoshka``, ``none`` for a closed port,
    ``broken-identical``... see test_docs.py) instead of the default one.
``<!-- docs-test: write FILE -->``
    (before a ``text`` block) write the block's content to FILE in the page's directory, for the
    blocks after it to read.

A multi-line comment ``<!-- docs-test: setup`` ... ``-->`` holds hidden Python run before the next
block (definitions a snippet assumes, such as ``long_text``).

Python blocks of one page share a namespace and a working directory, in order. ``console``
blocks hold ``$ command`` lines followed by the output they print; the output is compared with
whitespace collapsed and ``...`` matching anything.

How blocks meet the test server (the same rules for every page):

- ``http://127.0.0.1:30000`` becomes the test server's address;
- in python and bash blocks, Qwen3-Embedding model names and paths (``Qwen/Qwen3-Embedding-4B``,
  ``/models/Qwen3-Embedding-0.6B``) become the test model's directory, and ``dimensions`` wider than
  the test model's 128 become 64 (console blocks keep names: their output is the point);
- ``QWEN_SGLANG_BASE_URL`` and ``QWEN_SGLANG_MODEL`` point at the test server and model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CODE_LANGS = {"python", "py", "bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<rest>.*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_SETUP_START = re.compile(r"^\s*<!--\s*docs-test:\s*setup\s*$")


@dataclass
class Block:
    """One fenced block."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directives: list[str] = field(default_factory=list)
    setup: str = ""  # hidden Python to run first

    @property
    def runnable(self) -> bool:
        return self.lang in CODE_LANGS or any(d.startswith("write ") for d in self.directives)

    def directive(self, name: str) -> str | None:
        """The value of ``name=VALUE`` / ``name: VALUE`` / bare ``name`` (empty string), or None."""
        for d in self.directives:
            for sep in ("=", ":", " "):
                if d.startswith(name + sep):
                    return d[len(name) + 1 :].strip()
            if d == name:
                return ""
        return None


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with their directives and hidden setup code."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[str] = []
    setup: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _SETUP_START.match(line):
            j = i + 1
            while j < len(lines) and lines[j].strip() != "-->":
                setup.append(lines[j])
                j += 1
            i = j + 1
            continue
        m = _DIRECTIVE.match(line)
        if m:
            pending.append(m.group("body"))
            i += 1
            continue
        f = _FENCE.match(line)
        if f:
            indent, fence = len(f.group("indent")), f.group("fence")
            body: list[str] = []
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
                j += 1
            blocks.append(
                Block(path, i + 1, f.group("lang").lower(), "\n".join(body) + "\n", pending, "\n".join(setup))
            )
            pending, setup = [], []
            i = j + 1
            continue
        if line.strip():
            pending = []  # a directive applies to the block right after it
        i += 1
    return blocks


def console_steps(code: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block (``$ `` prompts, ``\\`` continuations)."""
    steps: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            cmd = line[2:]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
            steps.append((cmd, []))
        elif steps:
            steps[-1][1].append(line)
        i += 1
    return [(c, "\n".join(out).strip()) for c, out in steps]


def output_matches(expected: str, actual: str) -> bool:
    """Whitespace-insensitive comparison where ``...`` in ``expected`` matches any text."""
    want = " ".join(expected.split())
    got = " ".join(actual.split())
    if not want:
        return True
    pattern = ".*?".join(re.escape(part.strip()) for part in want.split("..."))
    return re.fullmatch(r"\s*" + pattern + r"\s*", got, flags=re.S) is not None


MODEL_NAME = re.compile(r"(?:[\w.~-]*/)*Qwen3-Embedding-(?:0\.6B|4B|8B)\b")
DIMENSION_LIST = re.compile(r"(dimensions\s*=\s*\[)([\d,\s]+)\]")
DIMENSIONS = re.compile(r"(dimensions\s*=\s*|--dimensions\s+)(\d+(?:,\d+)*)")


def adapt(code: str, *, lang: str, root_url: str, model_dir: str, max_dim: int = 128) -> str:
    """Point a block at the test server and model (the rules in this module's docstring)."""
    code = code.replace("http://127.0.0.1:30000", root_url)
    if lang == "console":
        return code
    code = MODEL_NAME.sub(model_dir, code)

    def narrow(m: re.Match[str]) -> str:
        widths = [int(w) for w in m.group(2).split(",")]
        if len(widths) == 1:
            return m.group(1) + str(widths[0] if widths[0] <= max_dim else max_dim // 2)
        # a list (qwen-sglang eval): keep its length and order, widest first, within the test model
        steps = [max_dim - k * max_dim // 8 for k in range(7)]  # 128, 112, ... 32: all valid widths
        return m.group(1) + ",".join(str(w) for w in steps[: len(widths)])

    code = DIMENSIONS.sub(narrow, code)
    steps = [max_dim - k * max_dim // 8 for k in range(7)]
    return DIMENSION_LIST.sub(
        lambda m: m.group(1) + ", ".join(str(w) for w in steps[: len(m.group(2).split(","))]) + "]", code
    )
