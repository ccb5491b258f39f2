"""PURE. The pool: config/backends.json rendered from the desired state (with the instances
that serve, during a rollout) and the pool a converged pass must find; the TLS listener's
settings, the files a route names relocated to the pool's folder, and the sticky keys.

Deterministic (fixed key order) so that an unchanged desired state renders a byte-identical
file and nothing is rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence

from ...proxy.config import (
    BackendEntry,
    BackendsConfig,
    CertificateEntry,
    Deployment,
    HealthSettings,
    Revision,
    RouteEntry,
    RouteFeatures,
    TlsSettings,
)
from .certs import HeldCertificate, served_names
from .defaults import STATE_DIR
from .labels import CONFIG_HASH, BuildInfo, canonical_hash, config_hash
from .spec import BackendSpec, DesiredState
from .state import Observed

__all__ = [
    "ACME_DIR",
    "POOL_FILE",
    "Instance",
    "affinity_key",
    "backend_url",
    "converged_pool",
    "render_pool",
    "render_tls",
    "sticky_rollout_key",
]

POOL_FILE = "config/backends.json"
ACME_DIR = f"{STATE_DIR}/acme"  # challenges the ACME client answers through the proxy (TlsSettings)


def backend_url(desired: DesiredState, backend: BackendSpec) -> str:
    """Where lbrec before 0.3 published a backend (its own port on publish_host). Instances
    are now reached at the endpoint Docker allocated (ObservedContainer.url); this is kept for
    the pool of a desired state without observed instances (samples, tests)."""
    host = desired.publish_host
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{backend.port}"


# (url, container name) or, during a canary, (url, container name, version, percent); with
# the container's id last (identity: the proxy tells a container from the next one at its URL)
Instance = (
    tuple[str, str | None]
    | tuple[str, str | None, str | None, int | None]
    | tuple[str, str | None, str | None, int | None, str | None]
)


def render_pool(
    desired: DesiredState,
    *,
    routed: Collection[str] | None = None,
    revision: Revision | None = None,
    instances: Mapping[str, Sequence[Instance]] | None = None,
    sticky_secret: bytes = b"",
    source: str | None = None,
    certificates: Sequence[HeldCertificate] = (),
) -> BackendsConfig:
    """backends.json as a model. ``routed`` limits the pool to backends known to be up.

    ``instances`` maps a backend to the endpoints of its instances that serve: one entry per
    instance, each with the backend's weight (the proxy splits it among them); a backend with
    no instance there is not routed. Without it, one entry per backend at ``backend_url``.
    ``sticky_secret`` (the host's, see :func:`sticky_rollout_key`) keys each sticky canary's
    hash; without it the proxy draws its own key. ``source``: the desired-state file (absolute
    path) a pass renders from, stamped with the project as ``deploy`` (not in the generation),
    so that `lbrec up` knows this folder's own last good pool from a foreign one.
    ``certificates``: those obtained over ACME (``Observed.certificates``), see render_tls.
    """
    entries: list[BackendEntry] = []
    for b in desired.backends:
        if routed is not None and b.name not in routed:
            continue
        if instances is None:
            entries.append(BackendEntry(name=b.name, url=backend_url(desired, b), weight=b.weight))
            continue
        items = sorted(instances.get(b.name, ()), key=lambda i: (i[1] or "", i[0]))
        sticky = b.rollout_of(desired).sticky
        key = sticky_rollout_key(sticky_secret, b.name, items) if sticky else None
        for item in items:
            url, name = item[0], item[1]
            version, percent = (item[2], item[3]) if len(item) >= 4 else (None, None)
            container = item[4] if len(item) == 5 else None
            own = b.health.path if b.health is not None else None
            entries.append(
                BackendEntry(
                    name=b.name,
                    url=url,
                    weight=b.weight,
                    instance=name,
                    health_path=own,
                    version=version,
                    percent=percent,
                    sticky=sticky if percent is not None else None,
                    sticky_key=key if percent is not None else None,
                    container=container,
                )
            )
    config = BackendsConfig(
        revision=revision,
        listen=desired.listen,
        admin=desired.admin,
        health=HealthSettings(**desired.health.model_dump()),
        passive=desired.proxy.passive,
        timeouts=desired.proxy.timeouts,
        limits=desired.proxy.limits,
        trusted_proxies=desired.proxy.trusted_proxies,
        forwarded_header=desired.proxy.forwarded_header,
        backends=tuple(entries),
        routes=tuple(
            RouteEntry(**{**route.model_dump(), **_relocated(route)}) for route in desired.routes
        )
        or None,
        tls=render_tls(desired, certificates),
        defaults=(
            RouteFeatures(**{**defaults.model_dump(), **_relocated(defaults)})
            if (defaults := desired.features()).active
            else None
        ),
        affinity_key=affinity_key(sticky_secret, desired),
    )
    content = config.model_dump(mode="json", exclude={"generation"}, exclude_none=True)
    stamp = None if source is None else Deployment(project=desired.project, file=source)
    return config.model_copy(update={"generation": canonical_hash(content)[:12], "deploy": stamp})


def render_tls(
    desired: DesiredState, obtained: Sequence[HeldCertificate] = ()
) -> TlsSettings | None:
    """PURE. The TLS listener's settings. A relative certificate path (relative to the
    desired-state file) is written relative to backends.json's folder, which is how the
    proxy reads it (config/backends.json: one level down). With ``tls.acme``, the certificates
    ``obtained`` (.lbrec/certs) of names a route still serves over TLS follow the operator's
    own, by name: a new or renewed one is a change of the pool (a reload, never a restart)."""
    tls = desired.tls
    if tls is None:
        return None
    up = "../" * POOL_FILE.count("/")
    served = set(served_names(desired)) if tls.acme is not None else set()
    acme = sorted((c for c in obtained if c.name in served), key=lambda c: c.name)
    return TlsSettings(
        listen=tls.listen,
        certificates=tuple(
            CertificateEntry(cert=_pool_path(c.cert), key=_pool_path(c.key))
            for c in tls.certificates
        )
        + tuple(CertificateEntry(cert=up + c.cert, key=up + c.key) for c in acme),
        redirect_http=tls.redirect_http,
        hsts=None if tls.hsts is None else int(tls.hsts),
        acme_dir=None if tls.acme is None else up + ACME_DIR,
    )


def _pool_path(path: str) -> str:
    """A file named relative to the desired-state file, as backends.json names it (relative
    to its own folder, config/: one level down); an absolute path stays."""
    return path if path.startswith("/") else "../" * POOL_FILE.count("/") + path.removeprefix("./")


def _relocated(features: RouteFeatures) -> dict[str, object]:
    """PURE. The file-naming fields of ``features`` with their paths as backends.json names
    them (the htpasswd file's path only, never its content)."""
    out: dict[str, object] = {}
    auth = features.auth
    if auth is not None and auth.basic is not None:
        basic = auth.basic.model_copy(update={"users_file": _pool_path(auth.basic.users_file)})
        out["auth"] = auth.model_copy(update={"basic": basic})
    page = features.maintenance.page if features.maintenance is not None else None
    if features.maintenance is not None and page is not None:
        out["maintenance"] = features.maintenance.model_copy(update={"page": _pool_path(page)})
    if features.error_pages:
        out["error_pages"] = {
            status: _pool_path(path) for status, path in sorted(features.error_pages.items())
        }
    return out


def affinity_key(secret: bytes, desired: DesiredState) -> str | None:
    """PURE. The per-pool key of `sticky:` cookies (proxy/affinity.py): HMAC-SHA256 of the
    project under the host's ``secret`` (the sticky canaries' secret), so every worker and
    every restart read the same cookie the same way, and no client can forge one for a given
    instance. None without a secret or when no route (nor the top level) is sticky."""
    if not secret or not (desired.sticky or any(r.sticky for r in desired.routes)):
        return None
    identity = "\0".join(["lbrec affinity", desired.project]).encode()
    return hmac.new(secret, identity, hashlib.sha256).hexdigest()


def sticky_rollout_key(secret: bytes, backend: str, items: Sequence[Instance]) -> str | None:
    """PURE. The key of one sticky canary's hash (issue 20 finding 13): HMAC-SHA256 of the
    canary's identity (its backend and the ids, else URLs, of its canary instances) under the
    host's ``secret``. The same on every step of one rollout, so a client keeps its version;
    another for the next rollout; unknowable without the secret, which neither clients nor
    backends have. None without a secret or without a canary."""
    canary = sorted(
        (item[4] if len(item) == 5 and item[4] else item[0])
        for item in items
        if len(item) >= 4 and item[2] == "canary"
    )
    if not secret or not canary:
        return None
    identity = "\0".join(["lbrec sticky canary", backend, *canary]).encode()
    return hmac.new(secret, identity, hashlib.sha256).hexdigest()


def converged_pool(
    desired: DesiredState,
    observed: Observed,
    build: BuildInfo,
    revision: Revision | None,
    *,
    source: str | None = None,
) -> BackendsConfig:
    """The pool once converged, as far as what runs now tells: every current, serving
    instance of each backend (what a second apply must find to plan nothing); ``source`` as
    for :func:`render_pool`."""
    instances: dict[str, list[Instance]] = {}
    for spec in desired.backends:
        want = config_hash(spec, desired, build)
        serving: list[Instance] = [
            (c.url, c.name or None, None, None, c.id)
            for c in observed.for_backend(spec.name)
            if c.url is not None
            and c.running
            and c.health != "unhealthy"
            and c.labels.get(CONFIG_HASH) == want
        ]
        instances[spec.name] = serving[: spec.replicas]
    return render_pool(
        desired,
        instances=instances,
        revision=revision,
        source=source,
        certificates=observed.certificates,
    )
