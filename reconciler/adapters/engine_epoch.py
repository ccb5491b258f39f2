"""EDGE. The engine's epochs in this process: a pool is frozen the moment the engine goes away.

Instances live on host ports Docker allocates. When the engine restarts (without live-restore its
containers stop with it), it hands the same ports out again from 32768 up, across every project
on the engine: an entry's ``http://127.0.0.1:PORT`` may then reach another project's container,
which answers the proxy's health check like any other. So the moment the ``docker events``
stream of a project breaks (adapters/docker_events.py), :func:`freeze_pool` marks every entry of
config/backends.json ``frozen`` (the proxy routes none of them) and starts a new epoch; an entry
is routed again only by a pass that observed the engine after that (it re-read the container's
port, and matches entries to containers by id). A pass that observed before the break is stale:
whatever it writes is frozen too, and it yields at its next look (engine/converge.py). See
docs/faults.md, "engine restarted".
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ...proxy.config import BackendsConfig, ConfigError, load_config
from ..core.labels import canonical_hash
from .files import atomic_write

__all__ = ["current", "freeze", "freeze_pool", "frozen_reason", "write_lock"]

_log = logging.getLogger("lbrec.engine")

# Held around the check of the epoch and the write of a pool (passes and the freeze).
write_lock = threading.RLock()
_epochs: dict[Path, int] = {}
_reasons: dict[Path, str] = {}


def _key(folder: Path) -> Path:
    return Path(folder).absolute()


def current(folder: Path) -> int:
    """The engine's epoch for ``folder``'s project: one more at each break of its stream."""
    with write_lock:
        return _epochs.get(_key(folder), 0)


def frozen_reason(folder: Path) -> str:
    """Why a stale pass writes its pool frozen (the last break)."""
    with write_lock:
        return _reasons.get(_key(folder), "the engine restarted")


def freeze_pool(folder: Path, pool_file: Path, why: str) -> int:
    """Start a new epoch and rewrite ``pool_file`` with every entry frozen (ids kept, so the
    next pass finds each instance again wherever it listens now). Returns how many entries
    were frozen; a missing or unreadable pool is left alone (the proxy keeps what it has)."""
    reason = f"{why} at {time.strftime('%H:%M:%S')}: not routed until a pass re-reads its port"
    with write_lock:
        key = _key(folder)
        _epochs[key] = _epochs.get(key, 0) + 1
        _reasons[key] = reason
        try:
            config = load_config(pool_file)
        except ConfigError as err:
            _log.warning("%s; could not freeze the pool: %s", why, err)
            return 0
        frozen = freeze(config, reason)
        atomic_write(pool_file, frozen.to_json())
    count = sum(1 for entry in config.backends if entry.frozen is None)
    _log.warning(
        "%s: %d pool entr%s frozen until a pass re-reads each container's port",
        why,
        count,
        "y" if count == 1 else "ies",
        extra={"event": "pool_frozen", "entries": count},
    )
    return count


def freeze(config: BackendsConfig, reason: str) -> BackendsConfig:
    """``config`` with every entry frozen (the ones already frozen keep their reason)."""
    entries = tuple(
        entry if entry.frozen is not None else entry.model_copy(update={"frozen": reason})
        for entry in config.backends
    )
    out = config.model_copy(update={"backends": entries})
    content = out.model_dump(mode="json", exclude={"generation"}, exclude_none=True)
    return out.model_copy(update={"generation": canonical_hash(content)[:12]})
