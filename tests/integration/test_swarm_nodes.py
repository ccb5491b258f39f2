"""engine: swarm on a real multi-node swarm of the test's own (issue 24, docs/swarm.md).

Three Docker engines in network namespaces on one bridge (tests/support/netns_engine.py,
198.18.X.0/24: never the machine's engine), one manager and two workers, a real overlay and real
scheduling; a real registry (Debian's ``docker-registry``, started here on the bridge's
address, no service). lbrec runs on the host against the manager (``DOCKER_HOST``); the proxy
runs on the host (proxy.mode: host) and reaches every task at ``<node address>:<port>`` (host
mode). All load goes to 127.0.0.1 (the proxy) and from it to the nodes' 198.18.X.* addresses.

Figures (failed requests, seconds to full capacity) are printed with ``pytest -s`` for
docs/swarm.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.load import Load
from tests.support.netns_engine import EngineNet, Node

from .conftest import (
    BASE_IMAGE,
    REPO,
    free_ports,
    http_request,
    lbrec_env,
    run_lbrec,
    start_lbrec,
    wait_until,
)

pytestmark = [pytest.mark.netns_engine, pytest.mark.slow]

REGISTRY_PORT = 5000


@dataclass
class Cluster:
    net: EngineNet
    folder: Path
    registry_proc: subprocess.Popen[bytes] | None = None

    @property
    def registry(self) -> str:
        """host:port on the bridge"""
        return f"{self.net.gateway}:{REGISTRY_PORT}"

    @property
    def manager(self) -> Node:
        return self.net.nodes[0]

    def addresses(self) -> set[str]:
        return {n.address for n in self.net.nodes}

    def start_registry(self) -> None:
        self.registry_proc = _registry(self.net, self.folder)

    def stop_registry(self) -> None:
        proc, self.registry_proc = self.registry_proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # our own child, by pid
            proc.wait(timeout=20)


def _registry(net: EngineNet, folder: Path) -> subprocess.Popen[bytes]:
    config = folder / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {folder / 'registry'}}}}}\n"
        f"http: {{addr: '{net.gateway}:{REGISTRY_PORT}'}}\n"
    )
    with (folder / "registry.log").open("wb") as log:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://{net.gateway}:{REGISTRY_PORT}/v2/"
    wait_until(lambda: _get_status(url) == 200, 20, "the registry", log=folder / "registry.log")
    return proc


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("docker-registry") is None:
        pytest.fail("needs Debian's docker-registry (bash scripts/setup.sh --tests installs it)")
    folder = tmp_path_factory.mktemp("swarm-nodes")
    net = EngineNet.create(nodes=3, dockerd_args=("--insecure-registry=198.18.0.0/15",))
    cluster = Cluster(net, folder)
    try:
        manager = net.nodes[0]
        manager.docker("swarm", "init", "--advertise-addr", manager.address)
        token = manager.docker("swarm", "join-token", "-q", "worker").strip()
        for worker in net.nodes[1:]:
            worker.docker(
                "swarm", "join", "--token", token, "--advertise-addr", worker.address,
                f"{manager.address}:2377",
            )  # fmt: skip
        cluster.start_registry()
        manager.load_image(BASE_IMAGE)  # lbrec builds there; the workers pull from the registry
        yield cluster
    finally:
        cluster.stop_registry()
        net.close()


@pytest.fixture(scope="module")
def demo_images(cluster: Cluster) -> dict[str, str]:
    """The demo app as v1 and v2 in the registry (two tags: a new image to roll out)."""
    image = f"{cluster.registry}/lbrec-swarm-demo"
    manager = cluster.manager
    manager.docker(
        "build", "-q", "-t", f"{image}:v1", "-f", str(REPO / "Dockerfile.backend"),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", str(REPO),
    )  # fmt: skip
    manager.docker("tag", f"{image}:v1", f"{image}:v2")
    for tag in ("v1", "v2"):
        manager.docker("push", f"{image}:{tag}")
    return {"v1": f"{image}:v1", "v2": f"{image}:v2"}


@dataclass
class Deploy:
    folder: Path
    env: dict[str, str]
    listen: int
    admin: int
    project: str

    def lbrec(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_lbrec(self.folder, self.env, *args, timeout=timeout)

    def ok(self, *args: str) -> str:
        done = self.lbrec(*args)
        assert done.returncode == 0, (
            f"lbrec {args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def write(self, backends: str) -> None:
        text = (self.folder / "desired-state.yaml").read_text()
        head = text.split("backends:\n", 1)[0]
        (self.folder / "desired-state.yaml").write_text(head + "backends:\n" + backends)

    def pool(self) -> list[dict[str, Any]]:
        return list(json.loads((self.folder / "config/backends.json").read_text())["backends"])

    def routable(self, backend: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.pool()
            if e.get("frozen") is None and (backend is None or e["name"] == backend)
        ]


def _deploy(tmp: Path, cluster: Cluster, backends: str, name: str = "deploy") -> Deploy:
    folder = tmp / name
    folder.mkdir()
    for file in ("Dockerfile.backend", ".dockerignore"):
        shutil.copy(REPO / file, folder / file)
    shutil.copytree(
        REPO / "backend", folder / "backend", ignore=shutil.ignore_patterns("__pycache__")
    )
    listen, admin = free_ports(2)
    project = f"t24-{uuid.uuid4().hex[:6]}"
    (folder / "desired-state.yaml").write_text(
        f"project: {project}\n"
        "engine: swarm\n"
        f"registry: {cluster.registry}\n"
        f"listen: 127.0.0.1:{listen}\n"
        f"admin: 127.0.0.1:{admin}\n"
        "health: {interval: 0.5, fall: 2, rise: 1}\n"
        "rollout: {min_healthy_time: 1s, healthy_deadline: 120s, drain_timeout: 5s}\n"
        f"backends:\n{backends}"
    )
    env = cluster.manager.env(lbrec_env())
    return Deploy(folder, env, listen, admin, project)


def _remove_stack(deploy: Deploy, node: Node) -> None:
    """The test's own stack goes (the next test on this swarm gets the nodes to itself)."""
    node.docker("stack", "rm", deploy.project, check=False)


def _load(port: int, *, threads: int = 3, seconds: float = 300.0) -> Load:
    """The shared bounded load (tests/support/load.py) at this test's pace: keep-alive
    clients with 2 ms between requests, a 15 s client timeout, at most 150,000 requests."""
    return Load(
        port, threads=threads, seconds=seconds, max_requests=150_000, pause=0.002, timeout=15.0
    )


def _serve(deploy: Deploy) -> subprocess.Popen[bytes]:
    proc = start_lbrec(
        deploy.folder, deploy.env, "proxy.log", "proxy", "--config", "config/backends.json"
    )
    wait_until(
        lambda: http_request("GET", deploy.listen)[0] == 200,
        30,
        "the proxy to answer",
        log=deploy.folder / "proxy.log",
    )
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # our own child, by pid
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _hosts(entries: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["url"]).split("//", 1)[1].rsplit(":", 1)[0] for e in entries)


def _figure(name: str, **values: object) -> None:
    print(f"\nFIGURE {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def test_multi_node_swarm(tmp_path: Path, cluster: Cluster, demo_images: dict[str, str]) -> None:
    """Discovery across nodes, build-push-pull, a rollout and scaling under load, drift, a
    worker's engine killed under load, a partition that heals: all on one 3-node swarm."""
    web = "  - {name: web, image: %s, port: 8000, replicas: 4, weight: 3}\n"
    api = "  - {name: api, port: 8100, replicas: 2, weight: 1}\n"  # the demo: built and pushed
    deploy = _deploy(tmp_path, cluster, web % demo_images["v1"] + api)

    # -- discovery across nodes, and images built, pushed and pulled by every node ---------
    began = time.monotonic()
    deploy.ok("apply")
    _figure("first apply", seconds=round(time.monotonic() - began, 1))
    entries = deploy.routable()
    assert len(entries) == 6, entries
    hosts = _hosts(entries)
    assert set(hosts) <= cluster.addresses() and len(hosts) >= 2, hosts  # spread over nodes
    catalog = json.loads(
        urllib.request.urlopen(f"http://{cluster.registry}/v2/_catalog", timeout=5).read()
    )
    assert any(r.endswith("-backend") for r in catalog["repositories"]), catalog  # the demo
    status = json.loads(deploy.ok("status", "-o", "json"))
    nodes = {i["node"] for row in status["backends"] for i in row["instances"] if i.get("node")}
    assert len(nodes) >= 2 and all(any(a in n for a in cluster.addresses()) for n in nodes), nodes
    assert deploy.lbrec("diff").returncode == 0, deploy.lbrec("diff").stdout

    proc = _serve(deploy)
    try:
        # -- a rollout and scaling under load, as on one node ------------------------------
        with _load(deploy.listen) as load:
            deploy.write(web.replace("replicas: 4", "replicas: 4") % demo_images["v2"] + api)
            began = time.monotonic()
            deploy.ok("apply")
            rollout_seconds = time.monotonic() - began
            deploy.write(web.replace("replicas: 4", "replicas: 6") % demo_images["v2"] + api)
            deploy.ok("apply")
        assert load.failed() == [], Counter(load.failed()).most_common(3)
        _figure(
            "rollout and scale 4->6 under load",
            requests=load.total(),
            failed=0,
            rollout_seconds=round(rollout_seconds, 1),
        )
        assert len(deploy.routable("web")) == 6
        assert len(_hosts(deploy.routable())) == 3, _hosts(deploy.routable())

        # -- drift: a service scaled by hand is planned back ---------------------------------
        service = next(
            line.split()[0]
            for line in cluster.manager.docker("service", "ls", "--format", "{{.Name}}").split("\n")
            if "_web-" in line
        )
        cluster.manager.docker("service", "scale", "--detach", f"{service}=7")
        wait_until(lambda: deploy.lbrec("diff").returncode != 0, 60, "the drift to show in diff")
        with _load(deploy.listen) as load:
            deploy.ok("apply")
        assert load.failed() == [], Counter(load.failed()).most_common(3)
        assert deploy.lbrec("diff").returncode == 0

        # -- a worker's engine killed under load -----------------------------------------------
        watch = start_lbrec(deploy.folder, deploy.env, "watch.log", "watch", "--resync", "2s")
        try:
            # Swarm does not move tasks back to a node that returns: each stage takes a worker
            # that runs tasks now.
            first, second = cluster.net.nodes[2], cluster.net.nodes[1]
            _lose_a_node(
                deploy, cluster.manager, first, "engine killed", cut=first.stop, mend=first.start
            )
            try:
                _lose_a_node(
                    deploy,
                    cluster.manager,
                    second,
                    "link cut",
                    cut=lambda: cluster.net.cut(second),
                    mend=lambda: cluster.net.heal(second),
                )
            finally:
                cluster.net.heal(second)  # the next tests need every node
        finally:
            _stop(watch)
    finally:
        _stop(proc)
        _remove_stack(deploy, cluster.manager)


def _lose_a_node(
    deploy: Deploy, manager: Node, lost: Node, what: str, *, cut: Any, mend: Any
) -> None:
    """``cut`` a node under load; measure the failed requests and the seconds until every
    backend is routed at full count on the nodes left; ``mend`` it and check that no stale
    instance stays in the pool."""
    wait_until(lambda: lost.address in _hosts(deploy.routable()), 120, f"tasks on {lost.address}")
    want = {"web": 6, "api": 2}
    lost_id = lost.node_id()
    seen: dict[str, float] = {}  # when Swarm said the node is down, when it left the pool
    with _load(deploy.listen, seconds=240) as load:
        time.sleep(2.0)
        began = time.monotonic()
        cut()

        def full() -> bool:
            entries = deploy.routable()
            if lost.address not in _hosts(entries):
                seen.setdefault("out_of_pool", time.monotonic() - began)
            if "down" not in seen:
                state = manager.docker(
                    "node", "inspect", lost_id, "--format", "{{.Status.State}}", check=False
                ).strip()
                if state and state != "ready":
                    seen["down"] = time.monotonic() - began
            return lost.address not in _hosts(entries) and all(
                len([e for e in entries if e["name"] == n]) >= c for n, c in want.items()
            )

        wait_until(
            full,
            180,
            f"full capacity without {lost.address} ({what})",
            log=deploy.folder / "watch.log",
        )
        recovered = time.monotonic() - began
        time.sleep(3.0)
    failed = load.failed(since=began)
    _figure(
        f"worker lost ({what})",
        requests=load.total(since=began),
        failed=len(failed),
        kinds=dict(Counter(failed)),
        seconds_to_full_capacity=round(recovered, 1),
        seconds_to_node_down=round(seen.get("down", -1), 1),
        seconds_to_out_of_pool=round(seen.get("out_of_pool", -1), 1),
    )
    assert len(failed) <= 50, Counter(failed).most_common(5)
    mend()
    # Healed: the node's old tasks are Swarm's history, not instances: the pool routes only
    # tasks that run, and converges again.
    wait_until(
        lambda: deploy.lbrec("diff").returncode == 0,
        180,
        f"in sync after {what} healed",
        log=deploy.folder / "watch.log",
    )
    status = json.loads(deploy.ok("status", "-o", "json"))
    running = {
        i["endpoint"]
        for row in status["backends"]
        for i in row["instances"]
        if str(i["state"]).startswith("running")
    }
    stale = [e["url"] for e in deploy.routable() if e["url"].split("//", 1)[1] not in running]
    assert stale == [], stale


def _swarm_state(deploy: Deploy, node: Node) -> tuple[set[str], set[str], set[str]]:
    """What runs (services, tasks wanted running) and what the pool routes."""
    services = set(
        node.docker(
            "service", "ls", "--filter", f"label=lbrec.project={deploy.project}",
            "--format", "{{.Name}}",
        ).split()
    )  # fmt: skip
    tasks = set(
        node.docker(
            "service", "ps", "-q", "--filter", "desired-state=running", *sorted(services)
        ).split()
    )
    return services, tasks, {str(e["url"]) for e in deploy.routable()}


def test_a_push_or_pull_failure_changes_nothing_and_names_node_and_image(
    tmp_path: Path, cluster: Cluster, demo_images: dict[str, str]
) -> None:
    """The registry down when lbrec pushes a new build, then a worker that cannot reach the
    registry when a new image rolls out: each apply exits 1 naming the image (and the node
    that could not pull it), and the running services, their tasks and the pool are the same
    as before, under load with 0 failed."""
    web = "  - {name: web, image: %s, port: 8000, replicas: 3, weight: 1}\n"
    api = "  - {name: api, port: 8100, replicas: 1, weight: 1}\n"  # built and pushed
    deploy = _deploy(tmp_path, cluster, web % demo_images["v1"] + api, "images")
    manager, blocked = cluster.manager, cluster.net.nodes[1]
    try:
        deploy.ok("apply")
        before = _swarm_state(deploy, manager)
        proc = _serve(deploy)
        try:
            with _load(deploy.listen, threads=2, seconds=150) as load:
                # -- a push failure: the registry is down, api's build context changed -------
                cluster.stop_registry()
                try:
                    (deploy.folder / "backend" / "changed.txt").write_text("a new build\n")
                    done = deploy.lbrec("apply")
                finally:
                    cluster.start_registry()
                said = done.stdout + done.stderr
                assert done.returncode == 1, said
                assert f"pushing {cluster.registry}/{deploy.project}-" in said, said
                assert "nothing was deployed" in said, said
                assert _swarm_state(deploy, manager) == before
                _figure("push failure", said=_first_line(said, "pushing"))

                # -- a pull failure: one worker cannot reach the registry --------------------
                (deploy.folder / "backend" / "changed.txt").unlink()
                image = f"{cluster.registry}/lbrec-swarm-demo:only-in-registry"
                manager.docker("tag", demo_images["v1"], image)
                manager.docker("push", image)  # the manager has it; the workers must pull it
                blocked.reject(cluster.net.gateway, REGISTRY_PORT)
                try:
                    deploy.write(web % image + api)
                    done = deploy.lbrec("apply")
                finally:
                    blocked.allow(cluster.net.gateway, REGISTRY_PORT)
                said = done.stdout + done.stderr
                assert done.returncode == 1, said
                assert f"{blocked.address}: {image}: " in said, said  # the node and the image
                assert _swarm_state(deploy, manager) == before
                _figure("pull failure", said=_first_line(said, blocked.address))
            assert load.failed() == [], Counter(load.failed()).most_common(3)
            _figure("push and pull failures under load", requests=load.total(), failed=0)
        finally:
            _stop(proc)
    finally:
        _remove_stack(deploy, manager)


def _first_line(text: str, word: str) -> str:
    return next((line.strip() for line in text.splitlines() if word in line), "")[:300]


def _managers(node: Node) -> list[str]:
    """What ``node`` (a manager) says of the managers (Leader, Reachable, Unreachable), or
    nothing when it cannot answer (not a manager, no leader)."""
    try:
        done = subprocess.run(
            ["docker", "node", "ls", "--filter", "role=manager", "--format", "{{.ManagerStatus}}"],
            env=node.env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return []
    return done.stdout.split() if done.returncode == 0 else []


def _writable(node: Node, node_id: str) -> bool:
    """The swarm takes two writes in a row through ``node`` (a label on a node)."""
    for n in range(2):
        try:
            done = subprocess.run(
                ["docker", "node", "update", "--label-add", f"lbrec.test-write={n}", node_id],
                env=node.env(),
                capture_output=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        if done.returncode != 0:
            time.sleep(1.0)
            return False
    return True


def _managers_answer(node: Node, reachable: int = 1) -> bool:
    """``node`` answers as a manager, with a leader and ``reachable`` managers (leader
    included) in the Raft group."""
    said = _managers(node)
    return "Leader" in said and sum(s in ("Leader", "Reachable") for s in said) >= reachable


def test_the_manager_lost(tmp_path: Path, cluster: Cluster, demo_images: dict[str, str]) -> None:
    """1 manager (drained: it runs no task) lost under load: the proxy keeps serving the last
    pool, 0 failed. Then 3 managers: the one lbrec talks to is lost, lbrec pointed at another
    converges a change (a new replica count) under load, 0 failed."""
    manager, first, second = cluster.net.nodes
    ids = [node.node_id() for node in cluster.net.nodes]
    manager.docker("node", "update", "--availability", "drain", ids[0])
    web = "  - {name: web, image: %s, port: 8000, replicas: %d, weight: 1}\n"
    deploy = _deploy(tmp_path, cluster, web % (demo_images["v1"], 3), "managers")
    talks_to = manager
    retries = 0
    try:
        deploy.ok("apply")
        assert manager.address not in _hosts(deploy.routable()), deploy.routable()
        proc = _serve(deploy)
        try:
            # -- the only manager lost: nothing on a request's path asks it ------------------
            with _load(deploy.listen, threads=2, seconds=60) as load:
                time.sleep(1.0)
                began = time.monotonic()
                manager.stop()
                refused = deploy.lbrec("diff")
                time.sleep(10.0)
                down_for = time.monotonic() - began
            assert refused.returncode == 3, refused.stdout + refused.stderr  # no engine to ask
            assert load.failed() == [], Counter(load.failed()).most_common(3)
            _figure(
                "the only manager lost",
                requests=load.total(since=began),
                failed=0,
                seconds_down=round(down_for, 1),
            )
            manager.start()
            wait_until(lambda: _managers_answer(manager), 120, "the manager back")

            # -- 3 managers: the one lbrec talks to lost, lbrec pointed at another ---------
            manager.docker("node", "promote", ids[1], ids[2])
            # all three in the Raft group before one goes (two of three keep the quorum)
            wait_until(lambda: _managers_answer(first, 3), 120, "the promoted managers")
            with _load(deploy.listen, threads=2, seconds=150) as load:
                time.sleep(1.0)
                manager.stop()
                began = time.monotonic()
                talks_to = first
                deploy.env = first.env(deploy.env)
                wait_until(lambda: _managers_answer(first, 2), 90, "a leader among the two left")
                # and one that keeps it: Raft takes writes again (a node label, twice in a row)
                wait_until(lambda: _writable(first, ids[1]), 120, "the managers to take writes")
                elected = time.monotonic() - began
                deploy.write(web % (demo_images["v1"], 4))
                # An election may flap once more ("node lost leader status"): nothing changed
                # then, and the next pass (lbrec watch retries a failed pass) goes through.
                for _ in range(3):
                    done = deploy.lbrec("apply")
                    if done.returncode == 0 or "leader" not in done.stdout + done.stderr:
                        break
                    retries += 1
                    wait_until(lambda: _managers_answer(first, 2), 60, "a leader again")
                assert done.returncode == 0, done.stdout + done.stderr
                converged = time.monotonic() - began
                assert len(deploy.routable("web")) == 4, deploy.routable()
                assert deploy.lbrec("diff").returncode == 0
                deploy.env = second.env(deploy.env)  # the other manager left tells the same
                assert deploy.lbrec("diff").returncode == 0
            assert load.failed() == [], Counter(load.failed()).most_common(3)
            _figure(
                "a manager of 3 lost, lbrec on another",
                requests=load.total(since=began),
                failed=0,
                seconds_to_a_leader_taking_writes=round(elected, 1),
                seconds_to_converged=round(converged, 1),
                passes_retried_for_an_election=retries,
            )
        finally:
            _stop(proc)
    finally:
        # Put the swarm back as it was (1 manager, every node active) without hiding why the
        # test failed: each step's own failure is only printed.
        steps: list[tuple[str, Any]] = [
            ("start the manager", lambda: manager.proc is None or manager.proc.poll() is None
             or manager.start()),
            ("remove the stack", lambda: _remove_stack(deploy, talks_to)),
            ("wait for the manager", lambda: wait_until(
                lambda: _managers_answer(manager), 120, "the manager back for the teardown")),
            ("demote", lambda: manager.docker("node", "demote", ids[1], ids[2], check=False)),
            ("activate", lambda: manager.docker(
                "node", "update", "--availability", "active", ids[0], check=False)),
        ]  # fmt: skip
        for what, step in steps:
            try:
                step()
            except Exception as err:  # teardown goes on
                print(f"teardown: {what} failed: {err}", flush=True)
