"""The differential framing suite: every corpus case through a real proxy to a recording
backend on loopback, judged by the oracle in ``harness.py`` (see ``cases.py`` for the verdicts).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.proxy.conftest import ProxyFactory, config_doc
from tests.proxy.desync.cases import REQUEST_CASES, RESPONSE_CASES, RequestCase, ResponseCase
from tests.proxy.desync.harness import (
    VICTIM,
    Recorder,
    exchange_raw,
    parse_responses,
    start_recorder,
    start_scripted,
)

_IGNORED_TARGETS = (b"/victim", b"/health")


def _doc(port: int) -> dict[str, Any]:
    return config_doc(
        [("b", f"http://127.0.0.1:{port}", 1)],
        passive={"max_fails": 0, "cooldown": 1},
        health={"interval": 600, "timeout": 1, "rise": 1, "fall": 1},
        timeouts={"connect": 1.0, "read": 3.0, "idle": 30.0, "header": 3.0},
    )


async def _victim(port: int, recorder: Recorder | None) -> bytes:
    """Another client's request after the attack: it must get exactly its own answer."""
    data, _ = await exchange_raw(port, VICTIM, want=1, idle=0.05)
    responses, rest = parse_responses(data)
    assert len(responses) == 1 and not rest, data[:500]
    answer = responses[0]
    assert answer.status == 200, data[:500]
    if recorder is not None:
        assert json.loads(answer.body)["target"] == "/victim", answer.body
        seen = [r for r in recorder.requests if r.target == b"/victim"]
        assert len(seen) == 1
        for name in (b"authorization", b"x-trailer", b"x-private", b"content-length"):
            assert not seen[0].header(name), seen[0].headers
    return answer.body


def _check_invariants(case: RequestCase, recorder: Recorder, data: bytes) -> list[Any]:
    assert not recorder.errors, recorder.errors
    responses, rest = parse_responses(data)
    attacker = [r for r in recorder.requests if r.target not in _IGNORED_TARGETS]
    for request in attacker:
        lengths = request.header(b"content-length")
        codings = request.header(b"transfer-encoding")
        assert not (lengths and codings), request.headers
        assert codings in ([], [b"chunked"]), codings
        assert not any(b"_" in name for name, _ in request.headers), request.headers
        if case.klass != "fuzz":  # the corpus only ever hides /smuggled inside another message
            assert b"smuggled" not in request.target
    answered = [r.header(b"x-seen") for r in responses if r.header(b"x-seen") is not None]
    assert answered == [f"{r.conn}/{r.seq}".encode() for r in attacker], (answered, attacker)
    generated = [r for r in responses if r.header(b"x-seen") is None]
    assert len(generated) <= 1, responses
    if generated:
        assert responses[-1] is generated[0] and generated[0].status >= 400
    if case.verdict != "either":
        assert not rest, rest[:200]
    return attacker


def judge_request(case: RequestCase, recorder: Recorder, data: bytes, closed: bool) -> None:
    """The oracle for one attack: the invariants, then the case's verdict (asserts)."""
    attacker = _check_invariants(case, recorder, data)
    responses, _ = parse_responses(data)
    if case.verdict == "reject":
        assert not attacker, attacker
        assert len(responses) <= 1 and closed, (responses, closed)
        if responses:
            assert responses[0].status in case.statuses, responses[0]
    elif case.verdict == "forward":
        assert len(attacker) == case.count, attacker
        if case.check is not None:
            case.check(attacker)


@pytest.mark.parametrize("case", REQUEST_CASES, ids=[c.name for c in REQUEST_CASES])
async def test_request_case(case: RequestCase, proxy: ProxyFactory) -> None:
    recorder = await start_recorder()
    try:
        p = await proxy(_doc(recorder.port))
        port = p.info.listen[1]
        want = case.count if case.verdict == "forward" else None
        data, closed = await exchange_raw(port, case.raw, want=want)
        await asyncio.sleep(0.02)  # let the backend finish what it is recording
        judge_request(case, recorder, data, closed)
        await _victim(port, recorder)
    finally:
        await recorder.close()


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=[c.name for c in RESPONSE_CASES])
async def test_response_case(case: ResponseCase, proxy: ProxyFactory) -> None:
    backend = await start_scripted(case.answer, close_after=case.close_after)
    try:
        p = await proxy(_doc(backend.port))
        port = p.info.listen[1]
        request = case.method + b" /first HTTP/1.1\r\nHost: example.com\r\n\r\n"
        data, _ = await exchange_raw(port, request, want=1)
        responses, rest = parse_responses(data, head_request=case.method == b"HEAD")
        assert len(responses) == 1 and not rest, data[:500]
        assert responses[0].status == case.status, data[:500]
        if case.body is not None:
            assert responses[0].body == case.body
        assert b"poisoned" not in data and b"EXTRA" not in data
        body = await _victim(port, None)
        if not case.reuse_allowed:
            assert body != f"conn-{backend.scripted_conn}".encode(), "connection was reused"
    finally:
        await backend.close()
