"""Canary rollouts on the real engine, under a bounded load through the proxy: a good version
walks the steps and replaces the old one with 0 failed requests; a bad one (500 to a third of
its requests, or 1 s slower) is rolled back at the first step by the proxy's own figures, with
the requests it failed bounded by that step's share."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from .conftest import Project, free_ports
from .test_rollout import (
    _app_images,
    _get_body,
    _in_sync,
    _load,
    _out,
    _proxy,
    _running_ids,
    _spec,
)

pytestmark = pytest.mark.docker

WEB = (
    "{name: web, port: 8000, image: %s, replicas: 2, health: {path: /health}, env: %s,"
    " rollout: {strategy: canary, steps: [5, 25, 50, 100], interval: 2s, min_healthy_time: 0.5s,"
    " healthy_deadline: 20s, drain_timeout: 5s, analysis: {max_error_rate: 0.02,"
    " max_p99: 500ms, min_requests: 20}}}"
)


def _split_seen(project: Project) -> tuple[tuple[str | None, int | None], ...]:
    pool = json.loads((project.folder / "config/backends.json").read_text())["backends"]
    return tuple(sorted((b.get("version"), b.get("percent")) for b in pool))


def test_a_good_canary_walks_every_step_with_no_failed_request(project: Project) -> None:
    listen, admin = free_ports(2)
    with _app_images(project, {"1": {"VERSION": "v1"}}) as images:
        project.write(_spec(project, listen, admin, [WEB % (images["1"], "{GREETING: a}")]))
        project.lbrec("apply", check=True)
        old = _running_ids(project, "web")
        with _proxy(project, listen, admin):
            project.write(_spec(project, listen, admin, [WEB % (images["1"], "{GREETING: b}")]))
            with _load(listen) as load:
                r = project.lbrec("apply")
            load.check(_out(r))
            assert r.returncode == 0, _out(r)
            for step in ("5%", "25%", "50%"):
                assert f"web: step {step} passed" in r.stdout + r.stderr, _out(r)
            assert load.bodies["v1 a\n"] > 0 and load.bodies["v1 b\n"] > 0
            assert Counter(_get_body(listen) for _ in range(10)) == {"200 v1 b\n": 10}
        assert not _running_ids(project, "web") & old
        assert all(p is None for _, p in _split_seen(project))  # promoted: no split left
        _in_sync(project)


@pytest.mark.parametrize(
    ("env", "why"),
    [("{FAIL_EVERY: '3'}", "error rate"), ("{DELAY: '1'}", "p99 ")],
    ids=["500-to-a-third", "one-second-slower"],
)
def test_a_bad_canary_is_rolled_back_at_the_first_step(
    project: Project, env: str, why: str
) -> None:
    listen, admin = free_ports(2)
    with _app_images(project, {"1": {"VERSION": "v1"}}) as images:
        project.write(_spec(project, listen, admin, [WEB % (images["1"], "{GREETING: a}")]))
        project.lbrec("apply", check=True)
        old = _running_ids(project, "web")
        with _proxy(project, listen, admin):
            project.write(_spec(project, listen, admin, [WEB % (images["1"], env)]))
            with _load(listen, threads=4) as load:
                r = project.lbrec("apply")
            assert r.returncode == 1, _out(r)
            assert "canary rolled back at step 5%: " + why in r.stdout, _out(r)
            assert "rolled_back=1" in r.stdout
            total = load.ok + len(load.failures)
            # the failed requests are bounded by the first step's share of the traffic
            assert len(load.failures) <= 0.05 * total, (len(load.failures), total)
            assert all(f.startswith("500") for f in load.failures), load.failures[:5]
            assert Counter(_get_body(listen) for _ in range(10)) == {"200 v1 a\n": 10}
        assert _running_ids(project, "web") == old  # the old version was never touched
        print(f"\ncanary {env}: {len(load.failures)} of {total} requests failed before rollback")


def test_abort_mid_way_returns_to_the_old_version_with_no_failed_request(
    project: Project,
) -> None:
    import subprocess
    import sys
    import time

    from .conftest import wait_until

    listen, admin = free_ports(2)
    slow = WEB.replace("interval: 2s", "interval: 60s")
    with _app_images(project, {"1": {"VERSION": "v1"}}) as images:
        project.write(_spec(project, listen, admin, [slow % (images["1"], "{GREETING: a}")]))
        project.lbrec("apply", check=True)
        old = _running_ids(project, "web")
        with _proxy(project, listen, admin):
            project.write(_spec(project, listen, admin, [slow % (images["1"], "{GREETING: b}")]))
            with _load(listen) as load:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "lbrec", "apply"],
                    cwd=project.folder,
                    env=project.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
                try:
                    wait_until(
                        lambda: "judging at 5%" in project.lbrec("rollout", "status").stdout,
                        120,
                        "the canary to reach its first step",
                    )
                    asked = time.monotonic()
                    r = project.lbrec("rollout", "abort", "web", check=True)
                    assert "asked the running canary to abort" in r.stdout + r.stderr
                    out, _ = proc.communicate(timeout=120)
                    took = time.monotonic() - asked
                finally:
                    if proc.poll() is None:
                        proc.kill()
            load.check(out)
            assert proc.returncode == 1, out
            assert "canary rolled back at step 5%: aborted by `lbrec rollout abort`" in out
            assert took < 55, took  # long before the 60 s step would have ended
            assert "no canary in progress" in project.lbrec("rollout", "status").stdout
            assert Counter(_get_body(listen) for _ in range(10)) == {"200 v1 a\n": 10}
        assert _running_ids(project, "web") == old
