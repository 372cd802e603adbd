"""What a flow asks its driver to do: the whole interface between the engine and the shells.

A flow is a generator that *yields* an op and receives its result: for `Send`, the
`qwen_sglang.client.transport.Answer` or the exception the exchange raised; for `Sleep`, ``None``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from qwen_sglang.client.transport import Answer

__all__ = ["Flow", "Lane", "Op", "Result", "Send", "Sleep"]

T = TypeVar("T")
#: Which connections a request takes: single queries have a lane of their own, so that one sent
#: while bulk calls keep every bulk connection busy is sent at once, not after them.
Lane = Literal["bulk", "query"]


@dataclass(frozen=True)
class Send:
    """Make one HTTP exchange."""

    method: str
    url: str
    payload: Any = None
    #: ``time.monotonic()`` by which the exchange must be over (``None``: no bound).
    deadline: float | None = None
    #: Most bytes of (decoded) answer body accepted (``None``: derived from the request's size).
    max_bytes: int | None = None
    lane: Lane = "bulk"


@dataclass(frozen=True)
class Sleep:
    """Wait before the next attempt."""

    seconds: float


Op = Send | Sleep
Result = Answer | Exception | None
Flow = Generator[Op, Result, T]
