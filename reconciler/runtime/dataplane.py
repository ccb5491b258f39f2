"""EDGE. The data plane of ``lbrec up`` (proxy.mode: host): ``lbrec proxy`` processes, supervised.

``up`` binds the listen, admin and TLS (``tls.listen``) sockets itself and hands them to each
proxy process as file descriptors (``lbrec proxy --listen-fd N --admin-fd M --tls-fd T``), so
they outlive any one process:
while a crashed proxy is started again, connecting clients wait in the kernel's accept queue
instead of being refused. Each worker slot has a thread that starts its process, waits for it
to say ready (``--ready-fd``), and when it exits unasked, starts it again at once (then with a
back-off while it keeps crashing), logged and counted (``lbrec_up_proxy_restarts_total``).

The proxy processes run in a session of their own, with no parent-death signal: a reconciler
that crashes or hangs leaves them serving the last pool (they read ``config/backends.json``
themselves). Worker 0 serves the handoff socket (``--handoff``, :mod:`proxy.handoff`): the
next ``lbrec up`` in this folder (a new version, or after a crash) takes the listening sockets
from it, starts its own proxies on them, then releases the old ones, which drain: no request
fails. The ``up`` whose proxy was taken over sees it leave cleanly with a new proxy serving the
handoff socket, and stands down (:attr:`ProxySupervisor.superseded`).

A change of ``listen``/``admin``/``tls.listen`` (read from this deployment's pool after a pass)
moves the listener without a gap: the new socket is bound, new proxies serve it, then the old
ones drain and the old socket closes.

Here: the supervisor (sockets held, workers started, listeners moved, the pid file); the
sockets themselves are in :mod:`.proxy_sockets`, one worker's restarts in :mod:`.proxy_worker`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ...proxy.config import ConfigError, load_config
from ...proxy.handoff import Taken, take_over
from ..adapters.files import state_dir
from ..adapters.workspace import Workspace
from ..core.errors import PortInUse
from .proxy_sockets import address_of, bind_listener, same_address, socket_path
from .proxy_worker import Child, Slot, is_our_proxy, wait_ready

__all__ = ["ProxySupervisor", "auto_workers", "socket_path"]

_log = logging.getLogger("lbrec.up")

_READY_TIMEOUT = 60.0
_WATCH_INTERVAL = 1.0


def auto_workers(cpus: int | None) -> int:
    """``proxy.workers: auto``: one proxy process per core beyond the first, which is left to
    the reconciler and Docker (1 on a 2-core machine; docs/benchmarks.md has the figures),
    at most 8."""
    return max(1, min(8, (cpus or 1) - 1))


class ProxySupervisor:
    """The proxy processes of one ``lbrec up`` and the sockets they serve."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        workers: int,
        project: str,
        listen: str,
        admin: str,
        control_socket: Path | None,
        tls: str | None = None,
        log_format: str = "text",
        access_log: bool = False,
        drain_timeout: float = 30.0,
    ) -> None:
        self.workspace = workspace
        self.workers = workers
        self.project = project
        self.listen = listen
        self.admin = admin
        self.tls = tls
        self.control_socket = control_socket
        self.log_format = log_format
        self.access_log = access_log
        self.drain_timeout = drain_timeout
        folder = workspace.folder
        self.handoff = socket_path(folder, "proxy.sock")
        self.pids_file = state_dir(folder) / "proxy.pids"
        self.figures = state_dir(folder) / "figures"
        self.stopping = threading.Event()
        self.superseded = threading.Event()
        self._lock = threading.RLock()
        self._listen_sock: socket.socket | None = None
        self._admin_sock: socket.socket | None = None
        self._tls_sock: socket.socket | None = None
        self._taken: Taken | None = None
        self._slots: list[Slot] = []
        self._watcher: threading.Thread | None = None
        self._pool_stat: tuple[int, int] | None = None
        self._refused: tuple[str, str, str, str | None] | None = None  # a move that failed
        self.adopted = False

    # -- sockets -------------------------------------------------------------------------------
    def acquire(self) -> None:
        """The listening sockets: taken from a proxy of this folder still serving (the
        previous ``up`` crashed, or runs an older version), else bound here (PortInUse when
        they cannot be). Nothing else is touched before this."""
        try:
            taken = take_over(self.handoff, tls=True)
        except OSError as err:
            _log.warning("%s: not taking over the proxy there: %s", self.handoff, err)
            taken = None
        if taken is not None and taken.role("traffic") is None:
            for sock in taken.sockets:
                sock.close()
            _log.warning("%s: the proxy there handed no traffic listener", self.handoff)
            taken = None
        if taken is not None:
            self._taken = taken
            traffic = taken.role("traffic")
            assert traffic is not None
            self._listen_sock = traffic
            admin = taken.role("admin")
            # None: a proxy without an admin listener (started by hand with --handoff)
            self._admin_sock = admin if admin is not None else bind_listener("admin", self.admin)
            tls = taken.role("tls")
            if tls is not None and self.tls is not None and same_address(tls, self.tls):
                self._tls_sock = tls
            else:
                if tls is not None:
                    tls.close()
                self._tls_sock = self._bind_tls(self.tls)
            self.adopted = True
            _log.info(
                "taking over the proxy serving this folder (listen %s:%d, admin %s:%d)",
                *address_of(traffic),
                *address_of(self._admin_sock),
                extra={"event": "adopt"},
            )
            return
        self._listen_sock = bind_listener("listen", self.listen)
        try:
            self._admin_sock = bind_listener("admin", self.admin)
            self._tls_sock = self._bind_tls(self.tls)
        except PortInUse:
            held: list[socket.socket | None] = [self._listen_sock, self._admin_sock]
            for bound in held:
                if bound is not None:
                    bound.close()
            raise

    @staticmethod
    def _bind_tls(hostport: str | None) -> socket.socket | None:
        """The TLS listener (SO_REUSEPORT: a proxy of an older up may still hold its own
        there, draining)."""
        return None if hostport is None else bind_listener("tls.listen", hostport, reuse=True)

    # -- processes -----------------------------------------------------------------------------
    def spawn(self, index: int) -> Child:
        """Start worker ``index`` on the current sockets and wait until it serves."""
        with self._lock:
            listen, admin, tls = self._listen_sock, self._admin_sock, self._tls_sock
            assert listen is not None and admin is not None
            read_end, write_end = os.pipe()
            fds = [listen.fileno(), write_end]
            if tls is not None:
                fds.append(tls.fileno())
            argv = [
                sys.executable,
                "-m",
                "lbrec.proxy",
                "--config",
                str(self.workspace.pool_file),
                "--listen-fd",
                str(listen.fileno()),
                "--ready-fd",
                str(write_end),
                "--tls-fd",  # -1: none yet; the proxy binds none itself (moved from here)
                str(tls.fileno() if tls is not None else -1),
                "--deployment",
                f"{self.project}:{self.workspace.spec_file}",
                "--log-format",
                self.log_format,
                "--drain-timeout",
                f"{self.drain_timeout:g}",
            ]
            if index == 0:
                argv += ["--admin-fd", str(admin.fileno()), "--handoff", str(self.handoff)]
                fds.append(admin.fileno())
                if self.control_socket is not None:
                    argv += ["--control-socket", str(self.control_socket)]
            if self.workers > 1:
                self.figures.mkdir(mode=0o700, exist_ok=True)
                argv += ["--figures-dir", str(self.figures), "--worker", str(index)]
            if self.access_log:
                argv.append("--access-log")
            try:
                proc = subprocess.Popen(
                    argv,
                    pass_fds=fds,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C or a crash of up leaves it serving
                    cwd=self.workspace.folder,
                )
            finally:
                os.close(write_end)
        try:
            ready = wait_ready(read_end, proc, _READY_TIMEOUT)
        finally:
            os.close(read_end)
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = proc.wait()
            raise OSError(f"the proxy exited ({code}) before serving")
        return Child(proc, time.monotonic())

    def start(self) -> None:
        """Start every worker; once they serve, release a proxy taken over (it drains) and
        stop the other processes of the up before (found in .lbrec/proxy.pids)."""
        config = self.workspace.pool_file.parent
        if not config.is_dir():  # a new folder: the proxies watch it for the first pool
            config.mkdir(parents=True)
            os.chmod(config, 0o755)  # as a pass makes it (the lb container reads it as nobody)
        previous = self._read_pids()
        self._slots = [Slot(self, i) for i in range(self.workers)]
        for slot in self._slots:
            slot.start()
        if self._taken is not None:
            self._taken.ready()  # the proxy we took the sockets from stops accepting, drains
            self._taken = None
        mine = {s.child.proc.pid for s in self._slots if s.child is not None}
        for pid in previous - mine:
            if is_our_proxy(pid, self.workspace.pool_file):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # drains
        self._watcher = threading.Thread(target=self._watch, name="proxy-listeners", daemon=True)
        self._watcher.start()

    @property
    def pids(self) -> list[int]:
        return [s.child.proc.pid for s in self._slots if s.child is not None]

    def stop(self) -> None:
        """SIGTERM every worker (each drains), wait for them, close the sockets."""
        self.stopping.set()
        children = [s.child for s in self._slots if s.child is not None]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.proc.wait(timeout=self.drain_timeout + 10)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        for sock in (self._listen_sock, self._admin_sock, self._tls_sock):
            if sock is not None:
                sock.close()
        if not self.superseded.is_set():
            self.pids_file.unlink(missing_ok=True)

    def handoff_served_elsewhere(self) -> bool:
        """Whether a proxy (not ours: ours just exited) answers on the handoff socket."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.handoff))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    # -- listeners that move -------------------------------------------------------------------
    def _watch(self) -> None:
        """After a pass: the pool's listen/admin (of this deployment) differ from ours: move."""
        while not self.stopping.wait(_WATCH_INTERVAL):
            wanted = self._wanted()
            if wanted is not None:
                self.move(*wanted)

    def _wanted(self) -> tuple[str, str, str, str | None] | None:
        pool = self.workspace.pool_file
        try:
            st = pool.stat()
        except OSError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._pool_stat:
            return None
        self._pool_stat = stamp
        try:
            config = load_config(pool)
        except ConfigError:
            return None
        deploy = config.deploy
        if deploy is None or deploy.file != str(self.workspace.spec_file):
            return None
        tls = config.tls.listen if config.tls is not None else None
        wanted = (config.listen, config.admin, deploy.project, tls)
        if wanted in ((self.listen, self.admin, self.project, self.tls), self._refused):
            return None
        return wanted

    def move(self, listen: str, admin: str, project: str, tls: str | None = None) -> bool:
        """Serve ``listen``/``admin``/``tls`` (and the pools of ``project``): open the new
        sockets, start new proxies on them, then let the old ones drain and close the old
        sockets."""
        with self._lock:
            old_listen, old_admin = self._listen_sock, self._admin_sock
            old_tls = self._tls_sock
            assert old_listen is not None and old_admin is not None
            new_listen: socket.socket | None = None
            new_admin: socket.socket | None = None
            new_tls: socket.socket | None = None
            try:
                new_listen = _rebind(old_listen, "listen", listen)
                new_admin = _rebind(old_admin, "admin", admin)
                if old_tls is not None and tls is not None and same_address(old_tls, tls):
                    new_tls = old_tls
                else:
                    new_tls = self._bind_tls(tls)
            except PortInUse as err:
                for new, old in ((new_listen, old_listen), (new_admin, old_admin)):
                    if new is not None and new is not old:
                        new.close()
                _log.error("%s; still serving %s (admin %s)", err.message, self.listen, self.admin)
                self._refused = (listen, admin, project, tls)  # said once, until it changes
                return False
            self._listen_sock, self._admin_sock = new_listen, new_admin
            self._tls_sock = new_tls
            self.project = project
            old_children = [slot.replace() for slot in self._slots]
        _log.info(
            "listeners moved: %s -> %s, admin %s -> %s, tls %s -> %s",
            self.listen,
            listen,
            self.admin,
            admin,
            self.tls,
            tls,
            extra={"event": "listeners_moved", "listen": listen, "admin": admin, "tls": tls},
        )
        self.listen, self.admin, self.tls = listen, admin, tls
        for child in old_children:
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        for child in old_children:
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=self.drain_timeout + 10)
        pairs: list[tuple[socket.socket | None, socket.socket | None]] = [
            (old_listen, new_listen),
            (old_admin, new_admin),
            (old_tls, new_tls),
        ]
        for before, after in pairs:
            if before is not None and before is not after:
                before.close()
        return True

    # -- the pid file (for the next up, after a crash of this one) ------------------------------
    def write_pids(self) -> None:
        pids = self.pids
        tmp = self.pids_file.with_name(f".{self.pids_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"up": os.getpid(), "proxies": pids}) + "\n")
        os.replace(tmp, self.pids_file)

    def _read_pids(self) -> set[int]:
        try:
            data = json.loads(self.pids_file.read_text())
            return {int(p) for p in data.get("proxies", [])}
        except (OSError, ValueError, TypeError, AttributeError):
            return set()


def _rebind(sock: socket.socket, role: str, hostport: str) -> socket.socket:
    """``sock`` when it already listens on ``hostport``, else a new socket bound there."""
    return sock if same_address(sock, hostport) else bind_listener(role, hostport)
