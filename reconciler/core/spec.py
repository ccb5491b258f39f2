"""PURE. The schema of ``desired-state.yaml``: the single source of truth for the user's file.

Validation of an already-parsed document is pure; :func:`load_spec` and :func:`parse_spec`
add YAML parsing with line/column positions in the error messages. The whole document and its
top-level sections are here; its larger parts beside it, each re-exported here: a backend
and its rollout (``spec_backend.py``), the ``tls:`` section (``spec_tls.py``), and the field
types they share (``spec_fields.py``). `lbrec schema` is generated from them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

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
from .engines.auto import engine_rules
from .errors import SpecError
from .spec_backend import (
    AnalysisSpec,
    BackendHealthSpec,
    BackendSpec,
    BuildSpec,
    RolloutSpec,
    parse_backend_arg,
)
from .spec_fields import (
    DNS_LABEL,
    HOSTPORT,
    SCHEMA_HOST,
    SCHEMA_HOSTPORT,
    Seconds,
    SpecModel,
    check_hostport,
)
from .spec_tls import AcmeSpec, CertificateSpec, TlsSpec

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


class HealthSpec(HealthSettings):
    """Active health check of the proxy and of the containers (same path)."""


NotifyEvent = Literal["deployed", "failed", "rolled_back", "repaired", "deferred", "preempted"]


class NotifySpec(SpecModel):
    """A webhook told of every pass that deployed something, failed, or rolled back."""

    url: str = Field(
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="POSTed a JSON document (time, command, outcome, revision, recap, changes)",
    )
    events: tuple[NotifyEvent, ...] = Field(
        default=("deployed", "failed", "rolled_back"), description="which outcomes are sent"
    )
    timeout: Seconds = Field(default=5.0, description="per delivery; a failure is only logged")


class ProxySpec(SpecModel):
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

    project: str = Field(default="lbrec", pattern=DNS_LABEL, description="Compose project name")
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
        json_schema_extra=SCHEMA_HOSTPORT,
    )
    admin: str = Field(
        default="127.0.0.1:8081",
        description="The proxy's admin listener (HOST:PORT)",
        json_schema_extra=SCHEMA_HOSTPORT,
    )
    publish_host: str = Field(
        default="127.0.0.1",
        description="Host address backend ports are published on",
        json_schema_extra=SCHEMA_HOST,
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
        classmethod(lambda cls, v: check_hostport(v))
    )

    @field_validator("publish_host")
    @classmethod
    def _publish_host(cls, value: str) -> str:
        if not HOSTPORT.match(f"{value}:1"):
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


def schema_text() -> str:
    """The JSON Schema of the file (``lbrec schema``, and the file ``lbrec init`` writes)."""
    return json.dumps(DesiredState.model_json_schema(), indent=2) + "\n"
