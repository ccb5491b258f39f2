"""EDGE. The ACME client (RFC 8555) over the certbot project's ``acme`` library: the account,
one order per name, its challenge answered through the proxy, and the CA's renewal info.

The library signs every request (JWS, nonces, the account's key id); nothing here builds a JWS.
What it leaves to its caller is done here:

* **The account**: an EC P-256 key in ``.lbrec/acme/account/key.pem`` (0600), made once and
  reused; its registration (the account URL at one CA) in ``account/<directory hash>.json``.
* **Answering a challenge** is writing files the proxy serves (backends.json ``tls.acme_dir``):
  ``.lbrec/acme/http-01/<token>`` holds the key authorization, served at
  ``/.well-known/acme-challenge/<token>``; ``.lbrec/acme/tls-alpn-01/<name>.pem`` and ``.key``
  are the RFC 8737 certificate the TLS listener presents to a ClientHello whose ALPN is
  exactly ``acme-tls/1`` (``acme`` 3+ has no TLS-ALPN-01 helper: the certificate is made here
  with ``cryptography``). They are removed when the order ends, whatever its outcome.
* **The CA's own error** (its problem document, or why it could not be reached) and its
  ``Retry-After`` are what :class:`AcmeFailure` carries, for the log, the status and the
  back-off.
* **ACME Renewal Information** (draft-ietf-acme-ari): the library's ``renewal_time`` picks its
  own random point on the wall clock; the manager wants the window itself (its jitter is the
  same at every restart, and its clock is injected in tests), so the GET of ``renewalInfo``
  goes through the library's client here and its ``RenewalInfo`` parses the answer.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier
from josepy.b64 import b64encode
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from ..core.certs import CHALLENGES, Challenge, NameRecord, choose_challenge
from ..core.render import ACME_DIR
from ..core.spec import AcmeSpec
from .files import atomic_write, state_dir

__all__ = [
    "ACME_IDENTIFIER_OID",
    "AcmeClient",
    "AcmeFailure",
    "Obtained",
    "RenewalWindow",
    "alpn_challenge_certificate",
    "order_lock",
]

_log = logging.getLogger("lbrec.acme")

# RFC 8737 section 3: id-pe-acmeIdentifier, critical, the SHA-256 of the key authorization.
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_USER_AGENT = "lbrec acme-python"


class AcmeFailure(Exception):
    """An order or a call that failed: ``message`` is the CA's own error (or why it could not
    be reached), ``retry_after`` its Retry-After in seconds, ``challenge`` the challenge whose
    validation failed, if that is what failed."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        challenge: Challenge | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.challenge = challenge


@dataclass(frozen=True, slots=True)
class Obtained:
    chain_pem: str
    key_pem: str
    challenge: Challenge | None  # None: every authorization was valid already (reused)


@dataclass(frozen=True, slots=True)
class RenewalWindow:
    start: dt.datetime
    end: dt.datetime
    retry_after: float | None


class _Network(ClientNetwork):
    """The library's network, remembering the last Retry-After of a refusal (429, 503)."""

    retry_after: float | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        if response.status_code in (429, 503) and "Retry-After" in response.headers:
            when = ClientV2.retry_after(response, 0)
            self.retry_after = max(0.0, (when - dt.datetime.now()).total_seconds())
        return response


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
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
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


class _TlsAlpn01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty, in ACME v2) answer to a tls-alpn-01 challenge."""

    typ = "tls-alpn-01"


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


@contextlib.contextmanager
def order_lock(folder: Path, *, timeout: float) -> Iterator[None]:
    """One order at a time per deploy folder (the manager of `lbrec up` and `lbrec certs
    --renew`): an exclusive lock on ``.lbrec/acme/lock``; AcmeFailure after ``timeout``."""
    acme = _acme_dir(folder)
    fd = os.open(acme / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AcmeFailure(
                        "another lbrec command is ordering a certificate here "
                        f"(waited {timeout:g}s)"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _acme_dir(folder: Path) -> Path:
    state_dir(folder)
    path = folder / ACME_DIR
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if path.is_symlink():
        raise OSError(f"{path}: is a symbolic link; lbrec never writes through one")
    return path


def _private_subdir(folder: Path, name: str) -> Path:
    path = _acme_dir(folder) / name
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if path.is_symlink():
        raise OSError(f"{path}: is a symbolic link; lbrec never writes through one")
    return path


def _typ(challb: messages.ChallengeBody) -> str:
    """A challenge's type; the library knows tls-alpn-01 only as an unrecognized one."""
    typ = getattr(challb.chall, "typ", None)
    if isinstance(typ, str):
        return typ
    return str(getattr(challb.chall, "jobj", {}).get("type", "unknown"))


def _describe(err: BaseException, directory: str) -> tuple[str, Challenge | None]:
    """The CA's own words for a failure (and the challenge that failed validation)."""
    if isinstance(err, errors.ValidationError):
        parts: list[str] = []
        failed: Challenge | None = None
        for authzr in err.failed_authzrs:
            ident = authzr.body.identifier.value
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    typ = _typ(challb)
                    failed = next((c for c in CHALLENGES if c == typ), failed)
                    parts.append(f"{ident}: {typ}: {challb.error}")
        return "; ".join(parts) or "validation failed", failed
    if isinstance(err, errors.IssuanceError):
        return f"the CA refused to issue: {err.error}", None
    if isinstance(err, messages.Error):
        return str(err), None
    if isinstance(err, errors.TimeoutError):
        return "the CA did not finish the order in time", None
    if isinstance(err, requests.exceptions.RequestException):
        kind = type(err).__name__
        return f"cannot reach the ACME server {directory}: {kind}: {_short(err)}", None
    return f"{type(err).__name__}: {err}", None


def _short(err: BaseException) -> str:
    """The cause of a network error in a few words (requests nests it deep in its text)."""
    text = str(err)
    for pattern in (r"\[Errno -?\d+\] ([^'\")\]]+)", r"(Read timed out)", r"(timed out)"):
        if found := re.search(pattern, text):
            return found.group(1).strip()
    return text[:200]


class AcmeClient:
    """The ACME account of one deploy folder at the CA of ``spec.directory``."""

    def __init__(
        self,
        folder: Path,
        spec: AcmeSpec,
        *,
        timeout: float = 30.0,
        order_timeout: float = 90.0,
    ) -> None:
        """``folder``: the deploy folder (``ca_bundle`` is relative to it); ``timeout``: per
        request to the CA; ``order_timeout``: for the validations and the issuance."""
        self.folder = folder
        self.spec = spec
        self.timeout = timeout
        self.order_timeout = order_timeout
        self._client: ClientV2 | None = None
        self._net: _Network | None = None

    # -- the account ----------------------------------------------------------------------
    def _verify(self) -> bool | str:
        if self.spec.ca_bundle is None:
            return True
        path = Path(self.spec.ca_bundle)
        return str(path if path.is_absolute() else self.folder / path)

    def _account_key(self) -> JWKEC:
        where = _private_subdir(self.folder, "account") / "key.pem"
        try:
            pem = where.read_bytes()
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            atomic_write(where, _pem_key(key), mode=0o600)
            _log.info("acme: made the account key", extra={"event": "acme_account_key"})
            return JWKEC(key=key)
        loaded = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return JWKEC(key=loaded)

    def _registration_file(self) -> Path:
        digest = hashlib.sha256(self.spec.directory.encode()).hexdigest()[:16]
        return _private_subdir(self.folder, "account") / f"{digest}.json"

    def client(self) -> ClientV2:
        """The client, registered (the account is made at the first call, then reused)."""
        if self._client is not None:
            return self._client
        try:
            key = self._account_key()
            net = _Network(
                key=key,
                alg=ES256,
                verify_ssl=self._verify(),  # type: ignore[arg-type]  # requests' verify
                user_agent=_USER_AGENT,
                timeout=int(max(1, self.timeout)),
            )
            directory = ClientV2.get_directory(self.spec.directory, net)
            client = ClientV2(directory, net)
            stored = self._registration_file()
            if stored.is_file():
                net.account = messages.RegistrationResource.json_loads(stored.read_text())
            else:
                registration = messages.NewRegistration.from_data(
                    email=self.spec.email, terms_of_service_agreed=True
                )
                try:
                    regr = client.new_account(registration)
                except errors.ConflictError as known:  # this key has an account there already
                    regr = messages.RegistrationResource(
                        uri=known.location, body=messages.Registration()
                    )
                    net.account = regr
                atomic_write(stored, regr.json_dumps(indent=2) + "\n", mode=0o600)
                _log.info(
                    "acme: account registered at %s",
                    self.spec.directory,
                    extra={"event": "acme_account", "directory": self.spec.directory},
                )
        except (errors.Error, messages.Error, requests.exceptions.RequestException) as err:
            message, _ = _describe(err, self.spec.directory)
            raise AcmeFailure(message, retry_after=self._retry_after()) from err
        self._client, self._net = client, net
        return client

    def _retry_after(self) -> float | None:
        net = self._net
        if net is None:
            return None
        value, net.retry_after = net.retry_after, None
        return value

    def forget(self) -> None:
        """Drop the connection state (after the CA failed: a fresh directory next time)."""
        self._client, self._net = None, None

    # -- an order ---------------------------------------------------------------------------
    def obtain(
        self,
        name: str,
        *,
        mode: Literal["auto", "http-01", "tls-alpn-01"],
        listen: str,
        tls_listen: str,
        record: NameRecord | None = None,
    ) -> Obtained:
        """A certificate for exactly ``name``: a new key, an order, its challenge answered
        through the proxy's files, the certificate downloaded. AcmeFailure otherwise.

        An account the CA no longer knows (a test CA restarted, an account deactivated) is
        registered again once, with the same key."""
        try:
            return self._obtain(
                name, mode=mode, listen=listen, tls_listen=tls_listen, record=record
            )
        except AcmeFailure as failure:
            cause = failure.__cause__
            if not (isinstance(cause, messages.Error) and cause.code == "accountDoesNotExist"):
                raise
        _log.warning(
            "acme: the CA no longer knows this account: registering again",
            extra={"event": "acme_account_lost"},
        )
        with contextlib.suppress(FileNotFoundError):
            self._registration_file().unlink()
        self.forget()
        return self._obtain(name, mode=mode, listen=listen, tls_listen=tls_listen, record=record)

    def _obtain(
        self,
        name: str,
        *,
        mode: Literal["auto", "http-01", "tls-alpn-01"],
        listen: str,
        tls_listen: str,
        record: NameRecord | None,
    ) -> Obtained:
        client = self.client()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = _pem_key(key)
        written: list[Path] = []
        used: Challenge | None = None
        try:
            csr = crypto_util.make_csr(key_pem.encode(), [name])
            order = client.new_order(csr)
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                offered = {_typ(c): c for c in authzr.body.challenges}
                used = choose_challenge(
                    mode, offered, listen=listen, tls_listen=tls_listen, record=record
                )
                if used is None:
                    raise AcmeFailure(
                        f"{name}: the CA offers {', '.join(sorted(offered)) or 'no challenge'}"
                        f", none of which lbrec answers with tls.acme.challenge: {mode}"
                    )
                challb = offered[used]
                response = self._prepare(challb, used, name, written)
                client.answer_challenge(challb, response)
            deadline = dt.datetime.now() + dt.timedelta(seconds=self.order_timeout)
            order = client.poll_and_finalize(order, deadline)
        except AcmeFailure:
            raise
        except (errors.Error, messages.Error, requests.exceptions.RequestException) as err:
            message, failed = _describe(err, self.spec.directory)
            if isinstance(err, requests.exceptions.RequestException):
                self.forget()
            raise AcmeFailure(
                message, retry_after=self._retry_after(), challenge=failed or None
            ) from err
        finally:
            for path in written:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        chain = order.fullchain_pem
        if not chain:
            raise AcmeFailure(f"{name}: the CA sent no certificate")
        return Obtained(chain_pem=chain, key_pem=key_pem, challenge=used)

    def _prepare(
        self,
        challb: messages.ChallengeBody,
        kind: Challenge,
        name: str,
        written: list[Path],
    ) -> challenges.ChallengeResponse:
        """Write the files the proxy answers ``challb`` with; the response to post."""
        assert self._net is not None and self._net.key is not None
        account_key = self._net.key
        chall = challb.chall
        if kind == "http-01":
            assert isinstance(chall, challenges.HTTP01)
            token = chall.encode("token")
            if not _TOKEN.match(token):
                raise AcmeFailure(f"{name}: the CA sent a token lbrec will not use as a file name")
            response, validation = chall.response_and_validation(account_key)
            path = _private_subdir(self.folder, "http-01") / token
            atomic_write(path, validation, mode=0o644)
            written.append(path)
            return response
        token = str(getattr(chall, "jobj", {}).get("token", ""))
        if not _TOKEN.match(token):
            raise AcmeFailure(f"{name}: the CA sent no usable tls-alpn-01 token")
        thumbprint = b64encode(account_key.thumbprint(hash_function=hashes.SHA256)).decode()
        key_authorization = f"{token}.{thumbprint}"
        cert_pem, key_pem = alpn_challenge_certificate(name, key_authorization)
        where = _private_subdir(self.folder, "tls-alpn-01")
        atomic_write(where / f"{name}.key", key_pem, mode=0o600)
        atomic_write(where / f"{name}.pem", cert_pem, mode=0o600)
        written += [where / f"{name}.pem", where / f"{name}.key"]
        return _TlsAlpn01Response(key_authorization=key_authorization)

    # -- renewal information --------------------------------------------------------------
    def renewal_window(self, chain_pem: bytes) -> RenewalWindow | None:
        """The CA's suggested renewal window for the leaf of ``chain_pem``; None when the CA
        has no renewalInfo (Pebble 2.4, many private CAs). AcmeFailure when it cannot say."""
        client = self.client()
        try:
            base = client.directory["renewalInfo"]
        except KeyError:
            return None
        try:
            url = f"{str(base).rstrip('/')}/{ari_certificate_id(chain_pem)}"
            response = client.net.get(url, content_type=ClientNetwork.JSON_CONTENT_TYPE)
            info = messages.RenewalInfo.from_json(response.json())
        except (
            errors.Error,
            messages.Error,
            requests.exceptions.RequestException,
            DeserializationError,
            x509.ExtensionNotFound,
            AssertionError,
            ValueError,
        ) as err:
            message, _ = _describe(err, self.spec.directory)
            raise AcmeFailure(f"renewal info: {message}") from err
        window = info.suggested_window
        start, end = window.start, window.end
        if start is None or end is None:
            return None
        retry = None
        if "Retry-After" in response.headers:
            when = ClientV2.retry_after(response, 0)
            retry = max(0.0, (when - dt.datetime.now()).total_seconds())
        utc = dt.UTC
        return RenewalWindow(
            start=start if start.tzinfo else start.replace(tzinfo=utc),
            end=end if end.tzinfo else end.replace(tzinfo=utc),
            retry_after=retry,
        )
