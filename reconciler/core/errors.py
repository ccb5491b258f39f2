"""One error hierarchy for the reconciler; only ``cli.py`` turns these into exit codes."""

from __future__ import annotations

__all__ = [
    "ApplyError",
    "DockerUnavailable",
    "LbrecError",
    "LockTimeout",
    "PortInUse",
    "SpecError",
    "UsageError",
]


class LbrecError(Exception):
    """An error a user can act on: a one-line message and an optional hint."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SpecError(LbrecError):
    """desired-state.yaml (or a CLI argument meant for it) is malformed or invalid."""

    exit_code = 2


class UsageError(LbrecError):
    """The command line asks for something impossible (e.g. remove an unknown backend)."""

    exit_code = 2


class PortInUse(UsageError):
    """A port to publish is held by a process that is not one of this project's containers."""


class DockerUnavailable(LbrecError):
    """No Docker engine answers, or Compose v2 is missing."""

    exit_code = 3


class LockTimeout(LbrecError):
    """Another lbrec command held the lock for longer than --lock-timeout."""

    exit_code = 4


class ApplyError(LbrecError):
    """Docker failed while converging (build, start, health); names the backend."""

    exit_code = 1

    def __init__(
        self, message: str, *, backend: str | None = None, detail: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.backend = backend
        self.detail = detail
