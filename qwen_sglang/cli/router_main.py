"""``python -m qwen_sglang.cli.router_main ARGS``: sglang-router with its worker key from the environment.

sglang-router takes the key it sends to its workers only as ``--api-key KEY``, which ``ps`` shows
to every local user. This launcher parses the same arguments with sglang-router's own parser,
takes the key from `qwen_sglang.servers.keys.SERVER_API_KEY_ENV` (removed from the environment
first) and starts the router with it. The application layer: run only as that child process.
"""

from __future__ import annotations

import os
import sys

from qwen_sglang.servers.keys import SERVER_API_KEY_ENV


def main(argv: list[str]) -> None:
    from sglang_router.launch_router import launch_router, parse_router_args

    args = parse_router_args(argv)
    key = os.environ.pop(SERVER_API_KEY_ENV, None)
    if key:
        args.api_key = key
    launch_router(args)


if __name__ == "__main__":  # pragma: no cover - run as the router's process
    main(sys.argv[1:])
