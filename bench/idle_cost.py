"""Host CPU of idle backends: N demo containers with lbrec's Docker healthcheck, nothing else.

    python bench/idle_cost.py --image lbrec-idlebench:1 --counts 1 10 --intervals 1s 10s
    LBREC_BASE_IMAGE=lbrec-base:bookworm python bench/idle_cost.py --lbrec-up --counts 1 10 50

Starts N containers of the demo backend image (its published ports on 127.0.0.1, allocated by
Docker) with the healthcheck lbrec renders, at each interval; measures the host's busy CPU
time from /proc/stat over a window after they settle, minus an idle baseline measured the
same way with none running; prints % of one core per backend. Removes only the containers it
started, by id.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from lbrec.reconciler.core.render import _PROBE


def _busy_seconds() -> float:
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _measure(window: float) -> float:
    """Busy cores (1.0 = one core fully busy) over ``window`` seconds."""
    before = _busy_seconds()
    time.sleep(window)
    return (_busy_seconds() - before) / window


def _start(image: str, count: int, interval: str) -> list[str]:
    ids = []
    for i in range(count):
        port = str(9000 + i)
        out = subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--label",
                "lbrec.bench=idle-cost",
                "-e",
                f"BACKEND_NAME=idle{i}",
                "-e",
                f"PORT={port}",
                "-e",
                "HEALTH_PATH=/health",
                "-e",
                "HEALTH_TIMEOUT=1",
                "-p",
                f"127.0.0.1::{port}",
                "--health-cmd",
                f'python3 -c "{_PROBE}"',
                "--health-interval",
                interval,
                "--health-timeout",
                "2s",
                "--health-retries",
                "3",
                image,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        ids.append(out.stdout.strip())
    return ids


def _under_up(count: int, window: float, settle: float) -> float:
    """Busy cores with ``count`` demo backends under `lbrec up` (its proxy probing each one,
    its loop resyncing, Docker's own checks), once all are up and settled."""
    import json
    import shutil
    import signal
    import sys
    import tempfile
    import urllib.request
    import uuid
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    project = f"lbrec-bench-idle-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix=project) as name:
        folder = Path(name)
        for item in ("Dockerfile.backend", ".dockerignore"):
            shutil.copy(repo / item, folder / item)
        shutil.copytree(repo / "backend", folder / "backend")
        admin = 28480
        lines = [f"project: {project}", "listen: 127.0.0.1:28479", f"admin: 127.0.0.1:{admin}"]
        lines += ["backends:"] + [f"  - {{name: b{i}, port: {9001 + i}}}" for i in range(count)]
        (folder / "desired-state.yaml").write_text("\n".join(lines) + "\n")
        env = dict(os.environ, PYTHONPATH=str(repo))
        up = subprocess.Popen(
            [sys.executable, "-m", "lbrec", "up"],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/-/pool", timeout=2) as r:
                        pool = json.loads(r.read())
                    if sum(1 for b in pool["backends"] if b["state"] == "up") == count:
                        break
                except OSError:
                    pass
                time.sleep(1)
            else:
                raise SystemExit(f"{count} backends did not come up under lbrec up")
            time.sleep(settle)  # past the first resync and Docker's first checks
            return _measure(window)
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
            ids = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=lbrec.project={project}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], check=False, capture_output=True)
            subprocess.run(
                ["docker", "network", "rm", f"{project}_default"], check=False, capture_output=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="the demo backend image (containers-only mode)")
    parser.add_argument(
        "--lbrec-up", action="store_true", help="measure N demo backends under `lbrec up`"
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--intervals", nargs="+", default=["1s", "10s"])
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument(
        "--settle", type=float, default=65.0, help="--lbrec-up: wait this long once all are up"
    )
    args = parser.parse_args()
    baseline = _measure(args.window)
    print(f"baseline: {baseline * 100:.2f}% of one core (nothing started)")
    if args.lbrec_up:
        print(f"{'backends':>8} {'busy %':>8} {'% / backend':>12}  (under lbrec up)")
        for count in args.counts:
            busy = _under_up(count, args.window, args.settle)
            per = (busy - baseline) * 100 / count
            print(f"{count:>8} {busy * 100:>8.2f} {per:>12.2f}")
        return
    if args.image is None:
        parser.error("--image is required without --lbrec-up")
    print(f"{'interval':>8} {'backends':>8} {'busy %':>8} {'% / backend':>12}")
    for interval in args.intervals:
        for count in args.counts:
            ids = _start(args.image, count, interval)
            try:
                time.sleep(5)  # let them start
                busy = _measure(args.window)
            finally:
                subprocess.run(["docker", "rm", "-f", *ids], check=False, capture_output=True)
            per = (busy - baseline) * 100 / count
            print(f"{interval:>8} {count:>8} {busy * 100:>8.2f} {per:>12.2f}")


if __name__ == "__main__":
    main()
