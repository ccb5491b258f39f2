"""EDGE. The certificates of ACME's own making: the RFC 8737 certificate of a TLS-ALPN-01
challenge (``acme`` 3+ has no helper for it: made here with ``cryptography``), a key as PEM, and
a certificate's identifier in ACME Renewal Information URLs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier

__all__ = ["ACME_IDENTIFIER_OID", "alpn_challenge_certificate", "ari_certificate_id", "pem_key"]

# RFC 8737 section 3: id-pe-acmeIdentifier, critical, the SHA-256 of the key authorization.
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def alpn_challenge_certificate(name: str, key_authorization: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) for a TLS-ALPN-01 challenge of ``name`` (RFC 8737): a
    self-signed certificate for exactly ``name`` with the critical acmeIdentifier extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        # the extension's value is a DER OCTET STRING of the 32-byte digest
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(key)


def ari_certificate_id(pem: bytes) -> str:
    """The certificate's identifier in renewalInfo URLs: base64url(AKI keyIdentifier) "."
    base64url(the serial's DER value), unpadded (draft-ietf-acme-ari section 4.1)."""
    cert = x509.load_pem_x509_certificate(pem)
    aki = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and aki.key_identifier is not None
    serial = cert.serial_number
    der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(aki.key_identifier)}.{b64(der)}"
