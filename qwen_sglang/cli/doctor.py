"""``qwen-sglang doctor``: diagnose a running server and say how to fix what is wrong."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qwen_sglang.cli.common import add_client_args, client_settings

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    d = sub.add_parser(
        "doctor",
        help="diagnose a running server and say how to fix what is wrong",
        description="Probe a server: reachable, healthy, embedding model (or a reranker), served name, "
        "native width, configured model, vectors (zero, NaN, identical, batch-dependent), Matryoshka, base64, "
        "empty input, context length, version, speed; with --log, the cause of a failed start. Exits 1 on failures.",
    )
    d.set_defaults(handler=run)
    add_client_args(d)  # --model: the one your client is configured with, compared as the client compares
    d.add_argument(
        "--log",
        default=None,
        metavar="FILE",
        help="a server log (e.g. of a server that failed to start): known causes are reported with their fix",
    )
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds per probe")


def run(args: argparse.Namespace) -> int:
    """Probe each server of ``--base-url`` (several: separated by commas) in turn; exit 1 when
    any check of any of them failed. ``--json`` prints one report, or a list of them for
    several servers."""
    from dataclasses import asdict

    from qwen_sglang.servers.probe import Check, diagnose_log, probe_server

    settings = client_settings(args)  # what the options leave out comes from $QWEN_SGLANG_BASE_URL, ...
    reports = [
        probe_server(url, api_key=settings.api_key, model=settings.model, timeout=args.timeout)
        for url in settings.base_urls
    ]
    if args.log:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            found = diagnose_log(f.read())
        reports[0].checks.extend(found or [Check("start log", "ok", f"no known start failure in {args.log}")])
    if args.json:
        dicts = [asdict(report) | {"ok": report.ok} for report in reports]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
    else:
        print("\n\n".join(report.table() for report in reports))
    return 0 if all(report.ok for report in reports) else 1
