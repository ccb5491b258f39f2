"""PURE. The ``tls:`` section of desired-state.yaml: the HTTPS listener, certificates from
ACME (the account, the CA, the challenge) or the operator's own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from .spec_fields import SCHEMA_HOSTPORT, SpecModel, check_hostport, seconds

__all__ = ["AcmeSpec", "CertificateSpec", "TlsSpec"]


def long_seconds(value: object) -> object:
    """A duration that may be days (``180d``) or longer: HSTS max-age."""
    if isinstance(value, str) and value.strip().endswith("d"):
        number = value.strip()[:-1]
        if number.replace(".", "", 1).isdigit():
            return float(number) * 86400
    return seconds(value)


class AcmeSpec(SpecModel):
    """Automatic certificates (RFC 8555) for every host of ``routes:`` not covered by
    ``certificates:``."""

    email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="the account's contact address"
    )
    directory: str = Field(
        default="https://acme-v02.api.letsencrypt.org/directory",
        pattern=r"^https?://\S+$",
        description="the ACME server's directory URL (Let's Encrypt by default; staging or a "
        "private CA allowed)",
    )
    ca_bundle: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file (relative to the desired-state file) to trust for a private ACME "
        "server, e.g. Pebble's",
    )
    challenge: Literal["auto", "http-01", "tls-alpn-01"] = Field(
        default="auto",
        description="how the CA checks a name is yours: http-01 on `listen` (port 80), "
        "tls-alpn-01 on `tls.listen` (port 443), or auto: http-01 first, tls-alpn-01 when "
        "`listen` is loopback only or http-01 failed (docs/tls.md)",
    )

    @model_validator(mode="after")
    def _https(self) -> AcmeSpec:
        if self.directory.startswith("http://"):
            host = self.directory[len("http://") :].split("/", 1)[0].rsplit(":", 1)[0]
            loopback = host in ("localhost", "[::1]") or host.startswith("127.")
            if not (self.ca_bundle is not None and loopback):
                raise ValueError(
                    f"directory: {self.directory!r} is not https (plain http only for a private "
                    "CA on loopback, with ca_bundle)"
                )
        return self


class CertificateSpec(SpecModel):
    """Your own certificate, for names ACME cannot serve (PEM files, relative to the
    desired-state file)."""

    cert: str = Field(min_length=1, description="certificate chain, leaf first (PEM)")
    key: str = Field(min_length=1, description="its private key (PEM)")


class TlsSpec(SpecModel):
    """The HTTPS listener: TLS 1.2 and 1.3, SNI, certificates from ACME or your own."""

    listen: str = Field(
        description="The TLS listener (HOST:PORT), e.g. 0.0.0.0:443",
        json_schema_extra=SCHEMA_HOSTPORT,
    )
    acme: AcmeSpec | None = None
    certificates: tuple[CertificateSpec, ...] = ()
    redirect_http: bool = Field(
        default=True,
        description="http://host/x -> https://host/x (301 for GET/HEAD, 308 else) for every "
        "site with a certificate",
    )
    hsts: (
        Annotated[
            float,
            BeforeValidator(long_seconds),
            Field(ge=0, le=2 * 365 * 86400),
            WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]}),
        ]
        | None
    ) = Field(default=None, description="Strict-Transport-Security max-age, e.g. 180d")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))
