"""The error of a route's rate limit with ``--workers N`` (issue 23): each worker keeps its
own token buckets with the N-th share of the limit (proxy/ratelimit.py), and the kernel puts
each *connection* on a worker (SO_REUSEPORT: uniformly at random, by the 4-tuple's hash).

A simulated client sends 2,000 requests a second, round robin over C keep-alive connections,
for 60 s, against a limit of 100/s with a burst of 100; the table gives what it got over what
the limit allows (1.00 = exact), the mean and the range over 20 placements of its connections,
and the cost of one ``take`` on this machine.

    .venv/bin/python bench/ratelimit_workers.py
"""

from __future__ import annotations

import random
import statistics
import time

from lbrec.proxy.ratelimit import RateLimiter


def share(workers: int, connections: int, seed: int, seconds: float = 60.0) -> float:
    rng = random.Random(seed)
    limiters = [RateLimiter.for_workers(100, 100, workers) for _ in range(workers)]
    placed = [rng.randrange(workers) for _ in range(connections)]
    admitted = 0
    step = 1 / 2000
    for tick in range(int(seconds / step)):
        if limiters[placed[tick % connections]].take(b"ip:203.0.113.1", tick * step) == 0.0:
            admitted += 1
    return admitted / (100 + 100 * seconds)


def main() -> None:
    print("| workers | connections of the client | got / limit: mean | min | max |")
    print("|---:|---:|---:|---:|---:|")
    for workers in (1, 2, 4, 8):
        for connections in (1, 2, 6, 16, 64):
            shares = [share(workers, connections, seed) for seed in range(20)]
            print(
                f"| {workers} | {connections} | {statistics.mean(shares):.2f} "
                f"| {min(shares):.2f} | {max(shares):.2f} |"
            )
    limiter = RateLimiter(1000, 1000)
    keys = [b"ip:10.0.%d.%d" % (n >> 8, n & 255) for n in range(5000)]
    started = time.perf_counter()
    rounds = 200
    for r in range(rounds):
        now = r * 0.01
        for key in keys:
            limiter.take(key, now)
    per_take = (time.perf_counter() - started) / (rounds * len(keys))
    print(f"\none take(): {per_take * 1e9:.0f} ns (5,000 clients, warm buckets)")


if __name__ == "__main__":
    main()
