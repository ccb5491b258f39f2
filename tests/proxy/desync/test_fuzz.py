"""Fuzz the request path: hypothesis mutates raw request bytes (corpus cases and the framing
tokens smuggling is made of) and feeds them to a real proxy in front of the recording backend.

Whatever the bytes, the oracle's invariants must hold: no h11 framing error at the backend,
every completed request answered exactly once in order, nothing ambiguous forwarded, and the
next client (the victim) gets its own answer. CI runs a short pass (``LBREC_FUZZ_EXAMPLES``,
default 40); docs/proxy.md has the command of the long run. A failure shrinks to a minimal
input: add it to ``cases.py`` as a regression case.
"""

from __future__ import annotations

import asyncio
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.proxy.conftest import ProxyFactory
from tests.proxy.desync.cases import REQUEST_CASES, RequestCase
from tests.proxy.desync.harness import exchange_raw, start_recorder
from tests.proxy.desync.test_desync import _check_invariants, _doc, _victim
from tests.support.examples import examples

EXAMPLES = int(os.environ.get("LBREC_FUZZ_EXAMPLES") or examples(40))

TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"\x00",
    b"\x0b",
    b",",
    b";",
    b":",
    b"0",
    b"chunked",
    b"identity",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: Content-Length\r\n",
    b"Host: other.example\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"HTTP/1.0",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\nConnection: upgrade\r\n",
]
SEEDS = [c.raw for c in REQUEST_CASES if len(c.raw) < 4096]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "flip", "case"]))
        if kind == "insert":
            data[where:where] = draw(st.sampled_from(TOKENS))
        elif kind == "delete" and data:
            data[where : where + draw(st.integers(1, 8))] = b""
        elif kind == "flip" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif kind == "case":
            data[where : where + 16] = bytes(data[where : where + 16]).swapcase()
    return bytes(data)


_FUZZ = RequestCase("fuzz", "fuzz", b"", "either")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(payload=mutated())
async def test_fuzzed_requests_keep_the_oracle(payload: bytes, proxy: ProxyFactory) -> None:
    recorder = await start_recorder()
    p = await proxy(_doc(recorder.port))
    try:
        port = p.info.listen[1]
        data, _ = await exchange_raw(port, payload, idle=0.15, total=4.0)
        await asyncio.sleep(0.02)
        _check_invariants(_FUZZ, recorder, data)
        await _victim(port, recorder)
    finally:
        p.stop.set()
        await asyncio.wait_for(p.task, 10)
        await recorder.close()
