"""The seam between the front door's features (issue 23) and the request path: what the
exchange calls, and when. Wired: proxy/route_features.py builds a :class:`Features` at each
reload, proxy/admission.py and proxy/shaping.py call the steps below for each request.

On every (re)load of backends.json, build a :class:`Features` from the config (the previous
one given, so that rate-limit buckets, verified credentials and the forward-auth session of
unchanged routes carry over a reload). Then, per request:

1. ``plan = features.plan_for(route)`` with the key of the route the front door chose
   (proxy/front.py), None without routes. ``plan is None``: no feature is on; the request goes
   as before. While no route has a feature and nothing is paused the server holds no
   Features at all for the request path (``server.features is None``: one attribute test).
2. ``answer = await plan.admit(...)`` before any byte goes to a backend: the allow-list,
   maintenance (with the hold), basic auth, forward-auth, the rate limit and the concurrency
   cap, in that order. A :class:`LocalAnswer` is sent as is (403, 401, 429, 503, or the auth
   service's own answer); None lets the request go on, with ``plan.forward_headers(...)`` when
   forward-auth copied header fields. Then ``plan.release(key)`` once its answer is done when
   it took a concurrency slot (``Admitted.slot``).
3. The body limit: ``plan.max_body`` (413 beyond, as limits.max_body_bytes).
4. The instance: ``plan.affinity.choose(...)`` instead of the pool's pick when set.
5. The answer: ``compress.decide`` / ``rewrite_head`` / ``Encoder`` with ``plan.compress``, and
   the pinning cookie of step 4 added to its head; lbrec's own 502/503/504 answers take
   ``plan.pages.page(status)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .access import AllowList, BasicVerifier, Busy, HtpasswdError, challenge, load_htpasswd
from .access import parse_basic as _parse_basic
from .affinity import Affinity, identity_of, route_secret
from .compress import settings_of
from .config import BackendsConfig, CompressSettings, RouteFeatures
from .forward_auth import ForwardAuthClient, apply_copied
from .maintenance import HoldGate, Pause, hold_of, paused_answer
from .pages import NO_PAGES, ErrorPages, load_error_pages
from .ratelimit import ConcurrencyCap, RateLimiter, client_key, retry_after
from .route_stats import REFUSALS
from .routing import Match

__all__ = ["REFUSALS", "Admitted", "Features", "LocalAnswer", "RoutePlan"]


Headers = Sequence[tuple[bytes, bytes]]
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """An answer the proxy sends itself, without a backend. ``reason`` for the log, ``kind``
    for the metrics (one of :data:`REFUSALS`), ``paged``: the route's error page may replace
    the body (not for maintenance's own page, nor for the auth service's answer)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reason: str
    kind: str = "allow"
    paged: bool = True


@dataclass(frozen=True, slots=True)
class Admitted:
    """The request may go on: header fields to copy onto it (forward-auth), and the
    concurrency slot it holds (release it when its answer is done), if any."""

    copy: list[tuple[bytes, bytes]] = field(default_factory=list)
    slot: bytes | None = None


def _plain(
    status: int, text: str, reason: str, kind: str, *extra: tuple[bytes, bytes]
) -> LocalAnswer:
    return LocalAnswer(status, [_TEXT, *extra], text.encode() + b"\n", reason, kind)


class RoutePlan:
    """One route's features, compiled: what the exchange asks per request."""

    def __init__(self, key: str, features: RouteFeatures) -> None:
        self.key = key
        self.features = features
        self.compress: CompressSettings | None = settings_of(features.compress)
        self.max_body = features.max_body
        self.allow: AllowList | None = None
        self.basic: BasicVerifier | None = None
        self.realm = "lbrec"
        self.forward: ForwardAuthClient | None = None
        self.rate: RateLimiter | None = None
        self.concurrency: ConcurrencyCap | None = None
        self.affinity: Affinity | None = None
        self.pages: ErrorPages = NO_PAGES
        self.maintenance = features.maintenance

    async def admit(
        self,
        *,
        gate: HoldGate,
        client_ip: str,
        method: bytes,
        uri: bytes,
        host: bytes,
        proto: str,
        headers: Headers,
        now: Callable[[], float] = time.monotonic,
    ) -> LocalAnswer | Admitted:
        """Everything checked before a byte reaches a backend (see the module's steps)."""
        # The allow-list first: a client it refuses gets 403 at once, never a place among the
        # maintenance hold's waiters (bounded) nor a password check.
        if self.allow is not None and not self.allow.allows(client_ip):
            return _plain(403, "Forbidden", "not in allow-list", "allow")
        refused = await self._maintenance(gate) or await self._access(client_ip, headers)
        if refused is not None:
            return refused
        copy: list[tuple[bytes, bytes]] = []
        if self.forward is not None:
            verdict = await self.forward.check(
                method=method, uri=uri, host=host, proto=proto, client_ip=client_ip, headers=headers
            )
            if not verdict.allowed:
                reason = f"forward-auth {verdict.error or verdict.status}"
                paged = verdict.error is not None  # the service's own answer goes as it is
                return LocalAnswer(
                    verdict.status, verdict.headers, verdict.body, reason, "forward", paged
                )
            copy = verdict.copy
        return self._limits(client_ip, headers, now(), copy)

    async def _maintenance(self, gate: HoldGate) -> LocalAnswer | None:
        route = self.key if self.key != "*" else None
        pause = gate.state.pause_of(route)
        if pause is not None:
            pause = await gate.wait(route, hold_of(pause, self.maintenance))
        if pause is None:
            return None
        return self._paused(pause)

    def _paused(self, pause: Pause) -> LocalAnswer:
        status, head, body = paused_answer(pause, self.maintenance, self.pages.maintenance_page())
        return LocalAnswer(status, head, body, "maintenance", "maintenance", False)

    def admit_now(
        self, gate: HoldGate, client_ip: str, headers: Headers, now: float
    ) -> LocalAnswer | Admitted | None:
        """The same verdict as :meth:`admit` without a wait when none is needed (no basic
        auth, no forward-auth, no hold to wait): None when :meth:`admit` must run."""
        if self.basic is not None or self.forward is not None:
            return None
        pause = gate.state.pause_of(self.key if self.key != "*" else None)
        if pause is not None:
            if hold_of(pause, self.maintenance) > 0:
                return None
            return self._paused(pause)
        if self.allow is not None and not self.allow.allows(client_ip):
            return _plain(403, "Forbidden", "not in allow-list", "allow")
        return self._limits(client_ip, headers, now, [])

    async def _access(self, client_ip: str, headers: Headers) -> LocalAnswer | None:
        """Basic auth (the allow-list is checked before the maintenance hold, in admit)."""
        if self.basic is None:
            return None
        given = next((v for n, v in headers if n.lower() == b"authorization"), None)
        pair = _parse_basic(given) if given is not None else None
        # Guessing is rate limited too: a wrong password costs the client's address a token of
        # the route's rate limit, and an address without a token left is not checked at all
        # (no hash: a guess flood costs no CPU, and keeps the pool free for others).
        rate = self.rate
        address = b"guess:" + client_key("client_ip", client_ip, ())
        if pair is not None and rate is not None:
            wait = rate.wait(address, time.monotonic())
            if wait > 0:
                after = (b"Retry-After", b"%d" % retry_after(wait))
                return _plain(429, "Too Many Requests", "auth guesses", "ratelimit", after)
        try:
            ok = pair is not None and await self.basic.verify(*pair)
        except Busy:
            return _plain(503, "Busy", "auth busy", "basic", (b"Retry-After", b"1"))
        if ok:
            return None
        if pair is not None and rate is not None:
            rate.take(address, time.monotonic())
        return _plain(401, "Unauthorized", "basic auth", "basic", challenge(self.realm))

    def _limits(
        self, client_ip: str, headers: Headers, now: float, copy: list[tuple[bytes, bytes]]
    ) -> LocalAnswer | Admitted:
        limit = self.features.rate_limit
        if limit is None:
            return Admitted(copy)
        key = client_key(limit.by, client_ip, headers)
        # the cap first: a request it refuses costs the client no token
        slot = None
        if self.concurrency is not None:
            if not self.concurrency.acquire(key):
                return _plain(
                    429, "Too Many Requests", "concurrency", "concurrency", (b"Retry-After", b"1")
                )
            slot = key
        if self.rate is not None:
            wait = self.rate.take(key, now)
            if wait > 0:
                self.release(slot)
                after = (b"Retry-After", b"%d" % retry_after(wait))
                return _plain(429, "Too Many Requests", "rate limit", "ratelimit", after)
        return Admitted(copy, slot)

    def forward_headers(self, headers: Headers, admitted: Admitted) -> list[tuple[bytes, bytes]]:
        """The request's header fields for the backend after forward-auth (client-sent copies
        of ``copy_headers`` removed, the service's added)."""
        forward = self.features.auth.forward if self.features.auth is not None else None
        if forward is None:
            return list(headers)
        return apply_copied(headers, forward.copy_headers, admitted.copy)

    def release(self, slot: bytes | None) -> None:
        if slot is not None and self.concurrency is not None:
            self.concurrency.release(slot)


class Features:
    """Every route's plan for one config; ``plan_for(route)`` is the per-request lookup."""

    def __init__(
        self,
        config: BackendsConfig,
        base: Path,
        *,
        workers: int = 1,
        previous: Features | None = None,
        instance_keys: Sequence[str] = (),
        gate: HoldGate | None = None,
    ) -> None:
        """``base``: backends.json's folder (relative paths); ``instance_keys``: the pool's key
        of each entry of ``config.routable`` (proxy/pool.py instance_keys), for affinity;
        ``gate``: the worker's maintenance state (one for the process, kept over reloads)."""
        self.problems: list[str] = []
        self.gate = gate if gate is not None else HoldGate()
        old = {p.key: p for p in previous.plans if p is not None} if previous else {}
        if previous is not None and previous.whole is not None:
            old["*"] = previous.whole
        defaults = config.defaults
        routes = config.routes or ()
        keys = list(instance_keys) or [e.name for e in config.routable]
        self.plans: list[RoutePlan | None] = [
            self._compile(
                r.key,
                r.over(defaults),
                config=config,
                base=base,
                workers=workers,
                old=old,
                keys=keys,
                backends=r.backends,
                path=r.path,
            )
            for r in routes
        ]
        whole = defaults if defaults is not None and defaults.active else None
        self.whole: RoutePlan | None = (
            self._compile(
                "*",
                whole,
                config=config,
                base=base,
                workers=workers,
                old=old,
                keys=keys,
                backends=None,
            )
            if whole
            else None
        )
        self.by_key: dict[str, RoutePlan] = {p.key: p for p in self.plans if p is not None}
        # a route without features while something is paused: maintenance alone
        self._bare: dict[str | None, RoutePlan] = {}

    @property
    def active(self) -> bool:
        """Some route (or the plain pool) has a feature on."""
        return self.whole is not None or bool(self.by_key)

    def plan(self, match: Match | None) -> RoutePlan | None:
        """The plan of the route a request took; None: no feature on (the hot path)."""
        return self.whole if match is None else self.plans[match.index]

    def plan_for(self, route: str | None) -> RoutePlan | None:
        """The plan of a route by its key (None: the plain pool, or no route); a route
        without features gets a bare one (maintenance only) while something is paused."""
        plan = self.whole if route is None else self.by_key.get(route)
        if plan is None and self.gate.state.active:
            plan = self._bare.get(route)
            if plan is None:
                plan = self._bare[route] = RoutePlan(route or "*", RouteFeatures())
        return plan

    def _clients(self) -> list[ForwardAuthClient]:
        return [p.forward for p in (*self.plans, self.whole) if p is not None and p.forward]

    async def retire(self, previous: Features | None) -> None:
        """After the swap: close the previous config's forward-auth sessions that this one
        did not carry over (``previous`` None: close all of this one's, at shutdown)."""
        if previous is None:
            for client in self._clients():
                await client.close()
            return
        kept = {id(c) for c in self._clients()}
        for client in previous._clients():
            if id(client) not in kept:
                await client.close()

    def _compile(
        self,
        key: str,
        features: RouteFeatures,
        *,
        config: BackendsConfig,
        base: Path,
        workers: int,
        old: dict[str, RoutePlan],
        keys: Sequence[str],
        backends: Sequence[str] | None,
        path: str = "/",
    ) -> RoutePlan | None:
        if not features.active:
            return None
        plan = RoutePlan(key, features)
        before = old.get(key)
        same = before is not None and before.features == features
        auth = features.auth
        if auth is not None and auth.allow is not None:
            plan.allow = AllowList(auth.allow)
        if auth is not None and auth.basic is not None:
            plan.realm = auth.basic.realm
            if same and before is not None and before.basic is not None:
                plan.basic = before.basic
            else:
                try:
                    plan.basic = BasicVerifier(load_htpasswd(base / auth.basic.users_file))
                except HtpasswdError as err:
                    # fail closed: nobody passes a basic auth whose file cannot be read
                    self.problems.append(str(err))
                    plan.basic = BasicVerifier.nobody()
        if auth is not None and auth.forward is not None:
            reuse = same and before is not None and before.forward is not None
            plan.forward = before.forward if reuse and before else ForwardAuthClient(auth.forward)
        if features.rate_limit is not None:
            if same and before is not None:
                plan.rate, plan.concurrency = before.rate, before.concurrency
            else:
                plan.rate = RateLimiter.from_settings(features.rate_limit, workers=workers)
                cap = features.rate_limit.concurrency
                plan.concurrency = ConcurrencyCap(cap) if cap else None
        if features.sticky is not None and config.backends:
            instances = {
                k: (identity_of(e), e.weight)
                for k, e in zip(keys, config.routable, strict=False)
                if e.frozen is None and (backends is None or e.name in backends)
            }
            plan.affinity = Affinity(
                features.sticky, route_secret(config.affinity_key, key), instances, path=path
            )
        pages = features.maintenance.page if features.maintenance is not None else None
        if features.error_pages or pages:
            plan.pages, problems = load_error_pages(features.error_pages, pages, base)
            self.problems += problems
        return plan
