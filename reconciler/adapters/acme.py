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

import contextlib
import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.b64 import b64encode
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from ..core.certs import Challenge, NameRecord, choose_challenge
from ..core.spec import AcmeSpec
from .acme_errors import AcmeFailure, challenge_type, describe
from .acme_folder import order_lock, private_subdir
from .acme_x509 import (
    ACME_IDENTIFIER_OID,
    alpn_challenge_certificate,
    ari_certificate_id,
    pem_key,
)
from .files import atomic_write

__all__ = [
    "ACME_IDENTIFIER_OID",
    "AcmeClient",
    "AcmeFailure",
    "Obtained",
    "RenewalWindow",
    "alpn_challenge_certificate",
    "ari_certificate_id",
    "order_lock",
]

_log = logging.getLogger("lbrec.acme")

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_USER_AGENT = "lbrec acme-python"


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


class _TlsAlpn01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty, in ACME v2) answer to a tls-alpn-01 challenge."""

    typ = "tls-alpn-01"


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
        where = private_subdir(self.folder, "account") / "key.pem"
        try:
            pem = where.read_bytes()
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            atomic_write(where, pem_key(key), mode=0o600)
            _log.info("acme: made the account key", extra={"event": "acme_account_key"})
            return JWKEC(key=key)
        loaded = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return JWKEC(key=loaded)

    def _registration_file(self) -> Path:
        digest = hashlib.sha256(self.spec.directory.encode()).hexdigest()[:16]
        return private_subdir(self.folder, "account") / f"{digest}.json"

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
            message, _ = describe(err, self.spec.directory)
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
        key_pem = pem_key(key)
        written: list[Path] = []
        used: Challenge | None = None
        try:
            csr = crypto_util.make_csr(key_pem.encode(), [name])
            order = client.new_order(csr)
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                offered = {challenge_type(c): c for c in authzr.body.challenges}
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
            message, failed = describe(err, self.spec.directory)
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
            path = private_subdir(self.folder, "http-01") / token
            atomic_write(path, validation, mode=0o644)
            written.append(path)
            return response
        token = str(getattr(chall, "jobj", {}).get("token", ""))
        if not _TOKEN.match(token):
            raise AcmeFailure(f"{name}: the CA sent no usable tls-alpn-01 token")
        thumbprint = b64encode(account_key.thumbprint(hash_function=hashes.SHA256)).decode()
        key_authorization = f"{token}.{thumbprint}"
        cert_pem, key_pem = alpn_challenge_certificate(name, key_authorization)
        where = private_subdir(self.folder, "tls-alpn-01")
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
            message, _ = describe(err, self.spec.directory)
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
