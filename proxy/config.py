"""The schema of ``config/backends.json``: the only input of the proxy.

This module is the single home of that file's format. The reconciler renders the file by
building these models (never dicts), and the proxy loads it with :func:`load_config`, so the
writer cannot drift from the reader. It imports no aiohttp, so the reconciler can import it.
Its parts by role, each re-exported here (``from proxy.config import X`` names them all):
routes and the front door's features, shared with desired-state.yaml (``route_schema.py``),
HOST:PORT and CIDRs (``addresses.py``), durations and sizes (``units.py``); the pool, its
settings, TLS and loading are below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from .addresses import check_cidrs, parse_hostport, split_hostport
from .route_schema import (
    STICKY_PATTERN,
    AuthSettings,
    BasicAuthSettings,
    CompressSettings,
    ForwardAuthSettings,
    MaintenanceSettings,
    RateLimitSettings,
    RouteEntry,
    RouteFeatures,
    RouteTls,
    StrictModel,
    check_host_pattern,
    check_path_prefix,
)
from .units import parse_size

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
    "RouteTls",
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


class HealthSettings(StrictModel):
    """Active health check: GET ``path`` every ``interval`` seconds, ``timeout`` per probe."""

    path: str = Field(default="/health", pattern=r"^/")
    interval: PositiveSeconds = 2.0
    timeout: PositiveSeconds = 1.0
    rise: int = Field(default=2, ge=1, le=100)
    fall: int = Field(default=3, ge=1, le=100)
    # A backend that appears at (re)load starts as "checking"; when True it gets no traffic
    # until ``rise`` probes succeed. Backends present at the first load start up.
    wait_healthy_on_add: bool = True


class PassiveSettings(StrictModel):
    """Outlier detection: ``max_fails`` consecutive errors eject a backend for ``cooldown`` s."""

    max_fails: int = Field(default=3, ge=0, le=1000)  # 0 disables passive checks
    cooldown: PositiveSeconds = 10.0


class TimeoutSettings(StrictModel):
    connect: PositiveSeconds = 2.0
    read: PositiveSeconds = 30.0
    idle: PositiveSeconds = 60.0
    # A request head (request line and headers) must arrive whole within this (slowloris).
    header: PositiveSeconds = 10.0


class LimitSettings(StrictModel):
    """Request limits enforced by the proxy: 431 above ``max_header_bytes``, 413 above
    ``max_body_bytes`` (request line + headers, and decoded body, respectively)."""

    max_header_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    max_body_bytes: int = Field(default=10 * 1024**3, ge=0)  # 0 disables the body limit
    # Client connections held at once; past it a new one gets 503 and is closed.
    max_connections: int = Field(default=10000, ge=1, le=1_000_000)


class Revision(StrictModel):
    """Where the desired state came from (a git commit under GitOps sync), for reporting."""

    commit: str | None = None
    author: str | None = None
    message: str | None = None
    time: str | None = None
    source: str | None = None


class BackendEntry(StrictModel):
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
        pattern=STICKY_PATTERN,
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


class CertificateEntry(StrictModel):
    """A certificate chain and its key, PEM files (absolute paths, rendered by lbrec)."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class TlsSettings(StrictModel):
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


class Deployment(StrictModel):
    """Whose pool this is: the project and the desired-state file (absolute path) a pass of
    lbrec rendered it from. ``lbrec up`` serves a pool at start only when both are its own,
    never a stale or foreign file (one committed to a repository, another folder's copy)."""

    project: str = Field(pattern=_NAME_PATTERN)
    file: str = Field(min_length=1, max_length=4096)


class BackendsConfig(StrictModel):
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
