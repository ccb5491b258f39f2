"""How one attempt at a backend ends, and what each ending means: one table.

An :class:`~proxy.exchange.Exchange` ends every attempt with one :class:`Outcome`. ``DONE``,
``TUNNEL`` and ``ABORTED`` end the exchange; the others are failures before the answer
started, and :data:`FAILURES` says what each one is called in passive health, which answer the
client gets when nothing is left to try, and whether a reused connection may be tried again.
The retry rules themselves (docs/proxy.md, "Retries and errors") are in ``Exchange._outcome``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["FAILURES", "Failure", "Outcome"]


class Outcome(enum.Enum):
    DONE = "done"  # the answer was relayed whole
    STALE = "stale"  # closed before any answer byte (on a reused connection: a stale keep-alive)
    TIMEOUT = "timeout"  # no progress for timeouts.read before the answer head
    BAD = "bad"  # a malformed answer (or one that cannot be relayed)
    ABORTED = "aborted"  # failed after the answer started, or the client went away
    TUNNEL = "tunnel"  # upgraded to a tunnel (WebSocket): the connection is the tunnel's


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt, before any byte of its answer reached the client."""

    reason: str  # passive health's reason (and the access log's, when nothing is left)
    status: int  # the client's answer when no backend is left to try
    text: str
    # A *reused* connection that failed so is retried on a fresh one for every method
    # (the backend closed it while idle), while the body is still held.
    retry_reused: bool = False


FAILURES: Final[dict[Outcome, Failure]] = {
    Outcome.STALE: Failure(
        "connection closed before response", 502, "backend closed the connection", True
    ),
    Outcome.TIMEOUT: Failure("read timeout", 504, "backend timed out"),
    Outcome.BAD: Failure("malformed response", 502, "bad response from backend"),
}
