"""EDGE. The certificate manager: ACME orders and renewals beside the control loop.

``lbrec up``, ``watch`` and ``sync`` attach one :class:`CertManager` to their control loop (a
trigger: it starts and stops with the loop). It runs in a thread of its own, because an order
takes seconds to minutes (the CA validates, then issues) and must never hold a pass. Each tick:

1. read the desired state (an invalid file: wait for the next tick; without ``tls.acme``:
   nothing to do) and the certificates held under ``.lbrec/certs``;
2. ask the CA's renewal info (ARI) for each held certificate when due;
3. order every name core/certs.py says is due, one at a time, under the folder's order lock
   (``lbrec certs --renew`` takes it too). A new certificate is stored, then the loop is
   notified: its pass renders it into backends.json (``~ pool tls.certificates ...``) and the
   proxy hot-reloads it. A failure is logged with the CA's own error, counted, remembered
   (``schedule.json``: `lbrec status` shows it) and backed off; the serving certificate is
   never touched;
4. sleep until the next name is due, or ``poll`` seconds (a changed file, a certificate
   renewed by ``lbrec certs --renew``: the loop is notified of that too).

Orders wait until the pool on disk carries ``tls.acme_dir``: before that the proxy answers no
challenge, and the order would only fail and back off. One order is :mod:`.cert_orders`, the
figures :mod:`.cert_metrics` (both re-exported here).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..adapters.acme import AcmeClient, AcmeFailure
from ..adapters.cert_store import (
    operator_names,
    read_held,
    read_records,
    write_record,
    write_status,
)
from ..adapters.workspace import Workspace
from ..core.certs import (
    HeldCertificate,
    NameRecord,
    RenewalPolicy,
    Wanted,
    ari_due,
    certificate_rows,
    plan_certificates,
    wanted_names,
    with_ari,
)
from ..core.errors import LbrecError
from ..core.spec import AcmeSpec
from .cert_metrics import CERT_METRICS, CertMetrics, utc_now
from .cert_orders import obtain_now

__all__ = [
    "CERT_METRICS",
    "CertManager",
    "CertMetrics",
    "attach_certificates",
    "obtain_now",
    "utc_now",
]

_log = logging.getLogger("lbrec.certs")

ClientFactory = Callable[[Path, AcmeSpec], AcmeClient]


def _client_factory(folder: Path, spec: AcmeSpec) -> AcmeClient:
    return AcmeClient(folder, spec)


class CertManager:
    """Obtains and renews the certificates of one deploy folder (see the module docstring).
    A trigger of the control loop: ``start()``/``stop()``; ``notify`` is the loop's."""

    def __init__(
        self,
        workspace: Workspace,
        notify: Callable[[str], None],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        policy: RenewalPolicy | None = None,
        poll: float = 15.0,
        lock_timeout: float = 120.0,
        client_factory: ClientFactory = _client_factory,
        metrics: CertMetrics | None = None,
    ) -> None:
        self.workspace = workspace
        self._notify = notify
        self._clock = clock
        self.policy = policy or RenewalPolicy()
        self.poll = poll
        self.lock_timeout = lock_timeout
        self._client_factory = client_factory
        self._client: tuple[tuple[Any, ...], AcmeClient] | None = None
        self.metrics = metrics if metrics is not None else CERT_METRICS
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._serving: dict[str, str] | None = None  # name -> serial, as last seen
        self.ticks = 0
        self.waiting_for_pool = False

    # -- the trigger --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the certificate manager is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="lbrec-certs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # An order in flight ends within the client's timeouts; the thread is a daemon.
            thread.join(timeout=5)

    def wake(self) -> None:
        """Run a tick now (tests; a changed file is seen at the next poll anyway)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self.tick()
            except Exception:  # a bug must not end the manager: log it, try again later
                _log.exception("certificates: tick crashed", extra={"event": "certs_crashed"})
                delay = self.poll
            self._wake.wait(max(0.05, min(delay, self.poll)))
            self._wake.clear()

    # -- one tick -----------------------------------------------------------------------
    def _acme_client(self, spec: AcmeSpec) -> AcmeClient:
        key = (spec.directory, spec.ca_bundle, spec.email)
        if self._client is None or self._client[0] != key:
            self._client = (key, self._client_factory(self.workspace.folder, spec))
        return self._client[1]

    def tick(self) -> float:
        """One round (see the module docstring); the seconds until the next is due."""
        self.ticks += 1
        folder = self.workspace.folder
        try:
            desired = self.workspace.load()
        except LbrecError:
            return self.poll  # the loop reports the file; nothing is ordered from it
        if desired.tls is None or desired.tls.acme is None:
            self.metrics.show((), {}, {}, self.policy)
            return self.poll
        wanted = wanted_names(desired, operator_names(desired, folder))
        held = read_held(folder)
        self._notice(held)
        records = read_records(folder)
        client = self._acme_client(desired.tls.acme)
        now = self._clock()
        for name in wanted.names:
            cert = held.get(name)
            if cert is not None and ari_due(cert, records.get(name), now):
                records[name] = self._ask_ari(client, cert, records.get(name), now)
        directory = desired.tls.acme.directory
        plan = plan_certificates(now, wanted.names, held, records, self.policy, directory=directory)
        if plan.due and not self._pool_ready():
            self.waiting_for_pool = True
            self.metrics.show(wanted.names, held, records, self.policy)
            self._publish(wanted, held, records)
            return min(self.poll, 1.0)
        self.waiting_for_pool = False
        issued = []
        for due in plan.due:
            if self._stopping.is_set():
                break
            new, record = obtain_now(
                self.workspace,
                desired,
                due,
                client,
                now=self._clock(),
                policy=self.policy,
                lock_timeout=self.lock_timeout,
                metrics=self.metrics,
                held=held.get(due.name),
            )
            records[due.name] = record
            if new is not None:
                held[due.name] = new
                issued.append(due.name)
        self.metrics.show(wanted.names, held, records, self.policy)
        self._publish(wanted, held, records)
        if issued:
            self._serving = {name: cert.serial for name, cert in held.items()}
            self._notify(f"certificate {', '.join(issued)} obtained")
        after = plan_certificates(
            self._clock(), wanted.names, held, records, self.policy, directory=directory
        )
        if after.next_at is None:
            return self.poll
        return max(0.0, (after.next_at - self._clock()).total_seconds())

    def _publish(
        self, wanted: Wanted, held: dict[str, HeldCertificate], records: dict[str, NameRecord]
    ) -> None:
        """The rows of `lbrec certs` for the proxy's status page and /-/pool (next renewal,
        last error): .lbrec/acme/status.json, rewritten only when it changed."""
        rows = certificate_rows(self._clock(), wanted, held, records, self.policy)
        try:
            write_status(self.workspace.folder, rows)
        except OSError as err:
            _log.error("certificates: cannot write the status for the proxy: %s", err)

    def _notice(self, held: dict[str, HeldCertificate]) -> None:
        """A certificate stored by someone else (`lbrec certs --renew`): tell the loop."""
        serving = {name: cert.serial for name, cert in held.items()}
        if self._serving is not None and serving != self._serving:
            changed = sorted(n for n in serving if self._serving.get(n) != serving[n])
            if changed:
                self._notify(f"certificate {', '.join(changed)} changed")
        self._serving = serving

    def _pool_ready(self) -> bool:
        pool, _text = self.workspace.read_pool()
        return pool is not None and pool.tls is not None and pool.tls.acme_dir is not None

    def _ask_ari(
        self,
        client: AcmeClient,
        cert: HeldCertificate,
        record: NameRecord | None,
        now: dt.datetime,
    ) -> NameRecord:
        record = record or NameRecord()
        try:
            pem = (self.workspace.folder / cert.cert).read_bytes()
            window = client.renewal_window(pem)
        except (AcmeFailure, OSError) as err:
            _log.warning(
                "certificate %s: renewal info: %s",
                cert.name,
                getattr(err, "message", err),
                extra={"event": "certificate_ari_failed", "host": cert.name},
            )
            updated = with_ari(record, cert.serial, None, now, policy=self.policy)
        else:
            span = None if window is None else (window.start, window.end)
            retry = None if window is None else window.retry_after
            updated = with_ari(
                record, cert.serial, span, now, retry_after=retry, policy=self.policy
            )
            if window is not None:
                _log.info(
                    "certificate %s: the CA suggests renewing between %s and %s",
                    cert.name,
                    window.start.isoformat(),
                    window.end.isoformat(),
                    extra={"event": "certificate_ari", "host": cert.name},
                )
        try:
            write_record(self.workspace.folder, cert.name, updated)
        except OSError as err:
            _log.error("certificates: cannot record %s: %s", cert.name, err)
        return updated


def attach_certificates(loop: Any, workspace: Workspace) -> CertManager:
    """A :class:`CertManager` for ``workspace``, started and stopped with ``loop`` (a
    ControlLoop), telling it to run a pass at once when a certificate was obtained."""
    manager = CertManager(workspace, lambda why: loop.notify(why, immediate=True))
    loop.attach(manager)
    return manager
