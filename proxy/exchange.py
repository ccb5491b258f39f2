"""Forward one client request to a backend and relay the answer: the retry state machine.
(Over 400 lines on purpose: one request's state machine, whose hot path is kept whole; a
route's features hook in with one test each, their code in proxy/admission.py and shaping.py.)

:class:`Exchange` is made by a downstream (the client side: an HTTP/1.1 connection today,
proxy/downstream.py) for each parsed request head, and knows that side only through the
:class:`~proxy.contracts.Downstream` contract. :meth:`Exchange.start` asks the server for the
request's pool (``pool_for``), picks a backend, takes a pooled keep-alive connection, writes the
request head and body (:class:`~proxy.body.RequestBody`), then relays the answer as its bytes
arrive in one of two modes (:class:`AnswerMode`): the fast lane, where the downstream takes a
plain answer's bytes as they are (:func:`proxy.fastlane.take_answer`), or the general way
(:class:`~proxy.answer.GeneralAnswer`). All of it runs in protocol callbacks, with flow control
both ways: no task, future or timer per request (a task only to open a backend connection; the
server's sweeper checks read timeouts). Every attempt ends with an
:class:`~proxy.outcomes.Outcome`, from which :meth:`Exchange._outcome` retries or answers
(the rules: docs/proxy.md, "Retries and errors").
"""

from __future__ import annotations

import time
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Final

from . import admission, frontdoor, shaping
from .accesslog import log_access
from .answer import AnswerMode, GeneralAnswer, ShapedAnswer
from .body import NO_BODY, REPLAY_LIMIT, RequestBody
from .framing import RequestHead
from .http import IDEMPOTENT_METHODS, upstream_request_head
from .outcomes import FAILURES, Outcome
from .pool import Backend, Pool
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .admission import RouteState
    from .contracts import Downstream, ExchangeServer
    from .fastlane import PlainAnswer
    from .upstream import UpstreamConnection

__all__ = ["Exchange"]

_MAX_STALE_RETRIES = 3
# The members the hot path uses, by module name (an enum member's lookup through its class
# costs several times a global's, interpreted)
_AWAITING: Final = AnswerMode.AWAITING
_LANE: Final = AnswerMode.LANE
_DONE: Final = Outcome.DONE


class Exchange:
    """One request, from parsed head to the last byte of the response."""

    __slots__ = (
        "_head",
        "attempt_started",
        "attempting",
        "attempts",
        "backend",
        "body",
        "bytes_before",
        "client",
        "finished",
        "general",
        "keep_alive",
        "last_activity",
        "mode",
        "plain",
        "pool",
        "request",
        "request_id",
        "response_started",
        "reusable",
        "reused",
        "route",
        "rx",
        "server",
        "stale_retries",
        "started",
        "state",
        "status",
        "tried",
        "tunnel",
        "until_close",
        "upstream",
    )

    def __init__(self, client: Downstream, head: RequestHead, *, keep_alive: bool) -> None:
        self.client = client
        self.server: ExchangeServer = client.server
        self.request = head  # method, target, framing: read from here, never copied
        # Keep-alive towards the client: the request's wish, owned by the downstream, which
        # alone lowers it and decides (Downstream.keeps_alive); the exchange never reads it.
        self.keep_alive = keep_alive
        self._head: bytes | None = None
        self.pool: Pool | None = None  # the request's pool, asked again on every attempt
        self.tried: set[str] | None = None
        self.stale_retries = 0
        self.body = (
            NO_BODY
            if not head.chunked and not head.content_length
            else RequestBody(chunked=head.chunked)
        )
        self.upstream: UpstreamConnection | None = None
        self.reused = False
        self.backend: Backend | None = None
        self.mode = _AWAITING
        self.general: GeneralAnswer | None = None
        self.plain: PlainAnswer | None = None  # the answer the fast lane took
        self.attempting = False
        self.last_activity = 0.0
        self.started = 0.0
        self.attempt_started = 0.0  # (access log only) when the last attempt was sent
        self.attempts = 0  # backends tried (connect failures included)
        self.bytes_before = 0  # the client's bytes_out when this answer started
        self.request_id: bytes | None = head.request_id  # made on first use when None
        self.rx = False
        self.response_started = False
        self.status = 0
        self.reusable = False  # the backend connection may serve another request after this
        self.until_close = False  # the backend delimits the answer's body by closing
        self.tunnel = Tunnel(client) if head.upgrade is not None else None
        self.finished = False
        self.route: str | None = None  # the route's key (proxy/front.py); None: the one pool
        self.state: RouteState | None = None  # the route's features (proxy/admission.py)

    # -- fed by the downstream -----------------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self.finished:
            return
        body = self.body
        limit = self.server.max_body_bytes
        if limit and body.size + len(data) > limit:  # chunked (Content-Length is checked early)
            self.client.abort()
            return
        state = self.state
        if state is not None and state.body_over(body.size + len(data)):
            admission.too_large(self)  # the route's own limit: a 413 while nothing was answered
            return
        if body.feed(data):
            self.client.pause_reading_for_body(True)
        elif body.upstream is not None:
            self.last_activity = self.server.loop.time()

    def client_lost(self) -> None:
        if self.attempting:
            self._outcome(Outcome.ABORTED)
        elif self.state is not None and not self.finished:
            # during admission or a backend connect (its task is cancelled): the exchange
            # ends here, its concurrency slot released
            admission.abandon(self, self.state)

    def client_pause_writing(self) -> None:
        self.last_activity = self.server.loop.time()
        if self.upstream is not None:
            self.upstream.pause_reading(True)

    def client_resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading(False)
        self.last_activity = self.server.loop.time()

    def check_timeout(self, now: float) -> None:
        """The server's sweeper: no progress for ``timeouts.read`` fails the attempt (while the
        client does not read, the backend is paused: the client's stall, ``timeouts.idle``)."""
        if not self.attempting or self.pool is None:
            return
        timeouts = self.pool.config.timeouts
        stalled = now - self.last_activity
        if self.client.write_paused:
            if stalled > timeouts.idle:
                self._outcome(Outcome.ABORTED)
        elif stalled > timeouts.read:
            self._outcome(Outcome.ABORTED if self.response_started else Outcome.TIMEOUT)

    # -- the request, start to end -------------------------------------------------------------

    def start(self) -> None:
        self.started = _monotonic()
        self.bytes_before = self.client.bytes_out
        server = self.server
        front = server.front
        if front is not None and not frontdoor.decide(self, front):
            return
        features = server.features  # None: no route has a feature (the hot path)
        if features is not None:
            plan = features.plan_for(self.route)
            if plan is not None:
                admission.begin(self, plan)  # proceed() when let in
                return
        self._next_attempt()

    def proceed(self) -> None:
        """Admitted (proxy/admission.py): on to a backend."""
        self._next_attempt()

    def answered_here(self, status: int, reason: str, *, clean: bool = True) -> None:
        """The proxy answered (the front door, a route's admission): the exchange ends as
        any other (``clean=False``: the client went away first)."""
        self._finish(status, None, reason)
        self._done(clean=clean)

    def _next_attempt(self) -> None:
        # a retry sees the newest pool (of the route it took, if any)
        pool = self.pool = self.server.pool_for(self.request, self.route)
        state = self.state
        if state is not None and state.plan.affinity is not None:
            backend = admission.choose(self, pool, state)
        else:
            backend = pool.pick(self.tried or ())
            if backend is not None and backend.sticky is not None:
                backend = pool.stick(backend, self.request.headers, self.tried or ())
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
            self.client.task = self.server.loop.create_task(self._connect(pool, backend))
        else:
            self._attempt(backend, conn, reused=True)

    async def _connect(self, pool: Pool, backend: Backend) -> None:
        try:
            conn = await backend.conns.connect(pool.config.timeouts.connect)
        except (OSError, TimeoutError) as err:
            backend.requests += 1
            self.attempts += 1
            self.server.passive_failure(backend, f"connect: {err or type(err).__name__}")
            self._tried(backend)
            if self.client.closed:
                self._done(clean=False)
            else:
                self._next_attempt()
            return
        if self.client.closed or self.finished:
            backend.conns.release(conn, self.server.loop.time())
            self._done(clean=False)
            return
        self._attempt(backend, conn, reused=False)

    def _tried(self, backend: Backend) -> None:
        if self.tried is None:
            self.tried = set()
        self.tried.add(backend.key)

    def _attempt(self, backend: Backend, conn: UpstreamConnection, *, reused: bool) -> None:
        pool = self.pool
        assert pool is not None
        self.backend = backend
        self.upstream = conn
        self.reused = reused
        conn.listener = self
        backend.inflight += 1
        backend.requests += 1
        self.attempts += 1
        if self.server.access_log:
            self.attempt_started = time.monotonic()
        self.attempting = True
        head = self._head
        if head is None or not pool.config.preserve_host:  # else: the same on every backend
            request_id = self.request_id
            if request_id is None:
                request_id = self.request_id = self.server.next_request_id()
            head = self._head = upstream_request_head(
                self.request, pool.config, backend.host_header, self.client, request_id
            )
        body = self.body
        if body is NO_BODY:
            conn.write(head)
        else:
            body.attach(conn, head)
            if body.size > REPLAY_LIMIT:
                self.client.pause_reading_for_body(False)
        self.last_activity = self.server.loop.time()

    def _outcome(self, outcome: Outcome) -> None:
        """End the current attempt and decide: done, retry, or an error answer."""
        if not self.attempting:
            return
        self.attempting = False
        body = self.body
        if body.upstream is not None:
            body.detach()
        backend = self.backend
        conn = self.upstream
        assert backend is not None and conn is not None
        backend.inflight -= 1
        self.upstream = None
        if outcome is _DONE:
            if self.reusable and body.complete and not conn.closed:
                if self.client.write_paused:
                    conn.pause_reading(False)  # paused for this slow client only
                backend.conns.release(conn, self.server.loop.time())
            else:
                conn.close()
            self._finish(self.status, backend)
            self._done(clean=True)
            return
        if outcome is Outcome.TUNNEL:  # the connection is the tunnel's now
            self._finish(101, backend)
            self._done(clean=False)
            return
        conn.abort()
        if outcome is Outcome.ABORTED:
            if self.response_started:
                backend.errors += 1
            self.client.abort()
            self._finish(self.status or 499, backend, "aborted")
            self._done(clean=False)
            return
        failure = FAILURES[outcome]
        general = self.general
        why = general.bad_reason if general is not None else None
        self.rx = False  # nothing of an answer reached the client: the next attempt's afresh
        self.mode = _AWAITING
        self.general = None  # (made on the first answer bytes the fast lane does not take)
        replayable = not body.spilled and not self.response_started and not self.client.closed
        if failure.retry_reused and self.reused and self.stale_retries < _MAX_STALE_RETRIES:
            self.stale_retries += 1  # the backend closed an idle keep-alive connection
            if replayable:
                self._next_attempt()
                return
        self.server.passive_failure(backend, why or failure.reason)
        self._tried(backend)
        # retried only where a pick could find another (else the specific error is more useful)
        pool = self.pool
        assert pool is not None and self.tried is not None
        if replayable and self.request.method in IDEMPOTENT_METHODS and pool.untried(self.tried):
            self._next_attempt()
            return
        self._fail(failure.status, failure.text, backend, why)

    def _fail(
        self, status: int, text: str, backend: Backend | None, why: str | None = None
    ) -> None:
        state = self.state
        if state is None or not admission.send_page(self, state.plan, status):
            self.client.send_error(self, status, text)
        self._finish(status, backend, why or text)
        self._done(clean=True)

    def _done(self, *, clean: bool) -> None:
        """The exchange is over; ``clean``: its answer is whole (the connection may go on)."""
        if self.finished:
            return
        self.finished = True
        if self.body.chunks:
            self.body.drop()
        if self.state is not None:
            admission.end(self, self.state)
        self.general = None  # the parser holds our bound methods: break the cycle for refcounting
        self.client.exchange_done(self, clean=clean)

    # -- the answer: upstream side (UpstreamListener) ------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        now = self.server.loop.time()
        if not self.rx and self.backend is not None:  # an answer's first bytes: status page
            self.backend.stats.first_byte(data, now - self.last_activity)
        self.rx = True
        self.last_activity = now
        mode = self.mode
        if mode is _LANE:  # the body of a plain answer: counted, relayed as it is
            plain = self.plain
            assert plain is not None
            self.client.send_body(plain.body(data))
            if not plain.remaining:
                self.reusable = plain.reusable
                self._outcome(_DONE)
            return
        if mode is _AWAITING:
            state = self.state
            if state is None or not state.general:
                plain = self.plain = self.client.relay_plain(self, data)
            else:  # compressed, or a cookie to set: the general way
                plain = self.plain = None
            if plain is not None:  # the downstream relayed its head and what came of its body
                status = self.status = plain.status
                self.judge(status)
                self.mode = _LANE
                self.response_started = True
                if not plain.remaining:
                    self.reusable = plain.reusable
                    self._outcome(_DONE)
                return
            self.mode = AnswerMode.GENERAL
            self.general = GeneralAnswer(self) if self.state is None else ShapedAnswer(self)
        general = self.general
        assert general is not None
        outcome = general.feed(data)
        if outcome is not None:
            self._outcome(outcome)

    def judge(self, status: int) -> None:
        """A final answer's status is passive health: a 5xx counts against the backend, any
        other answer clears its failures."""
        backend = self.backend
        assert backend is not None
        if status >= 500:
            self.server.passive_failure(backend, f"status {status}")
        elif backend.fails:
            backend.fails = 0

    def open_tunnel(self, rest: bytes) -> None:
        """The backend answered 101 (relayed): the connection becomes the request's tunnel."""
        upstream = self.upstream
        tunnel = self.tunnel
        assert upstream is not None and tunnel is not None
        tunnel.open(upstream, rest)
        self._outcome(Outcome.TUNNEL)

    def upstream_lost(self, exc: Exception | None) -> None:
        if not self.attempting:
            return
        if self.response_started:
            if self.until_close:
                self.reusable = False
                if self.state is not None:
                    shaping.finish(self)
                self.client.send_end()
                self._outcome(_DONE)
            else:
                self._outcome(Outcome.ABORTED)
        elif not self.rx:
            self._outcome(Outcome.STALE)
        else:
            self._outcome(Outcome.BAD)

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading_for_upstream(True)

    def upstream_resume_writing(self) -> None:
        self.client.pause_reading_for_upstream(False)

    # -- the end -------------------------------------------------------------------------------

    def _finish(self, status: int, backend: Backend | None, reason: str | None = None) -> None:
        """The answer is decided: count it (``/metrics``) and write its access line."""
        elapsed = _monotonic() - self.started
        server = self.server
        server.answers.answered(status, elapsed)
        if server.by_route:  # routes or features: figures per route (proxy/route_stats.py)
            admission.count(self, status)
        if server.access_log:
            if self.request_id is None:  # answered before any backend was tried (a 503)
                self.request_id = server.next_request_id()
            log_access(self, status, backend, elapsed, reason)
