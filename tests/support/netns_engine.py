"""Docker engines of a test's own: one ``dockerd`` per network namespace, on one host bridge.

Some faults can only be shown by stopping and starting an engine (containers come back on other
host ports), and the machine's shared ``dockerd`` must never be touched. :class:`EngineNet`
makes, for N nodes:

* one bridge in the host namespace, ``198.18.X.1/24`` (X is picked free at start),
* per node a network namespace (``ip netns add``) joined to the bridge by a veth pair, its end
  ``198.18.X.(10+i)/24``, with no default route (nothing in it can reach further than the
  bridge),
* per node a ``dockerd`` (with the containerd it starts itself) with its own ``--data-root``,
  ``--exec-root``, ``--pidfile``, socket ``unix://<tmp>/n<i>/docker.sock`` and containerd
  namespace, started with ``nsenter --net=/run/netns/NAME`` (never ``ip netns exec``, which
  remounts /sys and hides the cgroups from dockerd),
* two iptables rules in the host: traffic that enters from the bridge is accepted in FORWARD
  (node to node, the host engine's policy is DROP), and nothing else.

Projects on a node publish on its address (``publish_host: <node.address>``) and lbrec is
pointed at it with ``DOCKER_HOST=<node.host>`` (see :meth:`Node.env`). :meth:`Node.stop` and
:meth:`Node.start` restart an engine; :meth:`EngineNet.close` always undoes everything it made:
it kills only the processes it started (by pid), deletes the namespaces, veths, bridge and the
iptables rules it added. Needs root, ``ip``, ``nsenter``, ``iptables`` and Debian's
``docker.io`` (``dockerd``, ``containerd``, ``runc``). See docs/test-engines.md.

    with EngineNet.create(nodes=1) as net:
        node = net.nodes[0]
        node.load_image("lbrec-base:bookworm")
        subprocess.run(["docker", "ps"], env=node.env(), check=True)
        node.stop(); node.start()
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EngineNet", "EngineNetError", "Node", "missing_requirements"]

_TOOLS = ("ip", "nsenter", "iptables", "dockerd", "containerd", "runc", "docker")


class EngineNetError(RuntimeError):
    """The harness could not be set up (what failed, with the tool's output)."""


def missing_requirements() -> str | None:
    """Why an :class:`EngineNet` cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a second dockerd)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (Debian: apt-get install docker.io iproute2)"
    return None


def _run(*cmd: str, check: bool = True, input_: bytes | None = None) -> str:
    done = subprocess.run(list(cmd), capture_output=True, input=input_, check=False, timeout=120)
    if check and done.returncode != 0:
        raise EngineNetError(
            f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")


def _used_subnets() -> set[int]:
    text = _run("ip", "-4", "-o", "addr", "show", check=False)
    used = set()
    for word in text.split():
        if word.startswith("198.18."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


@dataclass
class Node:
    """One namespace and its engine."""

    index: int
    netns: str
    veth_host: str
    veth_ns: str
    address: str  # 198.18.X.(10+i): where its published ports are reached from the host
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_args: tuple[str, ...] = ()  # more dockerd flags (e.g. --insecure-registry)

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` of this engine."""
        return f"unix://{self.socket}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) pointed at this engine only."""
        out = dict(os.environ if base is None else base)
        out["DOCKER_HOST"] = self.host
        out.pop("DOCKER_CONTEXT", None)
        return out

    def _command(self) -> list[str]:
        f = self.folder
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "dockerd",
            f"--data-root={f / 'data'}",
            f"--exec-root={f / 'x'}",
            f"--pidfile={f / 'dockerd.pid'}",
            f"--host={self.host}",
            f"--containerd-namespace={self.netns}",
            f"--containerd-plugins-namespace={self.netns}-plugins",
            "--iptables=true",
            "--ip-forward=true",
            # the namespace's own bridge: never routed from the host (no route to it there)
            "--bip=198.19.0.1/24",
            "--default-address-pool=base=198.19.128.0/17,size=24",
            "--live-restore=false",
            "--userland-proxy=true",
            "--exec-opt=native.cgroupdriver=cgroupfs",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> float:
        """Start the engine (again); returns the seconds until it answered."""
        if self.proc is not None and self.proc.poll() is None:
            raise EngineNetError(f"node {self.index}: dockerd already runs (pid {self.proc.pid})")
        began = time.monotonic()
        log = (self.folder / "dockerd.log").open("ab")
        try:
            # nsenter execs dockerd: the pid is dockerd's own.
            self.proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineNetError(f"node {self.index}: dockerd exited: {self.log_tail()}")
            try:
                done = subprocess.run(
                    ["docker", "version", "--format", "{{.Server.Version}}"],
                    env=self.env(),
                    capture_output=True,
                    check=False,
                    timeout=10,
                )
            except subprocess.TimeoutExpired:  # it listens but is still restoring: not yet
                continue
            if done.returncode == 0:
                return time.monotonic() - began
            time.sleep(0.2)
        raise EngineNetError(f"node {self.index}: dockerd did not answer: {self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM our dockerd (by pid) and wait: its containers stop with it (no
        live-restore). Returns the seconds it took."""
        began = time.monotonic()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0.0
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self._reap_containerd()
        self._clear_overlay()
        return time.monotonic() - began

    def _clear_overlay(self) -> None:
        """What a stopped engine leaves of its overlay networks, so that it starts clean (a
        reboot would clear it): the sandbox namespaces mounted under its exec-root keep their
        vxlan devices, whose sockets stay in the node's namespace, and the engine started
        again fails every task on an overlay with "error creating vxlan interface: file
        exists" (moby#33626)."""
        _unmount_under(self.folder / "x")
        listed = _run("ip", "-n", self.netns, "-o", "link", "show", "type", "vxlan", check=False)
        for line in listed.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
            if name:
                _run("ip", "-n", self.netns, "link", "delete", name, check=False)

    def _reap_containerd(self) -> None:
        """The containerd our dockerd started, if it outlived it (found by its pid file)."""
        pid_file = self.folder / "x" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(self.folder).encode() in cmdline:
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)

    def docker(self, *args: str, input_: bytes | None = None, check: bool = True) -> str:
        done = subprocess.run(
            ["docker", *args],
            env=self.env(),
            input=input_,
            capture_output=True,
            check=False,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise EngineNetError(
                f"docker {' '.join(args)} on node {self.index}: {done.stderr.decode()[-500:]}"
            )
        return done.stdout.decode(errors="replace")

    def load_image(self, reference: str) -> None:
        """Copy an image from the machine's engine into this one (offline: no pull)."""
        if self.docker("image", "ls", "-q", reference).strip():
            return
        saved = subprocess.run(
            ["docker", "save", reference],
            capture_output=True,
            check=False,
            timeout=300,
            env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
        )
        if saved.returncode != 0:
            raise EngineNetError(f"docker save {reference}: {saved.stderr.decode()[-500:]}")
        self.docker("load", input_=saved.stdout)

    def _reject_rule(self, address: str, port: int) -> list[str]:
        return [
            "OUTPUT", "-d", address, "-p", "tcp", "--dport", str(port),
            "-j", "REJECT", "--reject-with", "tcp-reset",
        ]  # fmt: skip

    def reject(self, address: str, port: int) -> None:
        """This node's connections to ``address:port`` are refused (e.g. the registry: its
        pulls fail), in its own namespace; :meth:`allow` undoes it, and so does
        :meth:`EngineNet.close` (the namespace goes)."""
        _run("nsenter", f"--net=/run/netns/{self.netns}", "iptables", "-I",
             *self._reject_rule(address, port))  # fmt: skip

    def allow(self, address: str, port: int) -> None:
        _run("nsenter", f"--net=/run/netns/{self.netns}", "iptables", "-D",
             *self._reject_rule(address, port), check=False)  # fmt: skip

    def node_id(self) -> str:
        """Its Swarm node id (empty when it is in no swarm)."""
        return self.docker("info", "--format", "{{.Swarm.NodeID}}").strip()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.folder / "dockerd.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class EngineNet:
    """N nodes on one host bridge; :meth:`close` removes all of it."""

    tag: str
    subnet: int  # X in 198.18.X.0/24
    bridge: str
    folder: Path
    nodes: list[Node] = field(default_factory=list)
    _rules: list[list[str]] = field(default_factory=list)
    _links: list[str] = field(default_factory=list)
    _netns: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return f"198.18.{self.subnet}.1"

    @classmethod
    def create(
        cls, nodes: int = 1, *, start: bool = True, dockerd_args: tuple[str, ...] = ()
    ) -> EngineNet:
        """Make the bridge and ``nodes`` namespaces with an engine each (started unless
        ``start`` is False; ``dockerd_args`` added to each engine's flags). On any failure
        what was made is removed and the error raised."""
        why = missing_requirements()
        if why is not None:
            raise EngineNetError(why)
        used = _used_subnets()
        free = [x for x in range(1, 255) if x not in used]
        subnet = random.Random(os.getpid() ^ time.monotonic_ns()).choice(free)
        tag = f"{os.getpid() % 10000:04d}{subnet:03d}"  # interface names: at most 15 chars
        # short: containerd's socket path lives under it (unix socket paths are <108 bytes)
        folder = Path(tempfile.mkdtemp(prefix=f"lbne{tag}-", dir="/tmp"))
        net = cls(tag=tag, subnet=subnet, bridge=f"lbnb{tag}", folder=folder)
        try:
            net._make_bridge()
            for i in range(nodes):
                net._make_node(i)
                net.nodes[-1].extra_args = dockerd_args
            if start:
                for node in net.nodes:
                    node.start()
        except BaseException:
            net.close()
            raise
        return net

    def __enter__(self) -> EngineNet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _make_bridge(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # Node to node across the bridge (br_netfilter sends bridged frames through FORWARD,
        # whose policy the host engine set to DROP); from the bridge only to the bridge.
        self._add_rule(["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"])

    def _add_rule(self, rule: list[str]) -> None:
        _run("iptables", "-I", *rule)
        self._rules.append(rule)

    def _make_node(self, i: int) -> None:
        netns = f"lbne{self.tag}n{i}"
        veth_host, veth_ns = f"lbv{self.tag}h{i}", f"lbv{self.tag}n{i}"
        address = f"198.18.{self.subnet}.{10 + i}"
        folder = self.folder / f"n{i}"
        folder.mkdir()
        _run("ip", "netns", "add", netns)
        self._netns.append(netns)
        _run("ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_ns)
        self._links.append(veth_host)
        _run("ip", "link", "set", veth_ns, "netns", netns)
        _run("ip", "link", "set", veth_host, "master", self.bridge)
        _run("ip", "link", "set", veth_host, "up")
        inside = ("ip", "-n", netns)
        _run(*inside, "addr", "add", f"{address}/24", "dev", veth_ns)
        _run(*inside, "link", "set", veth_ns, "up")
        _run(*inside, "link", "set", "lo", "up")
        # no default route: the namespace reaches the bridge's subnet and nothing else
        self.nodes.append(Node(i, netns, veth_host, veth_ns, address, folder))

    def cut(self, node: Node) -> None:
        """A partition: ``node``'s link to the bridge goes down (its engine keeps running)."""
        _run("ip", "link", "set", node.veth_host, "down")

    def heal(self, node: Node) -> None:
        _run("ip", "link", "set", node.veth_host, "up")

    def close(self) -> None:
        """Stop our engines (by pid), then remove namespaces, links, rules and files. Every
        step runs even when an earlier one fails."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout=30)
            with contextlib.suppress(Exception):
                _unmount_under(node.folder)
        for netns in reversed(self._netns):
            _run("ip", "netns", "delete", netns, check=False)
        self._netns.clear()
        for link in reversed(self._links):
            _run("ip", "link", "delete", link, check=False)
        self._links.clear()
        for rule in reversed(self._rules):
            _run("iptables", "-D", *rule, check=False)
        self._rules.clear()
        _unmount_under(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


def _unmount_under(folder: Path) -> None:
    """Mounts a dead dockerd or containerd left under ``folder`` (overlays, shm), deepest first."""
    prefix = str(folder)
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextlib.contextmanager
def engine_net(nodes: int = 1) -> Iterator[EngineNet]:
    """:meth:`EngineNet.create` as a context manager (teardown always runs)."""
    net = EngineNet.create(nodes)
    try:
        yield net
    finally:
        net.close()
