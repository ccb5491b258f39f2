"""Convergence-time benchmark: how long from a change of the desired state to traffic.

Two paths, each measured over ``--rounds`` rounds (after ``--warmup`` untimed ones):

* ``file``: ``lbrec up --resync 30`` in a throwaway deploy folder; each round saves
  ``desired-state.yaml`` like an editor does (write a temp file, ``os.replace`` it over the
  original) with a new backend ``n<i>`` on a fresh free port, then polls
  ``http://127.0.0.1:<listen>/`` every ~20 ms until a response carries ``X-Backend: n<i>``.
* ``git``: a local bare repository and a working clone; ``lbrec up --repo <bare> --branch main
  --interval 1s``; each round commits and pushes the file with ``n<i>``, then polls the same way.

The clock starts just before the save (or before ``git commit``) and stops at the first
response served by the new backend. After each round the backend is removed again (file saved
or committed without it) and the benchmark waits, untimed, until its container is gone, so
rounds do not accumulate containers. The image is built by a warm-up apply before ``lbrec up``
starts, so every figure is "with a built image".

Where the seconds go: ``lbrec up`` runs with ``--log-format json`` (timestamps of the file
event, the pass, the plan, the proxy reload and the proxy's health transition), ``docker events``
for the project gives container create/start/healthy, and the mtime of ``config/backends.json``
(and of the sync mirror's ref) says when the pool (and the fetched commit) landed.

Each path runs once per ``--health`` profile: ``default`` (no ``health`` section: interval 2 s,
rise 2) and ``fast`` (``health: {interval: 0.5, rise: 1}``).

All traffic goes to 127.0.0.1. Every wait is bounded in count and time. Only what this script
starts is stopped: ``lbrec up`` by its pid (SIGINT, then SIGKILL after 60 s), the containers of
its own uniquely named project by id (label ``lbrec.project``), the network
``<project>_default`` and the project's backend image.

    .venv/bin/python bench/convergence.py                      # ~6-8 minutes, 4 scenarios
    .venv/bin/python bench/convergence.py --rounds 3 --modes file --health fast

Results: a Markdown table on stdout, JSON (and the ``lbrec up`` logs) in bench/results/.
See docs/benchmarks-convergence.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PYTHON = REPO / ".venv" / "bin" / "python"
BUILD_CONTEXT = ("Dockerfile.backend", "Dockerfile.proxy", ".dockerignore")

Mode = Literal["file", "git"]
HEALTH_PROFILES: dict[str, str] = {
    "default": "",  # no health section: interval 2.0, timeout 1.0, rise 2, fall 3
    "fast": "health: {interval: 0.5, rise: 1}\n",
}
POLL_EVERY = 0.02  # seconds between requests while waiting for the new backend
SETTLE = 1.0  # seconds of quiet after a removal, so the next round starts from an idle loop
# git mode: the poll phase would otherwise lock onto the round rhythm (the removal's pass ends,
# the next poll starts 1 s later, right when the next commit lands): a random extra pause makes
# the commit land at a uniformly random point of the poll cycle, as a real push does.
GIT_JITTER = 1.5

# Stages of one round, in causal order, as seconds since the clock started.
FILE_STAGES = (
    ("event", "the watcher saw the file change (watchdog)"),
    ("pass_start", "the reconcile pass started (after --debounce)"),
    ("planned", "plan made: docker/compose version checks, list containers, plan"),
    ("created", "container created: compose build (cached) + compose up"),
    ("started", "container started"),
    ("healthy", "Docker healthcheck passed (compose healthcheck interval 1s)"),
    ("pool_written", "config/backends.json written with the backend"),
    ("proxy_reload", "the proxy reloaded the pool (new backend: checking)"),
    ("proxy_up", "the proxy's own active check marked it up (rise x interval)"),
    ("served", "first response with X-Backend: n<i>"),
)
GIT_STAGES = (
    ("pushed", "git commit + git push returned"),
    ("fetched", "the sync loop fetched the commit into its mirror (poll --interval)"),
    *FILE_STAGES[2:],
)


# -- small helpers -------------------------------------------------------------------------------


def free_ports(count: int, avoid: set[int]) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now, none of them in ``avoid``."""
    ports: list[int] = []
    socks: list[socket.socket] = []
    try:
        for _ in range(count * 20):
            if len(ports) == count:
                break
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = int(s.getsockname()[1])
            if port not in ports and port not in avoid:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    if len(ports) < count:
        raise RuntimeError("could not find free ports")
    return ports


def run(
    cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def must(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def get_backend(port: int) -> str | None:
    """GET / through the proxy; the X-Backend header, or None when nothing answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.getheader("X-Backend") or ""
    except OSError:
        return None
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], *, timeout: float, every: float) -> float | None:
    """Poll ``predicate``; the monotonic time it first held, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / every) + 10):
        started = time.monotonic()
        if predicate():
            return time.monotonic()
        if started > deadline:
            return None
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return None


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 0.9),
        "min": min(values),
        "max": max(values),
    }


# -- one deploy folder with `lbrec up` running in it ---------------------------------------------


@dataclass
class Round:
    index: int
    backend: str
    seconds: float | None  # clock start -> first response from the backend; None: timed out
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds since clock start
    removed_after: float | None = None  # untimed: seconds until the container was gone


class Deploy:
    """A throwaway deploy folder, its Compose project, and (for git) a bare repo and a clone."""

    def __init__(self, mode: Mode, health: str, base_image: str) -> None:
        self.mode = mode
        self.health = health
        self.root = Path(tempfile.mkdtemp(prefix="lbrec-conv-"))
        self.folder = self.root / "deploy"
        self.folder.mkdir()
        for name in BUILD_CONTEXT:
            shutil.copy(REPO / name, self.folder / name)
        shutil.copytree(
            REPO / "backend", self.folder / "backend", ignore=shutil.ignore_patterns("__pycache__")
        )
        self.project = f"lbrec-conv-{uuid.uuid4().hex[:8]}"
        self.listen, self.admin, p1, p2 = free_ports(4, set())
        self.base = [("b1", p1), ("b2", p2)]
        self.env = dict(os.environ, LBREC_BASE_IMAGE=base_image, NO_COLOR="1")
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
            self.env[f"{key}_NAME"] = "lbrec bench"
            self.env[f"{key}_EMAIL"] = "bench@localhost"
        self.log_path = self.root / "up.log"
        self.events_path = self.root / "events.jsonl"
        self.bare = self.root / "config.git"
        self.work = self.root / "work"
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: subprocess.Popen[bytes] | None = None
        self.commit = ""  # the last pushed commit (git mode)

    # -- the desired state ---------------------------------------------------------------
    def spec(self, extra: list[tuple[str, int]]) -> str:
        lines = [
            "# convergence benchmark (bench/convergence.py)",
            f"project: {self.project}",
            f"listen: 127.0.0.1:{self.listen}",
            f"admin: 127.0.0.1:{self.admin}",
            HEALTH_PROFILES[self.health].rstrip("\n"),
            "backends:",
        ]
        lines += [f"  - {{name: {n}, port: {p}, weight: 1}}" for n, p in [*self.base, *extra]]
        return "\n".join(line for line in lines if line) + "\n"

    def save(self, text: str, message: str) -> None:
        """Publish a new desired state: an editor's save, or a commit and a push."""
        if self.mode == "file":
            target = self.folder / "desired-state.yaml"
            tmp = target.with_name(f".{target.name}.swp")
            tmp.write_text(text)
            os.replace(tmp, target)
            return
        (self.work / "desired-state.yaml").write_text(text)
        git = ["git", "-C", str(self.work)]
        must(run([*git, "add", "desired-state.yaml"], env=self.env, timeout=30), "git add")
        must(run([*git, "commit", "-q", "-m", message], env=self.env, timeout=30), "git commit")
        must(run([*git, "push", "-q", "origin", "main"], env=self.env, timeout=30), "git push")
        self.commit = must(
            run([*git, "rev-parse", "HEAD"], env=self.env, timeout=30), "git rev-parse"
        ).strip()

    # -- lifecycle -----------------------------------------------------------------------
    def lbrec(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(
            [str(PYTHON), "-m", "lbrec", *args], cwd=self.folder, env=self.env, timeout=timeout
        )

    def start(self) -> None:
        """Warm-up apply (builds the image), then `lbrec up`, then wait until it serves."""
        text = self.spec([])
        if self.mode == "file":
            (self.folder / "desired-state.yaml").write_text(text)
            must(self.lbrec("apply"), "warm-up lbrec apply")
            up = ["up", "--resync", "30", "--log-format", "json"]
        else:
            must(
                run(
                    ["git", "init", "-q", "--bare", "-b", "main", str(self.bare)],
                    env=self.env,
                    timeout=30,
                ),
                "git init --bare",
            )
            must(
                run(
                    ["git", "clone", "-q", str(self.bare), str(self.work)], env=self.env, timeout=30
                ),
                "git clone",
            )
            must(
                run(
                    ["git", "-C", str(self.work), "symbolic-ref", "HEAD", "refs/heads/main"],
                    env=self.env,
                    timeout=30,
                ),
                "git symbolic-ref",
            )
            self.save(text, "initial desired state")
            sync = ["sync", "--repo", str(self.bare), "--branch", "main", "--once"]
            must(self.lbrec(*sync), "warm-up lbrec sync --once")
            up = [
                "up",
                "--repo",
                str(self.bare),
                "--branch",
                "main",
                "--interval",
                "1s",
                "--log-format",
                "json",
            ]
        self.events = subprocess.Popen(
            [
                "docker",
                "events",
                "--filter",
                f"label=lbrec.project={self.project}",
                "--filter",
                "type=container",
                "--format",
                "{{json .}}",
            ],
            stdout=self.events_path.open("wb"),
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(PYTHON), "-m", "lbrec", *up],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on the bench must not signal it twice
            )
        if (
            wait_until(lambda: get_backend(self.listen) in ("b1", "b2"), timeout=180, every=0.2)
            is None
        ):
            raise RuntimeError(f"lbrec up did not serve within 180 s; see {self.log_path}")

    def stop(self) -> None:
        """SIGINT `lbrec up` (wait, then kill); remove this project's containers, network, image."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.events is not None and self.events.poll() is None:
            self.events.terminate()
            try:
                self.events.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.events.kill()
        ids = self.container_ids()
        if ids:
            run(["docker", "rm", "-f", *ids], timeout=120)
        run(["docker", "network", "rm", f"{self.project}_default"], timeout=60)
        images = run(["docker", "images", "-q", f"{self.project}-backend"], timeout=60)
        if images.stdout.split():
            run(["docker", "rmi", "-f", *set(images.stdout.split())], timeout=120)

    def container_ids(self, backend: str | None = None) -> list[str]:
        cmd = [
            "docker",
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            f"label=lbrec.project={self.project}",
        ]
        if backend is not None:
            cmd += ["--filter", f"label=lbrec.backend={backend}"]
        return run(cmd, timeout=60).stdout.split()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- one round -----------------------------------------------------------------------
    def round(self, index: int, timeout: float) -> Round:
        name = f"n{index}"
        used = {self.listen, self.admin, *(p for _, p in self.base)}
        (port,) = free_ports(1, used)
        t0_wall = time.time()
        t0 = time.monotonic()
        self.save(self.spec([(name, port)]), f"add {name}")
        pushed = time.monotonic() - t0
        served_at = wait_until(
            lambda: get_backend(self.listen) == name, timeout=timeout, every=POLL_EVERY
        )
        result = Round(index, name, None if served_at is None else served_at - t0)
        if self.mode == "git":
            result.stages["pushed"] = pushed
        if result.seconds is not None:
            result.stages["served"] = result.seconds
        result.stages.update(self.pool_and_mirror_times(name, t0_wall))
        # Untimed: remove it again and wait until its container is gone.
        r0 = time.monotonic()
        self.save(self.spec([]), f"remove {name}")
        gone = wait_until(lambda: not self.container_ids(name), timeout=timeout, every=0.25)
        result.removed_after = None if gone is None else gone - r0
        time.sleep(SETTLE + (random.uniform(0.0, GIT_JITTER) if self.mode == "git" else 0.0))
        return result

    def pool_and_mirror_times(self, name: str, t0_wall: float) -> dict[str, float]:
        out: dict[str, float] = {}
        pool = self.folder / "config" / "backends.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(pool.read_text())
            if name in {b["name"] for b in data["backends"]}:
                out["pool_written"] = pool.stat().st_mtime_ns / 1e9 - t0_wall
        if self.mode == "git":
            ref = self.folder / ".lbrec" / "repo" / "refs" / "lbrec" / "main"
            with contextlib.suppress(OSError):
                if ref.read_text().strip() == self.commit:
                    out["fetched"] = ref.stat().st_mtime_ns / 1e9 - t0_wall
        return out


# -- where the seconds go: logs and docker events -------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    if isinstance(doc.get("ts"), str):  # ISO 8601 (UTC): as epoch seconds
                        doc["ts"] = datetime.fromisoformat(doc["ts"]).timestamp()
                    records.append(doc)
    return records


def first(records: Iterator[float]) -> float | None:
    return next(records, None)


def log_stages(
    mode: Mode, records: list[dict[str, Any]], name: str, t0: float, t1: float
) -> dict[str, float]:
    """Stage timestamps of round ``name`` from `lbrec up`'s JSON log, between t0 and t1."""
    window = [r for r in records if t0 <= float(r.get("ts", 0)) <= t1]
    out: dict[str, float] = {}
    create = re.compile(rf"(?:pass=\d+|commit \w+:) create {re.escape(name)}:")
    planned = first(float(r["ts"]) for r in window if create.match(str(r.get("msg", ""))))
    if planned is not None:
        out["planned"] = planned
    if mode == "file":
        event = first(
            float(r["ts"])
            for r in window
            if r.get("logger") == "lbrec.watch"
            and r.get("event") in ("moved", "modified", "created", "closed")
        )
        if event is not None:
            out["event"] = event
            start = first(
                float(r["ts"])
                for r in window
                if float(r["ts"]) >= event
                and re.match(r"pass=\d+ start \(desired-state", str(r.get("msg", "")))
            )
            if start is not None:
                out["pass_start"] = start
    reload = first(
        float(r["ts"])
        for r in window
        if r.get("event") == "reload" and name in (r.get("backends") or {})
    )
    if reload is not None:
        out["proxy_reload"] = reload
    up = first(
        float(r["ts"])
        for r in window
        if r.get("event") == "health" and r.get("backend") == name and r.get("state") == "up"
    )
    if up is not None:
        out["proxy_up"] = up
    return out


def docker_stages(
    events: list[dict[str, Any]], name: str, t0: float, t1: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    wanted = {"create": "created", "start": "started", "health_status: healthy": "healthy"}
    for ev in events:
        ts = int(ev.get("timeNano", 0)) / 1e9
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        stage = wanted.get(str(ev.get("Action") or ev.get("status") or ""))
        if stage and attrs.get("lbrec.backend") == name and t0 <= ts <= t1 and stage not in out:
            out[stage] = ts
    return out


# -- a scenario ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    mode: Mode
    health: str
    rounds: list[Round] = field(default_factory=list)
    warmup: list[Round] = field(default_factory=list)
    project: str = ""
    log_file: str = ""
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{'file saved' if self.mode == 'file' else 'commit'} -> served ({self.health})"

    @property
    def stages(self) -> tuple[tuple[str, str], ...]:
        return FILE_STAGES if self.mode == "file" else GIT_STAGES


def run_scenario(
    mode: Mode,
    health: str,
    *,
    rounds: int,
    warmup: int,
    timeout: float,
    base_image: str,
    stamp: str,
) -> Scenario:
    scenario = Scenario(mode, health)
    deploy = Deploy(mode, health, base_image)
    scenario.project = deploy.project
    print(f"## {scenario.label}: project {deploy.project}", file=sys.stderr, flush=True)
    windows: list[tuple[Round, float, float]] = []
    try:
        deploy.start()
        for i in range(1, warmup + rounds + 1):
            if not deploy.alive():
                raise RuntimeError(f"lbrec up exited; see {deploy.log_path}")
            t0 = time.time()
            r = deploy.round(i, timeout)
            windows.append((r, t0, t0 + (r.seconds or timeout) + 0.5))
            (scenario.warmup if i <= warmup else scenario.rounds).append(r)
            shown = "timeout" if r.seconds is None else f"{r.seconds:.2f}s"
            print(
                f"  round {i}{' (warm-up)' if i <= warmup else ''}: {r.backend} served after "
                f"{shown}",
                file=sys.stderr,
                flush=True,
            )
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        scenario.error = str(err)
        print(f"  error: {err}", file=sys.stderr, flush=True)
    finally:
        deploy.stop()
        records = read_jsonl(deploy.log_path)
        events = read_jsonl(deploy.events_path)
        for r, t0, t1 in windows:
            stamps = {
                **log_stages(mode, records, r.backend, t0, t1),
                **docker_stages(events, r.backend, t0, t1),
            }
            r.stages.update({k: v - t0 for k, v in stamps.items()})
        RESULTS.mkdir(parents=True, exist_ok=True)
        log_copy = RESULTS / f"convergence-{stamp}-{mode}-{health}.log"
        with contextlib.suppress(OSError):
            shutil.copy(deploy.log_path, log_copy)
            scenario.log_file = str(log_copy.relative_to(REPO))
        shutil.rmtree(deploy.root, ignore_errors=True)
    return scenario


# -- report --------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(scenarios: list[Scenario]) -> str:
    out = [
        "| path | health | rounds | median s | p90 s | min s | max s | timeouts |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        ok = [r.seconds for r in s.rounds if r.seconds is not None]
        timeouts = sum(1 for r in s.rounds if r.seconds is None)
        health = HEALTH_PROFILES[s.health].strip() or "defaults (interval 2, rise 2)"
        path = "file saved -> served" if s.mode == "file" else "commit -> served (--interval 1s)"
        if ok:
            st = summary(ok)
            out.append(
                f"| {path} | `{health}` | {len(ok)} | {fmt(st['median'])} | "
                f"{fmt(st['p90'])} | {fmt(st['min'])} | {fmt(st['max'])} | {timeouts} |"
            )
        else:
            out.append(f"| {path} | `{health}` | 0 | - | - | - | - | {timeouts} |")
    for s in scenarios:
        out += [
            "",
            f"Breakdown, {s.label} (median seconds since the clock started; "
            "step = median of the difference to the previous stage):",
            "",
            "| stage | at | step | what |",
            "|---|---:|---:|---|",
        ]
        previous: str | None = None
        for key, what in s.stages:
            at = [r.stages[key] for r in s.rounds if key in r.stages]
            steps = [
                r.stages[key] - r.stages[previous]
                for r in s.rounds
                if previous is not None and key in r.stages and previous in r.stages
            ]
            out.append(
                f"| {key} | {fmt(statistics.median(at) if at else None)} | "
                f"{fmt(statistics.median(steps) if steps else None)} | {what} |"
            )
            previous = key
        if s.error:
            out.append(f"\nerror: {s.error}")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    docker = run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": docker.stdout.strip(),
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--modes", default="file,git", help="file, git or both (default)")
    parser.add_argument(
        "--health",
        default="default,fast",
        help=f"health profiles to run: {', '.join(HEALTH_PROFILES)} (default both)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="give up on a round after this many seconds (default 60)",
    )
    parser.add_argument(
        "--base-image", default=os.environ.get("LBREC_BASE_IMAGE", "lbrec-base:bookworm")
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    healths = [h.strip() for h in args.health.split(",") if h.strip()]
    if not set(modes) <= {"file", "git"} or not set(healths) <= set(HEALTH_PROFILES):
        parser.error("--modes takes file,git; --health takes " + ",".join(HEALTH_PROFILES))
    if not 1 <= args.rounds <= 1000 or not 0 <= args.warmup <= 100:
        parser.error("--rounds 1..1000, --warmup 0..100")
    if not PYTHON.exists():
        parser.error(f"{PYTHON} not found: run scripts/setup.sh")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    print(
        f"# {info['date']}  nproc={info['nproc']}  cpu={info['cpu']}  docker={info['docker']}"
        f"  loadavg={info['loadavg'][0]:.2f}",
        file=sys.stderr,
        flush=True,
    )
    scenarios: list[Scenario] = []
    for mode in modes:
        for health in healths:
            scenarios.append(
                run_scenario(
                    mode,
                    health,
                    rounds=args.rounds,
                    warmup=args.warmup,
                    timeout=args.timeout,
                    base_image=args.base_image,
                    stamp=stamp,
                )
            )
    info["loadavg_end"] = os.getloadavg()
    table = markdown(scenarios)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"convergence-{stamp}.json"
    doc = {
        "machine": info,
        "args": vars(args),
        "health_profiles": HEALTH_PROFILES,
        "scenarios": [
            {
                **asdict(s),
                "label": s.label,
                "summary": summary(ok)
                if (ok := [r.seconds for r in s.rounds if r.seconds is not None])
                else None,
            }
            for s in scenarios
        ],
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(REPO)}", file=sys.stderr)
    failed = any(s.error or any(r.seconds is None for r in s.rounds) for s in scenarios)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
