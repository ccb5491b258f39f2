"""The general way of relaying a backend's answer: httptools parses it, :mod:`proxy.framing`
judges its head, and the downstream (proxy/contracts.py) encodes it for the client.

A :class:`GeneralAnswer` lives for one attempt of one exchange, from the first read the fast
lane did not take (proxy/fastlane.py) to the end of the answer. Everything the parser produces
from one read (head and body) reaches the downstream between one ``hold`` and one ``flush``,
so it is written with a single ``write``. It never decides a retry: :meth:`GeneralAnswer.feed`
returns the attempt's :class:`~proxy.outcomes.Outcome` when the answer ended or broke.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

import httptools

from .framing import check_response
from .outcomes import Outcome
from .shaping import delimited_by_close, finish, shape_head

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["AnswerMode", "GeneralAnswer", "ShapedAnswer"]

_log = logging.getLogger("lbrec.proxy")


class AnswerMode(enum.Enum):
    """How an exchange relays the current attempt's answer."""

    AWAITING = "awaiting"  # no byte of it yet
    LANE = "lane"  # a plain answer the fast lane took: its body is counted, not parsed
    GENERAL = "general"  # through httptools: a GeneralAnswer


class _StopParsing(Exception):
    """Raised from a parser callback to stop parsing a backend's answer (see the flags)."""


class GeneralAnswer:
    """One answer through httptools: the parser's callbacks, for one attempt."""

    __slots__ = (
        "bad_reason",
        "complete",
        "exchange",
        "extra",
        "header_bytes",
        "headers",
        "interim",
        "parser",
        "reason",
    )

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.reason = b""
        self.interim = False  # a 1xx answer is being parsed (dropped, but 100 Continue)
        self.complete = False  # the answer is complete (what follows is not relayed)
        self.extra = False  # bytes after the answer: the connection is not reused
        self.bad_reason: str | None = None  # why the answer head cannot be relayed

    def feed(self, data: bytes) -> Outcome | None:
        """Relay what ``data`` holds of the answer; the attempt's outcome when it ended."""
        exchange = self.exchange
        client = exchange.client
        client.hold()
        outcome: Outcome | None = None
        started = exchange.response_started  # something of this answer reached the client
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if exchange.status == 101 and exchange.attempting:
                client.flush()
                exchange.open_tunnel(data[exc.args[0] :])
                return None
            outcome = Outcome.ABORTED if exchange.response_started else Outcome.BAD
        except httptools.HttpParserCallbackError:
            if self.extra:  # bytes after a complete answer: relay it, drop the connection
                exchange.reusable = False
            elif self.bad_reason is None:
                _log.exception("bug in a response callback", extra={"event": "bug"})
            if not self.complete:
                outcome = Outcome.ABORTED if exchange.response_started else Outcome.BAD
        except httptools.HttpParserError:
            if self.complete:  # garbage after a complete answer
                exchange.reusable = False
            else:
                outcome = Outcome.ABORTED if exchange.response_started else Outcome.BAD
        if outcome is Outcome.ABORTED and not started:
            # The answer broke in the same read as its head: the client gets a clean 502
            # instead of a truncated answer.
            client.flush(discard=True)
            exchange.response_started = False
            outcome = Outcome.BAD
        else:
            client.flush()
        if self.complete:
            self.complete = False
            outcome = Outcome.DONE
        return outcome

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second message in the same read: bytes after the body (or a body on a 204/304).
            # The answer already parsed stands; this connection is never reused.
            self.extra = True
            raise _StopParsing

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        size = self.header_bytes = self.header_bytes + len(name) + len(value) + 4
        if size > exchange.server.max_header_bytes:
            self.bad_reason = "response header fields too large"
            raise _StopParsing
        if not exchange.response_started:  # trailers (after the head) are dropped
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        request = exchange.request
        parser = self.parser
        status = exchange.status = parser.get_status_code()
        if status < 200 and status != 101:
            self.interim = True
            self.headers = []
            self.reason = b""
            if status == 100 and request.expect_continue:
                exchange.client.send_continue()
            return
        reason = check_response(status, self.headers, upgrade=request.upgrade)
        if reason is not None:
            self.bad_reason = reason
            raise _StopParsing
        exchange.judge(status)
        upgrade = None
        if status == 101:
            upgrade = request.upgrade or b"websocket"
        bodyless = request.method == b"HEAD" or status in (204, 304)
        headers = self.headers
        state = exchange.state
        if state is not None:  # a route with features (proxy/shaping.py)
            headers = shape_head(exchange, state, status, headers)
        until_close = exchange.client.send_head(
            exchange, status, self.reason, headers, bodyless=bodyless, upgrade=upgrade
        )
        if state is not None and state.encoder is not None:  # the backend's framing, not ours
            until_close = delimited_by_close(self.headers, bodyless=bodyless)
        # The backend connection is reused only when the body has a length of its own.
        exchange.reusable = parser.should_keep_alive() and not until_close
        exchange.until_close = until_close
        exchange.response_started = True
        if request.method == b"HEAD":
            # httptools cannot be told this answers a HEAD, so it cannot tell whether body
            # bytes follow: finish here and never reuse the connection.
            exchange.reusable = False
            self.complete = True

    def on_body(self, data: bytes) -> None:
        self.exchange.client.send_body(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        exchange = self.exchange
        if exchange.status == 101:
            return  # the tunnel opens when the parser raises HttpParserUpgrade
        exchange.client.send_end()
        if not self.parser.should_keep_alive():
            exchange.reusable = False
        self.complete = True


class ShapedAnswer(GeneralAnswer):
    """The general way for a route with features: its body compressed when its head said so
    (proxy/shaping.py), flushed after each piece (a streaming answer is not held back)."""

    __slots__ = ()

    def on_body(self, data: bytes) -> None:
        exchange = self.exchange
        state = exchange.state
        encoder = state.encoder if state is not None else None
        if encoder is None:
            exchange.client.send_body(data)
            return
        out = encoder.feed(data) + encoder.flush()
        if out:
            exchange.client.send_body(out)

    def on_message_complete(self) -> None:
        if not self.interim and self.exchange.status != 101:
            finish(self.exchange)
        super().on_message_complete()
