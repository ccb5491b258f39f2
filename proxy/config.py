"""The schema of ``config/backends.json``: the only input of the proxy.

This module is the single home of that file's format. The reconciler renders the file by
building these models (never dicts), and the proxy loads it with :func:`load_config`, so the
writer cannot drift from the reader. It imports no aiohttp, so the reconciler can import it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = [
    "SCHEMA_VERSION",
    "AuthSettings",
    "BackendEntry",
    "BackendsConfig",
    "BasicAuthSettings",
    "CertificateEntry",
    "CompressSettings",
    "ConfigError",
    "Deployment",
    "ForwardAuthSettings",
    "HealthSettings",
    "LimitSettings",
    "MaintenanceSettings",
    "PassiveSettings",
    "RateLimitSettings",
    "Revision",
    "RouteEntry",
    "RouteFeatures",
    "TimeoutSettings",
    "TlsSettings",
    "check_cidrs",
    "check_host_pattern",
    "check_path_prefix",
    "format_validation_error",
    "load_config",
    "parse_config",
    "parse_hostport",
    "parse_size",
    "split_hostport",
]

SCHEMA_VERSION = 1

_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"

PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthSettings(_Model):
    """Active health check: GET ``path`` every ``interval`` seconds, ``timeout`` per probe."""

    path: str = Field(default="/health", pattern=r"^/")
    interval: PositiveSeconds = 2.0
    timeout: PositiveSeconds = 1.0
    rise: int = Field(default=2, ge=1, le=100)
    fall: int = Field(default=3, ge=1, le=100)
    # A backend that appears at (re)load starts as "checking"; when True it gets no traffic
    # until ``rise`` probes succeed. Backends present at the first load start up.
    wait_healthy_on_add: bool = True


class PassiveSettings(_Model):
    """Outlier detection: ``max_fails`` consecutive errors eject a backend for ``cooldown`` s."""

    max_fails: int = Field(default=3, ge=0, le=1000)  # 0 disables passive checks
    cooldown: PositiveSeconds = 10.0


class TimeoutSettings(_Model):
    connect: PositiveSeconds = 2.0
    read: PositiveSeconds = 30.0
    idle: PositiveSeconds = 60.0
    # A request head (request line and headers) must arrive whole within this (slowloris).
    header: PositiveSeconds = 10.0


class LimitSettings(_Model):
    """Request limits enforced by the proxy: 431 above ``max_header_bytes``, 413 above
    ``max_body_bytes`` (request line + headers, and decoded body, respectively)."""

    max_header_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    max_body_bytes: int = Field(default=10 * 1024**3, ge=0)  # 0 disables the body limit
    # Client connections held at once; past it a new one gets 503 and is closed.
    max_connections: int = Field(default=10000, ge=1, le=1_000_000)


class Revision(_Model):
    """Where the desired state came from (a git commit under GitOps sync), for reporting."""

    commit: str | None = None
    author: str | None = None
    message: str | None = None
    time: str | None = None
    source: str | None = None


class BackendEntry(_Model):
    name: str = Field(pattern=_NAME_PATTERN)
    url: str
    weight: int = Field(ge=0, le=1000)
    instance: str | None = Field(
        default=None, max_length=255, description="the container behind this URL (display)"
    )
    health_path: str | None = Field(
        default=None, pattern=r"^/", description="this backend's health path (else health.path)"
    )
    # A canary: the instances of one backend run two versions, each with a share of the
    # backend's weight (split evenly over that version's instances).
    version: str | None = Field(
        default=None, max_length=64, description="the version this instance runs (canary)"
    )
    percent: int | None = Field(
        default=None, ge=0, le=100, description="this version's share of the backend, in %"
    )
    sticky: str | None = Field(
        default=None,
        pattern=r"^(cookie|header):[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="canary: keep a client on one version by this cookie or header",
    )
    # The rollout's secret key for the sticky hash (issue 20 finding 13), written by the
    # reconciler, the same on every instance of the backend: nobody without it (a client, a
    # backend) can tell which version a cookie value lands on. Without it, the proxy draws one.
    sticky_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        repr=False,
        description="canary: the key of the sticky hash (64 hex digits, secret)",
    )
    # Identity, not just liveness (docs/faults.md, "engine restarted"): the container this
    # entry was read from, and, when set, why it is frozen: the proxy does not route a frozen
    # entry (its port may belong to another container now) until a pass re-reads it.
    container: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="the container's id",
    )
    frozen: str | None = Field(
        default=None, max_length=200, description="not routed: why (an engine restart)"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http",) or not parts.hostname:
            raise ValueError(f"must be an http://host:port URL, got {value!r}")
        try:
            _ = parts.port
        except ValueError as err:
            raise ValueError(f"bad port in {value!r}") from err
        return value


def check_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    """Validator of ``trusted_proxies`` (here and in desired-state.yaml)."""
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as err:
            raise ValueError(f"not an IP network (CIDR): {cidr!r}") from err
    return value


# A route's host: a name (any port), a name with a port, or *.domain (exactly one more label,
# as a wildcard certificate covers). Lower case; no IP literal need be special-cased.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_PATTERN = rf"^(\*\.)?{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?$"
# A path prefix: absolute, no query or fragment, no dot segments, no whitespace.
PATH_PREFIX_PATTERN = r"^/([^\s?#]*)$"


def split_hostport(value: str) -> tuple[str, int]:
    """The one HOST:PORT parser of the proxy and the reconciler: ``127.0.0.1:8080``,
    ``[::1]:8080``, ``shop.example.com:8080`` or ``:8080`` -> (host without brackets, which
    may be empty, port 0-65535). ValueError otherwise; callers add their own rules (a host
    required, port 0 refused) to what it returns."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT like 127.0.0.1:8080, got {value!r}")
    return host.strip("[]"), int(port)


def parse_hostport(value: str) -> tuple[str, int]:
    """A listener's address: HOST:PORT, where an empty host (``:8080``) is every interface."""
    host, port = split_hostport(value)
    return host or "0.0.0.0", port


def check_host_pattern(value: str) -> str:
    """Validator of a route's ``host`` (here and in desired-state.yaml)."""
    if value != value.lower():
        raise ValueError(f"{value!r}: write host names in lower case")
    if not re.match(HOST_PATTERN, value) or len(value.split(":", maxsplit=1)[0]) > 253:
        raise ValueError(
            f"{value!r}: expected a host name like shop.example.com, *.example.com or "
            "shop.example.com:8443"
        )
    if ":" in value and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    return value


def check_path_prefix(value: str) -> str:
    """Validator of a route's ``path``: an absolute prefix without dot segments."""
    if not re.match(PATH_PREFIX_PATTERN, value):
        raise ValueError(f"{value!r}: expected an absolute path prefix like /api/")
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r}: no '.' or '..' segments")
    return value


RouteTls = Literal["auto", "required", "off"]

# -- what the front door does for a route (issue 23): the same models in desired-state.yaml
# (per route, and at its top level as the default of every route and of the plain pool) and
# in backends.json (per route, and under ``defaults``). Files are named relative to the
# desired-state file there, relative to backends.json's folder here (render_pool rewrites).

_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
SIZE_PATTERN = r"^\s*[0-9]+\s*([kKmMgG]([iI]?[bB])?|[bB])?\s*$"


def parse_size(value: object) -> object:
    """``10m`` (nginx's client_max_body_size: binary units, k m g, an optional b/ib) -> bytes;
    a whole number is bytes. Anything else is left to the field's own check."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"{value!r}: expected a size like 512k, 10m or 1g (or bytes)")
        return int(match[1]) * _SIZE_UNIT[match[2].lower()]
    return value


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_DURATION_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# The reconciler's duration syntax (reconciler/core/durations.py), which the proxy cannot
# import: a number of seconds, or units from the largest down (1m30s, 500ms).
DURATION_SYNTAX = r"^\s*[0-9]+(\.[0-9]+)?(ms|h|m|s)?(([0-9]+(\.[0-9]+)?)(ms|h|m|s))*\s*$"


def _duration(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match[1]) * _DURATION_UNIT[match[2]]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"{value!r}: expected a duration like 1s, 500ms, 1m or 1h")
    return total


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        }
    ),
]


def _duration_schema(low: float, high: float) -> WithJsonSchema:
    """For editors: a number of seconds in bounds, or a duration string."""
    number = {"type": "number", "minimum": low, "maximum": high}
    return WithJsonSchema({"anyOf": [number, {"type": "string", "pattern": DURATION_SYNTAX}]})


Period = Annotated[
    float, BeforeValidator(_duration), Field(ge=0.001, le=86400), _duration_schema(0.001, 86400)
]
HoldSeconds = Annotated[
    float, BeforeValidator(_duration), Field(ge=0, le=300), _duration_schema(0, 300)
]
AuthTimeout = Annotated[
    float, BeforeValidator(_duration), Field(ge=0.001, le=60), _duration_schema(0.001, 60)
]
RetryAfter = Annotated[
    float, BeforeValidator(_duration), Field(ge=0, le=86400), _duration_schema(0, 86400)
]

STICKY_PATTERN = r"^(cookie|header):[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_TOKEN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# The statuses lbrec answers itself, which a page may replace.
OWN_STATUSES = frozenset({401, 403, 404, 413, 421, 429, 502, 503, 504})


class CompressSettings(_Model):
    """``compress: true`` with its defaults, or these settings (proxy/compress.py)."""

    codings: tuple[Literal["zstd", "br", "gzip"], ...] = Field(
        default=("zstd", "br", "gzip"),
        min_length=1,
        description="offered codings, the server's preference first (the client's q-values "
        "decide first)",
    )
    min_size: Size = Field(
        default=1024, description="answers with a smaller Content-Length stay as they are"
    )
    with_cookies: bool = Field(
        default=False,
        description="also compress answers that set a cookie (BREACH: off by default, "
        "docs/routes.md)",
    )


class RateLimitSettings(_Model):
    """A token bucket per client: ``requests`` per ``per`` on average, ``burst`` at once; a
    429 with Retry-After beyond it (proxy/ratelimit.py)."""

    requests: int = Field(ge=1, le=1_000_000, strict=True, description="tokens per `per`")
    per: Period = Field(default=1.0, description="the period of `requests`, e.g. 1s or 1m")
    burst: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        strict=True,
        description="bucket size (default: requests)",
    )
    by: str = Field(
        default="client_ip",
        pattern=r"^(client_ip|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$",
        description="client_ip (the address the proxy trusts) or header:NAME",
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        strict=True,
        description="requests of one client in flight at once (429 beyond)",
    )


class BasicAuthSettings(_Model):
    """HTTP Basic (RFC 7617) against an htpasswd file of bcrypt or argon2 hashes."""

    users_file: str = Field(min_length=1, description="htpasswd file (bcrypt or argon2 lines)")
    realm: str = Field(
        default="lbrec",
        min_length=1,
        max_length=128,
        pattern=r'^[^"\\\x00-\x1f\x7f]+$',
        description="shown by the browser's prompt",
    )


class ForwardAuthSettings(_Model):
    """Ask a service: a 2xx answer lets the request through, anything else is answered to the
    client as is (fails closed on an error or a timeout), like Traefik's ForwardAuth."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", description="GET with the headers")
    copy_headers: tuple[str, ...] = Field(
        default=(), description="headers of its 2xx answer copied onto the request"
    )
    timeout: AuthTimeout = Field(default=5.0, description="its own deadline; then 503")

    @field_validator("copy_headers")
    @classmethod
    def _tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(_TOKEN, name):
                raise ValueError(f"not a header name: {name!r}")
        return value


class AuthSettings(_Model):
    """Access control, in this order: allow-list (403), basic (401), forward."""

    basic: BasicAuthSettings | None = None
    allow: tuple[str, ...] | None = Field(
        default=None, description="CIDRs (IPv4, IPv6) of the clients let in; others get 403"
    )
    forward: ForwardAuthSettings | None = None

    _cidrs = field_validator("allow")(
        classmethod(lambda cls, v: v if v is None else check_cidrs(v))
    )


class MaintenanceSettings(_Model):
    """What `lbrec pause` answers: 503 with Retry-After and this page."""

    page: str | None = Field(default=None, min_length=1, description="an HTML (or text) file")
    retry_after: RetryAfter = Field(default=30.0, description="the Retry-After header, seconds")
    hold: HoldSeconds = Field(
        default=0.0,
        description="requests wait up to this long for `lbrec resume` before the 503",
    )


class RouteFeatures(_Model):
    """What the front door does for a route's requests, each off when absent."""

    compress: bool | CompressSettings | None = Field(
        default=None, description="gzip, br, zstd by Accept-Encoding, text types only"
    )
    sticky: str | None = Field(
        default=None,
        pattern=STICKY_PATTERN,
        description="affinity: cookie:NAME (set by lbrec) or header:NAME (hashed)",
    )
    rate_limit: RateLimitSettings | None = None
    max_body: Size | None = Field(default=None, description="413 beyond, e.g. 10m")
    auth: AuthSettings | None = None
    maintenance: MaintenanceSettings | None = None
    error_pages: dict[int, str] | None = Field(
        default=None, description="status -> file for lbrec's own answers (502, 503, 504...)"
    )

    @field_validator("error_pages")
    @classmethod
    def _statuses(cls, value: dict[int, str] | None) -> dict[int, str] | None:
        for status, page in (value or {}).items():
            if status not in OWN_STATUSES:
                raise ValueError(
                    f"{status}: lbrec answers only {', '.join(map(str, sorted(OWN_STATUSES)))} "
                    "itself"
                )
            if not page:
                raise ValueError(f"{status}: the file name is empty")
        return value

    @property
    def active(self) -> bool:
        """Some feature is on (a route without any costs nothing on the hot path)."""
        return any(getattr(self, name) is not None for name in RouteFeatures.model_fields)

    def features(self) -> RouteFeatures:
        """Only the feature fields (of a route or of the desired state)."""
        return RouteFeatures(**{name: getattr(self, name) for name in RouteFeatures.model_fields})

    def over(self, defaults: RouteFeatures | None) -> RouteFeatures:
        """These features, each one not set taken whole from ``defaults`` (no deep merge:
        a route's ``auth`` replaces the top-level ``auth``)."""
        mine = self.features()
        if defaults is None:
            return mine
        return RouteFeatures(
            **{
                name: value
                if (value := getattr(mine, name)) is not None
                else getattr(defaults, name)
                for name in RouteFeatures.model_fields
            }
        )


class _RouteWhere(_Model):
    """One route: requests for ``host`` (any host when None) under ``path`` go to the pool of
    ``backends`` (names of entries of ``backends``)."""

    host: str | None = None
    path: str = "/"
    backends: tuple[str, ...] = Field(min_length=1)
    strip_prefix: bool = False
    # auto: over TLS when the site has a certificate (plain HTTP redirected when redirect_http);
    # required: never served over plain HTTP (redirected, or 421 without redirect_http);
    # off: plain HTTP only.
    tls: RouteTls = "auto"

    _host = field_validator("host")(
        classmethod(lambda cls, v: v if v is None else check_host_pattern(v))
    )
    _path = field_validator("path")(classmethod(lambda cls, v: check_path_prefix(v)))

    @property
    def key(self) -> str:
        """How a route is named in logs, metrics and the status page: host + path."""
        return f"{self.host or '*'}{self.path}"


class RouteEntry(RouteFeatures, _RouteWhere):
    """One route: where (host, path, backends; first in the file) and what the front door
    does for it (:class:`RouteFeatures`, each off when absent)."""


class CertificateEntry(_Model):
    """A certificate chain and its key, PEM files (absolute paths, rendered by lbrec)."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class TlsSettings(_Model):
    """The TLS listener: SNI picks among ``certificates``; TLS 1.2 and 1.3 only."""

    listen: str
    certificates: tuple[CertificateEntry, ...] = ()
    redirect_http: bool = True
    hsts: int | None = Field(default=None, ge=0, le=2 * 365 * 86400)  # max-age, seconds
    # ACME challenges the reconciler's client answers through the proxy (relative paths are
    # relative to this file's folder): http-01/<token> holds a key authorization, served at
    # /.well-known/acme-challenge/<token> on the plain listener; tls-alpn-01/<name>.pem and
    # .key are presented to a ClientHello whose ALPN is exactly acme-tls/1 for <name>.
    acme_dir: str | None = None


class Deployment(_Model):
    """Whose pool this is: the project and the desired-state file (absolute path) a pass of
    lbrec rendered it from. ``lbrec up`` serves a pool at start only when both are its own,
    never a stale or foreign file (one committed to a repository, another folder's copy)."""

    project: str = Field(pattern=_NAME_PATTERN)
    file: str = Field(min_length=1, max_length=4096)


class BackendsConfig(_Model):
    """The whole of ``config/backends.json``."""

    version: int = SCHEMA_VERSION
    # Content hash of the desired state this file was rendered from; the proxy reports it
    # on its admin endpoint so anyone can confirm that the running pool is the desired one.
    generation: str = ""
    revision: Revision | None = None
    # Written by a pass (not part of the generation): see Deployment.
    deploy: Deployment | None = None
    # Defaults for `lbrec proxy` when --listen/--admin are not given (host:port).
    listen: str = "127.0.0.1:8080"
    admin: str = "127.0.0.1:8081"
    health: HealthSettings = HealthSettings()
    passive: PassiveSettings = PassiveSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    limits: LimitSettings = LimitSettings()
    # Forward the client's Host header unchanged (True) or send the backend's host:port.
    preserve_host: bool = True
    # Peers whose X-Forwarded-* / Forwarded headers are kept and appended to (proxies in
    # front of this one); from anyone else they are replaced. Default: nobody.
    trusted_proxies: tuple[str, ...] = ()
    # Also send an RFC 7239 Forwarded header (for=, proto=, host=).
    forwarded_header: bool = False
    backends: tuple[BackendEntry, ...] = ()
    # Many sites on one listener: without routes, one pool of every backend (as before).
    routes: tuple[RouteEntry, ...] | None = None  # None (not written) when there are none
    tls: TlsSettings | None = None
    # The front door's features for the plain pool (no routes) and the default of each route's
    # (docs/routes.md); None (not written) when none is on.
    defaults: RouteFeatures | None = None
    # The per-pool secret of `sticky:` cookies (64 hex digits), written by the reconciler only
    # when some route is sticky; without it the proxy draws one (proxy/affinity.py).
    affinity_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", repr=False)

    _check_cidrs = field_validator("trusted_proxies")(classmethod(lambda cls, v: check_cidrs(v)))

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema version {value} (this lbrec reads {SCHEMA_VERSION})"
            )
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> BackendsConfig:
        # A name may repeat: the entries are instances of one backend (its containers), each
        # with its own URL, sharing the backend's weight (see proxy.pool.instance_keys).
        seen: set[tuple[str, str]] = set()
        weights: dict[str, int] = {}
        for entry in self.backends:
            if entry.frozen is not None:  # not routed: its URL may be another's by now
                continue
            if (entry.name, entry.url) in seen:
                raise ValueError(f"duplicate backend {entry.name!r} at {entry.url}")
            seen.add((entry.name, entry.url))
            if weights.setdefault(entry.name, entry.weight) != entry.weight:
                raise ValueError(
                    f"instances of backend {entry.name!r} have different weights: the weight "
                    "is the backend's share, written the same on each of its instances"
                )
        splits: dict[str, dict[str | None, int | None]] = {}
        for entry in self.backends:
            versions = splits.setdefault(entry.name, {})
            if versions.setdefault(entry.version, entry.percent) != entry.percent:
                raise ValueError(
                    f"instances of backend {entry.name!r} version {entry.version!r} have "
                    "different percent"
                )
        routes: set[tuple[str | None, str]] = set()
        for index, route in enumerate(self.routes or ()):
            where = (route.host, route.path.rstrip("/") or "/")
            if where in routes:
                raise ValueError(f"routes[{index}]: a second route for {route.key}")
            routes.add(where)
        for name, versions in splits.items():
            shares = list(versions.values())
            if all(p is None for p in shares):
                continue
            if any(p is None for p in shares) or None in versions:
                raise ValueError(
                    f"backend {name!r}: with percent, every instance needs a version and a percent"
                )
            if sum(p for p in shares if p is not None) != 100:
                raise ValueError(
                    f"backend {name!r}: the percent of its versions add up to "
                    f"{sum(p for p in shares if p is not None)}, not 100"
                )
        return self

    @model_validator(mode="after")
    def _one_sticky_key_per_backend(self) -> BackendsConfig:
        keys: dict[str, str | None] = {}
        for entry in self.backends:
            if keys.setdefault(entry.name, entry.sticky_key) != entry.sticky_key:
                raise ValueError(
                    f"instances of backend {entry.name!r} have different sticky_key: one "
                    "rollout, one key, or a client would be moved between its versions"
                )
        return self

    @property
    def routable(self) -> tuple[BackendEntry, ...]:
        """The entries the proxy routes to: all but the frozen ones."""
        if not any(entry.frozen is not None for entry in self.backends):
            return self.backends
        return tuple(entry for entry in self.backends if entry.frozen is None)

    def to_json(self) -> str:
        """Deterministic bytes: fixed key order, 2-space indent, trailing newline."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


class ConfigError(Exception):
    """backends.json is missing, unreadable or invalid; the message names file and field."""


def format_validation_error(err: ValidationError, *, source: str) -> str:
    """``source: backends[1].weight: Input should be ... (got 5000)`` one line per error."""
    lines = []
    for item in err.errors():
        loc = ""
        for part in item["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg, shown = "unknown key", ""
        elif item["type"] == "string_pattern_mismatch" and loc.endswith(("name", "project")):
            msg = "must be a DNS label: a-z, 0-9 and '-', at most 63 characters"
        lines.append(f"{source}: {loc + ': ' if loc else ''}{msg}{shown}")
    return "\n".join(lines)


def parse_config(text: str, *, source: str = "backends.json") -> BackendsConfig:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: line {err.lineno} column {err.colno}: {err.msg}") from err
    # The original tool wrote a bare list or {"backends": [{"url":..., "weight":...}]} entries
    # without names; accept a bare list for compatibility by wrapping it.
    if isinstance(data, list):
        data = {"backends": data}
    try:
        return BackendsConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source=source)) from err


def load_config(path: Path) -> BackendsConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from err
    return parse_config(text, source=str(path))
