"""HTTP/2 conformance of lbrec's TLS listener: the downgrade-smuggling cases and the floods,
written to docs/proxy-conformance-http2.md.

The cases are the tests' own (tests/proxy/http2/test_h2_smuggling.py's ``CASES``, and the
scenarios of tests/proxy/http2/test_h2_floods.py, called as they are): each runs against a
ProxyServer behind proxy/tls_transport.py's TlsConnection with proxy/http2's connection, on
127.0.0.1, in front of the desync suite's recording backend (smuggling) or the tests' aiohttp
backend (floods). For each smuggling case the table gives what the client saw (an answer's
status, RST_STREAM or GOAWAY with its error code) and how many requests the backend read; for
each flood, the figures the test printed (frames taken before GOAWAY, bytes or requests spent).

    .venv/bin/python bench/h2_conformance.py              # ~30 s, rewrites the doc
    .venv/bin/python bench/h2_conformance.py --out /tmp/h2.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOC = REPO / "docs" / "proxy-conformance-http2.md"


async def smuggling(peers: list[str]) -> tuple[list[str], list[tuple[str, str, list[str], str]]]:
    """Every case against lbrec and each of ``peers`` (nginx, haproxy: HTTP/2 over TLS in front
    of a recorder of their own): the targets, and per case its name, what lbrec's rule allows,
    each target's outcome and the requests each backend read."""
    from bench.h2_bench import NAME, start_target
    from bench.proxy_bench import Backend, BenchError, Processes
    from tests.proxy.desync.harness import Recorder, start_recorder
    from tests.proxy.http2.support import h2_proxy
    from tests.proxy.http2.test_h2_smuggling import CASES, run_case
    from tests.support.certs import CertAuthority

    tmp = Path(tempfile.mkdtemp(prefix="lbrec-h2conf-"))
    ca = CertAuthority(tmp / "pki")
    cert, key = ca.leaf("site", [NAME])
    procs = Processes(tmp)
    recorders: dict[str, Recorder] = {"lbrec": await start_recorder()}
    ports: dict[str, int] = {}
    try:
        for peer in peers:
            recorder = await start_recorder()
            backends = [Backend("r", recorder.port, 1)]
            try:
                ports[peer], _proc = await asyncio.to_thread(
                    start_target, peer, procs, tmp, backends, cert, key, ca.pem
                )
                recorders[peer] = recorder
            except BenchError as err:
                print(f"{peer}: not run ({err})", file=sys.stderr)
                await recorder.close()
        targets = ["lbrec", *ports]
        rows = []
        async with h2_proxy(ca, f"http://127.0.0.1:{recorders['lbrec'].port}") as proxy:
            for case in CASES:
                outcomes = []
                reads = []
                for target in targets:
                    recorder = recorders[target]
                    before = len(recorder.requests)
                    if target == "lbrec":
                        outcome = await run_case(ca, proxy, case)
                    else:
                        peer_at = type("Peer", (), {"tls_port": ports[target]})()
                        outcome = await run_case(ca, peer_at, case, timeout=2.0)
                    await asyncio.sleep(0.05)
                    outcomes.append(str(outcome))
                    reads.append(str(len(recorder.requests) - before))
                allowed = " or ".join(sorted(case.expect))
                rows.append((case.name, allowed, outcomes, " / ".join(reads)))
    finally:
        procs.stop_all()
        for recorder in recorders.values():
            await recorder.close()
    return targets, rows


async def floods() -> list[tuple[str, str]]:
    from aiohttp import web

    from lbrec.proxy.http2.guard import BUDGETS
    from tests.proxy.conftest import Backend, _backend_app
    from tests.proxy.http2 import test_h2_floods as module
    from tests.proxy.http2.support import frame, h2_proxy
    from tests.support.certs import CertAuthority

    scenarios: list[tuple[str, Any, dict[str, Any]]] = [
        ("Rapid Reset, HEADERS+RST_STREAM in one read", module.test_rapid_reset, {"apart": False}),
        ("Rapid Reset, in separate writes", module.test_rapid_reset, {"apart": True}),
        ("CONTINUATION flood", module.test_continuation_flood, {}),
        ("HPACK bomb", module.test_hpack_bomb, {}),
    ]
    for name, make, budget in (
        ("SETTINGS", lambda: frame(4, 0, 0, b""), BUDGETS.settings),
        ("SETTINGS ACK", lambda: frame(4, 1, 0, b""), BUDGETS.settings),
        ("PING", lambda: frame(6, 0, 0, b"12345678"), BUDGETS.ping),
        ("PRIORITY", lambda: frame(2, 0, 3, b"\0\0\0\1\x10"), BUDGETS.priority),
        ("WINDOW_UPDATE", lambda: frame(8, 0, 0, b"\0\0\0\1"), BUDGETS.window_update),
        ("unknown type", lambda: frame(0xFA, 0, 0, b"x"), BUDGETS.unknown),
    ):
        scenarios.append(
            (f"{name} flood", module.test_control_frame_floods,
             {"name": name, "make": make, "budget": budget})
        )  # fmt: skip
    scenarios += [
        ("empty DATA flood", module.test_empty_data_flood, {}),
        ("101 concurrent streams", module.test_too_many_concurrent_streams, {}),
        ("frame header announcing 16 MiB", module.test_oversized_frame_is_refused_at_its_header,
         {}),
        ("zero-window stall (timeouts.idle 1.5 s)", module.test_zero_window_stall, {}),
        ("unfinished header block (timeouts.header 1 s)",
         module.test_an_unfinished_header_block_gets_timeouts_header, {"own_proxy": True}),
    ]  # fmt: skip
    rows = []
    for title, function, kwargs in scenarios:
        ca = CertAuthority(Path(tempfile.mkdtemp(prefix="lbrec-h2conf-")))
        state: dict[str, Any] = {}
        runner = web.AppRunner(_backend_app(state), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        backend = Backend("b1", runner, runner.addresses[0][1])
        state["backend"] = backend
        printed = io.StringIO()
        try:
            if kwargs.pop("own_proxy", False):  # the test starts its proxy: lend it the backend

                async def lend(_name: str, backend: Backend = backend) -> Backend:
                    return backend

                with contextlib.redirect_stdout(printed):
                    await function(ca, lend, **kwargs)
            else:
                async with h2_proxy(ca, backend.url, timeouts={"read": 5, "idle": 1.5}) as proxy:
                    with contextlib.redirect_stdout(printed):
                        await function(ca, (proxy, backend), **kwargs)
            verdict = "pass"
        except AssertionError as err:
            verdict = f"FAIL: {err}"
        finally:
            await runner.cleanup()
        text = printed.getvalue().strip().replace("\n", "; ") or "-"
        rows.append((title, f"{verdict}; {text}" if verdict != "pass" else text))
    return rows


def render(
    targets: list[str],
    smug: list[tuple[str, str, list[str], str]],
    flood: list[tuple[str, str]],
) -> str:
    import h2
    import hpack

    from lbrec.proxy.http2.connection import MAX_CONCURRENT_STREAMS, STREAM_HIGH, STREAM_WINDOW
    from lbrec.proxy.http2.guard import BUDGETS, MAX_CONTINUATIONS, WINDOW

    lines = [
        "# Proxy conformance over HTTP/2: downgrade smuggling and floods",
        "",
        "Generated by `bench/h2_conformance.py`; do not edit by hand, run it again. The HTTP/1.1",
        "corpus (against nginx and HAProxy) is docs/proxy-conformance.md.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M:%S UTC}; Python {platform.python_version()},"
        f" h2 {h2.__version__}, hpack {hpack.__version__}",
        "- Listener: `ProxyServer` behind `TlsConnection` (ALPN h2) -> `Http2Connection`; "
        "HTTP/1.1 with keep-alive to the backend",
        f"- Limits: SETTINGS_MAX_CONCURRENT_STREAMS {MAX_CONCURRENT_STREAMS}, stream window "
        f"{STREAM_WINDOW}, answer bytes held per stream before the backend is paused "
        f"{STREAM_HIGH}, header block {MAX_CONTINUATIONS} frames or 2 x max_header_bytes; "
        f"per connection and per {WINDOW:g} s: SETTINGS {BUDGETS.settings}, PING "
        f"{BUDGETS.ping}, RST_STREAM {BUDGETS.rst_stream}, PRIORITY {BUDGETS.priority} + 2 per "
        f"stream, WINDOW_UPDATE {BUDGETS.window_update} + 2 per DATA frame sent, unknown "
        f"frames {BUDGETS.unknown}, empty DATA {BUDGETS.empty_data}",
        "",
        "## Downgrade smuggling (h2spec section 8, http2smugl)",
        "",
        "Each case on a connection of its own, against lbrec and, side by side, nginx and "
        "HAProxy (HTTP/2 over TLS, each in front of a recording backend of its own: "
        'bench/h2_bench.py\'s configurations). "Backend read": complete requests the '
        'recording backend (h11) parsed. "nothing": no answer, reset or GOAWAY within 2 s '
        "(the peer waits for the rest of a body). The tests (tests/proxy/http2/) also check, "
        "for lbrec, that a victim request after each case is answered by the victim.",
        "",
        "| case | allowed (lbrec's rule) | "
        + " | ".join(targets)
        + " | backend read ("
        + " / ".join(targets)
        + ") |",
        "| --- | --- | " + " | ".join("---" for _ in targets) + " | ---: |",
    ]
    refused = [row for row in smug if "200" not in row[1].split(" or ")]
    summary = []
    for i, target in enumerate(targets):
        forwarded = sum(1 for row in refused if row[3].split(" / ")[i] != "0")
        summary.append(f"{target} forwarded {forwarded}")
    lines[-3:-3] = [
        "",
        f"Of the {len(refused)} cases lbrec refuses, "
        + ", ".join(summary)
        + " to its backend (a request a backend should never have seen).",
    ]
    for name, allowed, outcomes, reads in smug:
        ok = outcomes[0] in allowed.split(" or ")
        cells = [outcomes[0] + ("" if ok else " **(unexpected)**"), *outcomes[1:]]
        lines.append(f"| {name} | {allowed} | " + " | ".join(cells) + f" | {reads} |")
    lines += [
        "",
        "## Floods: each ends with GOAWAY and a bounded cost",
        "",
        "What the proxy took before it ended the connection (from tests/proxy/http2/"
        "test_h2_floods.py, which asserts the bounds).",
        "",
        "| flood | measured |",
        "| --- | --- |",
    ]
    for title, text in flood:
        lines.append(f"| {title} | {text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--peers", default="nginx,haproxy", help="'' for lbrec alone")
    args = parser.parse_args(argv)

    async def run() -> str:
        peers = [p for p in args.peers.split(",") if p]
        targets, rows = await smuggling(peers)
        return render(targets, rows, await floods())

    text = asyncio.run(run())
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
