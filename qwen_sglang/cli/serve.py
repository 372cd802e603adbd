"""``qwen-sglang serve``: start an embedding server (SGLang on a GPU, the local CPU backend otherwise)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    s = sub.add_parser(
        "serve",
        help="start an embedding server (SGLang on a GPU, the local CPU backend otherwise)",
        description="Start an embedding server and run it until Ctrl-C. SGLang always gets "
        "--is-embedding; Matryoshka dimensions are enabled unless --no-matryoshka. Arguments "
        "after '--' are passed to SGLang unchanged.",
    )
    s.set_defaults(handler=run)
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


def run(args: argparse.Namespace) -> int:
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
