"""EDGE. Where obtained certificates live: ``.lbrec/certs/<name>/`` in the deploy folder.

One folder per name (0700), holding:

* ``<serial>.pem`` (the chain, leaf first) and ``<serial>.key`` (its key), both 0600, each
  written atomically (adapters/files.py). A renewal writes a new pair beside the old one;
  ``current`` (the serial) is switched last, so a reader never sees a new certificate with an
  old key. The pair before is kept (the pool written before the switch still names it until
  the next pass), older ones are removed.
* ``schedule.json``: the manager's :class:`~reconciler.core.certs.NameRecord` (failures, the
  CA's last error, back-off, the ARI window). No secret.

And one file for the proxy: ``.lbrec/acme/status.json`` (:func:`write_status`), the rows of
`lbrec certs -o json` for the names ordered over ACME (names, issuer, expiry, next renewal,
failures, the last error), which the proxy's status page and ``/-/pool`` join to the
certificates it serves (proxy/cert_view.py says why a file there and not backends.json).

Nothing here is in the deploy repository (``.lbrec/`` is the state folder, never committed),
and nothing here logs a key or its path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ...proxy.cert_view import STATUS_FIELDS
from ...proxy.cert_view import STATUS_FILE as ROW_FILE
from ...proxy.tls import leaf_issuer, leaf_names
from ..core.certs import HeldCertificate, NameRecord, wanted_names
from ..core.errors import SpecError
from ..core.render import ACME_DIR
from ..core.spec import DesiredState
from .files import STATE_DIR, atomic_write, read_text_or_none, state_dir

if TYPE_CHECKING:
    from ...proxy.tls import Certificate

__all__ = [
    "CERTS_DIR",
    "STATUS_FILE",
    "cert_folder",
    "check_acme_hosts",
    "leaf_facts",
    "operator_certificates",
    "operator_names",
    "read_held",
    "read_records",
    "store_certificate",
    "write_record",
    "write_status",
]

CERTS_DIR = f"{STATE_DIR}/certs"
STATUS_FILE = f"{ACME_DIR}/{ROW_FILE}"  # read by proxy/cert_view.py, in tls.acme_dir
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_SERIAL = re.compile(r"^[0-9a-f]{1,64}$")


def _private_dir(path: Path) -> Path:
    """``path`` created 0700 (its parents under the state folder too); a link is refused."""
    folder = path
    chain: list[Path] = []
    while folder.name != STATE_DIR and folder != folder.parent:
        chain.append(folder)
        folder = folder.parent
    state_dir(folder.parent)
    for part in reversed(chain):
        with contextlib.suppress(FileExistsError):
            part.mkdir(mode=0o700)
        if part.is_symlink():
            raise OSError(f"{part}: is a symbolic link; lbrec never writes through one")
        os.chmod(part, 0o700)
    return path


def cert_folder(folder: Path, name: str) -> Path:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"{name!r}: not a host name")
    return folder / CERTS_DIR / name


def leaf_facts(name: str, pem: bytes, cert: str, key: str) -> HeldCertificate:
    """The facts of the leaf of ``pem`` (the first certificate of the chain)."""
    leaf = x509.load_pem_x509_certificates(pem)[0]  # read as the proxy reads what it serves
    names, issuer = leaf_names(leaf), leaf_issuer(leaf)
    return HeldCertificate(
        name=name,
        cert=cert,
        key=key,
        names=names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issuer=issuer,
        serial=format(leaf.serial_number, "x"),
    )


def store_certificate(folder: Path, name: str, chain_pem: str, key_pem: str) -> HeldCertificate:
    """Write a new certificate and its key for ``name`` (0600 each, atomically), then make it
    the current one; the previous pair is kept, older ones removed."""
    where = _private_dir(cert_folder(folder, name))
    relative = where.relative_to(folder).as_posix()
    facts = leaf_facts(name, chain_pem.encode(), "", "")
    serial = facts.serial
    atomic_write(where / f"{serial}.key", key_pem, mode=0o600)
    atomic_write(where / f"{serial}.pem", chain_pem, mode=0o600)
    previous = (read_text_or_none(where / "current") or "").strip()
    atomic_write(where / "current", serial + "\n", mode=0o600)
    keep = {serial, previous}
    for path in where.iterdir():
        stem, suffix = path.stem, path.suffix
        if suffix in (".pem", ".key") and _SERIAL.match(stem) and stem not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return HeldCertificate(
        name=name,
        cert=f"{relative}/{serial}.pem",
        key=f"{relative}/{serial}.key",
        names=facts.names,
        not_before=facts.not_before,
        not_after=facts.not_after,
        issuer=facts.issuer,
        serial=serial,
    )


def _name_folders(folder: Path) -> list[Path]:
    """The folders of ``.lbrec/certs``, one a host name (a link, a file or another name is
    passed over), sorted; none when there is no such folder."""
    try:
        entries = sorted((folder / CERTS_DIR).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        where
        for where in entries
        if _NAME.match(where.name) and not where.is_symlink() and where.is_dir()
    ]


def read_held(folder: Path) -> dict[str, HeldCertificate]:
    """The current certificate of every name under ``.lbrec/certs`` that can be read (one
    that cannot is left out: the pool keeps what it had, see render_tls)."""
    out: dict[str, HeldCertificate] = {}
    for where in _name_folders(folder):
        name = where.name
        try:
            serial = (read_text_or_none(where / "current") or "").strip()
            if not _SERIAL.match(serial):
                continue
            pem = (where / f"{serial}.pem").read_bytes()
            if not (where / f"{serial}.key").is_file():
                continue
            relative = where.relative_to(folder).as_posix()
            out[name] = leaf_facts(
                name, pem, f"{relative}/{serial}.pem", f"{relative}/{serial}.key"
            )
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return out


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _record_from(doc: dict[str, Any]) -> NameRecord:
    challenge = doc.get("failed_challenge")
    return NameRecord(
        failures=int(doc.get("failures") or 0),
        last_error=doc.get("last_error") if isinstance(doc.get("last_error"), str) else None,
        last_attempt=_when(doc.get("last_attempt")),
        retry_at=_when(doc.get("retry_at")),
        failed_challenge=challenge if challenge in ("http-01", "tls-alpn-01") else None,
        ari_serial=doc.get("ari_serial") if isinstance(doc.get("ari_serial"), str) else None,
        ari_start=_when(doc.get("ari_start")),
        ari_end=_when(doc.get("ari_end")),
        ari_next=_when(doc.get("ari_next")),
        issued_by=doc.get("issued_by") if isinstance(doc.get("issued_by"), str) else None,
    )


def read_records(folder: Path) -> dict[str, NameRecord]:
    out: dict[str, NameRecord] = {}
    for where in _name_folders(folder):
        try:
            text = read_text_or_none(where / "schedule.json")
            doc = json.loads(text) if text else None
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict):
            with contextlib.suppress(TypeError, ValueError):
                out[where.name] = _record_from(doc)
    return out


def write_record(folder: Path, name: str, record: NameRecord) -> None:
    where = _private_dir(cert_folder(folder, name))
    doc: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        doc[field.name] = value.isoformat() if isinstance(value, dt.datetime) else value
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    atomic_write(where / "schedule.json", text, mode=0o600)


def write_status(folder: Path, rows: list[dict[str, object]]) -> bool:
    """Write the manager's rows (core/certs.py certificate_rows) for the proxy, atomically and
    only when they changed (True then); only the fields of a row that are no secret."""
    doc = {
        "version": 1,
        "certificates": [{k: row.get(k) for k in STATUS_FIELDS} for row in rows],
    }
    where = _private_dir(folder / ACME_DIR)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return atomic_write(where / ROW_FILE, text, mode=0o600)


def operator_certificates(desired: DesiredState, folder: Path) -> list[Certificate]:
    """The certificates of ``tls.certificates`` that can be read (Workspace.load refuses
    the others: check_certificates)."""
    if desired.tls is None:
        return []
    from ...proxy.tls import CertificateError, load_certificate

    out: list[Certificate] = []
    for pair in desired.tls.certificates:
        with contextlib.suppress(CertificateError):
            out.append(load_certificate(folder / pair.cert, folder / pair.key))
    return out


def operator_names(desired: DesiredState, folder: Path) -> tuple[str, ...]:
    """The names the certificates of ``tls.certificates`` cover (those that can be read)."""
    return tuple(name for cert in operator_certificates(desired, folder) for name in cert.names)


def check_acme_hosts(desired: DesiredState, folder: Path, *, source: str) -> None:
    """With ``tls.acme``: a ``*.`` host of ``routes:`` that no certificate of
    ``tls.certificates`` covers is refused (ACME would need DNS-01): a SpecError names the
    route, and nothing is applied."""
    if desired.tls is None or desired.tls.acme is None:
        return
    if not any(r.host and r.host.startswith("*.") for r in desired.routes):
        return
    wanted = wanted_names(desired, operator_names(desired, folder))
    if wanted.refused:
        raise SpecError(
            f"{source}: {wanted.refused[0].message}, or set the route's tls: off; "
            "nothing was applied"
        )
