"""A route and what the front door does for it: the schema shared by both files.

The same models stand in desired-state.yaml (per route, and at its top level as the default
of every route and of the plain pool) and in backends.json (per route, and under
``defaults``); ``config.py`` re-exports them, so ``from proxy.config import RouteEntry`` is
the way to name them. Files are named relative to the desired-state file there, relative to
backends.json's folder here (render_pool rewrites).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from .addresses import check_cidrs
from .units import DURATION_SYNTAX, SIZE_PATTERN, parse_duration, parse_size

__all__ = [
    "OWN_STATUSES",
    "STICKY_PATTERN",
    "AuthSettings",
    "BasicAuthSettings",
    "CompressSettings",
    "ForwardAuthSettings",
    "MaintenanceSettings",
    "RateLimitSettings",
    "RouteEntry",
    "RouteFeatures",
    "RouteTls",
    "StrictModel",
    "check_host_pattern",
    "check_path_prefix",
]


class StrictModel(BaseModel):
    """The base of every model of backends.json: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A route's host: a name (any port), a name with a port, or *.domain (exactly one more label,
# as a wildcard certificate covers). Lower case; no IP literal need be special-cased.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_PATTERN = rf"^(\*\.)?{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?$"
# A path prefix: absolute, no query or fragment, no dot segments, no whitespace.
PATH_PREFIX_PATTERN = r"^/([^\s?#]*)$"


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


def _duration(value: object) -> object:
    """A route's durations: free order (proxy/units.py); a number passes to the field."""
    return parse_duration(value, in_order=False) if isinstance(value, str) else value


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


class CompressSettings(StrictModel):
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


class RateLimitSettings(StrictModel):
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


class BasicAuthSettings(StrictModel):
    """HTTP Basic (RFC 7617) against an htpasswd file of bcrypt or argon2 hashes."""

    users_file: str = Field(min_length=1, description="htpasswd file (bcrypt or argon2 lines)")
    realm: str = Field(
        default="lbrec",
        min_length=1,
        max_length=128,
        pattern=r'^[^"\\\x00-\x1f\x7f]+$',
        description="shown by the browser's prompt",
    )


class ForwardAuthSettings(StrictModel):
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


class AuthSettings(StrictModel):
    """Access control, in this order: allow-list (403), basic (401), forward."""

    basic: BasicAuthSettings | None = None
    allow: tuple[str, ...] | None = Field(
        default=None, description="CIDRs (IPv4, IPv6) of the clients let in; others get 403"
    )
    forward: ForwardAuthSettings | None = None

    _cidrs = field_validator("allow")(
        classmethod(lambda cls, v: v if v is None else check_cidrs(v))
    )


class MaintenanceSettings(StrictModel):
    """What `lbrec pause` answers: 503 with Retry-After and this page."""

    page: str | None = Field(default=None, min_length=1, description="an HTML (or text) file")
    retry_after: RetryAfter = Field(default=30.0, description="the Retry-After header, seconds")
    hold: HoldSeconds = Field(
        default=0.0,
        description="requests wait up to this long for `lbrec resume` before the 503",
    )


class RouteFeatures(StrictModel):
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


class _RouteWhere(StrictModel):
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
