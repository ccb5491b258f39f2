"""PURE. An answer's head as an HTTP/2 header list: the backend's HTTP/1.1 head (general path
or fast lane) and the proxy's own short answers, in ``h2``'s form (lower-case names,
``:status`` first, no hop-by-hop field, the front door's Strict-Transport-Security last)."""

from __future__ import annotations

from ..fastlane import PlainAnswer
from ..framing import HOP_BY_HOP, connection_tokens

__all__ = ["Fields", "answer_fields", "plain_fields", "text_answer"]

Fields = list[tuple[bytes, bytes]]


def plain_fields(plain: PlainAnswer, hsts: tuple[bytes, bytes] | None) -> tuple[Fields, bytes]:
    """The fast lane's answer (proxy/fastlane.py: ``take_answer``) -> its fields and the body
    bytes read with the head. A plain head holds no hop-by-hop field but ``Connection:
    keep-alive``, which ``take_answer`` cuts, so its lines are the fields the general path
    would send."""
    relayed = plain.relayed
    end = relayed.index(b"\r\n\r\n")
    fields = [(b":status", b"%d" % plain.status)]
    for line in relayed[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b": ")
        fields.append((name.lower(), value))
    if hsts is not None:
        fields.append(hsts)
    return fields, relayed[end + 4 :]


def answer_fields(
    status: int, headers: list[tuple[bytes, bytes]], hsts: tuple[bytes, bytes] | None
) -> tuple[Fields, bool]:
    """The general path's head -> its fields, and whether the backend delimits the body by
    closing (neither Content-Length nor Transfer-Encoding). The hop-by-hop fields are dropped,
    and so are those its Connection field names."""
    fields = [(b":status", b"%d" % status)]
    has_length = has_te = False
    named: frozenset[bytes] | None = None
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == b"connection":
                named = connection_tokens([value])[0] | (named or frozenset())
            elif low == b"transfer-encoding":
                has_te = True
            continue
        if low == b"content-length":
            has_length = True
        fields.append((low, value))
    if named:
        fields = [f for f in fields if f[0] not in named]
    if hsts is not None:
        fields.append(hsts)
    return fields, not has_length and not has_te


def text_answer(status: int, text: str) -> tuple[Fields, bytes]:
    """A short plain-text answer of the proxy's own: its fields and body."""
    body = (text + "\n").encode()
    fields = [
        (b":status", b"%d" % status),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    return fields, body
