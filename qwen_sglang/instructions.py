"""Qwen3-Embedding query instructions.

Qwen3-Embedding is trained with an instruction on the *query* side only::

    Instruct: {task}\nQuery:{query}

(no space after ``Query:``). Documents are embedded raw. Without an instruction retrieval
quality drops by about 1-5% (Qwen3-Embedding README). Newlines in the text are never rewritten:
replacing them (as some integrations do) breaks the template.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TASK", "TASKS", "format_query", "query_prompt", "resolve_task"]

#: The task Qwen uses for retrieval benchmarks and the default of this package.
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"

#: Task presets by short name (usable wherever a task or instruction is accepted).
TASKS: dict[str, str] = {
    "retrieval": DEFAULT_TASK,
    "sts": "Retrieve semantically similar text",
    "bitext": "Retrieve parallel sentences",
    "qa": "Given a question, retrieve passages that answer the question",
    "code": "Given a question about code, retrieve code snippets or documentation that answer it",
    "duplicate": "Retrieve questions that are semantically equivalent to the given question",
    "classification": "Classify the given text by its topic",
}


def resolve_task(task: str | None) -> str | None:
    """Map a preset name to its task text; pass other strings through; ``None``/"" -> ``None``."""
    if task is None:
        return None
    if not isinstance(task, str):
        raise TypeError(f"an instruction must be a str or None, not {type(task).__name__}")
    if not task.strip():
        return None
    return TASKS.get(task, task)


def query_prompt(task: str | None) -> str | None:
    """The prefix Qwen3's query template puts before a query for ``task`` (``None``: no task).

    >>> query_prompt("sts")
    'Instruct: Retrieve semantically similar text\\nQuery:'
    """
    resolved = resolve_task(task)
    return None if resolved is None else f"Instruct: {resolved}\nQuery:"


def format_query(text: str, task: str | None) -> str:
    """Return ``text`` with Qwen3's query instruction for ``task`` (or ``text`` when no task).

    >>> format_query("what is SGLang?", "Retrieve semantically similar text")
    'Instruct: Retrieve semantically similar text\\nQuery:what is SGLang?'
    """
    return (query_prompt(task) or "") + text
