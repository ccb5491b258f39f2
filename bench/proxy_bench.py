"""Data-plane benchmark: lbrec's proxy against nginx and HAProxy, on loopback, with wrk.

One run starts its own backends (one nginx serving ``return 200 "ok"`` on several ports,
with weights 2:3 by default), then for each target

* ``direct``  - wrk straight to the first backend (the ceiling of this machine),
* ``lbrec``   - ``python -m proxy --config <tmp>/backends.json`` in front of the backends,
* ``nginx``   - one worker, weighted upstream, keepalive to upstreams, access log off,
* ``haproxy`` - nbthread 1, weighted roundrobin, http-reuse, no logging,

runs one warm-up and ``--rounds`` measured wrk runs (rounds interleaved across targets, so a
noisy neighbour hurts every target alike), and reports the median requests/s, p50 and p99
latency, the CPU time per request of the target's processes, and the socket errors and
answers with a status >= 400, summed over the rounds.

With ``--reload-every S`` the config of each load balancer is rewritten every S seconds while
wrk runs (lbrec: atomic rename of backends.json; nginx: SIGHUP to its master; HAProxy: a new
process started with ``-sf <old pid>``), and the errors show what a reload costs the clients.

With ``--restart`` the targets are two lbrec proxies instead, and the lbrec *process* is
replaced every ``--restart-every`` seconds (2) while wrk runs: ``lbrec-handoff`` starts the
new process beside the old one with the same ``--handoff`` path (the old one hands over its
listening sockets, drains and exits 0 by itself); ``lbrec-stop-start``, the baseline, stops
the old one (SIGTERM) and then starts the new one. Beside wrk, one GET on a fresh connection
every 20 ms counts what a client connecting during a restart sees.

All traffic goes to 127.0.0.1 (``--ports LOW-HIGH`` keeps every port in a range); every load
is bounded by wrk's ``-d``, every restart loop by the run's length and its own timeouts; every
process this script starts runs in its own session and is stopped by its process-group id.

    .venv/bin/python bench/proxy_bench.py                 # ~2 minutes, all four targets
    .venv/bin/python bench/proxy_bench.py --reload-every 0.5
    .venv/bin/python bench/proxy_bench.py --restart --duration 20   # process replacements
    .venv/bin/python bench/proxy_bench.py --only lbrec --profile 10
    .venv/bin/python bench/proxy_bench.py --install       # apt-get what is missing first

See docs/benchmarks.md for what the figures mean and the ones measured so far.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKERS = 1  # --workers: of every balancer (not of the backends)
TARGETS = ("direct", "lbrec", "nginx", "haproxy", "caddy", "pyfloor")
DEFAULT_TARGETS = ("direct", "lbrec", "nginx", "haproxy", "caddy")  # pyfloor: on request (--only)
RESTART_TARGETS = ("lbrec-handoff", "lbrec-stop-start")  # --restart
LOOPBACK = "127.0.0.1"
APT_PACKAGES = {
    "wrk": ["wrk"],
    "nginx": ["nginx-light", "nginx"],
    "haproxy": ["haproxy"],
    "caddy": ["caddy"],
    "perf": ["linux-perf"],
}

# wrk calls done() once at the end; a JSON line is easier and more exact to read than the
# human summary (latencies in microseconds, errors by kind).
_WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"timeout":%.0f,"status":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


class BenchError(Exception):
    """A target could not be set up or measured; the message says why."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class WrkRun:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int  # connect + read + write + timeout
    non_2xx: int  # wrk's "status" errors: answers with a status above 399
    errors_by_kind: dict[str, int]
    reloads: int = 0
    # CPU seconds the target's processes used during the run (for "direct": the backends').
    # Much steadier than req/s on a shared machine: it does not depend on who else runs.
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    # --restart: GETs on a fresh connection every few ms beside wrk, and how many failed
    # (no answer or not 200): what a client that connects during a restart sees.
    probes: int = 0
    probes_failed: int = 0

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * (self.cpu_user_s + self.cpu_sys_s) / self.requests if self.requests else 0.0


@dataclass(slots=True)
class TargetResult:
    name: str
    status: str = "ok"  # "ok", or why the row has no figures ("failed to start: ...")
    runs: list[WrkRun] = field(default_factory=list)
    warmup: WrkRun | None = None
    spread: dict[str, int] = field(default_factory=dict)  # backend name -> answers seen
    reload_check: dict[str, Any] | None = None  # did the last reload take effect?
    runtime: dict[str, str] | None = None  # lbrec: /-/pool "runtime" (event loop, parser)
    restarts: list[dict[str, Any]] = field(default_factory=list)  # --restart: one per restart

    def median(self, key: str) -> float:
        return statistics.median(float(getattr(run, key)) for run in self.runs)

    def total(self, key: str) -> int:
        return sum(int(getattr(run, key)) for run in self.runs)


# --------------------------------------------------------------------------- processes


class Processes:
    """Every process this script starts; each in its own session, stopped by its pgid."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._lock = threading.Lock()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = self.log_path(name)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._procs.append((name, proc))
        return proc

    def cpu_seconds(self, name: str) -> tuple[float, float]:
        """User and system CPU seconds of every live process in the groups started as ``name``.

        Includes the time of reaped children (an nginx master's old workers), so a reload's
        workers count too. Read before and after a run; the difference is the run's cost.
        """
        with self._lock:
            groups = {proc.pid for n, proc in self._procs if n == name}
        tick = float(os.sysconf("SC_CLK_TCK"))
        user = system = 0.0
        for _pid, fields in _proc_stats():
            # after "pid (comm)": state ppid pgrp ... utime stime cutime cstime (fields 3..17)
            if int(fields[2]) in groups:
                user += (int(fields[11]) + int(fields[13])) / tick
                system += (int(fields[12]) + int(fields[14])) / tick
        return user, system

    def log_path(self, name: str) -> Path:
        return self._logdir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 8) -> str:
        try:
            text = self.log_path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # our own session: pgid == pid of the process we started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._procs))
        for _name, proc in procs:
            self.stop(proc)
        # An nginx master stopped above takes its workers with it. A process still in one of
        # our groups (an orphaned worker) is ours, and the group id stays reserved while it
        # lives, so it cannot be someone else's: kill it by its pid.
        groups = {proc.pid for _name, proc in procs}
        for pid, fields in _proc_stats():
            if int(fields[2]) in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after "(comm)") of every process now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rpartition(")")[2].split()
        except (OSError, UnicodeDecodeError):
            continue  # gone meanwhile
        if len(fields) > 14:
            yield int(entry.name), fields


_PORTS_GIVEN: set[int] = set()
PORT_RANGE: tuple[int, int] | None = None  # --ports LOW-HIGH: every port from there


def free_port() -> int:
    """A free loopback port below the ephemeral range (or in ``--ports LOW-HIGH``).

    A port that the kernel hands out for ``bind(0)`` is ephemeral: before the server binds
    it, an outgoing connection (wrk's, a proxy's to its upstreams) may take it as its source
    port, and the server fails with EADDRINUSE. So pick at random below that range.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="utf-8")
        low = int(text.split()[0])
    first, last = PORT_RANGE if PORT_RANGE is not None else (max(1025, low - 12000), low - 1)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(first, last + 1)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    where = f"in {first}-{last}" if PORT_RANGE is not None else "below the ephemeral range"
    raise BenchError(f"no free loopback port found {where}")


def http_get(port: int, path: str = "/", *, timeout: float = 2.0) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def wait_ready(
    procs: Processes,
    proc: subprocess.Popen[bytes],
    name: str,
    port: int,
    *,
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Until GET / on ``port`` answers 200; raise BenchError with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = procs.log_tail(name)
            raise BenchError(f"exited with code {proc.returncode}" + (f": {tail}" if tail else ""))
        try:
            status, _ = http_get(port, timeout=1.0)
        except OSError as err:
            last = f"{type(err).__name__}: {err}"
        except http.client.HTTPException as err:
            last = f"bad HTTP answer: {type(err).__name__}"
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(interval)
    tail = procs.log_tail(name, 4)
    raise BenchError(f"not ready after {timeout:.0f}s ({last})" + (f": {tail}" if tail else ""))


# --------------------------------------------------------------------------- config files


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    port: int
    weight: int


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _reweighted(backends: Sequence[Backend], generation: int) -> list[Backend]:
    """Odd generations reverse the weights (2:3 -> 3:2), so every reload really changes."""
    if generation % 2 == 0:
        return list(backends)
    weights = [b.weight for b in reversed(backends)]
    return [Backend(b.name, b.port, w) for b, w in zip(backends, weights, strict=True)]


def backends_nginx_conf(tmp: Path, backends: Sequence[Backend]) -> str:
    servers = "\n".join(
        f"    server {{ listen {LOOPBACK}:{b.port} backlog=4096;"
        f' location / {{ add_header X-Backend {b.name}; return 200 "ok"; }} }}'
        for b in backends
    )
    return (
        _nginx_main(tmp, "backends")
        + f"""http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
{servers}
}}
"""
    )


def _nginx_main(tmp: Path, name: str, workers: int = 1) -> str:
    return f"""worker_processes {workers};
error_log {tmp}/{name}-error.log warn;
pid {tmp}/{name}.pid;
events {{ worker_connections 4096; }}
"""


def nginx_temp_paths(temp: Path) -> str:
    """The temp-path lines of an nginx ``http`` block, all under ``temp`` (never /var/lib)."""
    return "".join(
        f"    {kind}_temp_path {temp}/{name};\n"
        for kind, name in (
            ("client_body", "body"),
            ("proxy", "proxy"),
            ("fastcgi", "fastcgi"),
            ("uwsgi", "uwsgi"),
            ("scgi", "scgi"),
        )
    )


def lb_nginx_conf(tmp: Path, port: int, backends: Sequence[Backend], *, workers: int = 1) -> str:
    servers = "\n".join(f"        server {LOOPBACK}:{b.port} weight={b.weight};" for b in backends)
    temp = tmp / "nginx-temp"
    return (
        _nginx_main(tmp, "nginx", workers)
        + f"""http {{
    access_log off;
{nginx_temp_paths(temp)}    keepalive_requests 1000000;
    upstream pool {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {LOOPBACK}:{port} backlog=4096;
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""
    )


def lb_haproxy_conf(port: int, backends: Sequence[Backend], *, workers: int = 1) -> str:
    servers = "\n".join(
        f"    server {b.name} {LOOPBACK}:{b.port} weight {b.weight}" for b in backends
    )
    return f"""global
    nbthread {workers}
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 65s
    maxconn 4096

frontend fe
    bind {LOOPBACK}:{port}
    default_backend pool

backend pool
    balance roundrobin
    http-reuse always
{servers}
"""


def lbrec_config_json(
    backends: Sequence[Backend], *, generation: str, listen: int, admin: int
) -> str:
    """backends.json built with the proxy's own model, so the bench cannot drift from it.

    Only the keys set here are written (the rest are the proxy's defaults), so that an older
    checkout given with ``--lbrec-repo`` reads the file too (its model forbids unknown keys).
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lbrec.proxy.config import BackendEntry, BackendsConfig, HealthSettings

    config = BackendsConfig(
        generation=generation,
        listen=f"{LOOPBACK}:{listen}",
        admin=f"{LOOPBACK}:{admin}",
        # Probes every 60 s: negligible next to the load, and the pool starts up anyway.
        health=HealthSettings(interval=60.0, timeout=2.0),
        backends=tuple(
            BackendEntry(name=b.name, url=f"http://{LOOPBACK}:{b.port}", weight=b.weight)
            for b in backends
        ),
    )
    sparse = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return json.dumps(sparse, indent=2) + "\n"


# --------------------------------------------------------------------------- targets


class Target:
    """One row of the table: something wrk can load, which may be reloadable."""

    name = "target"

    def __init__(self, procs: Processes, tmp: Path, backends: Sequence[Backend]) -> None:
        self.procs = procs
        self.tmp = tmp
        self.backends = list(backends)
        self.port = free_port()
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None  # the process wrk talks to

    def start(self, *, timeout: float) -> None:
        raise NotImplementedError

    def reload(self) -> None:
        raise BenchError(f"{self.name} cannot reload")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def weights(self) -> dict[str, int]:
        """The weights of the config written last (what a reload should have applied)."""
        return {b.name: b.weight for b in _reweighted(self.backends, self.generation)}


class Direct(Target):
    name = "direct"

    def start(self, *, timeout: float) -> None:
        self.port = self.backends[0].port

    def alive(self) -> bool:
        return True  # the backends: checked by wait_ready at the start


class Lbrec(Target):
    name = "lbrec"
    repo = REPO  # where ``python -m proxy`` runs; --lbrec-repo points it at another checkout
    extra_args: tuple[str, ...] = ()  # --lbrec-args (and --workers N)
    site: Path | None = None  # --wheel: the wheel built from ``repo``, installed here

    def __init__(self, procs: Processes, tmp: Path, backends: Sequence[Backend]) -> None:
        super().__init__(procs, tmp, backends)
        self.admin = free_port()
        self.config = tmp / "lbrec" / "backends.json"

    def _write(self) -> None:
        text = lbrec_config_json(
            _reweighted(self.backends, self.generation),
            generation=f"bench-{self.generation}",
            listen=self.port,
            admin=self.admin,
        )
        _write_atomic(self.config, text)

    def argv(self) -> list[str]:
        python = self.repo / ".venv" / "bin" / "python"
        if not python.exists():
            python = REPO / ".venv" / "bin" / "python"
        return [
            str(python if python.exists() else Path(sys.executable)),
            *(("-P", "-m", "lbrec.proxy") if self.site is not None else ("-m", "proxy")),
            "--config",
            str(self.config),
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--admin",
            f"{LOOPBACK}:{self.admin}",
            *self.extra_args,
        ]

    def start(self, *, timeout: float) -> None:
        if not (self.repo / "proxy" / "__main__.py").exists():
            raise BenchError(f"no proxy/__main__.py in {self.repo}")
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self._write()
        self.proc = self.procs.start(self.name, self.argv(), cwd=self.cwd(), env=self.env())
        wait_ready(self.procs, self.proc, self.name, self.port, timeout=timeout)

    def cwd(self) -> Path:
        return self.repo if self.site is None else self.tmp

    def env(self) -> dict[str, str] | None:
        """--wheel: the installed wheel first on the path (and nothing of the checkout)."""
        if self.site is None:
            return None
        return {**os.environ, "PYTHONPATH": str(self.site)}

    def reload(self) -> None:
        self.generation += 1
        self._write()

    def admin_pool(self) -> dict[str, Any] | None:
        """The admin ``/-/pool`` document, if the proxy answers."""
        conn = http.client.HTTPConnection(LOOPBACK, self.admin, timeout=2.0)
        try:
            conn.request("GET", "/-/pool")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return None
            value = json.loads(body)
            return value if isinstance(value, dict) else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def admin_generation(self) -> str | None:
        """The generation the proxy says it serves (admin ``/-/pool``), if it answers."""
        value = (self.admin_pool() or {}).get("generation")
        return value if isinstance(value, str) else None

    def runtime(self) -> dict[str, str] | None:
        """``runtime`` of ``/-/pool``: lbrec version, event loop, parser, Python."""
        value = (self.admin_pool() or {}).get("runtime")
        if not isinstance(value, dict):
            return None
        return {str(k): str(v) for k, v in value.items()}


class LbrecRestart(Lbrec):
    """lbrec whose ``reload`` replaces the proxy *process* (a new version, a changed listen).

    Two ways, one subclass each: ``handoff`` starts the new process beside the old one with
    the same ``--handoff`` path (the old one hands its listening sockets over, drains and exits
    0 by itself); ``stop-start`` stops the old one (SIGTERM, graceful drain) and then starts
    the new one, which binds the port again. Every wait is bounded; every restart appends one
    event (how long it took, the old process's exit code) to ``events``.
    """

    handoff = False

    def __init__(self, procs: Processes, tmp: Path, backends: Sequence[Backend]) -> None:
        super().__init__(procs, tmp, backends)
        self.config = tmp / self.name / "backends.json"
        self.start_timeout = 20.0
        self.events: list[dict[str, Any]] = []

    def argv(self) -> list[str]:
        extra = ["--handoff", str(self.config.parent / "handoff.sock")] if self.handoff else []
        return [*super().argv(), *extra]

    def start(self, *, timeout: float) -> None:
        self.start_timeout = timeout
        super().start(timeout=timeout)

    def take_events(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events

    def reload(self) -> None:
        if self.handoff:
            self._restart_handoff()
        else:
            self._restart_stop_start()

    def _restart_handoff(self) -> None:
        old = self.proc
        assert old is not None
        began = time.monotonic()
        new = self.procs.start(self.name, self.argv(), cwd=self.cwd(), env=self.env())
        # The old process exits 0 once the new one serves and it has drained (~1 s grace).
        try:
            code = old.wait(timeout=self.start_timeout + 10)
        except subprocess.TimeoutExpired:
            detail = f"new exited {new.returncode}" if new.poll() is not None else "new runs"
            self.procs.stop(new)  # the old one keeps serving: the run goes on without it
            raise BenchError(
                f"the old proxy did not hand over within {self.start_timeout + 10:.0f}s "
                f"({detail}): {_one_line(self.procs.log_tail(self.name, 3))}"
            ) from None
        if new.poll() is not None:
            raise BenchError(
                f"the new proxy exited {new.returncode} after the handoff: "
                f"{_one_line(self.procs.log_tail(self.name, 3))}"
            )
        self.proc = new
        self.events.append({"seconds": round(time.monotonic() - began, 3), "old_exit": code})

    def _restart_stop_start(self) -> None:
        old = self.proc
        assert old is not None
        began = time.monotonic()
        self.procs.stop(old)  # SIGTERM to its group, graceful drain; SIGKILL after 5 s
        code = old.returncode
        stopped = time.monotonic() - began
        self.proc = self.procs.start(self.name, self.argv(), cwd=self.cwd(), env=self.env())
        wait_ready(
            self.procs, self.proc, self.name, self.port, timeout=self.start_timeout, interval=0.02
        )
        # seconds: from SIGTERM (the listener closes at once) to the new process's first 200
        self.events.append(
            {
                "seconds": round(time.monotonic() - began, 3),
                "stop_s": round(stopped, 3),
                "old_exit": code,
            }
        )


class LbrecHandoff(LbrecRestart):
    name = "lbrec-handoff"
    handoff = True


class LbrecStopStart(LbrecRestart):
    name = "lbrec-stop-start"
    handoff = False


class Nginx(Target):
    name = "nginx"

    def __init__(self, procs: Processes, tmp: Path, backends: Sequence[Backend]) -> None:
        super().__init__(procs, tmp, backends)
        self.conf = tmp / "nginx.conf"

    def _write(self) -> None:
        text = lb_nginx_conf(
            self.tmp, self.port, _reweighted(self.backends, self.generation), workers=WORKERS
        )
        _write_atomic(self.conf, text)

    def start(self, *, timeout: float) -> None:
        (self.tmp / "nginx-temp").mkdir(exist_ok=True)
        self._write()
        argv = [
            "nginx",
            "-p",
            str(self.tmp),
            "-e",
            str(self.tmp / "nginx-error.log"),
            "-c",
            str(self.conf),
            "-g",
            "daemon off;",
        ]
        self.proc = self.procs.start("nginx", argv)
        wait_ready(self.procs, self.proc, "nginx", self.port, timeout=timeout)

    def reload(self) -> None:
        assert self.proc is not None
        self.generation += 1
        self._write()
        os.kill(self.proc.pid, signal.SIGHUP)  # the master we started (daemon off)


class PyFloor(Target):
    """bench/pyfloor.py: a Python byte relay on uvloop that does nothing per request (no
    parsing, no balancing): the least CPU any Python data path can spend per request."""

    name = "pyfloor"

    def start(self, *, timeout: float) -> None:
        python = REPO / ".venv" / "bin" / "python"
        argv = [
            str(python if python.exists() else Path(sys.executable)),
            str(REPO / "bench" / "pyfloor.py"),
            "--listen",
            f"{LOOPBACK}:{self.port}",
        ]
        for backend in self.backends:
            argv += ["--backend", f"{LOOPBACK}:{backend.port}"]
        self.proc = self.procs.start("pyfloor", argv)
        wait_ready(self.procs, self.proc, "pyfloor", self.port, timeout=timeout)


class Haproxy(Target):
    name = "haproxy"

    def __init__(self, procs: Processes, tmp: Path, backends: Sequence[Backend]) -> None:
        super().__init__(procs, tmp, backends)
        self.conf = tmp / "haproxy.cfg"

    def _write(self) -> None:
        _write_atomic(
            self.conf,
            lb_haproxy_conf(
                self.port, _reweighted(self.backends, self.generation), workers=WORKERS
            ),
        )

    def start(self, *, timeout: float) -> None:
        self._write()
        self.proc = self.procs.start("haproxy", ["haproxy", "-f", str(self.conf), "-db"])
        wait_ready(self.procs, self.proc, "haproxy", self.port, timeout=timeout)

    def reload(self) -> None:
        """The classic reload: a new process binds (SO_REUSEPORT), the old one soft-stops."""
        assert self.proc is not None
        self.generation += 1
        self._write()
        argv = ["haproxy", "-f", str(self.conf), "-db", "-sf", str(self.proc.pid)]
        self.proc = self.procs.start("haproxy", argv)


def lb_caddyfile(port: int, backends: Sequence[Backend]) -> str:
    """Caddy as a reverse proxy in front of the backends: round robin over each upstream listed
    once per unit of weight (Debian's Caddy 2.6 has no weighted policy; 2.8 added one),
    keep-alive to the upstreams, no access log, no admin endpoint, no automatic HTTPS."""
    upstreams = " ".join(f"{LOOPBACK}:{b.port}" for b in backends for _ in range(b.weight))
    return f"""{{
    admin off
    auto_https off
}}
http://{LOOPBACK}:{port} {{
    reverse_proxy {upstreams} {{
        lb_policy round_robin
        transport http {{
            keepalive 60s
            keepalive_idle_conns 64
        }}
    }}
}}
"""


class Caddy(Target):
    """Debian's caddy, GOMAXPROCS set to --workers as the others' worker counts are."""

    name = "caddy"

    def start(self, *, timeout: float) -> None:
        conf = self.tmp / "Caddyfile"
        _write_atomic(conf, lb_caddyfile(self.port, _reweighted(self.backends, self.generation)))
        env = {**os.environ, "GOMAXPROCS": str(WORKERS), "HOME": str(self.tmp)}
        argv = ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"]
        self.proc = self.procs.start("caddy", argv, env=env)
        wait_ready(self.procs, self.proc, "caddy", self.port, timeout=timeout)


TARGET_CLASSES: dict[str, type[Target]] = {
    "direct": Direct,
    "lbrec": Lbrec,
    "nginx": Nginx,
    "haproxy": Haproxy,
    "caddy": Caddy,
    "pyfloor": PyFloor,
    "lbrec-handoff": LbrecHandoff,
    "lbrec-stop-start": LbrecStopStart,
}


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class LoadShape:
    threads: int
    connections: int
    duration: float
    timeout: float


def run_wrk(
    lua: Path,
    port: int,
    shape: LoadShape,
    *,
    duration: float | None = None,
    reload: Callable[[], None] | None = None,
    reload_every: float = 0.0,
    probe_every: float = 0.0,
) -> WrkRun:
    seconds = max(1, round(duration if duration is not None else shape.duration))
    argv = [
        "wrk",
        f"-t{shape.threads}",
        f"-c{shape.connections}",
        f"-d{seconds}s",
        f"--timeout={shape.timeout:g}s",
        "--latency",
        "-s",
        str(lua),
        f"http://{LOOPBACK}:{port}/",
    ]
    stop = threading.Event()
    reloads = 0
    reload_errors: list[str] = []

    def reloader() -> None:
        # On a fixed schedule (every reload_every s from the start; one that overruns its
        # slot is followed by the next at once), and at most one per slot of the run.
        nonlocal reloads
        next_at = time.monotonic() + reload_every
        for _ in range(int(seconds / reload_every) + 1):
            if stop.wait(max(0.0, next_at - time.monotonic())):
                return
            try:
                assert reload is not None
                reload()
                reloads += 1
            except (OSError, BenchError) as err:
                reload_errors.append(str(err))
                return
            next_at = max(next_at + reload_every, time.monotonic())

    probes = [0, 0]  # sent, failed

    def prober() -> None:
        for _ in range(int(seconds / probe_every) + 1):
            if stop.wait(probe_every):
                return
            probes[0] += 1
            try:
                status, _ = http_get(port, timeout=shape.timeout)
            except (OSError, http.client.HTTPException):
                status = 0
            if status != 200:
                probes[1] += 1

    threads = []
    if reload is not None and reload_every > 0:
        threads.append(threading.Thread(target=reloader, name="reloader", daemon=True))
    if probe_every > 0:
        threads.append(threading.Thread(target=prober, name="prober", daemon=True))
    for thread in threads:
        thread.start()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"wrk did not finish within {seconds + 30}s") from err
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)  # a process restart under way: its waits are bounded
    if reload_errors:
        raise BenchError(f"reload failed: {reload_errors[0]}")
    run = parse_wrk(done.stdout, done.stderr, done.returncode, reloads=reloads)
    return dataclasses.replace(run, probes=probes[0], probes_failed=probes[1])


def parse_wrk(stdout: str, stderr: str, returncode: int, *, reloads: int = 0) -> WrkRun:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        detail = (stderr.strip() or stdout.strip())[-300:]
        raise BenchError(f"wrk exited {returncode} without a summary: {detail}")
    data: dict[str, float] = json.loads(line.removeprefix("WRK_JSON "))
    duration_s = data["duration_us"] / 1e6
    kinds = {k: int(data[k]) for k in ("connect", "read", "write", "timeout", "status")}
    return WrkRun(
        requests=int(data["requests"]),
        duration_s=round(duration_s, 3),
        rps=round(data["requests"] / duration_s if duration_s > 0 else 0.0, 1),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        socket_errors=kinds["connect"] + kinds["read"] + kinds["write"] + kinds["timeout"],
        non_2xx=kinds["status"],
        errors_by_kind=kinds,
        reloads=reloads,
    )


def sample_spread(port: int, count: int = 50) -> dict[str, int]:
    """Which backend answered ``count`` sequential requests (the X-Backend header)."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        try:
            status, headers = http_get(port, timeout=2.0)
        except (OSError, http.client.HTTPException):
            seen["<error>"] += 1
            continue
        seen[headers.get("x-backend", f"<HTTP {status}, no X-Backend>")] += 1
    return dict(sorted(seen.items()))


def check_reload_applied(target: Target, *, count: int = 50) -> dict[str, Any]:
    """Make sure the last config written swaps the weights, then see whether it is live.

    A balancer that ignored its reloads would trivially drop no connection; this shows it.
    """
    try:
        if target.generation % 2 == 0:
            target.reload()
        time.sleep(2.0)
    except (OSError, BenchError) as err:
        return {"applied": False, "error": str(err), "expected": {}, "seen": {}}
    weights = target.weights()
    expected = {name: round(count * w / sum(weights.values())) for name, w in weights.items()}
    seen = sample_spread(target.port, count)
    applied = all(abs(seen.get(name, 0) - n) <= 3 for name, n in expected.items())
    check: dict[str, Any] = {"applied": applied, "expected": expected, "seen": seen}
    if isinstance(target, Lbrec):
        check["admin_generation"] = target.admin_generation()
        check["written_generation"] = f"bench-{target.generation}"
    return check


# --------------------------------------------------------------------------- profile


def profile_pid(
    pid: int, seconds: int, out: Path, *, native: bool = False, blocking: bool = False
) -> dict[str, Any]:
    """py-spy record (folded stacks) of ``pid`` for ``seconds``; own/total time per function."""
    pyspy = REPO / ".venv" / "bin" / "py-spy"
    exe = str(pyspy) if pyspy.exists() else shutil.which("py-spy")
    if exe is None:
        raise BenchError("py-spy not found (.venv/bin/pip install py-spy)")
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "100",
        "--function",
        "--threads",
        # Not the default blocking mode: ptrace-stopping the proxy for every sample put ~70%
        # of the samples on the two transport.write() frames, against ~37% without stopping
        # it; perf's split of the same load (kernel ~55%, CPython ~34%) agrees with the latter.
        *([] if blocking else ["--nonblocking"]),
        *(["--native"] if native else []),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0 or not out.exists():
        raise BenchError(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return summarize_folded(out.read_text(encoding="utf-8"), expected=seconds * 100)


def summarize_folded(text: str, *, expected: int, top: int = 15) -> dict[str, Any]:
    """Own time (the leaf frame) and inclusive time per function, and own time per file.

    Only the main thread's samples are tabled: it runs the event loop and so the whole data
    path. Other threads (watchdog's observer...) are counted apart: in blocking mode py-spy
    took threads blocked in a lock or ``select`` for active ones under load. Own time is the
    leaf Python frame, so time in C (uvloop, a system
    call such as ``send``) counts as own time of the Python function that called into it
    (py-spy runs without ``--native``). Frames on the stack of 95% or more of the samples
    (runpy, ``Runner.run``...) are left out of "total".
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    files: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        first = stack.split(";", 1)[0]
        thread = first.split(": ", 1)[1] if first.startswith("thread (") else "MainThread"
        threads[thread] += count
        if thread != "MainThread":
            continue
        # frames look like "func (path/to/file.py:line)"; process/thread entries have no "("
        frames = [f for f in stack.split(";") if " (" in f and f.endswith(")")]
        if not frames:
            continue
        samples += count
        leaf = _short_frame(frames[-1])
        own[leaf] += count
        files[leaf.partition(" (")[2].rstrip(")").rpartition(":")[0] or "?"] += count
        for name in {_short_frame(f) for f in frames}:
            total[name] += count

    def table(counter: Counter[str], key: str) -> list[dict[str, Any]]:
        return [
            {key: name, "samples": n, "percent": round(100 * n / samples, 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": samples,
        "expected_samples": expected,
        "active_percent": round(100 * samples / expected, 1) if expected else None,
        "samples_by_thread": dict(threads.most_common()),
        "own": table(own, "function") if samples else [],
        "total": table(Counter({k: n for k, n in total.items() if n < 0.95 * samples}), "function")
        if samples
        else [],
        "own_by_file": table(files, "file") if samples else [],
    }


def _short_frame(frame: str) -> str:
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{func} ({where})"


def perf_pid(pid: int, seconds: int, data: Path, *, top: int = 15) -> dict[str, Any]:
    """``perf record -e cpu-clock`` of ``pid``: the split kernel / CPython / uvloop / httptools.

    py-spy sees Python frames only; perf sees every CPU cycle of the process, kernel included.
    """
    exe = shutil.which("perf")
    if exe is None:
        raise BenchError("perf not found (apt-get install linux-perf)")
    record = [exe, "record", "-q", "-e", "cpu-clock", "-F", "499", "-g", "-p", str(pid)]
    done = subprocess.run(
        [*record, "-o", str(data), "--", "sleep", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if done.returncode != 0 or not data.exists():
        raise BenchError(f"perf record failed ({done.returncode}): {done.stderr.strip()[-300:]}")

    def report(sort: str) -> list[dict[str, Any]]:
        argv = [exe, "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio"]
        text = subprocess.run(
            [*argv, "-g", "none"], capture_output=True, text=True, timeout=120, check=False
        ).stdout
        rows: list[dict[str, Any]] = []
        for line in text.splitlines():
            parts = line.split()
            if not parts or not parts[0].endswith("%") or line.lstrip().startswith("#"):
                continue
            try:
                percent = float(parts[0].rstrip("%"))
            except ValueError:
                continue
            name = " ".join(p for p in parts[1:] if p not in ("[.]", "[k]"))
            rows.append({"what": name, "percent": percent})
        return rows[:top]

    return {"by_dso": report("dso"), "by_symbol": report("dso,sym")}


def render_perf(summary: dict[str, Any], *, top: int = 10) -> str:
    lines = ["perf (cpu-clock, all threads of the proxy):", "", "| where | % |", "|---|---:|"]
    lines += [f"| `{row['what']}` | {row['percent']} |" for row in summary["by_dso"][:top]]
    lines += ["", "| symbol | % |", "|---|---:|"]
    lines += [f"| `{row['what']}` | {row['percent']} |" for row in summary["by_symbol"][:top]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine, report


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "?"

    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3],
        "wrk": version(["wrk", "--version"]).split(" Copyright")[0],
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "caddy": version(["caddy", "version"]),
    }


def _fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def render_markdown(
    results: Sequence[TargetResult], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    reload = settings["reload_every"] > 0
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), kernel {machine['kernel']}, "
        f"load average at start {' '.join(machine['loadavg_start'])}; {machine['date_utc']}",
        f"Load: wrk -t{settings['threads']} -c{settings['connections']} "
        f"-d{settings['duration']:g}s, "
        f"{settings['rounds']} rounds (median) after a {settings['warmup']:g}s warm-up; "
        f"backends weights {settings['weights']}"
        + (f"; config reload every {settings['reload_every']:g}s during load" if reload else ""),
        f"lbrec proxy: {settings['lbrec_commit']} ({settings['lbrec_repo']})"
        + (f" with {settings['lbrec_args']}" if settings["lbrec_args"] else "")
        + ("; as installed from its wheel" if settings.get("wheel") else "")
        + (
            f"; every balancer with {settings['workers']} workers (lbrec --workers, nginx "
            "worker_processes, HAProxy nbthread)"
            if settings.get("workers", 1) > 1
            else ""
        ),
        "",
        "| target | req/s (median) | req/s min-max | p50 ms | p99 ms | CPU us/req (usr+sys) "
        "| socket errors | non-2xx" + (" | reloads |" if reload else " |"),
        "|---|---:|---:|---:|---:|---:|---:|---:" + ("|---:|" if reload else "|"),
    ]
    for res in results:
        if res.status != "ok" or not res.runs:
            status = res.status.replace("|", "/")
            lines.append(f"| {res.name} | {status} |" + " |" * (7 if reload else 6))
            continue
        rps = [r.rps for r in res.runs]
        row = (
            f"| {res.name} | {_fmt_rps(res.median('rps'))} | "
            f"{_fmt_rps(min(rps))}-{_fmt_rps(max(rps))} | {res.median('p50_ms'):.2f} | "
            f"{res.median('p99_ms'):.2f} | {_cpu(res)} | {_per_run(res, 'socket_errors')} | "
            f"{_per_run(res, 'non_2xx')} |"
        )
        if reload:
            check = res.reload_check
            flag = "" if check is None or check["applied"] else " (last NOT applied)"
            row += f" {res.total('reloads')}{flag} |"
        lines.append(row)
    lines.append("")
    lines.append(
        f"Errors are totals over the {settings['rounds']} measured rounds; socket errors = wrk's "
        "connect + read + write + timeout, non-2xx = answers with status >= 400. CPU us/req: "
        "CPU time of the target's processes (for direct: the backends) per request answered."
    )
    by_name = {r.name: r for r in results if r.status == "ok" and r.runs}
    for subject in ("lbrec", "pyfloor"):
        if subject not in by_name:
            continue
        mine = by_name[subject]
        ratios = []
        for peer in ("direct", "nginx", "haproxy"):
            if peer in by_name:
                other = by_name[peer]
                ratios.append(
                    f"vs {peer}: req/s x{mine.median('rps') / other.median('rps'):.2f}, "
                    f"p99 x{mine.median('p99_ms') / other.median('p99_ms'):.2f}"
                    + (
                        f", CPU/req x{_cpu_per_req(mine) / _cpu_per_req(other):.2f}"
                        if peer != "direct" and _cpu_per_req(other) > 0
                        else ""
                    )
                )
        if ratios:
            lines.append(f"{subject} " + "; ".join(ratios))
    runtimes = [f"{r.name} {r.runtime}" for r in results if r.runtime]
    if runtimes:
        lines.append("Runtime (admin /-/pool): " + "; ".join(runtimes))
    spreads = [f"{r.name} {r.spread}" for r in results if r.spread]
    if spreads:
        lines.append("Answers per backend over 50 sequential requests: " + "; ".join(spreads))
    checks = [
        f"{r.name} expected {r.reload_check['expected']} saw {r.reload_check['seen']}"
        + ("" if r.reload_check["applied"] else " NOT APPLIED")
        + (
            f" (admin /-/pool generation {r.reload_check['admin_generation']}, "
            f"written {r.reload_check['written_generation']})"
            if "admin_generation" in r.reload_check
            else ""
        )
        for r in results
        if r.reload_check is not None
    ]
    if checks:
        lines.append("After the last reload (weights swapped): " + "; ".join(checks))
    return "\n".join(lines)


def render_restart(
    results: Sequence[TargetResult], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    """The --restart table: one row per way of replacing the process."""
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), kernel {machine['kernel']}, "
        f"load average at start {' '.join(machine['loadavg_start'])}; {machine['date_utc']}",
        f"Load: wrk -t{settings['threads']} -c{settings['connections']} "
        f"-d{settings['duration']:g}s --timeout {settings['timeout']:g}s, "
        f"{settings['rounds']} rounds; the lbrec process replaced every "
        f"{settings['restart_every']:g}s during each run",
        f"lbrec proxy: {settings['lbrec_commit']} ({settings['lbrec_repo']})"
        + (f" with {settings['lbrec_args']}" if settings["lbrec_args"] else "")
        + ("; as installed from its wheel" if settings.get("wheel") else ""),
        "",
        "| replaced by | restarts | req/s (median) | req/s min-max | p99 ms | socket errors "
        "| connect/read/write/timeout | non-2xx | fresh-connection probes failed "
        "| old process exit codes | restart s median (max) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for res in results:
        how = res.name.removeprefix("lbrec-")
        if res.status != "ok" or not res.runs:
            lines.append(f"| {how} | {res.status.replace('|', '/')} |" + " |" * 9)
            continue
        rps = [r.rps for r in res.runs]
        kinds = Counter[str]()
        for run in res.runs:
            kinds.update(run.errors_by_kind)
        codes = Counter(str(e["old_exit"]) for e in res.restarts)
        took = [float(e["seconds"]) for e in res.restarts]
        lines.append(
            f"| {how} | {res.total('reloads')} | {_fmt_rps(res.median('rps'))} | "
            f"{_fmt_rps(min(rps))}-{_fmt_rps(max(rps))} | {res.median('p99_ms'):.2f} | "
            f"{_per_run(res, 'socket_errors')} | "
            f"{kinds['connect']}/{kinds['read']}/{kinds['write']}/{kinds['timeout']} | "
            f"{_per_run(res, 'non_2xx')} | "
            f"{res.total('probes_failed')} of {res.total('probes')} | "
            + (", ".join(f"{c} x{n}" for c, n in sorted(codes.items())) or "-")
            + " | "
            + (f"{statistics.median(took):.2f} ({max(took):.2f})" if took else "-")
            + " |"
        )
    lines.append("")
    lines.append(
        "handoff: the new process starts beside the old one with the same --handoff path; "
        "restart s = until the old one has drained and exited. stop-start: SIGTERM, wait for "
        "the exit, start again; restart s = from SIGTERM to the new process's first 200. "
        "Errors are totals over the rounds (per run in brackets). wrk retries a refused "
        "connection at once and counts every attempt, so its socket errors measure how long "
        "connecting failed, times wrk's retry rate, not requests lost; the probes (one GET on "
        "a new connection every 20 ms beside wrk) count what a client connecting then sees."
    )
    return "\n".join(lines)


def _cpu_per_req(res: TargetResult) -> float:
    return statistics.median(run.cpu_us_per_request for run in res.runs)


def _cpu(res: TargetResult) -> str:
    per_req = _cpu_per_req(res)
    user = statistics.median(run.cpu_user_s for run in res.runs)
    system = statistics.median(run.cpu_sys_s for run in res.runs)
    share = 100 * user / (user + system) if user + system else 0.0
    return f"{per_req:.1f} ({share:.0f}% usr)"


def _per_run(res: TargetResult, key: str) -> str:
    total = res.total(key)
    if total == 0 or len(res.runs) == 1:
        return str(total)
    return f"{total} ({'/'.join(str(getattr(run, key)) for run in res.runs)})"


def render_profile(summary: dict[str, Any], *, top: int = 10) -> str:
    lines = [
        f"py-spy, 100 Hz: main thread (event loop) on CPU in {summary['samples']} of "
        f"{summary['expected_samples']} ticks (~{summary['active_percent']}%); samples by "
        f"thread {summary['samples_by_thread']}",
        "",
        "| # | function (own time) | own % |",
        "|---:|---|---:|",
    ]
    lines += [
        f"| {i} | `{row['function']}` | {row['percent']} |"
        for i, row in enumerate(summary["own"][:top], 1)
    ]
    lines += ["", "| file (own time) | own % |", "|---|---:|"]
    lines += [f"| `{row['file']}` | {row['percent']} |" for row in summary["own_by_file"][:top]]
    lines += ["", "| function (including callees) | total % |", "|---|---:|"]
    lines += [f"| `{row['function']}` | {row['percent']} |" for row in summary["total"][:top]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def ensure_tools(*, install: bool, needed: set[str]) -> set[str]:
    """The tools (wrk, nginx, haproxy) that are present, after apt-get if ``install``."""
    missing = {tool for tool in needed if shutil.which(tool) is None}
    if missing and install:
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
        for tool in sorted(missing):
            for package in APT_PACKAGES[tool]:
                done = subprocess.run(
                    ["apt-get", "install", "-y", "-qq", package],
                    check=False,
                    timeout=600,
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                )
                if done.returncode == 0:
                    break
    return {tool for tool in needed if shutil.which(tool) is not None}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (1)")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per target (3)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (2; 0 = none)")
    parser.add_argument("--timeout", type=float, default=2.0, help="wrk --timeout seconds (2)")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default: all but pyfloor)",
    )
    parser.add_argument("--weights", default="2,3", help="backend weights, one per backend (2,3)")
    parser.add_argument(
        "--reload-every",
        type=float,
        default=0.0,
        metavar="S",
        help="rewrite and reload each LB's config every S seconds during load",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="instead of the targets: replace the lbrec proxy process every --restart-every "
        "seconds under load, with --handoff and (baseline) by stop-then-start",
    )
    parser.add_argument(
        "--restart-every",
        type=float,
        default=2.0,
        metavar="S",
        help="with --restart: seconds between two process replacements (2)",
    )
    parser.add_argument(
        "--ports",
        default=None,
        metavar="LOW-HIGH",
        help="take every port (backends, balancers, admin) from LOW-HIGH on 127.0.0.1 "
        "(default: at random below the ephemeral range)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="S",
        help="also py-spy the lbrec proxy for S seconds under wrk load",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: py-spy --native, so time in C (uvloop, httptools) shows by name",
    )
    parser.add_argument(
        "--perf",
        type=int,
        default=0,
        metavar="S",
        help="also perf-record the lbrec proxy for S seconds under wrk load (linux-perf)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=20.0,
        help="seconds a target may take to answer 200 (20)",
    )
    parser.add_argument(
        "--lbrec-repo",
        type=Path,
        default=REPO,
        help="checkout whose proxy/ to run (its .venv if it has one); default this repo",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="every balancer with N workers: lbrec --workers N, nginx worker_processes N, "
        "HAProxy nbthread N (1; the backends and pyfloor keep one)",
    )
    parser.add_argument(
        "--wheel",
        action="store_true",
        help="run lbrec as pip installs it: the wheel built from the repo (request path "
        "compiled with mypyc where it builds), not the checkout's interpreted source",
    )
    parser.add_argument(
        "--lbrec-args",
        default="",
        metavar="ARGS",
        help="more arguments for python -m proxy, e.g. --lbrec-args='--workers 2'",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install wrk, nginx-light, haproxy if missing",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the JSON (default bench/results/<kind>-<time>.json)",
    )
    args = parser.parse_args(argv)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(only) - set(TARGETS))
    if unknown:
        parser.error(f"--only: unknown target(s) {', '.join(unknown)}; choose from {TARGETS}")
    args.only = [t for t in TARGETS if t in only]
    if args.restart:
        if args.reload_every > 0 or args.profile > 0 or args.perf > 0:
            parser.error("--restart runs alone: not with --reload-every, --profile or --perf")
        if not 0.5 <= args.restart_every <= 60:
            parser.error("--restart-every: 0.5 to 60 seconds")
        args.only = list(RESTART_TARGETS)
    args.port_range = None
    if args.ports is not None:
        low, sep, high = args.ports.partition("-")
        if not (sep and low.isdigit() and high.isdigit()):
            parser.error("--ports: LOW-HIGH, e.g. 28200-28299")
        if not 1024 < int(low) <= int(high) <= 65535 or int(high) - int(low) < 15:
            parser.error("--ports: 1025 <= LOW, HIGH <= 65535, at least 16 ports")
        args.port_range = (int(low), int(high))
    try:
        args.weights = [int(w) for w in args.weights.split(",")]
    except ValueError:
        parser.error("--weights: comma-separated integers, e.g. 2,3")
    if not 1 <= len(args.weights) <= 8 or min(args.weights) < 1:
        parser.error("--weights: 1 to 8 positive integers")
    if not 1 <= args.workers <= 16:
        parser.error("--workers: 1 to 16")
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --rounds, --connections and --threads must be >= 1")
    if args.connections < args.threads:
        parser.error("--connections must be >= --threads (wrk's rule)")
    if args.duration > 120 or args.warmup > 60 or args.rounds > 20 or args.connections > 1000:
        parser.error(
            "bounded load: --duration <= 120, --warmup <= 60, --rounds <= 20, --connections <= 1000"
        )
    return args


@contextlib.contextmanager
def _signals_stop(procs: Processes) -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        _log(f"interrupted by signal {signum}: stopping what this run started")
        procs.stop_all()
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needed = {"wrk", "nginx", "haproxy", "caddy"} | ({"perf"} if args.perf > 0 else set())
    tools = ensure_tools(install=args.install, needed=needed)
    pyspy = REPO / ".venv" / "bin" / "py-spy"
    if args.install and args.profile > 0 and not pyspy.exists() and not shutil.which("py-spy"):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    if "wrk" not in tools:
        print(
            "wrk is not installed: apt-get install -y wrk (or run with --install)", file=sys.stderr
        )
        return 2
    if "nginx" not in tools:
        print(
            "nginx is not installed (it serves the backends): apt-get install -y nginx-light "
            "(or run with --install)",
            file=sys.stderr,
        )
        return 2

    global PORT_RANGE
    PORT_RANGE = args.port_range
    Lbrec.repo = args.lbrec_repo.resolve()
    global WORKERS
    WORKERS = args.workers
    Lbrec.extra_args = tuple(shlex.split(args.lbrec_args)) + (
        ("--workers", str(args.workers)) if args.workers > 1 else ()
    )
    lbrec_commit = _git_describe(Lbrec.repo)
    machine = machine_info()
    shape = LoadShape(args.threads, args.connections, args.duration, args.timeout)
    settings = {
        "threads": args.threads,
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "timeout": args.timeout,
        "weights": ":".join(str(w) for w in args.weights),
        "reload_every": args.reload_every,
        "restart_every": args.restart_every if args.restart else 0.0,
        "ports": args.ports,
        "targets": args.only,
        "lbrec_repo": str(Lbrec.repo),
        "lbrec_commit": lbrec_commit,
        "lbrec_args": args.lbrec_args,
        "workers": args.workers,
        "wheel": args.wheel,
    }
    tmp = Path(tempfile.mkdtemp(prefix="lbrec-bench-"))
    if args.wheel:
        Lbrec.site = build_wheel(Lbrec.repo, tmp / "wheel")
    procs = Processes(tmp)
    results = {name: TargetResult(name) for name in args.only}
    profile: dict[str, Any] | None = None
    try:
        with _signals_stop(procs):
            profile = _run(args, tmp, procs, shape=shape, tools=tools, results=results)
    finally:
        procs.stop_all()
        machine["loadavg_end"] = Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3]
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ordered = [results[name] for name in args.only]
    print()
    print(
        render_restart(ordered, machine, settings)
        if args.restart
        else render_markdown(ordered, machine, settings)
    )
    print(f"Load average at end: {' '.join(machine['loadavg_end'])}")
    for key, render in (("pyspy", render_profile), ("perf", render_perf)):
        part = (profile or {}).get(key)
        if part is not None:
            print()
            print(f"{key}: {part['error']}" if "error" in part else render(part))
    if profile is not None and "error" in profile:
        print(f"\nprofile: {profile['error']}")
    kind = "restart" if args.restart else "reload" if args.reload_every > 0 else "throughput"
    out = args.json or RESULTS_DIR / f"proxy-{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine,
        "settings": settings,
        "results": [
            {
                "name": r.name,
                "status": r.status,
                "spread": r.spread,
                "reload_check": r.reload_check,
                "runtime": r.runtime,
                "restarts": r.restarts,
                "warmup": asdict(r.warmup) if r.warmup else None,
                "median": (
                    {k: r.median(k) for k in ("rps", "p50_ms", "p90_ms", "p99_ms")}
                    if r.runs
                    else None
                ),
                "totals": (
                    {
                        k: r.total(k)
                        for k in ("socket_errors", "non_2xx", "reloads", "probes", "probes_failed")
                    }
                    if r.runs
                    else None
                ),
                "runs": [asdict(run) for run in r.runs],
            }
            for r in ordered
        ],
        "profile": profile,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nJSON: {out}")
    return 0


def _run(
    args: argparse.Namespace,
    tmp: Path,
    procs: Processes,
    *,
    shape: LoadShape,
    tools: set[str],
    results: dict[str, TargetResult],
) -> dict[str, Any] | None:
    lua = tmp / "summary.lua"
    lua.write_text(_WRK_LUA, encoding="utf-8")
    backends = [Backend(f"b{i}", free_port(), w) for i, w in enumerate(args.weights, 1)]
    conf = tmp / "backends-nginx.conf"
    conf.write_text(backends_nginx_conf(tmp, backends), encoding="utf-8")
    backend_proc = procs.start(
        "backends",
        [
            "nginx",
            "-p",
            str(tmp),
            "-e",
            str(tmp / "backends-error.log"),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ],
    )
    for b in backends:
        wait_ready(procs, backend_proc, "backends", b.port, timeout=10)
    _log(f"backends up: {', '.join(f'{b.name}:{b.port} w{b.weight}' for b in backends)}")

    targets: dict[str, Target] = {}
    for name in args.only:
        if name in ("nginx", "haproxy", "caddy") and name not in tools:
            results[name].status = f"skipped: {name} not installed (--install)"
            continue
        target = TARGET_CLASSES[name](procs, tmp, backends)
        try:
            target.start(timeout=args.start_timeout)
        except (BenchError, OSError) as err:
            results[name].status = f"failed to start: {_one_line(str(err))}"
            _log(f"{name}: {results[name].status}")
            continue
        targets[name] = target
        results[name].spread = sample_spread(target.port)
        if isinstance(target, Lbrec):
            results[name].runtime = target.runtime()
        _log(
            f"{name} up on :{target.port}, answers per backend {results[name].spread}"
            + (f", runtime {results[name].runtime}" if results[name].runtime else "")
        )

    every = args.restart_every if args.restart else args.reload_every

    def measure(
        name: str, target: Target, *, duration: float | None = None, warmup: bool = False
    ) -> WrkRun | None:
        reload = target.reload if every > 0 and name != "direct" and not warmup else None
        if not target.alive():
            code = target.exit_code()
            tail = _one_line(procs.log_tail(name, 3))
            results[name].status = f"died (exit code {code})" + (f": {tail}" if tail else "")
            return None
        group = "backends" if name == "direct" else name
        user0, sys0 = procs.cpu_seconds(group)
        try:
            run = run_wrk(
                lua,
                target.port,
                shape,
                duration=duration,
                reload=reload,
                reload_every=every,
                probe_every=0.02 if args.restart and not warmup else 0.0,
            )
        except BenchError as err:
            results[name].status = f"failed: {_one_line(str(err))}"
            return None
        user1, sys1 = procs.cpu_seconds(group)
        return dataclasses.replace(
            run, cpu_user_s=round(user1 - user0, 2), cpu_sys_s=round(sys1 - sys0, 2)
        )

    if args.warmup > 0:
        for name, target in targets.items():
            results[name].warmup = measure(name, target, duration=args.warmup, warmup=True)
    for rnd in range(1, args.rounds + 1):
        for name, target in targets.items():
            if results[name].status != "ok":
                continue
            run = measure(name, target)
            if isinstance(target, LbrecRestart):
                events = target.take_events()
                results[name].restarts += [{"round": rnd, **event} for event in events]
            if run is not None:
                results[name].runs.append(run)
                _log(
                    f"round {rnd} {name}: {run.rps:,.0f} req/s p50 {run.p50_ms:.2f} ms "
                    f"p99 {run.p99_ms:.2f} ms errors {run.socket_errors}/{run.non_2xx}"
                    + (f" reloads {run.reloads}" if run.reloads else "")
                )

    if args.reload_every > 0:
        for name, target in targets.items():
            if name != "direct" and results[name].status == "ok" and target.alive():
                results[name].reload_check = check_reload_applied(target)
                _log(f"{name} after the last reload: {results[name].reload_check}")

    if args.profile > 0 or args.perf > 0:
        lbrec = targets.get("lbrec")
        if not isinstance(lbrec, Lbrec) or lbrec.proc is None or not lbrec.alive():
            return {"error": "lbrec is not running"}
        return _profiles(lua, lbrec, shape, args, tmp)
    return None


def _under_load(
    lua: Path, target: Lbrec, shape: LoadShape, seconds: int, sample: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``sample`` (a profiler, ``seconds`` long) while wrk loads ``target``."""
    box: dict[str, Any] = {}

    def load() -> None:
        try:
            box["wrk"] = run_wrk(lua, target.port, shape, duration=seconds + 3)
        except BenchError as err:
            box["wrk_error"] = str(err)

    loader = threading.Thread(target=load, name="profile-load", daemon=True)
    loader.start()
    time.sleep(1.0)  # let wrk connect first
    try:
        summary = sample()
    except (BenchError, OSError, subprocess.TimeoutExpired) as err:
        summary = {"error": _one_line(str(err))}
    loader.join(timeout=seconds + 40)
    if "wrk" in box:
        summary["wrk_rps_while_profiled"] = box["wrk"].rps
    return summary


def _profiles(
    lua: Path, target: Lbrec, shape: LoadShape, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    assert target.proc is not None
    pid = target.proc.pid
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    if args.profile > 0:
        folded = tmp / "lbrec-profile.folded"
        out["pyspy"] = _under_load(
            lua,
            target,
            shape,
            args.profile,
            lambda: profile_pid(
                pid,
                args.profile,
                folded,
                native=args.profile_native,
                blocking=args.profile_native,  # native unwinding needs a stopped process
            ),
        )
        if folded.exists():
            keep = RESULTS_DIR / f"lbrec-pyspy-{stamp}.folded"
            shutil.copyfile(folded, keep)
            out["pyspy"]["folded"] = str(keep)
    if args.perf > 0:
        data = tmp / "lbrec-perf.data"
        out["perf"] = _under_load(
            lua, target, shape, args.perf, lambda: perf_pid(pid, args.perf, data)
        )
    return out


def build_wheel(repo: Path, into: Path) -> Path:
    """``pip wheel`` of ``repo``, installed with ``--target``: the folder to put on the path."""
    _log(f"building the wheel of {repo} (mypyc compiles the request path: ~30 s)")
    python = REPO / ".venv" / "bin" / "python"
    pip = [str(python if python.exists() else Path(sys.executable)), "-m", "pip"]

    def run(*argv: str) -> None:
        result = subprocess.run(
            [*pip, *argv], capture_output=True, text=True, timeout=600, check=False
        )
        if result.returncode != 0:
            raise BenchError(f"pip {' '.join(argv)}: {result.stderr.strip()[-2000:]}")

    run("wheel", "-q", "--no-deps", "-w", str(into / "dist"), str(repo))
    wheel = next((into / "dist").glob("lbrec-*.whl"))
    run("install", "-q", "--no-deps", "--target", str(into / "site"), str(wheel))
    return into / "site"


def _git_describe(repo: Path) -> str:
    """``<short sha>`` of the checkout, ``+dirty(proxy)`` when proxy/ has local changes."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "proxy"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (sha or "unknown") + ("+dirty(proxy)" if dirty else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
