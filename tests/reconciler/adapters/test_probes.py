"""The readiness probe of a rollout (issue 20, finding 8): a backend's redirect is not its
readiness, and a backend that trickles its answer cannot hold the pass past the deadline."""

from __future__ import annotations

import time

import pytest

from lbrec.reconciler.adapters.probes import http_probe

from ..local_http import answering, huge_body, redirecting, trickling


def test_a_200_is_ready() -> None:
    with answering(200) as backend:
        assert http_probe(backend.url + "/health", 5) is None
    assert backend.seen[0].request_line == "GET /health HTTP/1.1"


def test_another_status_is_not_ready_and_says_so() -> None:
    with answering(503) as backend:
        assert http_probe(backend.url + "/health", 5) == f"GET {backend.url}/health answered 503"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_a_healthy_service_is_not_ready(status: int) -> None:
    with answering(200) as other, redirecting(other.url + "/", status) as backend:
        problem = http_probe(backend.url + "/health", 5)
    assert problem is not None and f"answered {status}" in problem
    assert other.url in problem  # where it pointed, for the report
    assert other.seen == [], "the probe followed the backend's redirect"


@pytest.mark.parametrize("head_first", [False, True], ids=["trickling-head", "trickling-body"])
def test_a_trickling_backend_cannot_hold_the_probe(head_first: bool) -> None:
    with trickling(head_first=head_first, interval=0.2) as backend:
        started = time.monotonic()
        problem = http_probe(backend.url + "/health", 1.0)
        took = time.monotonic() - started
    assert took < 8.0, f"the probe took {took:.1f}s with a 1s timeout"
    if head_first:  # the status came in time: the body is not the probe's business
        assert problem is None
    else:
        assert problem is not None and "within 1s" in problem


def test_a_huge_health_body_is_not_read() -> None:
    with huge_body() as backend:
        assert http_probe(backend.url + "/health", 5) is None


def test_nobody_listening_is_not_ready() -> None:
    with answering() as gone:
        url = gone.url
    problem = http_probe(url + "/health", 2)
    assert problem is not None and problem.startswith(f"GET {url}/health:")
