"""The smuggling/framing corpus against lbrec's proxy, nginx and HAProxy, side by side.

Every case of ``tests/proxy/desync/cases.py`` goes through each of the three reverse proxies,
each in front of its own fresh recording backend (the h11-based ``Recorder`` of
``tests/proxy/desync/harness.py``, or its ``ScriptedBackend`` for the response cases):

* ``lbrec``   - ``proxy.app.serve`` in this process, with the backends.json of the desync
  tests (passive checks off, health interval 600 s, header/read timeouts 3 s),
* ``nginx``   - one worker, ``proxy_pass`` to an upstream with ``keepalive``,
  ``proxy_http_version 1.1``, ``proxy_set_header Connection ""``, default request buffering,
* ``haproxy`` - ``mode http``, ``http-reuse always``, ``nbthread 1``.

Unless ``--peer-defaults`` is given, nginx and HAProxy also get the forwarding-header policy
lbrec applies (Host passed through, X-Forwarded-For set to the client address, Forwarded and
X-Real-IP dropped), so that the corpus's header checks compare like with like and the table
is about framing, not about a missing config line.

Per case and proxy the proxy is started, the case is sent on one client connection with the
harness's ``exchange_raw`` (its default short timeouts), then the victim request on another,
and the proxy and backend are stopped again: nothing (pooled upstream connections, a poisoned
keep-alive) carries over from one case to the next. The three proxies run a case at the same
time (``--serial``: one after the other), each on its own ports.

The judgement is the one of ``tests/proxy/desync/test_desync.py``: its ``judge_request``
and ``_victim`` are imported, and the verdict checks of ``test_response_case`` are repeated
below (they are inline in the test function). The
verdicts of the corpus are lbrec's: an oracle failure of nginx or HAProxy is a finding about
that proxy (or a policy it does not share), not an error of this script.

All traffic is on 127.0.0.1, ports 28110-28131 only (see ``PORTS``); every process this
script starts runs in its own session and is stopped by its pid (``bench/proxy_bench.py``'s
``Processes``).

    .venv/bin/python bench/desync_compare.py             # ~2 minutes; writes the doc
    .venv/bin/python bench/desync_compare.py --install   # apt-get nginx-light, haproxy first
    .venv/bin/python bench/desync_compare.py -k chunk,te- --out /tmp/part.md

The table is written to docs/proxy-conformance.md (with ``-k``: only where ``--out`` says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.proxy_bench import (  # noqa: E402
    LOOPBACK,
    BenchError,
    Processes,
    _git_describe,
    _log,
    _nginx_main,
    _one_line,
    _signals_stop,
    _write_atomic,
    ensure_tools,
    machine_info,
    nginx_temp_paths,
)
from lbrec.proxy.app import ServeInfo, serve  # noqa: E402
from tests.proxy.desync.cases import (  # noqa: E402
    REQUEST_CASES,
    RESPONSE_CASES,
    RequestCase,
    ResponseCase,
)
from tests.proxy.desync.harness import (  # noqa: E402
    FramingError,
    Recorder,
    ScriptedBackend,
    exchange_raw,
    parse_responses,
)
from tests.proxy.desync.test_desync import (  # noqa: E402
    _IGNORED_TARGETS,
    _doc,
    _victim,
)
from tests.proxy.desync.test_desync import judge_request as request_oracle  # noqa: E402

T = TypeVar("T")

DEFAULT_OUT = REPO / "docs" / "proxy-conformance.md"
NAMES = ("lbrec", "nginx", "haproxy")
PEERS = ("nginx", "haproxy")
LABEL = {"lbrec": "lbrec", "nginx": "nginx", "haproxy": "HAProxy"}


@dataclass(frozen=True, slots=True)
class Ports:
    listen: int  # where the client talks to the proxy
    backend: int  # where this proxy's recording backend listens


# Everything this script binds or connects to: 127.0.0.1, 28100-28199.
PORTS = {
    "lbrec": Ports(28110, 28111),
    "nginx": Ports(28120, 28121),
    "haproxy": Ports(28130, 28131),
}
LBREC_ADMIN = 28112  # named in backends.json (a required field); never bound (no admin)
PORT_RANGE = range(28100, 28200)

START_TIMEOUT = 5.0  # seconds a proxy may take to listen
CASE_TIMEOUT = 30.0  # one case through one proxy, start to stop, at most
SETTLE = 0.05  # after the attack: let the backend finish recording what it is reading
_STATUS = re.compile(rb"(?:^|\n)HTTP/\d\.\d (\d{3})")


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class ClientView:
    """What the client saw on the attacker's connection."""

    statuses: list[int] = field(default_factory=list)  # final answers, complete
    interim: list[int] = field(default_factory=list)  # 1xx answers
    closed: bool = False
    generated_error: bool = False  # an answer >= 400 that no backend request produced
    framing: str | None = None  # the proxy's answer itself was not well framed
    rest: int = 0  # bytes of an incomplete answer at the end
    partial: int | None = None  # the status of that incomplete answer, if it has a head
    note: str = ""  # e.g. reset while the client was still sending

    def text(self) -> str:
        parts = [f"({','.join(str(s) for s in self.interim)})"] if self.interim else []
        parts.append(_runs(self.statuses) or "—")
        if self.rest:
            head = f"{self.partial} " if self.partial is not None else ""
            parts.append(f"+{head}partial {self.rest}B")
        if self.framing is not None:
            parts.append("BAD-FRAMING")
        parts.append("closed" if self.closed else "open")
        if self.note:
            parts.append(self.note)
        return " ".join(parts)


def _runs(statuses: Sequence[int]) -> str:
    """``200,200,200,400`` as ``200x3,400``."""
    out: list[str] = []
    i = 0
    while i < len(statuses):
        j = i
        while j < len(statuses) and statuses[j] == statuses[i]:
            j += 1
        n = j - i
        out += [f"{statuses[i]}x{n}"] if n > 2 else [str(statuses[i])] * n
        i = j
    return ",".join(out)


@dataclass(slots=True)
class RequestResult:
    client: ClientView = field(default_factory=ClientView)
    attacker: int = 0  # attacker requests the backend completed
    backend_errors: int = 0  # framing errors the backend's h11 parser saw
    truncated: int = 0  # requests the proxy abandoned mid-body
    failure: str | None = None  # the oracle's first complaint; None = passed
    error: str | None = None  # the harness could not run the case (proxy did not start...)

    @property
    def refused(self) -> bool:
        """Ended with a rejection: an error answer of the proxy's own, or a close unanswered."""
        return self.client.generated_error or (self.client.closed and not self.client.statuses)

    @property
    def ended(self) -> bool:
        """Refused, or closed the connection (after answering what it forwarded)."""
        return self.refused or self.client.closed

    def cell(self) -> str:
        if self.error is not None:
            return f"ERROR ({self.error[:60]})"
        text = f"{self.client.text()} · b{self.attacker}"
        if self.backend_errors:
            text += " · h11-error"
        if self.truncated:
            text += " · truncated"
        return text


@dataclass(slots=True)
class ResponseResult:
    client: ClientView = field(default_factory=ClientView)
    reused: bool | None = None  # the victim was answered on the scripted connection
    victim_poisoned: bool = False  # the victim got the bad answer's leftover bytes
    failure: str | None = None
    error: str | None = None

    @property
    def refused(self) -> bool:
        """The backend's answer was not relayed: no complete answer (a truncated one counts as
        none), or a 5xx of the proxy's own (none of the scripted answers is a 5xx)."""
        return not self.client.statuses or self.client.statuses[0] >= 500

    @property
    def kept(self) -> bool:
        return bool(self.reused) or self.victim_poisoned

    def cell(self) -> str:
        if self.error is not None:
            return f"ERROR ({self.error[:60]})"
        reuse = {None: "reuse ?", True: "reused", False: "not reused"}[self.reused]
        text = f"{self.client.text()} · {reuse}"
        if self.victim_poisoned:
            text += " · VICTIM POISONED"
        return text


Result = RequestResult | ResponseResult


@dataclass(slots=True)
class Row:
    name: str
    klass: str
    expected: str
    kind: str  # "request" or "response"
    results: dict[str, Result]


# --------------------------------------------------------------------------- the proxies


class ProxyUnderTest:
    name = "proxy"

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class LbrecProxy(ProxyUnderTest):
    """lbrec's proxy in this process, configured as in test_desync.py."""

    name = "lbrec"

    def __init__(self, ports: Ports, tmp: Path) -> None:
        super().__init__(ports)
        self.config = tmp / "lbrec-backends.json"
        doc = _doc(ports.backend)
        doc["listen"] = f"{LOOPBACK}:{ports.listen}"
        doc["admin"] = f"{LOOPBACK}:{LBREC_ADMIN}"
        self.doc_text = json.dumps(doc, indent=2) + "\n"
        _write_atomic(self.config, self.doc_text)
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        stop = asyncio.Event()
        ready: asyncio.Future[ServeInfo] = asyncio.get_running_loop().create_future()

        def on_ready(info: ServeInfo) -> None:
            if not ready.done():
                ready.set_result(info)

        task = asyncio.create_task(
            serve(self.config, stop=stop, ready=on_ready, drain_timeout=1.0, enable_admin=False)
        )
        self._stop, self._task = stop, task
        waiting: set[asyncio.Future[Any]] = {ready, task}
        done, _ = await asyncio.wait(
            waiting, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            why = "did not start"
            if task.done() and not task.cancelled() and task.exception() is not None:
                why = f"exited: {task.exception()!r}"
            await self.stop()
            raise BenchError(f"lbrec {why}")

    async def stop(self) -> None:
        task, stop = self._task, self._stop
        self._task = self._stop = None
        if task is None or stop is None:
            return
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except Exception as err:
            _log(f"lbrec stopped with {err!r}")


class ProcessProxy(ProxyUnderTest):
    """nginx or HAProxy: a process of ours, started per case and stopped by its pid."""

    def __init__(
        self, name: str, ports: Ports, procs: Processes, argv: list[str], conf_text: str
    ) -> None:
        super().__init__(ports)
        self.name = name
        self.procs = procs
        self.argv = argv
        self.conf_text = conf_text
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        proc = self.procs.start(self.name, self.argv)
        self.proc = proc
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = _one_line(self.procs.log_tail(self.name, 3))
                self.proc = None
                raise BenchError(f"{self.name} exited with code {proc.returncode}: {tail}")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(LOOPBACK, self.ports.listen), 0.5
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        await self.stop()
        raise BenchError(f"{self.name} not listening after {START_TIMEOUT:g}s")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            await asyncio.to_thread(self.procs.stop, proc)


def nginx_conf(tmp: Path, ports: Ports, *, header_policy: bool) -> str:
    temp = tmp / "nginx-temp"
    policy = (
        """
            proxy_set_header Host $lbrec_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Forwarded "";
            proxy_set_header X-Real-IP "";"""
        if header_policy
        else ""
    )
    # The Host a client sent, or (HTTP/1.0 without one) the upstream's, as lbrec does.
    host_map = (
        '\n    map $http_host $lbrec_host { "" $proxy_host; default $http_host; }'
        if header_policy
        else ""
    )
    return (
        _nginx_main(tmp, "nginx")
        + f"""http {{
    access_log off;
{nginx_temp_paths(temp)}    client_header_timeout 3s;
    client_body_timeout 3s;
    send_timeout 3s;
    keepalive_timeout 30s;{host_map}
    upstream pool {{
        server {LOOPBACK}:{ports.backend};
        keepalive 16;
    }}
    server {{
        listen {LOOPBACK}:{ports.listen};
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{policy}
            proxy_connect_timeout 1s;
            proxy_send_timeout 3s;
            proxy_read_timeout 3s;
        }}
    }}
}}
"""
    )


def haproxy_conf(ports: Ports, *, header_policy: bool) -> str:
    policy = (
        """
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Forwarded-Proto http
    http-request del-header Forwarded
    http-request del-header X-Real-IP"""
        if header_policy
        else ""
    )
    return f"""global
    nbthread 1
    maxconn 1024

defaults
    mode http
    timeout connect 1s
    timeout client 3s
    timeout server 3s
    timeout http-request 3s
    timeout http-keep-alive 30s
    maxconn 1024

frontend fe
    bind {LOOPBACK}:{ports.listen}{policy}
    default_backend pool

backend pool
    http-reuse always
    server b {LOOPBACK}:{ports.backend}
"""


def make_proxies(procs: Processes, tmp: Path, *, header_policy: bool) -> dict[str, ProxyUnderTest]:
    temp = tmp / "nginx-temp"
    temp.mkdir(exist_ok=True)
    if os.geteuid() == 0:  # nginx's worker runs as nobody: let it reach its temp dirs
        tmp.chmod(0o711)
        temp.chmod(0o777)
    nginx_text = nginx_conf(tmp, PORTS["nginx"], header_policy=header_policy)
    nginx_path = tmp / "nginx.conf"
    _write_atomic(nginx_path, nginx_text)
    nginx_argv = ["nginx", "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c"]
    nginx_argv += [str(nginx_path), "-g", "daemon off;"]
    haproxy_text = haproxy_conf(PORTS["haproxy"], header_policy=header_policy)
    haproxy_path = tmp / "haproxy.cfg"
    _write_atomic(haproxy_path, haproxy_text)
    return {
        "lbrec": LbrecProxy(PORTS["lbrec"], tmp),
        "nginx": ProcessProxy("nginx", PORTS["nginx"], procs, nginx_argv, nginx_text),
        "haproxy": ProcessProxy(
            "haproxy",
            PORTS["haproxy"],
            procs,
            ["haproxy", "-f", str(haproxy_path), "-db"],
            haproxy_text,
        ),
    }


# --------------------------------------------------------------------------- one case


async def _listen(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], port: int
) -> asyncio.AbstractServer:
    """A backend on the fixed port (the peers' configs name it); retried while it is busy."""
    for _ in range(50):
        try:
            return await asyncio.start_server(handler, LOOPBACK, port)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            await asyncio.sleep(0.1)
    raise BenchError(f"backend port {port} stays in use")


def _reason(err: BaseException) -> str:
    """One line: the failing assertion's source line and its message."""
    frames = traceback.extract_tb(err.__traceback__)
    line = (frames[-1].line or "").strip() if frames else ""
    message = str(err) or type(err).__name__
    if not isinstance(err, AssertionError):
        message = f"{type(err).__name__}: {message}"
    text = f"{line} -> {message}" if line else message
    return _one_line(text.replace("`", "'"))[:260]


def _client_view(data: bytes, closed: bool, *, head_request: bool = False) -> ClientView:
    view = ClientView(closed=closed)
    view.interim = [s for s in (int(m) for m in _STATUS.findall(data)) if 100 <= s < 200]
    try:
        responses, rest = parse_responses(data, head_request=head_request)
    except FramingError as err:
        view.framing = str(err)
        view.statuses = [int(m) for m in _STATUS.findall(data)]
        view.generated_error = any(s >= 400 for s in view.statuses)
        return view
    view.statuses = [r.status for r in responses]
    view.generated_error = any(r.header(b"x-seen") is None and r.status >= 400 for r in responses)
    view.rest = len(rest)
    head = _STATUS.match(rest)
    view.partial = int(head.group(1)) if head is not None else None
    return view


async def _exchange(port: int, payload: bytes, *, want: int | None) -> tuple[bytes, bool, str]:
    try:
        data, closed = await exchange_raw(port, payload, want=want)
    except OSError as err:  # the proxy reset the connection while the client was sending
        return b"", True, f"{type(err).__name__} while sending"
    return data, closed, ""


def judge_request(case: RequestCase, recorder: Recorder, data: bytes, closed: bool) -> str | None:
    """test_request_case's judgement of the attack (the victim is judged apart)."""
    try:
        request_oracle(case, recorder, data, closed)
    except Exception as err:
        return _reason(err)
    return None


async def run_request(proxy: ProxyUnderTest, case: RequestCase) -> RequestResult:
    result = RequestResult()
    recorder = Recorder(port=proxy.ports.backend)
    recorder.server = await _listen(recorder.handle, proxy.ports.backend)
    try:
        await proxy.start()
        try:
            port = proxy.ports.listen
            want = case.count if case.verdict == "forward" else None
            data, closed, note = await _exchange(port, case.raw, want=want)
            await asyncio.sleep(SETTLE)
            result.client = _client_view(data, closed)
            result.client.note = note
            result.attacker = sum(r.target not in _IGNORED_TARGETS for r in recorder.requests)
            result.backend_errors = len(recorder.errors)
            result.truncated = recorder.truncated
            result.failure = judge_request(case, recorder, data, closed)
            try:
                await _victim(port, recorder)
            except Exception as err:
                result.failure = result.failure or "victim: " + _reason(err)
        finally:
            await proxy.stop()
    finally:
        await recorder.close()
    return result


async def run_response(proxy: ProxyUnderTest, case: ResponseCase) -> ResponseResult:
    """test_response_case, recording what each step saw."""
    result = ResponseResult()
    backend = ScriptedBackend(case.answer, close_after=case.close_after, port=proxy.ports.backend)
    backend.server = await _listen(backend.handle, proxy.ports.backend)
    try:
        await proxy.start()
        try:
            port = proxy.ports.listen
            head = case.method == b"HEAD"
            request = case.method + b" /first HTTP/1.1\r\nHost: example.com\r\n\r\n"
            data, closed, note = await _exchange(port, request, want=1)
            result.client = _client_view(data, closed, head_request=head)
            result.client.note = note
            try:
                responses, rest = parse_responses(data, head_request=head)
                assert len(responses) == 1 and not rest, data[:500]
                assert responses[0].status == case.status, data[:500]
                if case.body is not None:
                    assert responses[0].body == case.body
                assert b"poisoned" not in data and b"EXTRA" not in data
            except Exception as err:
                result.failure = _reason(err)
            body: bytes | None = None
            try:
                body = await _victim(port, None)
            except Exception as err:
                result.failure = result.failure or "victim: " + _reason(err)
            if body is not None:
                result.victim_poisoned = b"poisoned" in body or b"EXTRA" in body
                if backend.scripted_conn is not None:
                    result.reused = body == f"conn-{backend.scripted_conn}".encode()
                if not case.reuse_allowed and result.reused:
                    result.failure = result.failure or "connection was reused"
        finally:
            await proxy.stop()
    finally:
        await backend.close()
    return result


async def _bounded(make: Callable[[], Coroutine[Any, Any, T]], empty: T) -> T:
    """``make()`` within CASE_TIMEOUT; a harness failure is recorded on ``empty``."""
    try:
        return await asyncio.wait_for(make(), CASE_TIMEOUT)
    except Exception as err:  # recorded in the table, the other cases go on
        if isinstance(empty, RequestResult | ResponseResult):
            empty.error = _one_line(f"{type(err).__name__}: {err}")
        return empty


async def run_cases(
    proxies: dict[str, ProxyUnderTest],
    requests: Sequence[RequestCase],
    responses: Sequence[ResponseCase],
    *,
    serial: bool,
) -> list[Row]:
    rows: list[Row] = []
    total = len(requests) + len(responses)

    async def each(
        run: Callable[[ProxyUnderTest], Coroutine[Any, Any, T]], empty: Callable[[], T]
    ) -> dict[str, T]:
        if serial:
            out: dict[str, T] = {}
            for name, proxy in proxies.items():
                out[name] = await _bounded(functools.partial(run, proxy), empty())
            return out
        results = await asyncio.gather(
            *(_bounded(functools.partial(run, proxy), empty()) for proxy in proxies.values())
        )
        return dict(zip(proxies, results, strict=True))

    for case in requests:
        expected = case.verdict
        if case.verdict == "reject":
            expected += " " + "/".join(str(s) for s in case.statuses)
        elif case.verdict == "forward":
            expected += f" {case.count}"
        got = await each(functools.partial(run_request, case=case), RequestResult)
        results: dict[str, Result] = {**got}
        rows.append(Row(case.name, case.klass, expected, "request", results))
        _progress(len(rows), total)
    for rcase in responses:
        expected = f"{rcase.status}" + ("" if rcase.reuse_allowed else ", no reuse")
        rgot = await each(functools.partial(run_response, case=rcase), ResponseResult)
        rresults: dict[str, Result] = {**rgot}
        rows.append(Row(rcase.name, rcase.klass, expected, "response", rresults))
        _progress(len(rows), total)
    return rows


def _progress(done: int, total: int) -> None:
    if done % 20 == 0 or done == total:
        _log(f"{done}/{total} cases")


# --------------------------------------------------------------------------- comparison


def compare(mine: Result, peer: Result) -> str:
    """lbrec against a peer on one case: "stricter", "equal", "looser" or "n/a".

    Request cases: fewer attacker requests completed at the backend is stricter; with as many,
    ending in a rejection (an error of the proxy's own, or a close unanswered) where the peer
    neither rejected nor closed is stricter (a close after the last answer and a 400 for the
    rest count alike). Response cases: not relaying the backend's answer (5xx or nothing)
    where the peer relayed it is stricter; relaying alike, not reusing the connection of an
    answer the corpus says must not be reused, where the peer reused it, is stricter.
    """
    if mine.error is not None or peer.error is not None:
        return "n/a"
    if isinstance(mine, RequestResult) and isinstance(peer, RequestResult):
        if mine.attacker != peer.attacker:
            return "stricter" if mine.attacker < peer.attacker else "looser"
        if mine.refused and not peer.ended:
            return "stricter"
        if peer.refused and not mine.ended:
            return "looser"
        return "equal"
    if isinstance(mine, ResponseResult) and isinstance(peer, ResponseResult):
        if mine.refused != peer.refused:
            return "stricter" if mine.refused else "looser"
        if mine.kept != peer.kept:
            return "looser" if mine.kept else "stricter"
        return "equal"
    return "n/a"


def _reuse_matters(row: Row) -> bool:
    return row.kind == "response" and "no reuse" in row.expected


def relation(row: Row, peer: str) -> str:
    mine, other = row.results["lbrec"], row.results[peer]
    if (
        row.kind == "response"
        and not _reuse_matters(row)
        and isinstance(mine, ResponseResult)
        and isinstance(other, ResponseResult)
        and mine.error is None
        and other.error is None
        and mine.refused == other.refused
    ):
        return "equal"  # reusing a connection after a well-framed answer is fine
    return compare(mine, other)


def oracle(result: Result) -> str:
    if result.error is not None:
        return "ERROR"
    return "pass" if result.failure is None else "FAIL"


# --------------------------------------------------------------------------- report


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_lines(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| lbrec vs | cases | lbrec stricter | equal | lbrec looser | n/a |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for peer in PEERS:
        for kind in ("request", "response", "all"):
            chosen = [r for r in rows if kind in ("all", r.kind)]
            counts = {k: 0 for k in ("stricter", "equal", "looser", "n/a")}
            for row in chosen:
                counts[relation(row, peer)] += 1
            lines.append(
                f"| {LABEL[peer]} ({kind} cases) | {len(chosen)} | {counts['stricter']} | "
                f"{counts['equal']} | {counts['looser']} | {counts['n/a']} |"
            )
    lines += [
        "",
        "| oracle failures | request cases | response cases | total | harness errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in NAMES:
        fails = {
            kind: sum(1 for r in rows if r.kind == kind and oracle(r.results[name]) == "FAIL")
            for kind in ("request", "response")
        }
        errors = sum(1 for r in rows if r.results[name].error is not None)
        lines.append(
            f"| {LABEL[name]} | {fails['request']} of "
            f"{sum(r.kind == 'request' for r in rows)} | {fails['response']} of "
            f"{sum(r.kind == 'response' for r in rows)} | "
            f"{fails['request'] + fails['response']} | {errors} |"
        )
    return lines


def table_lines(rows: Sequence[Row]) -> tuple[list[str], list[str]]:
    """The case-by-case table, and the numbered oracle complaints it points to."""
    lines = [
        "| case | class | corpus verdict | lbrec | nginx | HAProxy | lbrec vs nginx "
        "| lbrec vs HAProxy | oracle lbrec | oracle nginx | oracle HAProxy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for row in rows:
        cells = [f"`{row.name}`", row.klass, row.expected]
        cells += [_md(row.results[name].cell()) for name in NAMES]
        cells += [_flag(relation(row, peer)) for peer in PEERS]
        for name in NAMES:
            result = row.results[name]
            verdict = oracle(result)
            if verdict == "FAIL" and result.failure is not None:
                notes.append(f"{row.name} / {LABEL[name]}: {result.failure}")
                verdict = f"**FAIL** [{len(notes)}]"
            cells.append(verdict)
        lines.append("| " + " | ".join(cells) + " |")
    numbered = [f"{i}. {_md(note)}" for i, note in enumerate(notes, 1)]
    return lines, numbered


def _flag(text: str) -> str:
    return f"**{text}**" if text == "looser" else text


def highlights(rows: Sequence[Row]) -> list[str]:
    """What the reader should look at first: lbrec looser than a peer, lbrec's own failures."""
    looser = [
        f"`{row.name}` vs {LABEL[peer]} (corpus: {row.expected}): lbrec "
        f"{row.results['lbrec'].cell()}, oracle {oracle(row.results['lbrec'])}; "
        f"{LABEL[peer]} {row.results[peer].cell()}, oracle {oracle(row.results[peer])}"
        for row in rows
        for peer in PEERS
        if relation(row, peer) == "looser"
    ]
    own = [
        f"`{row.name}`: {row.results['lbrec'].failure or row.results['lbrec'].error}"
        for row in rows
        if oracle(row.results["lbrec"]) != "pass"
    ]
    lines = ["Cases where lbrec is looser than a peer:", ""]
    lines += [f"- {_md(item)}" for item in looser] or ["- none"]
    lines += ["", "Cases where lbrec fails its own oracle:", ""]
    lines += [f"- {_md(item)}" for item in own] or ["- none"]
    return lines


def _dpkg_version(package: str) -> str:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def _dirty(path: str) -> bool:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", path],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(done.stdout.strip())


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def render(
    rows: Sequence[Row],
    info: dict[str, Any],
    proxies: dict[str, ProxyUnderTest],
    tmp: Path,
    *,
    full: bool,
) -> str:
    table, notes = table_lines(rows)
    request_rows = sum(r.kind == "request" for r in rows)
    configs: list[str] = []
    for name in PEERS:
        proxy = proxies[name]
        if isinstance(proxy, ProcessProxy):
            text = proxy.conf_text.replace(str(tmp), "<tmp>").rstrip()
            configs += [f"{LABEL[name]}:", "", "```", text, "```", ""]
    lbrec = proxies["lbrec"]
    if isinstance(lbrec, LbrecProxy):
        configs += ["lbrec (backends.json):", "", "```json", lbrec.doc_text.rstrip(), "```", ""]
    scope = "" if full else f" (a subset: `-k {info['filter']}`)"
    lines = [
        "# Proxy conformance: the desync corpus against lbrec, nginx and HAProxy",
        "",
        "Generated by `bench/desync_compare.py`; do not edit by hand, run it again.",
        "HTTP/2 (downgrade smuggling, h2spec-like cases, floods): "
        "[proxy-conformance-http2.md](proxy-conformance-http2.md), by `bench/h2_conformance.py`.",
        "",
        "## How to run",
        "",
        "```",
        "cd /work/main   # the repository root",
        ".venv/bin/python bench/desync_compare.py            # all cases, rewrites this file",
        ".venv/bin/python bench/desync_compare.py --install  # apt-get nginx-light, haproxy first",
        ".venv/bin/python bench/desync_compare.py -k chunk,te- --out /tmp/part.md  # a subset",
        ".venv/bin/python bench/desync_compare.py --serial   # one proxy at a time",
        ".venv/bin/python bench/desync_compare.py --peer-defaults  # no header policy for peers",
        "```",
        "",
        "Each case of `tests/proxy/desync/cases.py` is sent through each proxy on 127.0.0.1, "
        "ports 28110-28131: the proxy is started for the case, in front of its own fresh "
        "recording backend (the h11-based `Recorder` of `tests/proxy/desync/harness.py`; for "
        "response cases its `ScriptedBackend`), then the attack goes on one client connection "
        "(`exchange_raw`, default timeouts), the victim request on another, and proxy and "
        "backend are stopped, so nothing carries over between cases. The judgement is the one "
        "of `tests/proxy/desync/test_desync.py` (`_check_invariants`, `_victim`, and the "
        "verdict checks of `test_request_case` / `test_response_case`).",
        "",
        "## Run",
        "",
        f"- Date: {info['date_utc']}; {info['nproc']} CPUs ({info['cpu_model']}), kernel "
        f"{info['kernel']}, Python {info['python']}; the three proxies ran each case "
        + ("one after the other" if info["serial"] else "at the same time")
        + f"; {info['elapsed']:.0f} s in all",
        f"- lbrec: {info['lbrec_commit']}, in process (`proxy.app.serve`), httptools "
        f"{info['httptools']}; backend parser h11 {info['h11']}",
        f"- nginx: {info['nginx']} (Debian package {info['nginx_deb']})",
        f"- HAProxy: {info['haproxy']} (Debian package {info['haproxy_deb']})",
        f"- Cases: {request_rows} request, {len(rows) - request_rows} response{scope}",
        f"- Peer header policy: {'off (--peer-defaults)' if info['peer_defaults'] else 'on'}",
        "",
        "## Summary",
        "",
        '"Stricter": lbrec completes fewer of the attacker\'s requests at the backend than the '
        "peer, or as many but ends in a rejection (an error answer of its own, or a close "
        "without answer) where the peer does not; for response cases, lbrec does not relay the "
        "backend's answer (5xx) where the peer does, or does not reuse a connection that must "
        'not be reused where the peer does. "Looser" is the reverse. "n/a": one side '
        "could not run the case.",
        "",
        *summary_lines(rows),
        "",
        *highlights(rows),
        "",
        "The corpus's verdicts are lbrec's design choices (nginx-like statuses, strict RFC "
        "9112 framing, its forwarding-header policy). **An oracle failure for nginx or HAProxy "
        "is a finding about that proxy, or about a policy it does not share, not an error of "
        "the script**; an oracle failure for lbrec is a regression (the same checks run in "
        "`tests/proxy/desync`).",
        "",
        "## Case by case",
        "",
        "Request cells: statuses the attacker's connection got (`—`: none), whether the proxy "
        "closed it (`open`: still open when the client stopped reading), `bN`: the attacker's "
        "requests the backend completed; `h11-error`: the backend's parser saw broken framing "
        "(a desync); `truncated`: the proxy abandoned a request mid-body; `BAD-FRAMING`: the "
        "proxy's own answer could not be read unambiguously. Response cells: the status the "
        "client got, and whether the victim's request went over the connection that carried "
        "the scripted answer (`reused`); `VICTIM POISONED`: the victim got bytes of the bad "
        "answer (the oracle of test_desync.py does not check this for the victim).",
        "",
        *table,
        "",
        "Caveats when reading the oracle columns:",
        "",
        "- The client-side reader (`parse_responses`) is strict: a chunked answer that "
        "carries trailers counts as BAD-FRAMING, although RFC 9112 allows trailers.",
        "- Some request checks are policy rather than framing (headers named in Connection, "
        "Proxy-Connection, Upgrade and HTTP2-Settings dropped, names with `_` dropped, "
        "absolute-form sent on in origin form, Host validated): a peer failing only those "
        "forwarded a well-framed request that lbrec would have changed or refused.",
        "- The victim check of test_desync.py does not look for the bad answer's bytes in the "
        "victim's answer; the `VICTIM POISONED` flag of the response cells does.",
        "",
        "### Oracle complaints",
        "",
        "The first failed check per case and proxy (source line of the assertion -> what it saw).",
        "",
        *(notes or ["None."]),
        "",
        "## Configurations",
        "",
        "nginx and HAProxy in a usual reverse-proxy setup: nginx with one worker, "
        "`proxy_pass` to an upstream with `keepalive`, `proxy_http_version 1.1`, "
        '`proxy_set_header Connection ""` and its default request buffering; HAProxy in '
        "`mode http` with `http-reuse always` and one thread. Timeouts are near lbrec's test "
        "config (3 s for headers, bodies and upstream reads). Unless `--peer-defaults`, both "
        "also get the forwarding-header policy lbrec has by default (Host passed through, "
        "X-Forwarded-For replaced by the client address, Forwarded and X-Real-IP dropped).",
        "",
        *configs,
    ]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- main


def _check_ports() -> None:
    """Every port this script will bind is in 28100-28199 and free now."""
    wanted = [p for ports in PORTS.values() for p in (ports.listen, ports.backend)]
    assert all(p in PORT_RANGE for p in [*wanted, LBREC_ADMIN])
    for port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError as err:
                raise BenchError(f"port {LOOPBACK}:{port} is in use: {err}") from err


def _select(names: Sequence[str], pattern: str) -> list[str]:
    words = [w.strip() for w in pattern.split(",") if w.strip()]
    return [n for n in names if not words or any(w in n for w in words)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "-k", dest="filter", default="", help="only cases whose name has one of these (a,b)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"markdown file to write (default {DEFAULT_OUT.relative_to(REPO)}; with -k: none)",
    )
    parser.add_argument("--serial", action="store_true", help="one proxy at a time per case")
    parser.add_argument(
        "--peer-defaults",
        action="store_true",
        help="no forwarding-header policy for nginx/HAProxy (their defaults)",
    )
    parser.add_argument(
        "--install", action="store_true", help="apt-get install nginx-light, haproxy if missing"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    parser.add_argument("--verbose", action="store_true", help="show lbrec's own log lines")
    return parser.parse_args(argv)


async def _amain(
    args: argparse.Namespace, procs: Processes, tmp: Path
) -> tuple[list[Row], dict[str, ProxyUnderTest]]:
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    if me is not None:  # Ctrl-C: cancel the run, whose finally blocks stop what it started
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, me.cancel)
    proxies = make_proxies(procs, tmp, header_policy=not args.peer_defaults)
    for proxy in proxies.values():  # fail early, with the reason, if one cannot start at all
        await proxy.start()
        await proxy.stop()
    wanted_req = set(_select([c.name for c in REQUEST_CASES], args.filter))
    wanted_resp = set(_select([c.name for c in RESPONSE_CASES], args.filter))
    requests = [c for c in REQUEST_CASES if c.name in wanted_req]
    responses = [c for c in RESPONSE_CASES if c.name in wanted_resp]
    _log(f"{len(requests)} request and {len(responses)} response cases, 3 proxies")
    rows = await run_cases(proxies, requests, responses, serial=args.serial)
    return rows, proxies


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        logging.getLogger("lbrec").setLevel(logging.CRITICAL)
    tools = ensure_tools(install=args.install, needed={"nginx", "haproxy"})
    missing = {"nginx", "haproxy"} - tools
    if missing:
        print(
            f"not installed: {', '.join(sorted(missing))}; apt-get install -y nginx-light "
            "haproxy (or run with --install)",
            file=sys.stderr,
        )
        return 2
    try:
        _check_ports()
    except BenchError as err:
        print(str(err), file=sys.stderr)
        return 2
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="lbrec-desync-"))
    procs = Processes(tmp)
    started = time.monotonic()
    try:
        with _signals_stop(procs):
            rows, proxies = asyncio.run(_amain(args, procs, tmp))
    except BenchError as err:
        print(f"cannot run: {err}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print("interrupted: stopped what this run started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    commit = _git_describe(REPO) + ("+dirty(tests)" if _dirty("tests") else "")
    info: dict[str, Any] = {
        **machine,
        "elapsed": time.monotonic() - started,
        "serial": args.serial,
        "peer_defaults": args.peer_defaults,
        "filter": args.filter,
        "lbrec_commit": commit,
        "h11": _version("h11"),
        "httptools": _version("httptools"),
        "nginx_deb": _dpkg_version("nginx"),
        "haproxy_deb": _dpkg_version("haproxy"),
    }
    text = render(rows, info, proxies, tmp, full=not args.filter)
    print(text)
    out = args.out if args.out is not None else (None if args.filter else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(out, text)
        _log(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
