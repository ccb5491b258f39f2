"""PURE. Round-trip edits of desired-state.yaml that keep the user's comments, blanks and order.

PyYAML drops comments; ruamel.yaml's round-trip mode keeps them, so it is used here and only
here, for the one user-owned file. Every function returns new text; the caller validates it
with spec.parse_spec and writes it atomically.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from .defaults import SCHEMA_FILE
from .errors import SpecError, UsageError
from .spec import BackendSpec

__all__ = ["add_backend", "add_route", "init_document", "remove_backend"]

_NEW_FILE = f"""\
# yaml-language-server: $schema={SCHEMA_FILE}
# lbrec desired state: the load balancer and its backends.
# Edit this file (or use `lbrec add` / `lbrec remove`), then `lbrec apply`.
# Reference: docs/desired-state.md; editors check it against {SCHEMA_FILE}
# (written by `lbrec init`; `lbrec schema` prints it).
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


def _is_block(value: object) -> bool:
    return (
        isinstance(value, CommentedMap | CommentedSeq)
        and len(value) > 0
        and not value.fa.flow_style()
    )


def _last_key(value: CommentedMap | CommentedSeq) -> Any:
    return len(value) - 1 if isinstance(value, CommentedSeq) else list(value)[-1]


def _slot(parent: Any, key: Any) -> tuple[list[Any], int]:
    """The comment slot after the last scalar of ``parent[key]``: (ruamel comment entry, index).

    ruamel.yaml hangs the lines that follow a collection (blank lines, comments about the next
    key) on the deepest last item of that collection, so editing the list would move or drop
    them; :func:`_take_tail` and :func:`_put_tail` carry them over an edit.
    """
    value = parent[key]
    while _is_block(value):
        parent, key = value, _last_key(value)
        value = parent[key]
    entry: list[Any] = parent.ca.items.setdefault(key, [None, None, None, None])
    return entry, 0 if isinstance(parent, CommentedSeq) else 2


def _take_tail(parent: Any, key: Any) -> str:
    """Detach and return the lines after ``parent[key]`` (keeping its own end-of-line comment)."""
    parts: list[str] = []
    entry, index = _slot(parent, key)
    token = entry[index]
    if token is not None:
        head, newline, tail = token.value.partition("\n")
        parts.append(tail)
        if head.strip():
            token.value = head + newline
        else:
            entry[index] = None
    value = parent[key]
    ends: list[str] = []
    while _is_block(value):
        ends[:0] = [t.value for t in value.ca.end if t is not None]
        value.ca.end = []
        value = value[_last_key(value)]
    return "".join(parts + ends)


def _put_tail(parent: Any, key: Any, tail: str) -> None:
    """Attach ``tail`` (from :func:`_take_tail`) after ``parent[key]``."""
    if not tail:
        return
    entry, index = _slot(parent, key)
    token = entry[index]
    if token is None:
        entry[index] = CommentToken("\n" + tail, CommentMark(0), None)
    else:
        token.value = token.value + tail


def _put_before_first(seq: CommentedSeq, tail: str) -> None:
    """Attach ``tail`` above the first item of ``seq``, after any comment already there."""
    if seq.ca.comment is None:
        seq.ca.comment = [None, []]
    if seq.ca.comment[1] is None:
        seq.ca.comment[1] = []
    seq.ca.comment[1].append(CommentToken(tail, CommentMark(0), None))


# Fields `lbrec add` may set besides port and weight (--image, --replicas), written only when
# given on the command line.
_EXTRA = ("image", "replicas")


def _entry(backend: BackendSpec, *, flow: bool) -> CommentedMap:
    entry = CommentedMap()
    entry["name"] = backend.name
    entry["port"] = backend.port
    entry["weight"] = backend.weight
    for key in _EXTRA:
        if key in backend.model_fields_set:
            entry[key] = getattr(backend, key)
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


def init_document(
    existing: str | None, backends: list[BackendSpec], *, source: str, project: str | None = None
) -> str:
    """A new file, or the existing one with its backends list replaced (settings kept).

    ``project`` is written first into a new file, so that two folders never share a Compose
    project (and one's apply never removes the other's containers)."""
    data = _load(existing if existing is not None else _NEW_FILE, source)
    if project is not None and "project" not in data:
        data.insert(0, "project", project)
    seq = _backends(data, source)
    flow = _flow_like(seq)
    tail = _take_tail(data, "backends")
    if seq.fa.flow_style():
        seq.fa.set_block_style()
    del seq[:]
    seq.ca.items.clear()
    for backend in backends:
        seq.append(_entry(backend, flow=flow))
    if not seq:
        seq.fa.set_flow_style()
    _put_tail(data, "backends", tail)
    return _dump(data)


def add_backend(text: str, backend: BackendSpec, *, source: str) -> tuple[str, str]:
    """Add ``backend``, or update the port/weight of the one with that name.

    Returns (new text, "added" | "updated" | "unchanged").
    """
    data = _load(text, source)
    seq = _backends(data, source)
    tail = _take_tail(data, "backends")
    if seq.fa.flow_style():
        seq.fa.set_block_style()
    for item in seq:
        if isinstance(item, dict) and item.get("name") == backend.name:
            given = {k: getattr(backend, k) for k in _EXTRA if k in backend.model_fields_set}
            same = all(item.get(k) == v for k, v in given.items())
            if (
                same
                and item.get("port") == backend.port
                and item.get("weight", 1) == backend.weight
            ):
                return text, "unchanged"
            item["port"] = backend.port
            item["weight"] = backend.weight
            for key, value in given.items():
                item[key] = value
            _put_tail(data, "backends", tail)
            return _dump(data), "updated"
    seq.append(_entry(backend, flow=_flow_like(seq)))
    _put_tail(data, "backends", tail)
    return _dump(data), "added"


def add_route(
    text: str,
    name: str,
    *,
    host: str,
    path: str,
    source: str,
    features: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Route ``host`` (and ``path``) to the backend ``name``: a new route, or ``name`` added to
    the route of that host and path. ``features``: the route's fields to set as well (compress,
    sticky, rate_limit, ...; each replaces the route's own, the rest is kept). Returns (new
    text, "added" | "updated" | "unchanged")."""
    data = _load(text, source)
    routes = data.get("routes")
    if routes is None:
        routes = CommentedSeq()
        # before `backends:`, where a reader looks for what is served where
        index = list(data).index("backends") if "backends" in data else len(data)
        data.insert(index, "routes", routes)
    if not isinstance(routes, CommentedSeq):
        raise SpecError(f"{source}: routes must be a list, got {type(routes).__name__}")
    wanted = path.rstrip("/") or "/"
    for item in routes:
        if not isinstance(item, dict) or item.get("host") != host:
            continue
        if (str(item.get("path", "/")).rstrip("/") or "/") != wanted:
            continue
        names = item.get("backends")
        changed = _set_features(item, features or {})
        if isinstance(names, list) and name in names:
            return (_dump(data), "updated") if changed else (text, "unchanged")
        if isinstance(names, CommentedSeq):
            names.append(name)
        else:
            item["backends"] = [*(names or []), name]
        return _dump(data), "updated"
    entry = CommentedMap()
    entry["host"] = host
    if path != "/":
        entry["path"] = path
    names = CommentedSeq([name])
    names.fa.set_flow_style()
    entry["backends"] = names
    _set_features(entry, features or {})
    if _flow_like(routes):
        entry.fa.set_flow_style()
    if routes.fa.flow_style():
        routes.fa.set_block_style()
    routes.append(entry)
    return _dump(data), "added"


def _set_features(item: dict[str, Any], features: dict[str, Any]) -> bool:
    """Set a route's feature fields (a mapping value in flow style, as the route's own line
    reads); True when something changed."""
    changed = False
    for key, given in features.items():
        value: Any = given
        if isinstance(given, dict):
            value = CommentedMap(given)
            value.fa.set_flow_style()
        elif isinstance(given, list):
            value = CommentedSeq(given)
            value.fa.set_flow_style()
        if item.get(key) != value:
            item[key] = value
            changed = True
    return changed


def _unroute(data: CommentedMap, name: str) -> None:
    """A removed backend leaves every route; a route left without backends goes too."""
    routes = data.get("routes")
    if not isinstance(routes, CommentedSeq):
        return
    for index in range(len(routes) - 1, -1, -1):
        item = routes[index]
        names = item.get("backends") if isinstance(item, dict) else None
        if isinstance(names, list) and name in names:
            names.remove(name)
            if not names:
                del routes[index]
    if not routes:
        del data["routes"]


def remove_backend(text: str, key: str, *, source: str) -> tuple[str, str]:
    """Remove the backend named ``key``, or published on port ``key``; returns its name.
    It leaves the routes that named it (a route left empty is removed)."""
    data = _load(text, source)
    seq = _backends(data, source)
    for index, item in enumerate(seq):
        if not isinstance(item, dict):
            continue
        port: Any = item.get("port")
        if item.get("name") == key or (key.isascii() and key.isdigit() and port == int(key)):
            name = str(item.get("name"))
            _unroute(data, name)
            last = index == len(seq) - 1
            tail = _take_tail(data, "backends") if last else _take_tail(seq, index)
            del seq[index]
            if index > 0:
                _put_tail(seq, index - 1, tail)
            elif not seq:
                seq.fa.set_flow_style()  # `backends: []`, then what followed the list
                _put_tail(data, "backends", tail)
            elif tail:
                _put_before_first(seq, tail)
            return _dump(data), name
    known = ", ".join(
        f"{item.get('name')}:{item.get('port')}" for item in seq if isinstance(item, dict)
    )
    raise UsageError(
        f"remove: no backend named or on port {key!r} in {source}",
        hint=f"backends are: {known}" if known else "the file has no backends",
    )
