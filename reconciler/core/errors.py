"""PURE. One error hierarchy for the reconciler; ``commands/cli.py`` turns them into exit codes
(the long-running commands log them and go on).

Every class says whether it is ``transient`` (a later pass may succeed with the same input: the
loops retry it with backoff) or not (invalid input: the loops wait for the input to change).
A new class that does not say is refused at import, so none is silently retried.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ApplyError",
    "DockerUnavailable",
    "LbrecError",
    "LockTimeout",
    "PolicyError",
    "PortInUse",
    "SpecError",
    "StorageError",
    "UsageError",
]


class LbrecError(Exception):
    """An error a user can act on: a one-line message and an optional hint."""

    exit_code = 2
    transient: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "transient" not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: say whether it is transient (errors.py)")

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SpecError(LbrecError):
    """desired-state.yaml (or a CLI argument meant for it) is malformed or invalid."""

    exit_code = 2
    transient = False


class PolicyError(SpecError):
    """A commit asks for what the operator's policy does not allow (core/policy.py): refused
    before anything runs; a later commit may fix it."""

    exit_code = 6
    transient = False

    def __init__(self, message: str, *, hint: str | None = None, rules: tuple[str, ...] = ()):
        super().__init__(message, hint=hint)
        self.rules = rules  # the policy keys broken, for the metric's label


class UsageError(LbrecError):
    """The command line asks for something impossible (e.g. remove an unknown backend)."""

    exit_code = 2
    transient = False


class PortInUse(UsageError):
    """A port to publish is held by a process that is not one of this project's containers."""

    transient = True  # the other process may let go of it


class DockerUnavailable(LbrecError):
    """No Docker engine answers, or Compose v2 is missing."""

    exit_code = 3
    transient = True


class LockTimeout(LbrecError):
    """Another lbrec command held the lock for longer than --lock-timeout."""

    exit_code = 4
    transient = True


class StorageError(LbrecError):
    """A file lbrec writes could not be written (no space left on the device, a read-only
    file system): the message names the file; nothing was half-written."""

    exit_code = 7
    transient = True  # space may be freed


class ApplyError(LbrecError):
    """Docker failed while converging (build, start, health); names the backend."""

    exit_code = 1
    transient = True

    def __init__(
        self, message: str, *, backend: str | None = None, detail: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.backend = backend
        self.detail = detail
