"""Host CPU of idle backends: N demo containers with lbrec's Docker healthcheck, nothing else.

    python bench/idle_cost.py --image lbrec-idlebench:1 --counts 1 10 --intervals 1s 10s

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

from reconciler.render import _PROBE


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--intervals", nargs="+", default=["1s", "10s"])
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    baseline = _measure(args.window)
    print(f"baseline: {baseline * 100:.2f}% of one core (nothing started)")
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
