"""PURE. The operator's policy: what a commit may change (``lbrec sync --policy FILE``).

Under GitOps the desired-state file is written by whoever can push to the branch; the policy is
written by the operator of the host, lives outside the repository, and bounds what such a file
may ask for, like an Argo CD AppProject bounds its applications. A commit outside the policy is
refused before anything runs: nothing is built, pulled, written or started, and the last good
commit keeps serving. Every refusal names the field, the value and the rule.

:func:`check` is pure: the edge (runtime/sync.py) reads the policy file and the Dockerfiles the
commit would build, and passes their text in. docs/security.md explains each rule.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...proxy.config import LimitSettings, check_cidrs, format_validation_error, split_hostport
from .errors import PolicyError, SpecError
from .spec import DesiredState

__all__ = [
    "DEFAULT_POLICY",
    "Policy",
    "PolicyError",
    "Violation",
    "check",
    "load_policy",
    "parse_policy",
    "syntax_directive",
]

# HOST:PORT patterns: HOST is an address, a name, or * (any); PORT a number, a range or *.
_PATTERN = re.compile(
    r"^(?P<host>\*|\[[0-9a-fA-F:]+\]|[0-9A-Za-z.\-]+):(?P<port>\*|\d{1,5}(-\d{1,5})?)$"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hostports(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        match = _PATTERN.match(item)
        if match is None:
            raise ValueError(f"{item!r}: expected HOST:PORT, HOST:LOW-HIGH, *:PORT or HOST:*")
        port = match["port"]
        if port != "*":
            low, _, high = port.partition("-")
            if not 1 <= int(low) <= int(high or low) <= 65535:
                raise ValueError(f"{item!r}: ports are 1-65535, low before high")
    return value


class Policy(_Model):
    """The operator's bounds on a commit's desired state. The defaults suit a repository that
    many people can push to: any image may run as a backend (that is what a commit is for),
    but nothing that reaches the host itself (base images, the lb's mode and admin address,
    what the proxy trusts, where backends are published) moves without the operator's word."""

    images: tuple[str, ...] = Field(
        default=("*",),
        description="a backend's image: must match one of these (fnmatch patterns, e.g. "
        "'registry.example.com/team/*'); '*' allows any",
    )
    builds: bool = Field(
        default=True,
        description="backends with build: (a folder of the deploy folder, the operator's)",
    )
    dockerfile_syntax: bool = Field(
        default=False,
        description="a built Dockerfile may start with a '# syntax=' line (a BuildKit frontend "
        "image, which runs at build time) and build args may be BUILDKIT_*",
    )
    base_images: tuple[str, ...] = Field(
        default=(),
        description="values the file's base_image may take (exact); none by default: the "
        "operator's $LBREC_BASE_IMAGE is used",
    )
    engines: tuple[Literal["compose", "swarm"], ...] = ("compose", "swarm")
    proxy_modes: tuple[Literal["host", "container"], ...] = Field(
        default=("host",), description="proxy.mode values a commit may choose"
    )
    listen: tuple[str, ...] = Field(default=("*:*",), description="HOST:PORT patterns")
    # Loopback and below the ephemeral range, where Docker publishes the backends a commit runs:
    # a commit cannot point the reconciler (and its admin token) at a container of its own.
    admin: tuple[str, ...] = Field(
        default=("127.0.0.1:1024-32767", "[::1]:1024-32767"), description="HOST:PORT patterns"
    )
    publish_hosts: tuple[str, ...] = Field(
        default=("127.0.0.1", "[::1]"),
        description="publish_host values (backends published elsewhere bypass the proxy)",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="CIDRs that a commit's proxy.trusted_proxies must lie within (a trusted "
        "proxy's X-Forwarded-For is believed); none by default",
    )
    limits: dict[str, int] = Field(
        default_factory=dict,
        description="ceilings of proxy.limits, e.g. {max_body_bytes: 104857600}",
    )
    notify_hosts: tuple[str, ...] = Field(
        default=(),
        description="hosts a commit's notify.url may name (fnmatch); none by default: the "
        "operator's --notify receiver is told of refusals",
    )
    registries: tuple[str, ...] = Field(
        default=("*",), description="registry values (engine: swarm pushes built images there)"
    )

    _check_hostports = field_validator("listen", "admin")(classmethod(lambda cls, v: _hostports(v)))

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_cidrs(value)  # the proxy's own rule, and its message

    @field_validator("limits")
    @classmethod
    def _limits(cls, value: dict[str, int]) -> dict[str, int]:
        known = set(LimitSettings.model_fields)
        for key in value:
            if key not in known:
                raise ValueError(f"{key!r}: not a proxy limit (one of {', '.join(sorted(known))})")
        return value


DEFAULT_POLICY = Policy()
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Violation:
    """One thing a commit asks for that the policy does not allow."""

    field: str  # where in the desired-state file, e.g. backends[1].image
    value: str
    rule: str  # the policy's key, e.g. images

    def __str__(self) -> str:
        return f"{self.field}: {self.value!r} is not allowed by the policy's {self.rule!r}"


def _hostport_allowed(value: str, patterns: tuple[str, ...]) -> bool:
    try:
        host, number = split_hostport(value)
    except ValueError:
        return False
    host = f"[{host}]" if ":" in host else host  # as the policy writes it
    for pattern in patterns:
        match = _PATTERN.match(pattern)
        assert match is not None  # validated
        if match["host"] not in ("*", host):
            continue
        if match["port"] == "*":
            return True
        low, _, high = match["port"].partition("-")
        if int(low) <= number <= int(high or low):
            return True
    return False


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def syntax_directive(dockerfile: str) -> str | None:
    """The ``# syntax=`` parser directive of a Dockerfile's text, if it has one (directives
    are comment lines of the form ``# key=value`` before anything else)."""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        directive = re.match(r"^#\s*([A-Za-z]+)\s*=\s*(.*)$", stripped)
        if directive is None:
            return None  # the first instruction or comment ends the directives
        if directive[1].lower() == "syntax":
            return directive[2].strip()
    return None


def check(
    desired: DesiredState, policy: Policy, *, dockerfiles: Mapping[str, str] | None = None
) -> list[Violation]:
    """Everything in ``desired`` that ``policy`` does not allow; ``dockerfiles`` maps a built
    backend's name to its Dockerfile's text (read by the edge, from the deploy folder)."""
    return [
        *_host_rules(desired, policy),
        *_proxy_rules(desired, policy),
        *_backend_rules(desired, policy, dockerfiles or {}),
    ]


def _host_rules(desired: DesiredState, policy: Policy) -> Iterator[Violation]:
    """What reaches the host itself: engine, mode, listeners, publishing, base image."""
    if desired.engine not in policy.engines:
        yield Violation("engine", desired.engine, "engines")
    if desired.proxy.mode not in policy.proxy_modes:
        yield Violation("proxy.mode", desired.proxy.mode, "proxy_modes")
    if not _hostport_allowed(desired.listen, policy.listen):
        yield Violation("listen", desired.listen, "listen")
    if not _hostport_allowed(desired.admin, policy.admin):
        yield Violation("admin", desired.admin, "admin")
    if desired.publish_host not in policy.publish_hosts:
        yield Violation("publish_host", desired.publish_host, "publish_hosts")
    if desired.base_image is not None and desired.base_image not in policy.base_images:
        yield Violation("base_image", desired.base_image, "base_images")
    if desired.registry is not None and not _matches(desired.registry, policy.registries):
        yield Violation("registry", desired.registry, "registries")
    notify = desired.notify
    if notify is not None and not _matches(_url_host(notify.url), policy.notify_hosts):
        yield Violation("notify.url", notify.url, "notify_hosts")


def _proxy_rules(desired: DesiredState, policy: Policy) -> Iterator[Violation]:
    """What the proxy believes (trusted proxies) and how much it accepts (limits)."""
    allowed = [ipaddress.ip_network(c, strict=False) for c in policy.trusted_proxies]
    for index, cidr in enumerate(desired.proxy.trusted_proxies):
        network = ipaddress.ip_network(cidr, strict=False)
        if not any(_within(network, outer) for outer in allowed):
            yield Violation(f"proxy.trusted_proxies[{index}]", cidr, "trusted_proxies")
    for key, ceiling in policy.limits.items():
        value = getattr(desired.proxy.limits, key)
        unlimited = key == "max_body_bytes" and value == 0
        if unlimited or value > ceiling:
            yield Violation(f"proxy.limits.{key}", str(value), "limits")


def _within(inner: _Network, outer: _Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def _backend_rules(
    desired: DesiredState, policy: Policy, dockerfiles: Mapping[str, str]
) -> Iterator[Violation]:
    """Images a commit runs, and how the operator's build contexts are built."""
    for index, backend in enumerate(desired.backends):
        where = f"backends[{index}]"
        if backend.image is not None and not _matches(backend.image, policy.images):
            yield Violation(f"{where}.image", backend.image, "images")
        if backend.build is None:
            continue
        if not policy.builds:
            yield Violation(f"{where}.build", backend.build.context, "builds")
            continue
        if policy.dockerfile_syntax:
            continue
        for arg in backend.build.args:
            if arg.upper().startswith("BUILDKIT_"):
                yield Violation(f"{where}.build.args.{arg}", arg, "dockerfile_syntax")
        if (frontend := syntax_directive(dockerfiles.get(backend.name, ""))) is not None:
            yield Violation(
                f"{where}.build.dockerfile", f"# syntax={frontend}", "dockerfile_syntax"
            )


def _url_host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    authority = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if authority.startswith("["):
        return authority.split("]", 1)[0] + "]"
    return authority.split(":", 1)[0]


def parse_policy(text: str, *, source: str) -> Policy:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: malformed YAML: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the policy must be a mapping, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source=source)) from err


def load_policy(path: Path) -> Policy:
    """The operator's policy file (a SpecError names the file and the field when it is bad)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"--policy {path}: cannot read: {err.strerror or err}") from err
    return parse_policy(text, source=str(path))
