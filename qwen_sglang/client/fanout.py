"""Several flows at once, bounded: threads for sync calls, tasks for async ones.

Both shells of the package (`qwen_sglang.EmbeddingClient`'s embedding batches,
`qwen_sglang.RerankClient`'s scoring batches) fan out through here: at most ``limit`` flows in
flight, ``done(k, value)`` called as flow ``k`` ends (progress advances as each request
finishes), and the first failure raised as soon as it is seen, the flows not started dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TypeVar

from qwen_sglang.client.ops import Flow

__all__ = ["agather", "gather"]

T = TypeVar("T")


def gather(run: Callable[[Flow[T]], T], flows: Sequence[Flow[T]], limit: int, done: Callable[[int, T], None]) -> None:
    """Drive ``flows`` with ``run`` on at most ``limit`` threads (none for one flow or ``limit`` 1)."""
    workers = min(limit, len(flows))
    if workers <= 1:
        for k, flow in enumerate(flows):
            done(k, run(flow))
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qwen-sglang-client")
    try:
        futures = {pool.submit(run, flow): k for k, flow in enumerate(flows)}
        pending = set(futures)
        while pending:
            # FIRST_COMPLETED: progress advances as each request finishes, and the first
            # failure is raised as soon as it is seen (the rest are cancelled below).
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                done(futures[fut], fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


async def agather(
    arun: Callable[[Flow[T]], Awaitable[T]], flows: Sequence[Flow[T]], limit: int, done: Callable[[int, T], None]
) -> None:
    """Async `gather`: tasks under a semaphore of ``limit``; the first failure cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def one(k: int, flow: Flow[T]) -> None:
        async with semaphore:
            value = await arun(flow)
        done(k, value)

    try:
        async with asyncio.TaskGroup() as group:
            for k, flow in enumerate(flows):
                group.create_task(one(k, flow))
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None
