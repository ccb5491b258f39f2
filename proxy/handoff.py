"""Replace a running proxy without a gap: it hands its listening sockets to its successor.

The running proxy (started with ``--handoff PATH``) listens on a Unix socket at PATH. A new
proxy started with the same PATH connects, asks ``TAKE``, and receives the listening sockets
over SCM_RIGHTS, each named by its role in the message that carries them (``lbrec
traffic,admin,tls``): the plain listener, the admin listener and the TLS listener
(``tls.listen`` as it is served at that moment, also after a reload moved it). A message
without roles (a proxy from before the TLS listener was handed over) means traffic, then admin.
Both processes now hold the *same* kernel sockets, with one accept queue: no connection can be
refused or reset in between, unlike an SO_REUSEPORT overlap, where connections still queued on
the old socket when it closes are reset. Once the new proxy serves, it says ``READY``; the old
one stops accepting, tells keep-alive clients ``Connection: close`` on their next answer,
finishes in-flight requests (``--drain-timeout``) and exits. The new proxy then serves the
handoff socket for its own successor.

This is HAProxy's ``-x`` and nginx's binary upgrade, for one process (not ``--workers N``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["ROLES", "HandoffServer", "Taken", "take_over"]

_log = logging.getLogger("lbrec.proxy")

_TAKE = b"TAKE\n"
_WITH_TLS = b"TLS\n"  # after TAKE, in the same write: the taker serves the TLS listener too
_READY = b"READY\n"
_MAX_FDS = 4
ROLES = ("traffic", "admin", "tls")  # what a handed socket is for
_HELLO = b"lbrec"
_READY_WAIT = 300.0  # a successor that neither serves nor exits in this long is given up


class Taken:
    """Listening sockets received from the previous proxy (``sockets``, in the order sent;
    ``roles``, the role of each: :data:`ROLES`); :meth:`ready` releases it."""

    def __init__(
        self, channel: socket.socket, sockets: list[socket.socket], roles: Sequence[str] = ()
    ) -> None:
        self._channel = channel
        self.sockets = sockets
        self.roles = tuple(roles) or ROLES[: len(sockets)]

    def role(self, name: str) -> socket.socket | None:
        """The socket handed for ``name`` (None: none was)."""
        for role, sock in zip(self.roles, self.sockets, strict=False):
            if role == name:
                return sock
        return None

    def ready(self) -> None:
        """We serve on the sockets: the previous proxy may stop accepting and drain."""
        with contextlib.suppress(OSError):
            self._channel.sendall(_READY)
        self._channel.close()


def _peer_uid(channel: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = channel.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _same_user(channel: socket.socket) -> bool:
    """Sockets are handed only between processes of one user (root may take anyone's)."""
    uid = _peer_uid(channel)
    return uid == os.getuid() or uid == 0


def _check_listening(sock: socket.socket) -> None:
    """A received descriptor must be a listening TCP socket, nothing else."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        raise OSError("the running proxy sent a descriptor that is not a TCP socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise OSError("the running proxy sent a TCP socket that is not listening")


def take_over(path: Path, *, timeout: float = 5.0, tls: bool = False) -> Taken | None:
    """The previous proxy's listening sockets, or None when no proxy serves ``path``.

    ``tls``: ask for its TLS listener too (only a taker that serves it asks: a socket handed
    and then left unserved would keep taking its share of the port's connections). A proxy
    from before this was possible reads ``TAKE`` only and hands traffic and admin."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.settimeout(timeout)
    try:
        channel.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        channel.close()
        with contextlib.suppress(OSError):
            path.unlink()  # a stale socket file of a proxy that is gone
        return None
    try:
        if not _same_user(channel):
            raise OSError(f"{path}: served by another user's process; not taking its sockets")
        channel.sendall(_TAKE + (_WITH_TLS if tls else b""))  # one write: see _serve
        message, fds, _, _ = socket.recv_fds(channel, 256, _MAX_FDS)
    except OSError:
        channel.close()
        raise
    sockets = [socket.socket(fileno=fd) for fd in fds]
    try:
        if not sockets:
            raise OSError(f"{path}: the running proxy sent no sockets")
        roles = _roles(message, len(sockets))
        for sock in sockets:
            _check_listening(sock)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        channel.close()
        raise
    # The old proxy waits for READY as long as this process lives (see HandoffServer).
    channel.settimeout(None)
    return Taken(channel, sockets, roles)


def _roles(message: bytes, count: int) -> list[str]:
    """The role of each received socket: named in the message, or traffic then admin."""
    _hello, _, named = message.strip().partition(b" ")
    if not named:
        roles = list(ROLES[:2])[:count]
    else:
        roles = [r.decode("ascii", "replace") for r in named.split(b",")]
    if len(roles) != count or len(set(roles)) != count or not set(roles) <= set(ROLES):
        raise OSError(f"the running proxy sent {count} sockets named {roles}: not understood")
    return roles


Handed = Callable[[], Sequence[tuple[str, int]]]


class HandoffServer:
    """Serves ``TAKE`` on a Unix socket at ``path`` (one successor), in a thread of its own.

    ``sockets``: a list (traffic, then admin), or a function giving (role, descriptor) pairs
    at the moment a successor asks, so that a listener opened or moved since (the TLS
    listener at a reload) is the one handed over. ``on_taken`` runs in that thread once the
    successor said ``READY``: hand it to the event loop with ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        path: Path,
        sockets: Sequence[socket.socket] | Handed,
        on_taken: Callable[[], None],
    ) -> None:
        self.path = path
        self._sockets = sockets
        self._on_taken = on_taken
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._taken = False

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # the previous proxy's name: it keeps serving its own accepted
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            # Only this user may connect; the peer's credentials are checked anyway (a
            # process-wide umask would race other threads' files).
            os.chmod(self.path, 0o600)
        except OSError:
            listener.close()
            raise
        listener.listen(1)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="proxy-handoff", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._closed.is_set():
            try:
                channel, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with channel:
                if self._serve(channel):
                    return

    def _serve(self, channel: socket.socket) -> bool:
        channel.settimeout(10.0)
        try:
            if not _same_user(channel):
                _log.warning(
                    "proxy handoff refused: the caller runs as uid %d",
                    _peer_uid(channel),
                    extra={"event": "handoff_error"},
                )
                return False
            if channel.recv(len(_TAKE)) != _TAKE:
                return False
            # TLS\n, when asked, came in the same write as TAKE\n: it is here already
            channel.setblocking(False)
            try:
                wants_tls = channel.recv(len(_WITH_TLS)) == _WITH_TLS
            except BlockingIOError:
                wants_tls = False
            channel.settimeout(10.0)
            handed = [(r, fd) for r, fd in self._handed() if r != "tls" or wants_tls]
            names = b",".join(role.encode() for role, _fd in handed)
            socket.send_fds(channel, [_HELLO + b" " + names], [fd for _role, fd in handed])
            # The successor may take a while to serve (it loads its pool first): wait for its
            # READY as long as it lives; its exit closes the channel and we keep serving.
            channel.settimeout(_READY_WAIT)
            answer = channel.recv(len(_READY))
        except OSError as err:
            _log.warning("proxy handoff failed: %s", err, extra={"event": "handoff_error"})
            return False
        if answer != _READY:  # the successor died before serving: keep serving ourselves
            _log.warning("successor did not take over", extra={"event": "handoff_error"})
            return False
        _log.info("listening sockets taken over by the new proxy", extra={"event": "handoff"})
        self._taken = True
        self._on_taken()
        return True

    def _handed(self) -> list[tuple[str, int]]:
        if callable(self._sockets):
            return [(role, fd) for role, fd in self._sockets() if fd >= 0]
        return list(zip(ROLES, (s.fileno() for s in self._sockets), strict=False))

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if not self._taken:  # a successor binds its own name; else leave no stale file
            with contextlib.suppress(OSError):
                self.path.unlink()
