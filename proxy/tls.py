"""TLS for the front door: Mozilla's "intermediate" profile, SNI picks the certificate, and
certificates are swapped without touching the listener.

The listener has one :class:`ssl.SSLContext` for its whole life. Its SNI callback looks the
client's server name up in the current :class:`CertStore` and switches the connection to that
certificate's own context; a reload builds a new store and swaps one reference, so a renewal or
a new site serves from the next handshake on, and connections already open keep theirs. A name
with no certificate fails the handshake with an ``unrecognized_name`` alert (RFC 6066), never
with some other site's certificate.

This module reads files and parses certificates (``cryptography``), and imports no aiohttp:
the reconciler uses :func:`load_certificate` to refuse a bad certificate before it is applied.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = [
    "ALPN_PROTOCOLS",
    "INTERMEDIATE_CIPHERS",
    "CertStore",
    "Certificate",
    "CertificateError",
    "covers",
    "leaf_issuer",
    "leaf_names",
    "listener_context",
    "load_certificate",
]

_log = logging.getLogger("lbrec.proxy.tls")

# Mozilla's "intermediate" configuration (TLS 1.2 ciphers; TLS 1.3's are OpenSSL's defaults,
# all of them AEAD): ECDHE key exchange, AES-GCM and ChaCha20-Poly1305 only.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
# h2 first: the listener's app factory makes proxy/http2's connection for it
# (proxy.http2.connection.app_protocol), HTTP/1.1 for http/1.1 or no ALPN.
ALPN_PROTOCOLS = ("h2", "http/1.1")


class CertificateError(Exception):
    """A certificate that cannot be served; the message names the file and why."""


def _configure(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    return context


@dataclass(frozen=True, slots=True)
class Certificate:
    """A loaded certificate: what it covers, until when, and its own server context."""

    cert_path: str
    key_path: str
    names: tuple[str, ...]  # DNS names of its subjectAltName (lower case; "*.x" wildcards)
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str
    serial: str
    fingerprint: str  # sha256 of the leaf's DER, hex
    context: ssl.SSLContext = field(compare=False, repr=False)

    def covers(self, host: str) -> bool:
        return any(covers(name, host) for name in self.names)

    def describe(self) -> dict[str, object]:
        """For the status page, /-/pool and `lbrec certs`: never the key, never a secret."""
        return {
            "names": list(self.names),
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint_sha256": self.fingerprint,
            "cert": self.cert_path,
        }


def covers(name: str, host: str) -> bool:
    """PURE. Whether the certificate name ``name`` covers ``host`` (RFC 6125: a wildcard is
    the whole left-most label and matches exactly one label)."""
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == name[2:]
    return name == host


def leaf_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return ()
    value = san.value
    assert isinstance(value, x509.SubjectAlternativeName)
    return tuple(name.lower() for name in value.get_values_for_type(x509.DNSName))


def leaf_issuer(cert: x509.Certificate) -> str:
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
        found = cert.issuer.get_attributes_for_oid(oid)
        if found:
            return str(found[0].value)
    return cert.issuer.rfc4514_string()


def load_certificate(
    cert_path: str | Path,
    key_path: str | Path,
    *,
    now: dt.datetime | None = None,
) -> Certificate:
    """Read, check and prepare one certificate: the chain parses, the key matches it, and it is
    valid now. :class:`CertificateError` names the file and the reason otherwise."""
    cert_file, key_file = Path(cert_path), Path(key_path)
    try:
        pem = cert_file.read_bytes()
    except OSError as err:
        raise CertificateError(f"{cert_file}: cannot read: {err.strerror or err}") from err
    try:
        key_file.stat()
        key_file.open("rb").close()
    except OSError as err:
        raise CertificateError(f"{key_file}: cannot read: {err.strerror or err}") from err
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise CertificateError(f"{cert_file}: not a PEM certificate ({err})") from err
    leaf = chain[0]
    context = _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as err:
        reason = (
            "the key does not match the certificate"
            if "KEY_VALUES_MISMATCH" in str(err)
            else f"cannot load: {err.reason or err}"
        )
        raise CertificateError(f"{key_file}: {reason} ({cert_file})") from err
    now = now or dt.datetime.now(dt.UTC)
    not_after = leaf.not_valid_after_utc
    not_before = leaf.not_valid_before_utc
    if not_after <= now:
        raise CertificateError(f"{cert_file}: expired on {not_after.isoformat()}")
    if not_before > now:
        raise CertificateError(f"{cert_file}: not valid before {not_before.isoformat()}")
    names = leaf_names(leaf)
    if not names:
        raise CertificateError(f"{cert_file}: names no DNS host (no subjectAltName)")
    return Certificate(
        cert_path=str(cert_file),
        key_path=str(key_file),
        names=names,
        not_before=not_before,
        not_after=not_after,
        issuer=leaf_issuer(leaf),
        serial=format(leaf.serial_number, "x"),
        fingerprint=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
        context=context,
    )


class CertStore:
    """The certificates the TLS listener serves, indexed by name (exact, then wildcard);
    immutable: a reload builds another."""

    __slots__ = ("_exact", "_wildcard", "certificates", "errors")

    def __init__(self, certificates: Sequence[Certificate], errors: Sequence[str] = ()) -> None:
        self.certificates = tuple(certificates)
        self.errors = tuple(errors)  # what could not be loaded (the previous one kept)
        self._exact: dict[str, Certificate] = {}
        self._wildcard: dict[str, Certificate] = {}
        # The one valid longest: on two certificates for a name, the newer wins.
        for cert in sorted(self.certificates, key=lambda c: c.not_after):
            for name in cert.names:
                if name.startswith("*."):
                    self._wildcard[name[2:]] = cert
                else:
                    self._exact[name] = cert

    def for_name(self, server_name: str | None) -> Certificate | None:
        if not server_name:
            return None
        host = server_name.lower().rstrip(".")
        if (cert := self._exact.get(host)) is not None:
            return cert
        _, _, parent = host.partition(".")
        return self._wildcard.get(parent) if parent else None

    @classmethod
    def load(
        cls,
        pairs: Iterable[tuple[str, str]],
        *,
        previous: CertStore | None = None,
        now: dt.datetime | None = None,
    ) -> CertStore:
        """Load every (cert, key) pair; one that fails keeps the previous store's certificate
        for the same files serving (a renewal gone wrong never takes a site down), and is
        listed in ``errors``."""
        kept = {(c.cert_path, c.key_path): c for c in previous.certificates} if previous else {}
        loaded: list[Certificate] = []
        errors: list[str] = []
        for cert_path, key_path in pairs:
            try:
                loaded.append(load_certificate(cert_path, key_path, now=now))
            except CertificateError as err:
                old = kept.get((cert_path, key_path))
                errors.append(
                    str(err) + ("; the previous certificate keeps serving" if old else "")
                )
                _log.error("tls: %s", errors[-1], extra={"event": "certificate_error"})
                if old is not None:
                    loaded.append(old)
        return cls(loaded, errors)


def listener_context(current: Callable[[], CertStore]) -> ssl.SSLContext:
    """The TLS listener's context: each handshake asks ``current()`` for the store, so a
    reload (which swaps the store) needs no new listener."""
    context = _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        cert = current().for_name(server_name)
        if cert is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = cert.context
        return None

    context.sni_callback = pick
    return context
