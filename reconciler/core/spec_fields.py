"""PURE. The field types and checks desired-state.yaml's models share (core/spec.py and the
modules of its parts): the strict model base, ports, durations, host names and HOST:PORT as
the schema and editors check them.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict

from ...proxy.config import split_hostport
from .durations import DURATION_PATTERN, parse_duration

__all__ = [
    "DNS_LABEL",
    "HOST",
    "HOSTPORT",
    "SCHEMA_HOST",
    "SCHEMA_HOSTPORT",
    "Port",
    "Seconds",
    "SpecModel",
    "check_hostport",
    "seconds",
]

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HOST = r"([0-9A-Za-z.\-]+|\[[0-9a-fA-F:]+\])"  # a name, an IPv4 or a bracketed IPv6 address
HOSTPORT = re.compile(rf"^{HOST}:(?P<port>[0-9]{{1,5}})$")
# The same rules for editors (JSON Schema has no int() of a capture: the port range spelled out)
PORT_1_65535 = (
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
SCHEMA_HOSTPORT: JsonDict = {"pattern": rf"^{HOST}:{PORT_1_65535}$"}
SCHEMA_HOST: JsonDict = {"pattern": rf"^{HOST}$"}

Port = Annotated[int, Field(ge=1, le=65535, strict=True)]


def seconds(value: object) -> object:
    """A duration written as 3, 3.5, "3s", "500ms" or "1m30s" (the flags' syntax)."""
    if isinstance(value, str):
        return parse_duration(value)
    return value


# In the JSON Schema: a number of seconds, or a duration string ("30s", "1m30s").
Seconds = Annotated[
    float,
    BeforeValidator(seconds),
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


class SpecModel(BaseModel):
    """Every model of desired-state.yaml: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_hostport(value: str) -> str:
    """The schema's pattern (what editors check too), then the one parser's port."""
    try:
        port = split_hostport(value)[1] if HOSTPORT.match(value) else 0
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError("must be HOST:PORT like 127.0.0.1:8080")  # the value is appended
    return value
