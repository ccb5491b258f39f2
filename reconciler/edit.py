"""Round-trip edits of desired-state.yaml that keep the user's comments, blank lines and order.

PyYAML drops comments; ruamel.yaml's round-trip mode keeps them, so it is used here and only
here, for the one user-owned file. Every function returns new text; the caller validates it
with spec.parse_spec and writes it atomically.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from .errors import SpecError, UsageError
from .spec import BackendSpec

__all__ = ["add_backend", "init_document", "remove_backend"]

_NEW_FILE = """\
# lbrec desired state: the load balancer and its backends.
# Edit this file (or use `lbrec add` / `lbrec remove`), then `lbrec apply`.
# Reference: docs/desired-state.md; editor schema: `lbrec schema`.
backends: []
"""


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _load(text: str, source: str) -> CommentedMap:
    try:
        data = _yaml().load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise SpecError(f"{source}: {where}malformed YAML: {getattr(err, 'problem', err)}") from err
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise SpecError(f"{source}: the top level must be a mapping with a 'backends' list")
    return data


def _dump(data: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def _backends(data: CommentedMap, source: str) -> CommentedSeq:
    seq = data.get("backends")
    if seq is None:
        seq = CommentedSeq()
        data["backends"] = seq
    if not isinstance(seq, CommentedSeq):
        raise SpecError(f"{source}: backends must be a list, got {type(seq).__name__}")
    return seq


def _entry(backend: BackendSpec, *, flow: bool) -> CommentedMap:
    entry = CommentedMap()
    entry["name"] = backend.name
    entry["port"] = backend.port
    entry["weight"] = backend.weight
    if backend.env:
        entry["env"] = dict(backend.env)
    if flow:
        entry.fa.set_flow_style()
    return entry


def _flow_like(seq: CommentedSeq) -> bool:
    """New entries copy the style of the existing ones (flow `{...}` by default)."""
    for item in seq:
        if isinstance(item, CommentedMap):
            return bool(item.fa.flow_style())
    return True


def init_document(existing: str | None, backends: list[BackendSpec], *, source: str) -> str:
    """A new file, or the existing one with its backends list replaced (settings kept)."""
    data = _load(existing if existing is not None else _NEW_FILE, source)
    seq = _backends(data, source)
    flow = _flow_like(seq)
    if isinstance(seq, CommentedSeq) and seq.fa.flow_style():
        seq.fa.set_block_style()
    del seq[:]
    for backend in backends:
        seq.append(_entry(backend, flow=flow))
    return _dump(data)


def add_backend(text: str, backend: BackendSpec, *, source: str) -> tuple[str, str]:
    """Add ``backend``, or update the port/weight of the one with that name.

    Returns (new text, "added" | "updated" | "unchanged").
    """
    data = _load(text, source)
    seq = _backends(data, source)
    if seq.fa.flow_style():
        seq.fa.set_block_style()
    for item in seq:
        if isinstance(item, dict) and item.get("name") == backend.name:
            if item.get("port") == backend.port and item.get("weight", 1) == backend.weight:
                return text, "unchanged"
            item["port"] = backend.port
            item["weight"] = backend.weight
            return _dump(data), "updated"
    seq.append(_entry(backend, flow=_flow_like(seq)))
    return _dump(data), "added"


def remove_backend(text: str, key: str, *, source: str) -> tuple[str, str]:
    """Remove the backend named ``key``, or published on port ``key``; returns its name."""
    data = _load(text, source)
    seq = _backends(data, source)
    for index, item in enumerate(seq):
        if not isinstance(item, dict):
            continue
        port: Any = item.get("port")
        if item.get("name") == key or (key.isdigit() and port == int(key)):
            name = str(item.get("name"))
            del seq[index]
            return _dump(data), name
    known = ", ".join(
        f"{item.get('name')}:{item.get('port')}" for item in seq if isinstance(item, dict)
    )
    raise UsageError(
        f"remove: no backend named or on port {key!r} in {source}",
        hint=f"backends are: {known}" if known else "the file has no backends",
    )
