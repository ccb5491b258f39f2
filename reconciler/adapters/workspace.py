"""EDGE. The folder lbrec works in: the desired-state file and the files generated beside it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ...proxy.config import BackendsConfig, ConfigError, load_config
from ..core.defaults import STACK_FILE, STATE_DIR
from ..core.errors import SpecError
from ..core.labels import BuildInfo
from ..core.ports import WorkspacePort
from ..core.render import ACME_DIR, BACKEND_DOCKERFILE, COMPOSE_FILE, POOL_FILE
from ..core.spec import DesiredState, load_spec
from ..core.state import Observed, ObservedContainer
from . import engine_epoch
from .audit import AUDIT_FILE
from .cert_store import check_acme_hosts, read_held
from .files import atomic_write, build_context_digest, folder_digest, read_text_or_none
from .records import DEPLOYED_FILE
from .rollout_control import RolloutFiles
from .sticky_secret import STICKY_SECRET_FILE, host_sticky_secret

__all__ = ["BASE_IMAGE_ENV", "Workspace", "check_certificates"]

BASE_IMAGE_ENV = "LBREC_BASE_IMAGE"


@dataclass(frozen=True, slots=True)
class Workspace:
    spec_file: Path

    @classmethod
    def at(cls, spec_file: str | Path) -> Workspace:
        return cls(Path(spec_file).absolute())

    @property
    def folder(self) -> Path:
        return self.spec_file.parent

    @property
    def compose_file(self) -> Path:
        return self.folder / COMPOSE_FILE

    @property
    def pool_file(self) -> Path:
        return self.folder / POOL_FILE

    @property
    def state_dir(self) -> Path:
        """What lbrec keeps beside the file (``.lbrec``; core.defaults.STATE_DIR)."""
        return self.folder / STATE_DIR

    @property
    def repo_mirror(self) -> Path:
        """`lbrec sync`'s bare mirror of the repository, by default."""
        return self.state_dir / "repo"

    @property
    def stack_file(self) -> Path:
        return self.folder / STACK_FILE

    @property
    def audit_file(self) -> Path:
        return self.folder / AUDIT_FILE

    @property
    def deployed_file(self) -> Path:
        return self.folder / DEPLOYED_FILE

    @property
    def sticky_key_file(self) -> Path:
        return self.folder / STICKY_SECRET_FILE

    @property
    def acme_dir(self) -> Path:
        return self.folder / ACME_DIR

    @property
    def rollouts(self) -> RolloutFiles:
        """A canary's state and the `lbrec rollout` requests, the versions rolled back."""
        return RolloutFiles(self.folder)

    def load(self) -> DesiredState:
        """The desired state, with the files it names checked (certificates, htpasswd files
        and pages)."""
        desired = load_spec(self.spec_file)
        self.check_files(desired, source=str(self.spec_file))
        return desired

    def check_files(self, desired: DesiredState, *, source: str) -> None:
        """The files the desired state names (certificates, htpasswd files, pages) exist,
        read and fit, relative to this folder: else a SpecError naming the field."""
        from .route_files import check_route_files

        check_certificates(desired, self.folder, source=source)
        check_acme_hosts(desired, self.folder, source=source)
        check_route_files(desired, self.folder, source=source)

    def epoch(self) -> int:
        return engine_epoch.current(self.folder)

    def sticky_secret(self) -> bytes:
        return host_sticky_secret(self.folder)

    def write_deploy_file(self, text: str) -> str | None:
        """docker-compose.yml (a Compose file, or a stack file on Swarm), if it changed."""
        return str(self.compose_file) if atomic_write(self.compose_file, text) else None

    def write_pool(
        self, config: BackendsConfig, *, epoch: int | None
    ) -> tuple[BackendsConfig, str | None]:
        """config/backends.json, frozen when the engine went away since ``epoch``: a freeze
        is never overwritten by a pass that observed the engine before it."""
        with engine_epoch.write_lock:
            if epoch is not None and engine_epoch.current(self.folder) != epoch:
                config = engine_epoch.freeze(config, engine_epoch.frozen_reason(self.folder))
            changed = atomic_write(self.pool_file, config.to_json())
        return config, str(self.pool_file) if changed else None

    def build_info(
        self, desired: DesiredState, env: Mapping[str, str] = os.environ, *, stage: bool = True
    ) -> BuildInfo:
        """What the images are built from. ``stage=False`` (check mode) only reads: the lb
        image's context digest is computed from its inputs, nothing is staged or run."""
        dockerfile = self.folder / BACKEND_DOCKERFILE
        demo = any(b.demo for b in desired.backends) or not desired.backends
        if demo and not dockerfile.is_file():
            raise SpecError(
                f"{dockerfile}: not found; lbrec builds backends from {BACKEND_DOCKERFILE} "
                f"next to {self.spec_file.name}",
                hint="`lbrec init` in an empty folder writes the demo backend's files; or "
                "copy Dockerfile.backend and backend/ here from another deploy folder",
            )
        base = desired.base_image or env.get(BASE_IMAGE_ENV) or None
        proxy_digest = ""
        proxy_base = None
        if desired.proxy.mode == "container":
            from .proxy_image import proxy_base_image, proxy_context_digest, stage_proxy_context

            # The lb's base is the operator's (environment), never the file's base_image.
            proxy_base = proxy_base_image(env)
            if stage:
                proxy_digest = stage_proxy_context(self.folder, proxy_base)
            else:
                proxy_digest = proxy_context_digest(self.folder, proxy_base)
        digests: dict[str, str] = {}
        for index, backend in enumerate(desired.backends):
            if backend.build is None:
                continue
            context = self.folder / backend.build.context
            if not (context / backend.build.dockerfile).is_file():
                raise SpecError(
                    f"backends[{index}].build: {context / backend.build.dockerfile} not found "
                    f"(context {backend.build.context!r}, dockerfile "
                    f"{backend.build.dockerfile!r}); nothing was changed"
                )
            digests[backend.name] = folder_digest(context)
        return BuildInfo(
            base_image=base,
            proxy_base_image=proxy_base,
            context_digest=(build_context_digest(self.folder, BACKEND_DOCKERFILE) if demo else ""),
            proxy_digest=proxy_digest,
            build_digests=digests,
        )

    def read_pool(self) -> tuple[BackendsConfig | None, str | None]:
        try:
            text = read_text_or_none(self.pool_file)
        except (UnicodeDecodeError, OSError):
            return None, None  # unreadable: planned as if nothing were routed, then rewritten
        if text is None:
            return None, None
        try:
            return load_config(self.pool_file), text
        except ConfigError:
            return None, text  # unreadable: planned as if nothing were routed, then rewritten

    def observe(self, containers: tuple[ObservedContainer, ...]) -> Observed:
        pool, pool_text = self.read_pool()
        return Observed(
            containers=containers,
            pool=pool,
            pool_text=pool_text,
            compose_text=read_text_or_none(self.compose_file),
            certificates=tuple(read_held(self.folder).values()),
        )


def _is_a_workspace(workspace: Workspace) -> WorkspacePort:
    return workspace  # mypy checks the adapter against its port here


def check_certificates(desired: DesiredState, folder: Path, *, source: str) -> None:
    """Every certificate of ``tls.certificates`` can be served: readable, PEM, matching its
    key, valid now, and covering a host of ``routes:`` (when there are routes). A SpecError
    names the field and the file: nothing is applied (docs/tls.md)."""
    if desired.tls is None or not desired.tls.certificates:
        return
    from ...proxy.tls import CertificateError, load_certificate

    hosts = [r.host.split(":")[0] for r in desired.routes if r.host is not None]
    for index, pair in enumerate(desired.tls.certificates):
        field = f"tls.certificates[{index}]"
        try:
            cert = load_certificate(folder / pair.cert, folder / pair.key)
        except CertificateError as err:
            raise SpecError(f"{source}: {field}: {err}; nothing was applied") from err
        if hosts and not any(cert.covers(host) for host in hosts):
            raise SpecError(
                f"{source}: {field}.cert: {pair.cert} covers {', '.join(cert.names)}, no host "
                f"of routes: ({', '.join(hosts)}); nothing was applied"
            )
