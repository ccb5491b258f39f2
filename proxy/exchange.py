"""Forward one client request to a backend and relay the answer: the data-path core.

:class:`Exchange` is created by the client connection when a request head has been parsed.
:meth:`Exchange.start` picks a backend, takes a pooled keep-alive connection, writes the
request head and streams the body, then relays the response as the bytes arrive. Everything
happens in protocol callbacks, transport to transport, with flow control both ways: there is
no task, future or timer per request (a task only when a new backend connection must be
opened; read timeouts are checked by the server's sweeper). Output produced while parsing one
received chunk is written with a single ``write`` call.

Failures map to client answers in :meth:`Exchange._outcome` (and :meth:`Exchange._fail`, which
writes them):

* connect refused / connect timeout: the request never reached a backend, so it is retried
  on the next backend for every method; with no backend left: 503.
* a reused keep-alive connection that closes before any response byte (the backend closed
  it while idle): retried on a fresh connection, for every method, when the body is replayable.
* reset / EOF before the response on a fresh connection, or a read timeout: retried only for
  idempotent methods; otherwise (or when nothing is left) 502 resp. 504.
* a malformed response: 502 (idempotent methods try the next backend first).
* after the response head was sent to the client nothing can be retried: the client
  connection is aborted so the client sees a truncated answer, never a wrong one.
"""

from __future__ import annotations

import logging
import re
import time
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

import httptools

from .fastlane import PLAIN_ANSWER, relayed_answer_head
from .framing import RequestHead, check_response
from .http import (
    IDEMPOTENT_METHODS,
    LAST_CHUNK,
    ResponseFraming,
    build_plain_request_head,
    build_request_head,
    build_response_head,
    chunk,
)
from .pool import Backend, Pool, sticky_value, sticky_version

if TYPE_CHECKING:
    from .contracts import Downstream, ExchangeServer
    from .upstream import UpstreamConnection

__all__ = ["REPLAY_LIMIT", "Exchange"]

_log = logging.getLogger("lbrec.proxy")
_access_log = logging.getLogger("lbrec.proxy.access")

REPLAY_LIMIT = 64 * 1024  # request-body bytes kept for a retry; above it the body is streamed

# Attempt outcomes.
_DONE = 0
_STALE = 1  # connection closed before any response byte (reused: stale keep-alive)
_TIMEOUT = 3  # no progress for timeouts.read before the response head
_BAD = 4  # malformed response
_ABORTED = 5  # failed after the response started, or the client went away
_TUNNEL = 6  # upgraded to a tunnel (WebSocket)

_MAX_STALE_RETRIES = 3


class _StopParsing(Exception):
    """Raised from a parser callback to stop parsing a backend's answer (see the flags)."""


class Exchange:
    """One request, from parsed head to the last byte of the response."""

    __slots__ = (
        "_head",
        "attempt_started",
        "attempting",
        "attempts",
        "backend",
        "bad_reason",
        "body_chunks",
        "body_complete",
        "body_size",
        "bytes_before",
        "client",
        "complete_pending",
        "finished",
        "framing",
        "interim",
        "keep_alive",
        "last_activity",
        "out",
        "parser",
        "pool",
        "reason",
        "remaining",
        "request",
        "request_id",
        "resp_extra",
        "resp_header_bytes",
        "resp_headers",
        "resp_keep_alive",
        "resp_until_close",
        "response_started",
        "reused",
        "rx",
        "sending",
        "server",
        "spilled",
        "stale_retries",
        "started",
        "status",
        "tried",
        "tunnel_held",
        "tunnel_pending",
        "upstream",
    )

    def __init__(self, client: Downstream, head: RequestHead, *, keep_alive: bool) -> None:
        self.client = client
        self.server: ExchangeServer = client.server
        self.request = head  # method, target, framing: read from here, never copied
        self.keep_alive = keep_alive  # towards the client; the response may lower it
        self._head: bytes | None = None
        self.pool: Pool = client.server.pool
        self.tried: set[str] | None = None
        self.stale_retries = 0
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.body_complete = False
        self.spilled = False  # body no longer fully held: not replayable
        self.sending = False  # body bytes go straight to self.upstream
        self.upstream: UpstreamConnection | None = None
        self.reused = False
        self.backend: Backend | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.remaining = 0  # body bytes still to relay of an answer in the fast lane
        self.attempting = False
        self.complete_pending = False
        self.out: list[bytes] | None = None
        self.last_activity = 0.0
        self.started = 0.0
        self.attempt_started = 0.0  # (access log only) when the last attempt was sent
        self.attempts = 0  # backends tried (connect failures included)
        self.bytes_before = 0  # the client's bytes_out when this answer started
        self.request_id: bytes | None = head.request_id  # made on first use when None
        self.rx = False
        self.interim = False
        self.response_started = False
        self.resp_headers: list[tuple[bytes, bytes]] = []
        self.resp_header_bytes = 0
        self.resp_extra = False  # bytes after the response: the connection is not reused
        self.bad_reason: str | None = None  # why the response head cannot be relayed
        self.reason = b""
        self.status = 0
        self.framing = ResponseFraming.NONE
        self.resp_keep_alive = False
        self.resp_until_close = False
        # bytes the client sent after an upgrade request, until the backend answers 101
        self.tunnel_pending: list[bytes] | None = [] if head.upgrade is not None else None
        self.tunnel_held = 0
        self.finished = False

    # -- request body, fed by the client connection --------------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self.finished:
            return
        size = self.body_size = self.body_size + len(data)
        limit = self.server.max_body_bytes
        if limit and size > limit:  # chunked body over the limit (Content-Length is checked early)
            self.client.abort()
            return
        if self.sending:
            upstream = self.upstream
            assert upstream is not None
            upstream.write(chunk(data) if self.request.chunked else data)
            self.last_activity = self.server.loop.time()
            if not self.spilled:
                if size <= REPLAY_LIMIT:
                    self.body_chunks.append(data)
                else:
                    self.spilled = True
                    self.body_chunks = []
        else:
            self.body_chunks.append(data)
            if size > REPLAY_LIMIT:
                self.client.pause_reading_for_body(True)

    def body_end(self) -> None:
        self.body_complete = True
        if self.sending and self.request.chunked:
            assert self.upstream is not None
            self.upstream.write(LAST_CHUNK)

    def client_lost(self) -> None:
        if self.attempting:
            self._outcome(_ABORTED)
        elif self.upstream is not None:  # a tunnel: close the backend side too
            self.upstream.close()

    def client_pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.pause_reading()

    def client_resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()
        self.last_activity = self.server.loop.time()

    def tunnel_from_client(self, data: bytes) -> None:
        pending = self.tunnel_pending
        if pending is not None:
            # Bytes sent after the handshake, before the backend's 101: held, but not without
            # bound (past REPLAY_LIMIT the client is not read until the tunnel starts).
            pending.append(data)
            self.tunnel_held += len(data)
            if self.tunnel_held > REPLAY_LIMIT:
                self.client.pause_reading_for_body(True)
        elif self.upstream is not None:
            self.upstream.write(data)

    def check_timeout(self, now: float) -> None:
        """Called by the server's sweeper: no progress for ``timeouts.read`` fails the attempt.

        While the client does not read (its socket buffer is full) the backend is paused, so
        that is the client's stall, bounded by ``timeouts.idle`` instead.
        """
        if not self.attempting:
            return
        timeouts = self.pool.config.timeouts
        stalled = now - self.last_activity
        if self.client.write_paused:
            if stalled > timeouts.idle:
                self._outcome(_ABORTED)
        elif stalled > timeouts.read:
            self._outcome(_ABORTED if self.response_started else _TIMEOUT)

    # -- the request, start to end -------------------------------------------------------------

    def start(self) -> None:
        self.started = _monotonic()
        self.bytes_before = self.client.bytes_out
        self._next_attempt()

    def _sticky(self, pool: Pool, backend: Backend) -> Backend:
        """A sticky canary: a client with the cookie/header stays on the version its value
        hashes to (the versions' percent over many clients); one without it is not moved."""
        assert backend.sticky is not None
        value = sticky_value(backend.sticky, self.request.headers)
        if value is None:
            return backend
        if backend.percent is None:
            return backend
        # the versions' percents add up to 100: the canary's is derived from this instance's
        canary = backend.percent if backend.version == "canary" else 100 - backend.percent
        wanted = sticky_version(value, canary, backend.sticky_secret)
        if backend.version == wanted:
            return backend
        return pool.sibling(backend, wanted, self.tried or ()) or backend

    def _next_attempt(self) -> None:
        pool = self.pool = self.server.pool  # a retry sees the newest pool
        backend = pool.pick(self.tried or ())
        if backend is not None and backend.sticky is not None:
            backend = self._sticky(pool, backend)
        if backend is None:
            if not pool.backends:
                self.server.answers.unavailable("no_backends_configured")
                self._fail(503, self.server.empty_reason, None)
            else:
                self.server.answers.unavailable("no_healthy_backend")
                self._fail(503, "no healthy backend available", None)
            return
        conn = backend.conns.take()
        if conn is None:
            self.client.task = self.server.loop.create_task(self._connect(backend))
        else:
            self._attempt(backend, conn, reused=True)

    async def _connect(self, backend: Backend) -> None:
        try:
            conn = await backend.conns.connect(self.pool.config.timeouts.connect)
        except (OSError, TimeoutError) as err:
            backend.requests += 1
            self.attempts += 1
            self.server.passive_failure(backend, f"connect: {err or type(err).__name__}")
            self._tried(backend)
            if self.client.closed:
                self._done(False)
            else:
                self._next_attempt()
            return
        if self.client.closed:
            backend.conns.release(conn, self.server.loop.time())
            self._done(False)
            return
        self._attempt(backend, conn, reused=False)

    def _tried(self, backend: Backend) -> None:
        if self.tried is None:
            self.tried = set()
        self.tried.add(backend.key)

    def _request_head(self, backend: Backend) -> bytes:
        head = self._head
        config = self.pool.config
        preserve = config.preserve_host
        if head is None or not preserve:
            client = self.client
            if self.request_id is None:
                self.request_id = self.server.next_request_id()
            if self.request.raw_headers is not None and preserve and not config.forwarded_header:
                head = build_plain_request_head(
                    self.request, forwarding=client.forwarding, request_id=self.request_id
                )
            else:
                head = build_request_head(
                    self.request,
                    client_ip=client.client_ip,
                    backend_host=backend.host_header,
                    preserve_host=preserve,
                    trusted=client.trusted,
                    forwarded_header=config.forwarded_header,
                    request_id=None if self.request.request_id is not None else self.request_id,
                )
            self._head = head
        return head

    def _attempt(self, backend: Backend, conn: UpstreamConnection, *, reused: bool) -> None:
        self.backend = backend
        self.upstream = conn
        self.reused = reused
        self.rx = False
        self.interim = False
        self.complete_pending = False
        if self.resp_headers:  # a retry: forget what a failed attempt had parsed
            self.resp_headers = []
            self.reason = b""
        self.resp_header_bytes = 0
        self.resp_extra = False
        self.bad_reason = None
        self.parser = None  # made on the first answer bytes the fast lane does not take
        self.remaining = 0
        conn.listener = self
        backend.inflight += 1
        backend.requests += 1
        self.attempts += 1
        if self.server.access_log:
            self.attempt_started = time.monotonic()
        self.attempting = True
        head = self._request_head(backend)
        chunks = self.body_chunks
        if chunks:
            body = b"".join(chunk(c) for c in chunks) if self.request.chunked else b"".join(chunks)
            if self.body_complete and self.request.chunked:
                body += LAST_CHUNK
            conn.write(head + body)
            if self.body_size > REPLAY_LIMIT:
                self.spilled = True
                self.body_chunks = []
        elif self.body_complete and self.request.chunked:
            conn.write(head + LAST_CHUNK)
        else:
            conn.write(head)
        self.sending = True
        if self.body_size > REPLAY_LIMIT:
            self.client.pause_reading_for_body(False)
        self.last_activity = self.server.loop.time()

    def _outcome(self, outcome: int) -> None:
        """End the current attempt and decide: done, retry, or an error answer."""
        if not self.attempting:
            return
        self.attempting = False
        self.sending = False
        backend = self.backend
        conn = self.upstream
        assert backend is not None and conn is not None
        backend.inflight -= 1
        if outcome == _DONE:
            if self.resp_keep_alive and self.body_complete and not conn.closed:
                if self.client.write_paused and conn.transport is not None:
                    conn.transport.resume_reading()  # paused for this slow client only
                backend.conns.release(conn, self.server.loop.time())
            else:
                conn.close()
            self.upstream = None
            self._finish(self.status, backend)
            self._done(self.keep_alive and self.body_complete)
            return
        if outcome == _TUNNEL:
            self._finish(101, backend)
            self._done(False)
            return
        conn.abort()
        self.upstream = None
        if outcome == _ABORTED:
            if self.response_started:
                backend.errors += 1
            self.client.abort()
            self._finish(self.status or 499, backend, "aborted")
            self._done(False)
            return
        replayable = not self.spilled and not self.response_started and not self.client.closed
        if outcome == _STALE and self.reused and self.stale_retries < _MAX_STALE_RETRIES:
            self.stale_retries += 1  # the backend closed an idle keep-alive connection
            if replayable:
                self._next_attempt()
                return
        self.server.passive_failure(backend, self.bad_reason or _DESCRIPTION[outcome])
        self._tried(backend)
        status, text = _ERROR[outcome]
        if replayable and self.request.method in IDEMPOTENT_METHODS and self._has_other(backend):
            self._next_attempt()
            return
        self._fail(status, text, backend)

    def _has_other(self, backend: Backend) -> bool:
        """Whether a retry could pick anything (else the specific error is more useful)."""
        tried = self.tried or set()
        return any(name not in tried for name in self.pool.balancer.eligible)

    def _fail(self, status: int, text: str, backend: Backend | None) -> None:
        keep_alive = self.client.reject(self, status, text)
        self._finish(status, backend, self.bad_reason or text)
        self._done(keep_alive)

    def _done(self, keep_alive: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.body_chunks:
            self.body_chunks = []
        self.parser = None  # the parser holds our bound methods: break the cycle for refcounting
        self.client.exchange_done(self, keep_alive=keep_alive)

    # -- upstream side (UpstreamListener) ------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:  # noqa: PLR0912, PLR0915  the hot path, inlined
        now = self.server.loop.time()
        if not self.rx and self.backend is not None:  # an answer's first bytes: status page
            self.backend.stats.first_byte(data, now - self.last_activity)
        self.rx = True
        self.last_activity = now
        parser = self.parser
        if parser is None:
            if self.response_started:  # the body of an answer in the fast lane
                self._plain_body(data)
                return
            request = self.request
            if request.http11 and request.method != b"HEAD":
                plain = PLAIN_ANSWER.match(data)
                if plain is not None and self._plain_answer(plain, data):
                    return
            parser = self.parser = httptools.HttpResponseParser(self)
        out: list[bytes] = []
        self.out = out
        outcome = -1
        fresh = not self.response_started  # nothing of this answer has reached the client yet
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.status == 101 and self.attempting:
                self.out = None
                self._flush(out)
                self._start_tunnel(data[exc.args[0] :])
                return
            outcome = _ABORTED if self.response_started else _BAD
        except httptools.HttpParserCallbackError:
            if self.resp_extra:  # bytes after a complete response: relay it, drop the conn
                self.resp_keep_alive = False
            elif self.bad_reason is None:
                _log.exception("bug in a response callback", extra={"event": "bug"})
            if not self.complete_pending:
                outcome = _ABORTED if self.response_started else _BAD
        except httptools.HttpParserError:
            if self.complete_pending:  # garbage after a complete answer
                self.resp_keep_alive = False
            else:
                outcome = _ABORTED if self.response_started else _BAD
        self.out = None
        if outcome == _ABORTED and fresh:
            # The answer broke in the same read as its head: the client gets a clean 502
            # instead of a truncated answer.
            out = []
            self.response_started = False
            outcome = _BAD
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
        if self.complete_pending:
            self.complete_pending = False
            outcome = _DONE
        if outcome >= 0:
            self._outcome(outcome)

    def _plain_answer(self, plain: re.Match[bytes], data: bytes) -> bool:
        """The fast lane (proxy/fastlane.py): relay a plain answer's head and what came of its
        body; False leaves it to the general path (204/304, a head over the limit)."""
        status_text, length_text = plain.group(1, 3)
        status = int(status_text)
        end = plain.end()
        if status in (204, 304) or end > self.server.max_header_bytes:
            return False
        self._judge(status)
        keep_alive = self.keep_alive = self.keep_alive and not self.client.closing
        self.status = status
        self.framing = ResponseFraming.LENGTH
        self.resp_keep_alive = True
        self.resp_until_close = False
        self.response_started = True
        length = int(length_text)
        head = data[:end]
        relayed = relayed_answer_head(head, keep_alive=keep_alive)
        received = len(data) - end
        if received > length:  # bytes after the body: relayed no further, never reused
            self.resp_keep_alive = False
            data = data[: end + length]
        self.client.write(data if relayed is head else relayed + data[end:])
        if received < length:
            self.remaining = length - received
        else:
            self._outcome(_DONE)
        return True

    def _judge(self, status: int) -> None:
        """A final answer's status is passive health: a 5xx counts against the backend, any
        other answer clears its failures."""
        backend = self.backend
        assert backend is not None
        if status >= 500:
            self.server.passive_failure(backend, f"status {status}")
        elif backend.fails:
            backend.fails = 0

    def _plain_body(self, data: bytes) -> None:
        remaining = self.remaining
        if len(data) < remaining:
            self.remaining = remaining - len(data)
            self.client.write(data)
            return
        if len(data) > remaining:
            self.resp_keep_alive = False
            data = data[:remaining]
        self.remaining = 0
        self.client.write(data)
        self._outcome(_DONE)

    def _flush(self, out: list[bytes]) -> None:
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))

    def _emit(self, data: bytes) -> None:
        out = self.out
        if out is not None:
            out.append(data)
        else:
            self.client.write(data)

    def upstream_lost(self, exc: Exception | None) -> None:
        if not self.attempting:
            return
        if self.response_started:
            if self.resp_until_close:
                self.resp_keep_alive = False
                if self.framing == ResponseFraming.CHUNKED:
                    self.client.write(LAST_CHUNK)
                self._outcome(_DONE)
            else:
                self._outcome(_ABORTED)
        elif not self.rx:
            self._outcome(_STALE)
        else:
            self._outcome(_BAD)

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading_for_upstream(True)

    def upstream_resume_writing(self) -> None:
        self.client.pause_reading_for_upstream(False)

    # -- response parser callbacks (httptools) -------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete_pending:
            # A second message in the same read: bytes after the body (or a body on a 204/304).
            # The answer already parsed stands; this connection is never reused.
            self.resp_extra = True
            raise _StopParsing

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self.resp_header_bytes = self.resp_header_bytes + len(name) + len(value) + 4
        if size > self.server.max_header_bytes:
            self.bad_reason = "response header fields too large"
            raise _StopParsing
        if not self.response_started:  # trailers (after the head) are dropped
            self.resp_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = self.status = parser.get_status_code()
        if status < 200 and status != 101:
            self.interim = True
            self.resp_headers = []
            self.reason = b""
            if status == 100 and self.request.expect_continue:
                self._emit(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        reason = check_response(status, self.resp_headers, upgrade=self.request.upgrade)
        if reason is not None:
            self.bad_reason = reason
            raise _StopParsing
        self._judge(status)
        bodyless = self.request.method == b"HEAD" or status in (204, 304)
        upgrade = None
        if status == 101:
            upgrade = self.request.upgrade or b"websocket"
        head, framing, keep_alive, until_close = build_response_head(
            status,
            self.reason,
            self.resp_headers,
            bodyless=bodyless,
            client_http11=self.request.http11,
            keep_alive=self.keep_alive and not self.client.closing,
            upgrade=upgrade,
        )
        self.framing = framing
        self.keep_alive = keep_alive  # towards the client
        # The backend connection is reused only when the body has a length of its own.
        self.resp_keep_alive = parser.should_keep_alive() and not until_close
        self.resp_until_close = until_close
        self.response_started = True
        self._emit(head)
        if self.request.method == b"HEAD":
            # httptools cannot be told this answers a HEAD, so it cannot tell whether body
            # bytes follow: finish here and never reuse the connection.
            self.resp_keep_alive = False
            self.complete_pending = True

    def on_body(self, data: bytes) -> None:
        framing = self.framing
        if framing == ResponseFraming.NONE:
            return
        if framing == ResponseFraming.CHUNKED:
            data = chunk(data)
        out = self.out
        if out is not None:
            out.append(data)
        else:
            self.client.write(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.status == 101:
            return  # the tunnel starts when the parser raises HttpParserUpgrade
        if self.framing == ResponseFraming.CHUNKED:
            self._emit(LAST_CHUNK)
        parser = self.parser
        assert parser is not None
        if not parser.should_keep_alive():
            self.resp_keep_alive = False
        self.complete_pending = True

    # -- WebSocket tunnel ----------------------------------------------------------------------

    def _start_tunnel(self, rest: bytes) -> None:
        upstream = self.upstream
        assert upstream is not None
        client_transport = self.client.start_tunnel(self)
        upstream.tunnel = client_transport  # from now on its bytes go straight to the client;
        # we stay its listener for flow control (pause/resume) only.
        if rest:
            client_transport.write(rest)
        pending = self.tunnel_pending or []
        self.tunnel_pending = None
        for data in pending:
            upstream.write(data)
        self._outcome(_TUNNEL)

    # -- access log ----------------------------------------------------------------------------

    def _finish(self, status: int, backend: Backend | None, reason: str | None = None) -> None:
        """The answer is decided: count it (``/metrics``) and write its access line."""
        elapsed = _monotonic() - self.started
        server = self.server
        server.answers.answered(status, elapsed)
        if server.access_log:
            self._log(status, backend, elapsed, reason)

    def _log(
        self, status: int, backend: Backend | None, elapsed: float, reason: str | None
    ) -> None:
        request = self.request
        if self.request_id is None:  # answered before any backend was tried (a 503)
            self.request_id = self.server.next_request_id()
        agent = next((v for n, v in request.headers if n.lower() == b"user-agent"), None)
        duration_ms = round(elapsed * 1000, 2)
        upstream_ms = (
            round((time.monotonic() - self.attempt_started) * 1000, 2)
            if self.attempt_started
            else None
        )
        method = request.method.decode("latin-1")
        path = request.target.decode("latin-1")
        name = backend.name if backend else None
        extra: dict[str, object] = {
            "event": "access",
            "client": self.client.client_ip,
            "method": method,
            "path": path,
            "status": status,
            "backend": name,
            "instance": backend.instance or backend.key if backend else None,
            "duration_ms": duration_ms,
            "upstream_ms": upstream_ms,
            "attempts": self.attempts,
            "bytes": self.client.bytes_out - self.bytes_before,
            "user_agent": agent.decode("latin-1") if agent is not None else None,
            "request_id": self.request_id.decode("latin-1"),
        }
        if reason is not None and status >= 500:
            extra["reason"] = reason
        _access_log.info(
            "%s %s %s %d %s %.2fms%s",
            self.client.client_ip,
            method,
            path,
            status,
            name or "-",
            duration_ms,
            f" ({reason})" if reason is not None and status >= 500 else "",
            extra=extra,
        )


_DESCRIPTION = {
    _STALE: "connection closed before response",
    _TIMEOUT: "read timeout",
    _BAD: "malformed response",
}
_ERROR = {
    _STALE: (502, "backend closed the connection"),
    _TIMEOUT: (504, "backend timed out"),
    _BAD: (502, "bad response from backend"),
}
