"""Every error class says whether a retry may succeed; one that does not say is refused."""

from __future__ import annotations

import pytest

from lbrec.reconciler.adapters.git import GitError
from lbrec.reconciler.core.errors import (
    ApplyError,
    DockerUnavailable,
    LbrecError,
    LockTimeout,
    PortInUse,
    SpecError,
    UsageError,
)
from lbrec.reconciler.core.schedule import is_permanent


def test_invalid_input_is_permanent_everything_else_is_retried() -> None:
    permanent = [SpecError("x"), UsageError("x")]
    transient = [PortInUse("x"), DockerUnavailable("x"), LockTimeout("x"), ApplyError("x")]
    transient.append(GitError("x"))
    assert all(is_permanent(e) for e in permanent)
    assert not any(is_permanent(e) for e in transient)
    assert not is_permanent(RuntimeError("a bug"))  # retried with backoff, logged as crashed


def test_a_new_error_class_must_say_whether_it_is_transient() -> None:
    with pytest.raises(TypeError, match="say whether it is transient"):

        class Forgetful(LbrecError):
            """No ``transient``: it would otherwise count as one or the other silently."""

    class Explicit(SpecError):
        transient = True

    assert not is_permanent(Explicit("x"))
