"""Forge webhooks on ``POST /-/sync``: the payloads and headers GitHub, Gitea, Forgejo, GitLab and
Standard Webhooks document, signed in the test by each documented algorithm; then one round trip
through the real handler on a real aiohttp server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import ClientSession, web

from lbrec.reconciler.core.errors import UsageError
from lbrec.reconciler.core.webhooks import (
    REPLAY_WINDOW,
    Delivery,
    DeliveryMemory,
    Outcome,
    Scheme,
    Verdict,
    WebhookSecret,
    require_admin_token,
    verify_delivery,
)
from lbrec.reconciler.runtime.webhook import sync_webhook
from tests.test_architecture import FORBIDDEN_IN_PURE, _imports

SECRET = "It's a Secret to Everybody"
NOW = 1_700_000_000.0


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _judge(
    headers: dict[str, str],
    body: bytes = b"",
    *,
    token: str = SECRET,
    branch: str = "main",
    now: float = NOW,
    memory: DeliveryMemory | None = None,
    method: str = "POST",
) -> Verdict:
    return verify_delivery(
        Delivery(method, headers, body, now=now, source="192.0.2.7"),
        secret=WebhookSecret.parse(token),
        branch=branch,
        memory=memory if memory is not None else DeliveryMemory(),
    )


# --- GitHub -----------------------------------------------------------------------------------

# docs.github.com, "Validating webhook deliveries": this secret and payload give this signature.
GITHUB_DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def _push(ref: str, **extra: object) -> bytes:
    return json.dumps(
        {
            "ref": ref,
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "repository": {"full_name": "octo-org/lb-config"},
            "pusher": {"name": "octocat"},
            **extra,
        }
    ).encode()


GITHUB_DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def _github(body: bytes, *, event: str = "push", delivery: str = GITHUB_DELIVERY) -> dict[str, str]:
    return {  # the headers of GitHub's documented example delivery
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
        "X-Hub-Signature-256": f"sha256={_hex(SECRET, body)}",
    }


def test_github_documented_example_signature() -> None:
    assert f"sha256={_hex(SECRET, b'Hello, World!')}" == GITHUB_DOC_SIGNATURE
    verdict = _judge({"X-Hub-Signature-256": GITHUB_DOC_SIGNATURE}, b"Hello, World!")
    # Not JSON: a generic signed caller, which syncs.
    assert (verdict.outcome, verdict.status, verdict.scheme) == (
        Outcome.ACCEPTED,
        202,
        Scheme.GITHUB,
    )
    assert verdict.sync


def test_github_push_to_the_branch_syncs() -> None:
    body = _push("refs/heads/main")
    verdict = _judge(_github(body), body)
    assert verdict.sync and verdict.status == 202
    assert verdict.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert verdict.reason == "sync triggered by a push to refs/heads/main"


def test_github_push_to_another_branch_is_ignored_with_the_reason() -> None:
    body = _push("refs/heads/dev")
    verdict = _judge(_github(body), body)
    assert (verdict.outcome, verdict.status) == (Outcome.IGNORED, 200)
    assert verdict.reason == "ignored: push to refs/heads/dev, following main"
    tag = _push("refs/tags/v1.0")
    assert _judge(_github(tag), tag).reason == "ignored: push to refs/tags/v1.0, following main"


def test_branch_given_as_a_full_ref() -> None:
    body = _push("refs/heads/release")
    assert _judge(_github(body), body, branch="refs/heads/release").sync


def test_github_ping_is_answered_without_a_sync() -> None:
    body = json.dumps({"zen": "Non-blocking is better than blocking.", "hook_id": 30}).encode()
    verdict = _judge(_github(body, event="ping"), body)
    assert (verdict.outcome, verdict.status) == (Outcome.IGNORED, 200)
    assert verdict.reason.startswith("ignored: ping")


def test_github_form_encoded_payload_is_filtered_too() -> None:
    # GitHub's other content type: the JSON in a `payload` form field, signed as sent.
    for ref, sync in (("refs/heads/dev", False), ("refs/heads/main", True)):
        body = urlencode({"payload": _push(ref).decode()}).encode()
        headers = _github(body) | {"Content-Type": "application/x-www-form-urlencoded"}
        assert _judge(headers, body).sync is sync


def test_a_deleted_branch_does_not_sync() -> None:
    body = _push("refs/heads/main", deleted=True, after="0" * 40)
    verdict = _judge(_github(body), body)
    assert verdict.outcome is Outcome.IGNORED and "deleted" in verdict.reason


@pytest.mark.parametrize(
    ("signature", "status", "reason"),
    [
        ("sha256=" + "0" * 64, 401, "X-Hub-Signature-256 does not match the body"),
        ("sha256=" + _hex("another secret", b"{}"), 401, "does not match"),
        ("sha1=" + "0" * 40, 400, "X-Hub-Signature-256: expected sha256=<64 hex digits>"),
        ("sha256=zz", 400, "expected sha256=<64 hex digits>"),
        (_hex(SECRET, b"{}"), 400, "expected sha256="),  # the prefix is part of the format
    ],
)
def test_github_bad_signatures_are_refused(signature: str, status: int, reason: str) -> None:
    verdict = _judge({"X-Hub-Signature-256": signature, "X-GitHub-Event": "push"}, b"{}")
    assert (verdict.outcome, verdict.status) == (Outcome.REFUSED, status)
    assert reason in verdict.reason and not verdict.sync and verdict.scheme is None


def test_a_signature_over_another_body_is_refused() -> None:
    headers = _github(_push("refs/heads/main"))
    assert _judge(headers, _push("refs/heads/main", forced=True)).status == 401


def test_missing_credential_is_refused_and_names_what_to_send() -> None:
    body = _push("refs/heads/main")
    headers = _github(body)
    del headers["X-Hub-Signature-256"]
    headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET.encode(), body, "sha1").hexdigest()
    verdict = _judge(headers, body)  # GitHub's legacy SHA-1 header alone is not enough
    assert verdict.status == 401 and verdict.reason.startswith("no credential: send X-Hub-Sig")


# --- Gitea and Forgejo -------------------------------------------------------------------------

# The push payload of the Gitea and Forgejo documentation ("Webhooks", event information).
GITEA_DOC_BODY = json.dumps(
    {
        "secret": "3gEsCfjlV2ugRwgpU#w1*WaW*wa4NXgGmpCfkbG3",
        "ref": "refs/heads/develop",
        "before": "28e1879d029cb852e4844d9c718537df08844e03",
        "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
        "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
        "commits": [
            {
                "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
                "message": "Webhooks Yay!",
                "url": "http://localhost:3000/gitea/webhooks/commit/bffeb74224043ba2feb48d137756c8a9331c449a",
                "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
            }
        ],
    },
    indent=2,
).encode()
GITEA_DELIVERY = "f6266f16-1bf3-46a5-9ea4-602e06ead473"


def _gitea(body: bytes, *, secret: str = SECRET) -> dict[str, str]:
    signature = _hex(secret, body) if secret else ""  # Gitea sends them empty without a secret
    return {
        "Content-Type": "application/json",
        "X-GitHub-Delivery": GITEA_DELIVERY,
        "X-GitHub-Event": "push",
        "X-Gogs-Delivery": GITEA_DELIVERY,
        "X-Gogs-Event": "push",
        "X-Gitea-Delivery": GITEA_DELIVERY,
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": signature,
        "X-Gogs-Signature": signature,
        "X-Hub-Signature-256": f"sha256={signature}" if signature else "",
    }


def _forgejo(body: bytes) -> dict[str, str]:
    return _gitea(body) | {
        "X-Forgejo-Delivery": GITEA_DELIVERY,
        "X-Forgejo-Event": "push",
        "X-Forgejo-Signature": _hex(SECRET, body),
    }


def test_gitea_documented_push() -> None:
    verdict = _judge(_gitea(GITEA_DOC_BODY), GITEA_DOC_BODY, branch="develop")
    assert verdict.sync and verdict.scheme is Scheme.GITEA
    assert verdict.delivery_id == GITEA_DELIVERY
    ignored = _judge(_gitea(GITEA_DOC_BODY), GITEA_DOC_BODY, branch="main")
    assert ignored.reason == "ignored: push to refs/heads/develop, following main"


def test_forgejo_documented_push() -> None:
    verdict = _judge(_forgejo(GITEA_DOC_BODY), GITEA_DOC_BODY, branch="develop")
    assert verdict.sync and verdict.scheme is Scheme.FORGEJO


def test_gitea_bare_hex_is_checked() -> None:
    headers = _gitea(GITEA_DOC_BODY) | {"X-Gitea-Signature": _hex("wrong", GITEA_DOC_BODY)}
    verdict = _judge(headers, GITEA_DOC_BODY, branch="develop")
    assert verdict.status == 401 and verdict.reason.startswith("X-Gitea-Signature does not match")
    forgejo = _forgejo(GITEA_DOC_BODY) | {"X-Forgejo-Signature": "sha256=" + "a" * 64}
    assert _judge(forgejo, GITEA_DOC_BODY).reason.startswith("X-Forgejo-Signature: expected <64")


def test_gitea_without_a_secret_but_an_authorization_header() -> None:
    headers = _gitea(GITEA_DOC_BODY, secret="") | {"Authorization": f"Bearer {SECRET}"}
    verdict = _judge(headers, GITEA_DOC_BODY, branch="develop")
    assert verdict.sync and verdict.scheme is Scheme.BEARER


# --- GitLab ------------------------------------------------------------------------------------

# GitLab's documented push event (docs.gitlab.com, "Webhook events"), shortened.
GITLAB_DOC_BODY = json.dumps(
    {
        "object_kind": "push",
        "event_name": "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
        "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "ref": "refs/heads/master",
        "ref_protected": True,
        "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "user_id": 4,
        "user_name": "John Smith",
        "project_id": 15,
        "total_commits_count": 4,
    }
).encode()


def _gitlab(token: str = SECRET, *, event: str = "Push Hook") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.0.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Webhook-UUID": "16d7a5ca-bbc8-4c84-a4ea-e0e2e2ae3a06",
        "X-Gitlab-Event-UUID": "a4b4e5c6-7d8e-4f90-a1b2-c3d4e5f6a7b8",
        "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    }


def test_gitlab_documented_push() -> None:
    verdict = _judge(_gitlab(), GITLAB_DOC_BODY, branch="master")
    assert verdict.sync and verdict.scheme is Scheme.GITLAB
    assert verdict.delivery_id == "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"  # stable over retries
    assert _judge(_gitlab(), GITLAB_DOC_BODY).outcome is Outcome.IGNORED  # following main


def test_gitlab_wrong_token_and_tag_push() -> None:
    assert _judge(_gitlab("guess"), GITLAB_DOC_BODY, branch="master").status == 401
    assert _judge(_gitlab(""), GITLAB_DOC_BODY, branch="master").status == 401
    tag = json.dumps({"object_kind": "tag_push", "ref": "refs/tags/v1.0.0"}).encode()
    verdict = _judge(_gitlab(event="Tag Push Hook"), tag, branch="master")
    assert verdict.reason == "ignored: push to refs/tags/v1.0.0, following master"


# --- Standard Webhooks ---------------------------------------------------------------------------

# The test vector of the Standard Webhooks reference libraries (github.com/standard-webhooks).
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STD_TIMESTAMP = 1614265330
STD_BODY = b'{"test": 2432232314}'
STD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _standard(signature: str = STD_SIGNATURE, **override: str) -> dict[str, str]:
    return {
        "webhook-id": STD_ID,
        "webhook-timestamp": str(STD_TIMESTAMP),
        "webhook-signature": signature,
        "content-type": "application/json",
    } | override


def _std(
    headers: dict[str, str],
    body: bytes = STD_BODY,
    *,
    now: float = STD_TIMESTAMP + 10,
    token: str = STD_SECRET,
) -> Verdict:
    return _judge(headers, body, token=token, now=now)


def test_standard_webhooks_test_vector() -> None:
    key = base64.b64decode(STD_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{STD_ID}.{STD_TIMESTAMP}.".encode() + STD_BODY, hashlib.sha256)
    assert "v1," + base64.b64encode(mac.digest()).decode() == STD_SIGNATURE
    verdict = _std(_standard())
    assert verdict.sync and verdict.scheme is Scheme.STANDARD and verdict.delivery_id == STD_ID


def test_standard_webhooks_several_signatures_and_versions() -> None:
    # Space-delimited, during a key rotation; versions other than v1 are skipped.
    assert _std(_standard(f"v1a,c2lnbmF0dXJl v1,Zm9vYmFy {STD_SIGNATURE}")).sync
    assert _std(_standard("v1,Zm9vYmFy v2,abc")).status == 401
    assert _std(_standard("v1a,c2lnbmF0dXJl")).status == 400


def test_standard_webhooks_raw_secret_without_prefix() -> None:
    token = "plain shared secret"
    mac = hmac.new(token.encode(), f"{STD_ID}.{STD_TIMESTAMP}.".encode() + STD_BODY, "sha256")
    signature = "v1," + base64.b64encode(mac.digest()).decode()
    assert _std(_standard(signature), token=token).sync
    # A whsec_ secret's other senders (GitHub, ...) sign with the whole string.
    body = b"{}"
    github = {"X-Hub-Signature-256": "sha256=" + _hex(STD_SECRET, body)}
    assert _judge(github, body, token=STD_SECRET).sync


@pytest.mark.parametrize(
    ("headers", "body", "now", "status", "reason"),
    [
        (_standard("v1,Zm9vYmFy"), STD_BODY, STD_TIMESTAMP, 401, "webhook-signature does not ma"),
        (_standard(), b'{"test": 2432232315}', STD_TIMESTAMP, 401, "does not match"),
        (_standard(), STD_BODY, STD_TIMESTAMP + 301, 401, "1614265330 is 301 s old (limit 300"),
        (_standard(), STD_BODY, STD_TIMESTAMP - 400, 401, "is 400 s in the future"),
        (_standard(**{"webhook-id": ""}), STD_BODY, STD_TIMESTAMP, 400, "webhook-id missing"),
        (
            _standard(**{"webhook-timestamp": "2021-02-25"}),
            STD_BODY,
            STD_TIMESTAMP,
            400,
            "webhook-timestamp: '2021-02-25' is not Unix time in seconds",
        ),
        (_standard(**{"webhook-id": "msg_other"}), STD_BODY, STD_TIMESTAMP, 401, "does not match"),
    ],
)
def test_standard_webhooks_refusals(
    headers: dict[str, str], body: bytes, now: float, status: int, reason: str
) -> None:
    verdict = _std(headers, body, now=now)
    assert (verdict.outcome, verdict.status) == (Outcome.REFUSED, status)
    assert reason in verdict.reason


def test_standard_webhooks_timestamp_at_the_limit_is_accepted() -> None:
    assert _std(_standard(), now=STD_TIMESTAMP + 300).sync
    assert _std(_standard(), now=STD_TIMESTAMP - 300).sync


def test_a_whsec_secret_that_is_not_base64_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"LBREC_SYNC_TOKEN: a whsec_ secret must be base64"):
        WebhookSecret.parse("whsec_not*base64")
    assert "MfKQ" not in repr(WebhookSecret.parse(STD_SECRET))  # never in a log line
    with pytest.raises(UsageError):  # lbrec up stops before its first pass
        sync_webhook(lambda: None, "whsec_not*base64", branch="main")


# --- Bearer, as before ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer s3cret", 202),
        ("bearer  s3cret ", 202),
        ("s3cret", 202),
        ("Bearer nope", 401),
        ("Basic czNjcmV0", 401),
        ("", 401),
    ],
)
def test_bearer_keeps_working(authorization: str, status: int) -> None:
    verdict = _judge({"Authorization": authorization}, token="s3cret")
    assert verdict.status == status
    assert verdict.scheme is (Scheme.BEARER if status == 202 else None)


def test_no_token_configured_refuses_everything_and_only_post_is_served() -> None:
    body = _push("refs/heads/main")
    off = _judge(_github(body), body, token="")
    assert (off.status, off.outcome) == (403, Outcome.REFUSED)
    assert "LBREC_SYNC_TOKEN" in off.reason
    assert _judge({"Authorization": "Bearer "}, token="").status == 403
    assert _judge(_github(body), body, method="GET").status == 405


# --- replays -------------------------------------------------------------------------------------


def test_the_same_delivery_twice_is_a_replay() -> None:
    memory = DeliveryMemory()
    body = _push("refs/heads/main")
    assert _judge(_github(body), body, memory=memory).sync
    again = _judge(_github(body), body, memory=memory, now=NOW + 42)
    assert (again.outcome, again.status) == (Outcome.REFUSED, 409)
    assert again.reason == (
        "replay: delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 was already received 42 s ago"
    )
    # The same signed body under another delivery id is a replay too (issue 20 finding 12).
    assert _judge(_github(body, delivery="another"), body, memory=memory).status == 409
    later = _judge(_github(body), body, memory=memory, now=NOW + REPLAY_WINDOW)
    assert later.sync  # remembered for the window only


def test_replays_of_ignored_and_standard_deliveries() -> None:
    memory = DeliveryMemory()
    ping = _github(b"{}", event="ping", delivery="ping-1")
    assert _judge(ping, b"{}", memory=memory).outcome is Outcome.IGNORED
    assert _judge(ping, b"{}", memory=memory).status == 409
    secret = WebhookSecret.parse(STD_SECRET)
    delivery = Delivery("POST", _standard(), STD_BODY, now=STD_TIMESTAMP, source="192.0.2.7")
    assert verify_delivery(delivery, secret=secret, branch="main", memory=memory).sync
    assert verify_delivery(delivery, secret=secret, branch="main", memory=memory).status == 409


def test_a_refused_delivery_is_not_remembered() -> None:
    # Otherwise anyone could burn a forge's delivery id before the forge sends it.
    memory = DeliveryMemory()
    body = _push("refs/heads/main")
    forged = _github(body) | {"X-Hub-Signature-256": "sha256=" + "1" * 64}
    assert _judge(forged, body, memory=memory).status == 401
    assert len(memory) == 0
    assert _judge(_github(body), body, memory=memory).sync


def test_delivery_memory_is_bounded() -> None:
    memory = DeliveryMemory(capacity=3, window=600.0)
    for i in range(4):
        assert memory.remember(f"d{i}", now=float(i)) is None
    assert len(memory) == 3
    assert memory.remember("d0", now=5.0) is None  # forgotten first: the oldest
    assert memory.remember("d3", now=5.0) == 2.0
    assert memory.remember("d3", now=6.0) == 3.0  # measured from the first sighting
    assert memory.remember("d1", now=700.0) is None  # the window expired
    assert len(memory) == 1


def _without_deliveries(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.lower().endswith("-delivery")}


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param(_github, id="github"),
        pytest.param(_gitea, id="gitea"),
        pytest.param(_forgejo, id="forgejo"),
    ],
)
def test_a_signed_body_replayed_without_or_with_another_delivery_id_is_refused(
    sender: Callable[[bytes], dict[str, str]],
) -> None:
    """Issue 20 finding 12: the replay memory keyed on the delivery id header, which the HMAC
    does not cover: the same signed body with the header dropped or changed synced again."""
    memory = DeliveryMemory()
    body = _push("refs/heads/main")
    headers = sender(body)
    assert _judge(headers, body, memory=memory).sync
    for replayed in (
        _without_deliveries(headers),  # the header dropped
        headers | {"X-GitHub-Delivery": "forged-1", "X-Gitea-Delivery": "forged-1"},  # changed
        _without_deliveries(headers) | {"X-Forgejo-Delivery": "forged-2"},
    ):
        again = _judge(replayed, body, memory=memory, now=NOW + 5)
        assert (again.outcome, again.status) == (Outcome.REFUSED, 409), replayed
        assert again.reason == "replay: this signed body was already received 5 s ago"
    # A signed body that arrives first without any delivery id is remembered by itself too.
    fresh = DeliveryMemory()
    bare = _without_deliveries(headers)
    assert _judge(bare, body, memory=fresh).sync
    assert _judge(bare, body, memory=fresh, now=NOW + 1).status == 409
    assert _judge(headers, body, memory=fresh, now=NOW + 2).status == 409
    # Another body (the next push) is not a replay, and the window still ends.
    other = _push("refs/heads/main", after="1" * 40)
    assert _judge(sender(other), other, memory=memory, now=NOW + 6).status == 409  # same id
    assert _judge(_without_deliveries(sender(other)), other, memory=memory, now=NOW + 7).sync
    assert _judge(bare, body, memory=memory, now=NOW + REPLAY_WINDOW).sync


def test_a_standard_webhook_replay_is_keyed_on_its_signed_id() -> None:
    """Standard Webhooks sign ``webhook-id``: a GitHub-style delivery header added to a replay
    named the delivery instead, and the same signed message synced again."""
    memory = DeliveryMemory()
    secret = WebhookSecret.parse(STD_SECRET)

    def send(headers: dict[str, str]) -> Verdict:
        delivery = Delivery("POST", headers, STD_BODY, now=STD_TIMESTAMP, source="192.0.2.7")
        return verify_delivery(delivery, secret=secret, branch="main", memory=memory)

    first = send(_standard())
    assert first.sync and first.delivery_id == STD_ID
    again = send(_standard(**{"X-GitHub-Delivery": "looks-new"}))
    assert (again.status, again.delivery_id) == (409, STD_ID)
    assert again.reason == f"replay: delivery {STD_ID} was already received 0 s ago"


def test_token_schemes_keep_their_delivery_ids_and_repeat_empty_calls() -> None:
    """GitLab's token and a Bearer token sign nothing (whoever holds them can send anything):
    their replay memory stays the delivery id, and a generic caller's empty POST may repeat."""
    memory = DeliveryMemory()
    assert _judge({"Authorization": f"Bearer {SECRET}"}, memory=memory).sync
    assert _judge({"Authorization": f"Bearer {SECRET}"}, memory=memory).sync
    assert _judge(_gitlab(), GITLAB_DOC_BODY, branch="master", memory=memory).sync
    assert _judge(_gitlab(), GITLAB_DOC_BODY, branch="master", memory=memory).status == 409


def test_the_module_is_pure() -> None:
    module = Path(__file__).resolve().parents[3] / "reconciler" / "core" / "webhooks.py"
    names = _imports(module)
    assert not {n for n in names for bad in FORBIDDEN_IN_PURE if n.split(".")[0] == bad}


# --- end to end: the real handler on a real server -----------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def webhook_log() -> Iterator[_Records]:
    logger = logging.getLogger("lbrec.webhook")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_end_to_end_over_a_real_server(webhook_log: _Records) -> None:
    calls: list[int] = []
    app = web.Application()
    app.router.add_routes(sync_webhook(lambda: calls.append(1), SECRET, branch="main"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/-/sync"
    push, dev = _push("refs/heads/main"), _push("refs/heads/dev")
    forged = _github(push, delivery="d-bad") | {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    try:
        async with ClientSession() as session:
            answers = []
            for headers, body in (
                (_github(push), push),  # deploys
                (_github(push), push),  # replayed
                (_github(dev, delivery="d-dev"), dev),  # another branch
                (forged, push),  # wrong signature
                ({"Authorization": f"Bearer {SECRET}"}, b""),  # the old way
            ):
                async with session.post(url, data=body, headers=headers) as response:
                    answers.append((response.status, await response.text()))
    finally:
        await runner.cleanup()
    assert [status for status, _ in answers] == [202, 409, 200, 401, 202]
    assert answers[2][1] == "ignored: push to refs/heads/dev, following main\n"
    assert calls == [1, 1]
    logged = [
        (r.levelno, getattr(r, "outcome", None), getattr(r, "source", None))
        for r in webhook_log.records
    ]
    assert logged == [
        (logging.INFO, "accepted", "127.0.0.1"),
        (logging.WARNING, "refused", "127.0.0.1"),
        (logging.INFO, "ignored", "127.0.0.1"),
        (logging.WARNING, "refused", "127.0.0.1"),
        (logging.INFO, "accepted", "127.0.0.1"),
    ]
    refused = webhook_log.records[3]
    assert getattr(refused, "event", None) == "webhook"
    assert getattr(refused, "reason", "").startswith("X-Hub-Signature-256 does not match")
    assert "refused (401) from 127.0.0.1" in refused.getMessage()


@pytest.mark.parametrize(
    ("sync_token", "admin_token", "refused"),
    [("t0ken", "", True), ("t0ken", "adm1n", False), ("", "", False), ("", "adm1n", False)],
)
def test_the_webhook_on_requires_the_admin_token(
    sync_token: str, admin_token: str, refused: bool
) -> None:
    """Issue 20 finding 11: with the webhook on, the admin listener is reached through a TLS
    proxy (a loopback peer), so its reading endpoints must require LBREC_ADMIN_TOKEN."""
    if not refused:
        require_admin_token(sync_token, admin_token)
        return
    with pytest.raises(UsageError, match="LBREC_SYNC_TOKEN is set but LBREC_ADMIN_TOKEN is not"):
        require_admin_token(sync_token, admin_token)
