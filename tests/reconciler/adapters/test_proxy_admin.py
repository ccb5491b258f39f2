"""Issue 20, finding 3: the admin token goes to the reconciler's own proxy and nowhere else."""

from __future__ import annotations

import json

import pytest

from lbrec.reconciler.adapters.proxy_admin import (
    admin_target,
    pool_document,
    wait_drained,
)

from ..local_http import answering, redirecting

TOKEN = {"LBREC_ADMIN_TOKEN": "s3cret-admin-token"}
DRAINED = json.dumps({"generation": "g1", "backends": []}).encode()


def test_a_redirect_from_the_admin_address_is_not_followed_with_the_token() -> None:
    """A commit's `admin:` (or whatever listens there) answering 307 to a thief: urllib
    followed it and sent the Authorization header along, and took the thief's "drained"."""
    with (
        answering(200, DRAINED, (("Content-Type", "application/json"),)) as thief,
        redirecting(f"{thief.url}/-/pool", 307) as admin,
    ):
        document = pool_document(f"127.0.0.1:{admin.port}", timeout=2.0, env=TOKEN)
        assert document is None
        assert [seen.header("Authorization") for seen in admin.seen] == [
            "Bearer s3cret-admin-token"
        ]
        assert thief.seen == []


def test_the_token_reaches_a_loopback_proxy() -> None:
    with answering(200, DRAINED) as admin:
        assert pool_document(f"127.0.0.1:{admin.port}", timeout=2.0, env=TOKEN) == {
            "generation": "g1",
            "backends": [],
        }
        assert admin.seen[0].header("Authorization") == "Bearer s3cret-admin-token"
        assert wait_drained(f"127.0.0.1:{admin.port}", ["http://x"], timeout=1.0) == 0


@pytest.mark.parametrize(
    ("admin", "target"),
    [
        ("127.0.0.1:8081", "127.0.0.1:8081"),
        ("127.0.0.9:8081", "127.0.0.9:8081"),
        ("[::1]:8081", "[::1]:8081"),
        ("0.0.0.0:8081", "127.0.0.1:8081"),
        ("[::]:8081", "[::1]:8081"),
        ("localhost:8081", "127.0.0.1:8081"),
        # a name could resolve anywhere; 198.51.100.7 (TEST-NET-2) is no address of this host
        ("admin.attacker.example:8081", None),
        ("198.51.100.7:8081", None),
    ],
)
def test_admin_target_is_this_host_only(admin: str, target: str | None) -> None:
    assert admin_target(admin) == target


def test_no_request_leaves_for_an_address_of_another_host() -> None:
    # nothing to connect to: admin_target refuses before any socket is opened
    assert pool_document("198.51.100.7:8081", timeout=0.2, env=TOKEN) is None
