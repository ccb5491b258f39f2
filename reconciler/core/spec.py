"""PURE. The schema of ``desired-state.yaml``: the single source of truth for the user's file.

Validation of an already-parsed document is pure; :func:`load_spec` and :func:`parse_spec`
add YAML parsing with line/column positions in the error messages.

One module on purpose, though over 300 lines: `lbrec schema` (the editor's JSON Schema) and
docs/desired-state.md follow it field by field, and a reader finds every field's rule here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
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
from pydantic.config import JsonDict

from ...proxy.config import (
    HealthSettings,
    LimitSettings,
    PassiveSettings,
    RouteFeatures,
    RouteTls,
    TimeoutSettings,
    check_cidrs,
    check_host_pattern,
    check_path_prefix,
    format_validation_error,
    split_hostport,
)
from .defaults import DEFAULT_FILE
from .durations import DURATION_PATTERN, parse_duration
from .engines.auto import engine_rules
from .errors import SpecError

__all__ = [
    "DEFAULT_FILE",
    "AcmeSpec",
    "AnalysisSpec",
    "BackendHealthSpec",
    "BackendSpec",
    "BuildSpec",
    "CertificateSpec",
    "DesiredState",
    "HealthSpec",
    "ProxySpec",
    "RolloutSpec",
    "RouteSpec",
    "TlsSpec",
    "load_spec",
    "parse_backend_arg",
    "parse_spec",
    "schema_text",
]

_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_HOST = r"([0-9A-Za-z.\-]+|\[[0-9a-fA-F:]+\])"  # a name, an IPv4 or a bracketed IPv6 address
_HOSTPORT = re.compile(rf"^{_HOST}:(?P<port>[0-9]{{1,5}})$")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The same rules for editors (JSON Schema has no int() of a capture: the port range spelled out)
_PORT_1_65535 = (
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
_SCHEMA_HOSTPORT: JsonDict = {"pattern": rf"^{_HOST}:{_PORT_1_65535}$"}
_SCHEMA_HOST: JsonDict = {"pattern": rf"^{_HOST}$"}

Port = Annotated[int, Field(ge=1, le=65535, strict=True)]


def _seconds(value: object) -> object:
    """A duration written as 3, 3.5, "3s", "500ms" or "1m30s" (the flags' syntax)."""
    if isinstance(value, str):
        return parse_duration(value)
    return value


# In the JSON Schema: a number of seconds, or a duration string ("30s", "1m30s").
Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(ge=0, le=86400),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 86400},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]

# Set on every backend container by render.py; a user value would break the port mapping or
# the healthcheck.
_RESERVED_ENV = frozenset({"BACKEND_NAME", "PORT", "HEALTH_PATH", "HEALTH_TIMEOUT"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostport(value: str) -> str:
    """The schema's pattern (what editors check too), then the one parser's port."""
    try:
        port = split_hostport(value)[1] if _HOSTPORT.match(value) else 0
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError("must be HOST:PORT like 127.0.0.1:8080")  # the value is appended
    return value


class BuildSpec(_Model):
    """Build the backend's image from a folder of the deploy folder (Compose's `build`)."""

    context: str = Field(min_length=1, description="folder, relative to desired-state.yaml")
    dockerfile: str = Field(default="Dockerfile", min_length=1, description="inside context")
    args: dict[str, str] = Field(default_factory=dict, description="build arguments")

    @field_validator("context")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError("must be a folder inside the deploy folder")
        return value


class BackendHealthSpec(_Model):
    """A backend's own health endpoint, when it is not the top-level ``health.path``."""

    path: str | None = Field(default=None, pattern=r"^/", description="GET this; 200 is up")


class AnalysisSpec(_Model):
    """How a canary step is judged, on the new version's own requests (core/canary.py)."""

    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="share of 5xx answers and failed exchanges"
    )
    max_p99: Seconds | None = Field(default=None, description="p99 first-byte latency")
    min_requests: int = Field(
        default=50, ge=1, strict=True, description="a step with fewer is extended, not passed"
    )


class RolloutSpec(_Model):
    """How a changed backend is replaced: start first, then drain (Nomad's `update`); or as a
    canary, in traffic steps judged by the proxy's own counters."""

    strategy: Literal["rolling", "canary"] = Field(
        default="rolling", description="rolling: batches of max_parallel; canary: steps"
    )
    steps: tuple[int | Literal["pause"], ...] = Field(
        default=(5, 25, 50, 100),
        description="canary: % of the traffic on the new version; `pause` waits for "
        "`lbrec rollout promote`",
    )
    interval: Seconds = Field(default=30.0, description="canary: how long each step lasts")
    analysis: AnalysisSpec = AnalysisSpec()
    sticky: str | None = Field(
        default=None,
        pattern=r"^(cookie|header):[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="canary: keep a client on one version by this cookie or header, e.g. "
        "cookie:session or header:X-User",
    )

    max_parallel: int = Field(
        default=1, ge=1, le=100, strict=True, description="instances replaced at once"
    )
    min_healthy_time: Seconds = Field(
        default=3.0, description="a new instance must answer healthy this long before routing"
    )
    healthy_deadline: Seconds = Field(
        default=60.0, description="else it is removed and the old instances keep serving"
    )
    drain_timeout: Seconds = Field(
        default=30.0, description="in-flight requests and streams of a leaving instance get this"
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[int | str, ...]) -> tuple[int | str, ...]:
        if not value or value[-1] != 100:
            raise ValueError("must end with 100 (the new version takes all the traffic)")
        numbers = [p for p in value if isinstance(p, int)]
        if any(not 1 <= p <= 100 for p in numbers) or numbers != sorted(set(numbers)):
            raise ValueError("must be increasing percentages from 1 to 100, e.g. [5, 25, 50, 100]")
        if value[0] == "pause":
            raise ValueError("a pause comes after a step, e.g. [10, pause, 100]")
        return value

    @model_validator(mode="after")
    def _deadline(self) -> RolloutSpec:
        if self.healthy_deadline <= self.min_healthy_time:
            raise ValueError(
                f"healthy_deadline: {self.healthy_deadline:g}s must be longer than "
                f"min_healthy_time {self.min_healthy_time:g}s"
            )
        return self


class BackendSpec(_Model):
    """One backend: NAME:PORT:WEIGHT on the command line; optionally any image or build."""

    name: str = Field(pattern=_DNS_LABEL, description="DNS label: a-z, 0-9 and '-', at most 63")
    port: Port = Field(
        description="Port the application listens on inside its container (also $PORT); "
        "each instance is published on publish_host at a host port Docker allocates"
    )
    weight: int = Field(
        default=1, ge=0, le=1000, strict=True, description="Share of traffic; 0 drains"
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra container environment",
        json_schema_extra={
            "propertyNames": {"pattern": _ENV_NAME, "not": {"enum": [*sorted(_RESERVED_ENV)]}}
        },
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
        description="Run this image (pulled if absent) instead of the demo Dockerfile.backend",
    )
    build: BuildSpec | None = Field(default=None, description="Build the image from a folder")
    command: tuple[str, ...] | None = Field(
        default=None, description="Override the image's command (exec form)"
    )
    replicas: int = Field(
        default=1, ge=1, le=100, strict=True, description="Instances; weight is their total"
    )
    health: BackendHealthSpec | None = Field(
        default=None, description="This backend's health path, if not the top-level one"
    )
    rollout: RolloutSpec | None = Field(
        default=None, description="This backend's rollout, if not the top-level one"
    )

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(_ENV_NAME, key):
                raise ValueError(f"environment variable name {key!r} is not valid")
            if key in _RESERVED_ENV:
                raise ValueError(f"{key} is set by lbrec (from name, port and health)")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError('must name a program, e.g. ["bin/server", "--port", "8000"]')
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BackendSpec:
        if self.image is not None and self.build is not None:
            raise ValueError("image and build: set one (an image to run, or a folder to build)")
        return self

    @property
    def demo(self) -> bool:
        """Built from the demo Dockerfile.backend (neither image nor build given)."""
        return self.image is None and self.build is None

    def health_path(self, desired: DesiredState) -> str:
        if self.health is not None and self.health.path is not None:
            return self.health.path
        return desired.health.path

    def rollout_of(self, desired: DesiredState) -> RolloutSpec:
        return self.rollout if self.rollout is not None else desired.rollout


class HealthSpec(HealthSettings):
    """Active health check of the proxy and of the containers (same path)."""


NotifyEvent = Literal["deployed", "failed", "rolled_back", "repaired", "deferred", "preempted"]


class NotifySpec(_Model):
    """A webhook told of every pass that deployed something, failed, or rolled back."""

    url: str = Field(
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="POSTed a JSON document (time, command, outcome, revision, recap, changes)",
    )
    events: tuple[NotifyEvent, ...] = Field(
        default=("deployed", "failed", "rolled_back"), description="which outcomes are sent"
    )
    timeout: Seconds = Field(default=5.0, description="per delivery; a failure is only logged")


class ProxySpec(_Model):
    """How the load balancer itself runs."""

    mode: Literal["host", "container"] = Field(
        default="host",
        description="host: `lbrec proxy`/`lbrec up` runs it; container: an `lb` Compose service",
    )
    passive: PassiveSettings = PassiveSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    limits: LimitSettings = LimitSettings()
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="CIDRs of proxies in front of lbrec whose X-Forwarded-* / Forwarded are "
        "kept and appended to; from anyone else they are replaced",
    )
    forwarded_header: bool = Field(
        default=False, description="also send an RFC 7239 Forwarded header to backends"
    )
    workers: Annotated[int, Field(ge=1, le=64, strict=True)] | Literal["auto"] = Field(
        default="auto",
        description="host mode: the proxy processes `lbrec up` runs on one port; auto: one "
        "per CPU core beyond the first (left to the reconciler and Docker), at least 1, at most 8",
    )

    _cidrs = field_validator("trusted_proxies")(classmethod(lambda cls, v: check_cidrs(v)))


def _long_seconds(value: object) -> object:
    """A duration that may be days (``180d``) or longer: HSTS max-age."""
    if isinstance(value, str) and value.strip().endswith("d"):
        number = value.strip()[:-1]
        if number.replace(".", "", 1).isdigit():
            return float(number) * 86400
    return _seconds(value)


class AcmeSpec(_Model):
    """Automatic certificates (RFC 8555) for every host of ``routes:`` not covered by
    ``certificates:``."""

    email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="the account's contact address"
    )
    directory: str = Field(
        default="https://acme-v02.api.letsencrypt.org/directory",
        pattern=r"^https?://\S+$",
        description="the ACME server's directory URL (Let's Encrypt by default; staging or a "
        "private CA allowed)",
    )
    ca_bundle: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file (relative to the desired-state file) to trust for a private ACME "
        "server, e.g. Pebble's",
    )
    challenge: Literal["auto", "http-01", "tls-alpn-01"] = Field(
        default="auto",
        description="how the CA checks a name is yours: http-01 on `listen` (port 80), "
        "tls-alpn-01 on `tls.listen` (port 443), or auto: http-01 first, tls-alpn-01 when "
        "`listen` is loopback only or http-01 failed (docs/tls.md)",
    )

    @model_validator(mode="after")
    def _https(self) -> AcmeSpec:
        if self.directory.startswith("http://"):
            host = self.directory[len("http://") :].split("/", 1)[0].rsplit(":", 1)[0]
            loopback = host in ("localhost", "[::1]") or host.startswith("127.")
            if not (self.ca_bundle is not None and loopback):
                raise ValueError(
                    f"directory: {self.directory!r} is not https (plain http only for a private "
                    "CA on loopback, with ca_bundle)"
                )
        return self


class CertificateSpec(_Model):
    """Your own certificate, for names ACME cannot serve (PEM files, relative to the
    desired-state file)."""

    cert: str = Field(min_length=1, description="certificate chain, leaf first (PEM)")
    key: str = Field(min_length=1, description="its private key (PEM)")


class TlsSpec(_Model):
    """The HTTPS listener: TLS 1.2 and 1.3, SNI, certificates from ACME or your own."""

    listen: str = Field(
        description="The TLS listener (HOST:PORT), e.g. 0.0.0.0:443",
        json_schema_extra=_SCHEMA_HOSTPORT,
    )
    acme: AcmeSpec | None = None
    certificates: tuple[CertificateSpec, ...] = ()
    redirect_http: bool = Field(
        default=True,
        description="http://host/x -> https://host/x (301 for GET/HEAD, 308 else) for every "
        "site with a certificate",
    )
    hsts: (
        Annotated[
            float,
            BeforeValidator(_long_seconds),
            Field(ge=0, le=2 * 365 * 86400),
            WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]}),
        ]
        | None
    ) = Field(default=None, description="Strict-Transport-Security max-age, e.g. 180d")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _check_hostport(v)))


class RouteSpec(RouteFeatures):
    """Requests for ``host`` under ``path`` go to ``backends`` (their weights inside it); and
    what the front door does for them (compress, sticky, rate_limit, max_body, auth,
    maintenance, error_pages: each off when absent, else the top-level one: docs/routes.md)."""

    host: str | None = Field(
        default=None,
        description="shop.example.com, *.example.com (one label) or with :PORT; none: any host",
    )
    path: str = Field(default="/", description="path prefix, matched segment-wise: /api/")
    backends: tuple[str, ...] = Field(min_length=1, description="names of backends")
    strip_prefix: bool = Field(default=False, description="forward the path without the prefix")
    tls: RouteTls = Field(
        default="auto",
        description="auto: HTTPS where a certificate exists; required: never plain HTTP; off: "
        "plain HTTP only (no certificate asked for)",
    )

    _host = field_validator("host")(
        classmethod(lambda cls, v: v if v is None else check_host_pattern(v))
    )
    _path = field_validator("path")(classmethod(lambda cls, v: check_path_prefix(v)))


_CONTAINER_MODE = {
    "properties": {"proxy": {"properties": {"mode": {"const": "container"}}, "required": ["mode"]}},
    "required": ["proxy"],
}
# The cross-field rules of the validators below, for editors (JSON Schema if/then).
_SCHEMA_RULES: dict[str, Any] = {
    "allOf": [
        {  # _lb_name
            "if": _CONTAINER_MODE,
            "then": {
                "properties": {
                    "backends": {"items": {"properties": {"name": {"not": {"const": "lb"}}}}}
                }
            },
        },
        {  # _container_tls: the lb container does not mount the certificates
            "if": _CONTAINER_MODE,
            "then": {"not": {"required": ["tls"]}},
        },
        {  # _swarm: the proxy runs on a manager, not in a container
            "if": {"properties": {"engine": {"const": "swarm"}}, "required": ["engine"]},
            "then": {"not": _CONTAINER_MODE},
        },
    ]
}


class DesiredState(RouteFeatures):
    """The whole of desired-state.yaml. The front door's features (compress, sticky,
    rate_limit, max_body, auth, maintenance, error_pages) at the top level serve the plain
    pool and are the default of each route that does not set its own (docs/routes.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_SCHEMA_RULES)

    project: str = Field(default="lbrec", pattern=_DNS_LABEL, description="Compose project name")
    engine: Literal["compose", "swarm"] = Field(
        default="compose",
        description="compose: containers on this engine (docker compose); swarm: one Swarm "
        "service per backend version, deployed as a stack (docs/swarm.md)",
    )
    registry: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$",
        description="engine: swarm: where images lbrec builds are pushed (host[:port][/path]); "
        "Swarm nodes pull them from there",
    )
    listen: str = Field(
        default="127.0.0.1:8080",
        description="The proxy's traffic listener (HOST:PORT)",
        json_schema_extra=_SCHEMA_HOSTPORT,
    )
    admin: str = Field(
        default="127.0.0.1:8081",
        description="The proxy's admin listener (HOST:PORT)",
        json_schema_extra=_SCHEMA_HOSTPORT,
    )
    publish_host: str = Field(
        default="127.0.0.1",
        description="Host address backend ports are published on",
        json_schema_extra=_SCHEMA_HOST,
    )
    base_image: str | None = Field(
        default=None,
        description="BASE_IMAGE build arg of Dockerfile.backend (the demo backends' image; "
        "never the lb's, whose base is the operator's $LBREC_PROXY_BASE_IMAGE or "
        "$LBREC_BASE_IMAGE); default: $LBREC_BASE_IMAGE, else the Dockerfile's own default",
    )
    health: HealthSpec = HealthSpec()
    proxy: ProxySpec = ProxySpec()
    rollout: RolloutSpec = RolloutSpec()
    notify: NotifySpec | None = None
    tls: TlsSpec | None = Field(default=None, description="HTTPS (docs/tls.md)")
    routes: tuple[RouteSpec, ...] = Field(
        default=(),
        description="many sites on one listener; none: one pool of every backend",
    )
    backends: tuple[BackendSpec, ...] = ()

    _check_listen = field_validator("listen", "admin")(
        classmethod(lambda cls, v: _check_hostport(v))
    )

    @field_validator("publish_host")
    @classmethod
    def _publish_host(cls, value: str) -> str:
        if not _HOSTPORT.match(f"{value}:1"):
            raise ValueError("must be a host address like 127.0.0.1, 0.0.0.0 or [::1]")
        return value

    @model_validator(mode="after")
    def _lb_name(self) -> DesiredState:
        if self.proxy.mode == "container":
            for index, backend in enumerate(self.backends):
                if backend.name == "lb":
                    raise ValueError(
                        f"backends[{index}].name: 'lb' is the load balancer's service name "
                        "when proxy.mode is container"
                    )
            if self.tls is not None:
                raise ValueError(
                    "tls: HTTPS is served by the proxy in host mode only (`lbrec up` or `lbrec "
                    "proxy`): the lb container of proxy.mode container does not see the "
                    "certificates under .lbrec/; remove proxy.mode: container (docs/tls.md)"
                )
        return self

    @model_validator(mode="after")
    def _engine(self) -> DesiredState:
        """What the chosen engine cannot do (core/engines/: Swarm runs no lb container and
        pulls what lbrec builds from a registry)."""
        if (refusal := engine_rules(self.engine).refusal(self)) is not None:
            raise ValueError(refusal)
        return self

    @model_validator(mode="after")
    def _unique(self) -> DesiredState:
        names: dict[str, int] = {}
        ports: dict[int, str] = {}
        for index, backend in enumerate(self.backends):
            if backend.name in names:
                raise ValueError(
                    f"backends[{index}].name: {backend.name!r} is already used by "
                    f"backends[{names[backend.name]}]"
                )
            if backend.port in ports:
                raise ValueError(
                    f"backends[{index}].port: {backend.port} is already used by "
                    f"backend {ports[backend.port]!r}"
                )
            names[backend.name] = index
            ports[backend.port] = backend.name
        listen_host, listen_port = split_hostport(self.listen)
        admin_host, admin_port = split_hostport(self.admin)
        if listen_port == admin_port and (
            listen_host == admin_host or {listen_host, admin_host} & {"0.0.0.0", "::"}
        ):
            raise ValueError(f"admin: {self.admin} overlaps listen {self.listen}: use another port")
        return self

    @model_validator(mode="after")
    def _routes(self) -> DesiredState:
        names = {b.name for b in self.backends}
        seen: dict[tuple[str | None, str], int] = {}
        for index, route in enumerate(self.routes):
            for name in route.backends:
                if name not in names:
                    raise ValueError(
                        f"routes[{index}].backends: {name!r} is not a backend (one of "
                        f"{', '.join(sorted(names)) or 'none'})"
                    )
            where = (route.host, route.path.rstrip("/") or "/")
            if where in seen:
                raise ValueError(
                    f"routes[{index}]: host {route.host or '(any)'} path {route.path} is "
                    f"already routes[{seen[where]}]"
                )
            seen[where] = index
            if route.tls == "required" and self.tls is None:
                raise ValueError(f"routes[{index}].tls: 'required' needs a `tls:` section")
        if self.tls is not None:
            tls_host, tls_port = split_hostport(self.tls.listen)
            for role, hostport in (("listen", self.listen), ("admin", self.admin)):
                host, port = split_hostport(hostport)
                if port == tls_port and (host == tls_host or {host, tls_host} & {"0.0.0.0", "::"}):
                    raise ValueError(
                        f"tls.listen: {self.tls.listen} overlaps {role} {hostport}: "
                        "use another port"
                    )
        return self

    def backend(self, name: str) -> BackendSpec | None:
        return next((b for b in self.backends if b.name == name), None)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a repeated key is an error instead of silently replacing the first
    (two `backends:` blocks would otherwise drop the first one's backends)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_spec(text: str, *, source: str = DEFAULT_FILE) -> DesiredState:
    """Parse and validate YAML text; errors name the file, the line/column or the field path."""
    try:
        data: Any = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{source}: {where}malformed YAML: {problem}") from err
    if data is None:
        # An empty file is a truncated save or an editor accident far more often than a wish
        # to remove everything (Argo CD refuses to prune to zero for the same reason).
        raise SpecError(
            f"{source}: the file is empty (a save in progress?): nothing was applied",
            hint="to remove every backend on purpose, write `backends: []`",
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: the top level must be a mapping with a 'backends' list, "
            f"got {type(data).__name__}"
        )
    try:
        desired = DesiredState.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source=source)) from err
    if "backends" not in data:
        raise SpecError(
            f"{source}: no 'backends' key (a truncated save?): nothing was applied",
            hint="to remove every backend on purpose, write `backends: []`",
        )
    return desired


def load_spec(path: Path) -> DesiredState:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SpecError(
            f"{path}: no such file", hint="create one with `lbrec init NAME:PORT:WEIGHT ...`"
        ) from err
    except OSError as err:
        raise SpecError(f"{path}: cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    return parse_spec(text, source=str(path))


def project_from_folder(folder: Path) -> str:
    """A Compose project name from a folder's name, as Compose derives its default: lower
    case, other characters as '-', at most 63; 'lbrec' when nothing usable is left."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder.resolve().name.lower()).strip("-")[:63].strip("-")
    return name or "lbrec"


def parse_backend_arg(arg: str, **fields: object) -> BackendSpec:
    """``NAME:PORT:WEIGHT`` (weight optional, default 1) into a validated BackendSpec;
    ``fields`` (image, replicas from the command line) are set too, and marked as set."""
    parts = arg.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise SpecError(f"backend {arg!r}: expected NAME:PORT:WEIGHT, e.g. backend1:9001:2")
    name, port_text = parts[0], parts[1]
    weight_text = parts[2] if len(parts) == 3 else "1"
    for field, text in (("port", port_text), ("weight", weight_text)):
        if not (text.isascii() and text.isdigit()):  # not "²" or "٣"
            raise SpecError(f"backend {arg!r}: {field} must be a whole number, got {text!r}")
    try:
        return BackendSpec.model_validate(
            {"name": name, "port": int(port_text), "weight": int(weight_text), **fields}
        )
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source=f"backend {arg!r}")) from err


def schema_text() -> str:
    """The JSON Schema of the file (``lbrec schema``, and the file ``lbrec init`` writes)."""
    return json.dumps(DesiredState.model_json_schema(), indent=2) + "\n"
