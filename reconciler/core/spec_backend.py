"""PURE. A backend of desired-state.yaml: its image or build, its own health path, and how it
is rolled out (rolling batches, or a canary judged on the proxy's counters); and
``NAME:PORT:WEIGHT`` as the command line writes one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ...proxy.config import format_validation_error
from ...proxy.route_schema import STICKY_PATTERN
from .errors import SpecError
from .spec_fields import DNS_LABEL, Port, Seconds, SpecModel

if TYPE_CHECKING:
    from .spec import DesiredState

__all__ = [
    "AnalysisSpec",
    "BackendHealthSpec",
    "BackendSpec",
    "BuildSpec",
    "RolloutSpec",
    "parse_backend_arg",
]

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Set on every backend container by render.py; a user value would break the port mapping or
# the healthcheck.
RESERVED_ENV = frozenset({"BACKEND_NAME", "PORT", "HEALTH_PATH", "HEALTH_TIMEOUT"})


class BuildSpec(SpecModel):
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


class BackendHealthSpec(SpecModel):
    """A backend's own health endpoint, when it is not the top-level ``health.path``."""

    path: str | None = Field(default=None, pattern=r"^/", description="GET this; 200 is up")


class AnalysisSpec(SpecModel):
    """How a canary step is judged, on the new version's own requests (core/canary.py)."""

    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="share of 5xx answers and failed exchanges"
    )
    max_p99: Seconds | None = Field(default=None, description="p99 first-byte latency")
    min_requests: int = Field(
        default=50, ge=1, strict=True, description="a step with fewer is extended, not passed"
    )


class RolloutSpec(SpecModel):
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
        pattern=STICKY_PATTERN,
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


class BackendSpec(SpecModel):
    """One backend: NAME:PORT:WEIGHT on the command line; optionally any image or build."""

    name: str = Field(pattern=DNS_LABEL, description="DNS label: a-z, 0-9 and '-', at most 63")
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
            "propertyNames": {"pattern": ENV_NAME, "not": {"enum": [*sorted(RESERVED_ENV)]}}
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
            if not re.match(ENV_NAME, key):
                raise ValueError(f"environment variable name {key!r} is not valid")
            if key in RESERVED_ENV:
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
