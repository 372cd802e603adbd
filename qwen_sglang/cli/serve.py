"""``qwen-sglang serve``: start a server (SGLang on a GPU, the local CPU backend otherwise).

The server options are not declared here: each is a field of a backend's options model
(`qwen_sglang.servers.options.SGLangOptions`, `qwen_sglang.servers.local.LocalEmbeddingOptions`,
`qwen_sglang.servers.local.LocalRerankOptions`) and becomes the flag of its name
(`qwen_sglang.servers.options.add_flags`), checked by the same model as in Python.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from qwen_sglang.servers import ManagedRouter, ManagedServer
from qwen_sglang.servers.local import LocalEmbeddingOptions, LocalRerankOptions
from qwen_sglang.servers.options import SGLangOptions, add_flags

__all__ = ["add_parser", "run"]

logger = logging.getLogger("qwen_sglang.cli")

#: Every options model whose fields are flags of ``serve``.
_MODELS = (SGLangOptions, LocalEmbeddingOptions, LocalRerankOptions)


def _option_names() -> list[str]:
    names: list[str] = []
    for model in _MODELS:
        names += [n for n in model.model_fields if n not in names]
    return names


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    s = sub.add_parser(
        "serve",
        help="start an embedding or reranker server (SGLang on a GPU, the local CPU backend otherwise)",
        description="Start a server and run it until Ctrl-C. SGLang gets --is-embedding for embedding "
        "models; Matryoshka dimensions are enabled unless --no-matryoshka. Arguments after '--' are passed "
        "to SGLang unchanged. With --dry-run, print the exact command (for the installed SGLang, or "
        "--sglang-version) and exit.",
    )
    s.set_defaults(handler=run)
    s.add_argument(
        "--backend",
        choices=["auto", "sglang", "local"],
        default="auto",
        help="auto: SGLang when installed and a CUDA GPU is visible, else local (default)",
    )
    s.add_argument(
        "--task", choices=["embed", "rerank"], default="embed", help="embed (default) or rerank (a Qwen3-Reranker)"
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
    s.add_argument("--startup-timeout", type=float, default=None, help="seconds to wait for readiness (SGLang)")
    s.add_argument(
        "--sglang-version",
        default=None,
        metavar="X.Y.Z",
        help="build SGLang's command for this version (default: the installed one): renamed flags are "
        "passed in its spelling, removed ones refused",
    )
    s.add_argument("--dry-run", action="store_true", help="print the exact command and exit (key masked)")
    s.add_argument(
        "--router",
        type=int,
        default=0,
        metavar="N",
        help="N workers (SGLang: one per GPU) behind sglang-router on --host/--port, started and stopped as "
        "one (needs qwen-sglang[router])",
    )
    s.add_argument(
        "--router-policy",
        choices=["round_robin", "random", "cache_aware", "power_of_two"],
        default="round_robin",
        help="how the router spreads requests (default round_robin)",
    )
    sglang_names = set(SGLangOptions.model_fields)
    local_names = set(LocalEmbeddingOptions.model_fields) | set(LocalRerankOptions.model_fields)
    both = s.add_argument_group("server options (both backends)")
    add_flags(both, [LocalEmbeddingOptions, LocalRerankOptions], skip=local_names - sglang_names)
    add_flags(s.add_argument_group("SGLang options"), [SGLangOptions], skip=sglang_names & local_names)
    add_flags(
        s.add_argument_group("local backend options"),
        [LocalEmbeddingOptions, LocalRerankOptions],
        skip=sglang_names,
    )
    s.add_argument("extra", nargs=argparse.REMAINDER, help="after '--': extra SGLang arguments")


def run(args: argparse.Namespace) -> int:
    from qwen_sglang.servers import SERVER_API_KEY_ENV, choose_backend, read_api_key

    if args.api_key is not None:
        logger.warning(
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
    if backend == "local" and extra:
        raise SystemExit("error: extra arguments are only for the sglang backend: " + " ".join(extra))
    if backend == "local" and args.sglang_version is not None:
        raise SystemExit("error: --sglang-version is only for the sglang backend")
    make = _server_factory(args, backend, extra)
    if args.router:
        return _serve_router(args, backend, make, api_key)
    server = make(host=args.host, port=args.port or None, api_key=api_key)  # validates
    if args.dry_run:
        print(server.display_command())
        return 0
    return _serve_managed(server) if backend == "sglang" else _serve_local(server, args)


def _server_factory(args: argparse.Namespace, backend: str, extra: list[str]) -> Callable[..., ManagedServer]:
    """A function making servers of ``backend`` for ``args`` (host, port, key and env given to it)."""
    from qwen_sglang.errors import ConfigurationError
    from qwen_sglang.servers import LocalEmbeddingServer, LocalRerankServer, SGLangServer

    cls: type[ManagedServer] = SGLangServer
    if backend == "local":
        cls = LocalRerankServer if args.task == "rerank" else LocalEmbeddingServer
    given = {name: value for name in _option_names() if (value := vars(args)[name]) is not None}
    options, lacking = cls.split_options(given)
    if lacking:
        flags = ", ".join("--" + name.replace("_", "-") for name in lacking)
        if args.backend != "auto":
            raise ConfigurationError(f"the {backend} backend has no {flags}")
        print(f"the {backend} backend has no {flags}: left out", flush=True)
    options |= {"served_model_name": args.served_model_name, "startup_timeout": args.startup_timeout}
    if cls is SGLangServer:
        options |= {"task": args.task, "sglang_version": args.sglang_version, "extra_args": extra}

    def make(**launcher: Any) -> ManagedServer:
        return cls(args.model, **launcher, **options)

    return make


def _serve_router(
    args: argparse.Namespace, backend: str, make: Callable[..., ManagedServer], api_key: str | None
) -> int:
    """``--router N``: N workers on 127.0.0.1 (SGLang: one GPU each) behind sglang-router on --host/--port."""
    from qwen_sglang.errors import ConfigurationError
    from qwen_sglang.servers import ManagedRouter

    if args.router < 1:
        raise ConfigurationError(f"--router needs a number of workers >= 1, got {args.router}")
    gpus = [{"env": {"CUDA_VISIBLE_DEVICES": str(i)}} if backend == "sglang" else {} for i in range(args.router)]
    workers = [make(host="127.0.0.1", port=None, api_key=api_key, **gpu) for gpu in gpus]
    router = ManagedRouter(workers, host=args.host, port=args.port or None, policy=args.router_policy)
    if args.dry_run:
        for worker in workers:
            print(worker.display_command())
        print(router.router.display_command())
        return 0
    return _serve_managed(router)


def _serve_local(local: ManagedServer, args: argparse.Namespace) -> int:
    """A local backend, in this process: checked (model, installed packages, port) before it says anything."""
    from qwen_sglang.errors import ServerStartError
    from qwen_sglang.servers import local_extra_hint, missing_local_extra
    from qwen_sglang.servers.models_path import check_model_arg

    check_model_arg(args.model)
    missing = missing_local_extra(args.task)
    if missing:
        raise ServerStartError(local_extra_hint(missing))
    config = {"model": args.model, "host": args.host, "port": args.port, "served_model_name": args.served_model_name}
    config |= {"api_key": local.api_key.get_secret_value() if local.api_key is not None else None}
    config |= local.options.model_dump(exclude_none=True)
    if args.task == "rerank":
        from qwen_sglang.local_backend.rerank import LocalRerankConfig
        from qwen_sglang.local_backend.rerank import serve as serve_rerank

        return serve_rerank(LocalRerankConfig(**config))
    from qwen_sglang.local_backend import LocalBackendConfig, serve

    return serve(LocalBackendConfig(**config))


def _note_served_context(router: ManagedRouter) -> None:
    """Clients in other processes cannot learn the workers' context from the router (its
    ``/v1/models`` has no ``max_model_len``): say what to set where it is not the model's own."""
    from qwen_sglang.presets import find_preset

    served, preset = router.served_context, find_preset(router.model)
    if served is not None and (preset is None or served < preset.context_length):
        print(
            f"the workers serve a context of {served} tokens, which the router does not report: give its clients "
            f"max_tokens={served - 1} (the commands: --max-tokens {served - 1}), or they get a 400 for longer texts",
            flush=True,
        )


def _serve_managed(server: ManagedServer | ManagedRouter) -> int:
    """SGLang (or a router and its workers) as managed children: checked before they start,
    stopped on Ctrl-C, SIGTERM or exit."""
    from qwen_sglang.servers.ports import print_ready_line

    for member in [server.router, *server.workers] if isinstance(server, ManagedRouter) else [server]:
        member.validate()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        print(f"{server.backend} server ready at {server.base_url} (pid {server.pid})", flush=True)
        if isinstance(server, ManagedRouter):
            _note_served_context(server)
        print_ready_line()
        code: int = server.wait()
        print(f"the {server.backend} server exited with code {code}\n{server.logs_tail()}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("stopping...", flush=True)
        return 0
    finally:
        server.stop()
