"""The operator's view of the certificates the TLS listener serves: names, issuer, expiry,
next renewal and the last error, for the status page, ``/-/pool`` (and `lbrec status`'s rows
come from the same manager file). Never a key, a key's path, or the ACME account.

Two sources, joined by name:

* **what is served**: the proxy parses each certificate it loads (proxy/tls.py
  :class:`~proxy.tls.Certificate`: names, issuer, serial, notBefore/notAfter), so the view is
  true of the very certificate a client is handed, whoever put it there;
* **what the certificate manager knows** (next renewal, consecutive failures, the CA's last
  error, the end of a back-off): the reconciler's manager writes it, atomically and only when
  it changed, to ``status.json`` in backends.json's ``tls.acme_dir`` (``.lbrec/acme/``), the
  folder through which it already talks to the proxy (the ACME challenges). That file has no
  secret: the rows of `lbrec certs -o json` for the names lbrec orders.

Why a file beside the challenges, not fields in backends.json: a failed order, a back-off or
a renewal window changes no byte of the pool. Written into backends.json they would change its
generation, make every proxy (and every ``--workers`` process) reload the pool, and show in
``lbrec diff`` as a change of the deployment, for a fact that routes nothing. The file is read
when the view is asked for (the status page, ``/-/pool``), by its mtime and size (a stat per
request when unchanged), so a failure shows within one refresh of the page, not at the next
reload. A missing, oversized or invalid file shows served certificates without manager facts
and says why (``manager.error``); it never fails the page.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from .tls import CertStore

__all__ = ["STATUS_FIELDS", "STATUS_FILE", "certificates_view", "read_manager_status"]

STATUS_FILE: Final = "status.json"  # in tls.acme_dir
_MAX_BYTES: Final = 1 << 20
# The fields of a row of status.json: what the reconciler writes (adapters/cert_store.py) and
# the only ones read back here.
STATUS_FIELDS: Final = (
    "name",
    "state",
    "names",
    "issuer",
    "not_after",
    "serial",
    "next_renewal",
    "failures",
    "last_error",
    "retry_at",
)

# (path) -> ((mtime_ns, size, inode), rows, error): one entry per acme_dir this process serves
_cache: dict[Path, tuple[tuple[int, int, int], dict[str, dict[str, Any]], str | None]] = {}


def _clean_row(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """Only the known fields, each of its type: whatever the file holds, nothing else shows."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        return None
    row: dict[str, Any] = {}
    for field in STATUS_FIELDS:
        value = raw.get(field)
        if field == "names":
            value = [n for n in value if isinstance(n, str)] if isinstance(value, list) else []
        elif field == "failures":
            value = value if isinstance(value, int) and not isinstance(value, bool) else 0
        elif value is not None and not isinstance(value, str):
            value = None
        row[field] = value
    return row


def read_manager_status(folder: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The manager's rows by name from ``folder/status.json``, and why there are none when the
    file is unreadable (None when it is fine or simply absent: no manager, or none yet)."""
    path = folder / STATUS_FILE
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _cache.pop(path, None)
        return {}, None
    except OSError as err:
        return {}, f"{STATUS_FILE}: {err.strerror or err}"
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    rows: dict[str, dict[str, Any]] = {}
    error: str | None = None
    if st.st_size > _MAX_BYTES:
        error = f"{STATUS_FILE}: {st.st_size} bytes, over {_MAX_BYTES}: not read"
    else:
        try:
            doc = json.loads(path.read_bytes())
            entries = doc.get("certificates") if isinstance(doc, dict) else None
            if not isinstance(entries, list):
                raise ValueError("no certificates list")
            for entry in entries:
                row = _clean_row(entry) if isinstance(entry, dict) else None
                if row is not None:
                    rows[row["name"]] = row
        except (OSError, ValueError, UnicodeDecodeError) as err:
            rows, error = {}, f"{STATUS_FILE}: not readable ({err})"
    _cache[path] = (key, rows, error)
    return rows, error


def _scrub(message: str, secrets: Iterable[str]) -> str:
    """A load error names the certificate file; a key's path never reaches the view."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "(its key)")
    return message


def _served_state(
    not_after: dt.datetime, managed: Mapping[str, Any] | None, now: dt.datetime
) -> str:
    if not_after <= now:
        return "expired"
    if managed is not None and managed.get("failures"):
        return "failing"  # its last renewal failed: it keeps serving, the error below says why
    return "valid"


def certificates_view(
    certs: CertStore,
    acme_dir: Path | None,
    *,
    key_paths: Iterable[str] = (),
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The document under ``certificates`` in ``/-/pool`` and ``/-/stats``: one row per
    certificate served (``serving: true``), then the names the manager orders that none of
    them serves yet (pending, failing, refused), ``load_errors`` (a file that failed to load at
    the last reload: the previous certificate keeps serving) and where the manager's facts
    come from."""
    now = now or dt.datetime.now(dt.UTC)
    managed, error = read_manager_status(acme_dir) if acme_dir is not None else ({}, None)
    rows: list[dict[str, Any]] = []
    served: set[str] = set()
    for cert in sorted(certs.certificates, key=lambda c: (c.names[0], c.not_after)):
        facts = next((managed[n] for n in cert.names if n in managed), None)
        served.update(cert.names)
        rows.append(
            {
                "name": facts["name"] if facts is not None else cert.names[0],
                "names": list(cert.names),
                "serving": True,
                "source": "acme" if facts is not None else "file",
                "state": _served_state(cert.not_after, facts, now),
                "issuer": cert.issuer,
                "serial": cert.serial,
                "not_before": cert.not_before.isoformat(),
                "not_after": cert.not_after.isoformat(),
                "expires_in_s": round((cert.not_after - now).total_seconds()),
                "next_renewal": None if facts is None else facts["next_renewal"],
                "failures": 0 if facts is None else facts["failures"],
                "last_error": None if facts is None else facts["last_error"],
                "retry_at": None if facts is None else facts["retry_at"],
            }
        )
    for name, facts in sorted(managed.items()):
        if name in served:
            continue
        rows.append(
            {
                "name": name,
                "names": facts["names"] or [name],
                "serving": False,
                "source": "acme",
                "state": facts["state"] or "pending",
                "issuer": None,
                "serial": None,
                "not_before": None,
                "not_after": None,
                "expires_in_s": None,
                "next_renewal": facts["next_renewal"],
                "failures": facts["failures"],
                "last_error": facts["last_error"],
                "retry_at": facts["retry_at"],
            }
        )
    secrets = list(key_paths)
    return {
        "certificates": rows,
        "load_errors": [_scrub(e, secrets) for e in certs.errors],
        "manager": {
            "file": None if acme_dir is None else STATUS_FILE,
            "names": len(managed),
            "error": error,
        },
    }
