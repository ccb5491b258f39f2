"""A request body on its way to a backend: streamed as it comes, held while a retry may need it.

One :class:`RequestBody` per request that declares a body (Content-Length or chunked); a
request without one shares :data:`NO_BODY`, which is complete from the start and never
changes (no allocation on the fast lane). Bytes arrive from the client before or after a
backend connection is attached: before, they are held; after, they are written to it as they
come. Up to :data:`REPLAY_LIMIT` bytes are kept either way, so that a failed attempt can be
replayed on another backend; past it the body is streamed without a copy (``spilled``) and the
request is retried only if nothing was sent yet (docs/proxy.md, "Retries and errors").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .http import LAST_CHUNK, chunk

if TYPE_CHECKING:
    from .upstream import UpstreamConnection

__all__ = ["NO_BODY", "REPLAY_LIMIT", "RequestBody"]

REPLAY_LIMIT: Final = 64 * 1024  # request-body bytes kept for a retry; above it: streamed


class RequestBody:
    """The body of one request and its replay buffer."""

    __slots__ = ("chunked", "chunks", "complete", "size", "spilled", "upstream")

    def __init__(self, *, chunked: bool, complete: bool = False) -> None:
        self.chunked = chunked  # re-chunked towards the backend (llhttp de-chunks it)
        self.chunks: list[bytes] = []  # what is held: the whole body while it is replayable
        self.size = 0
        self.complete = complete
        self.spilled = False  # no longer fully held: not replayable
        self.upstream: UpstreamConnection | None = None  # attached: bytes go straight there

    def feed(self, data: bytes) -> bool:
        """Take body bytes from the client; True when it should stop sending for now (more
        than the limit held, with no backend to send them to yet)."""
        size = self.size = self.size + len(data)
        upstream = self.upstream
        if upstream is None:
            self.chunks.append(data)
            return size > REPLAY_LIMIT
        upstream.write(chunk(data) if self.chunked else data)
        if not self.spilled:
            if size <= REPLAY_LIMIT:
                self.chunks.append(data)
            else:
                self.spilled = True
                self.chunks = []
        return False

    def end(self) -> None:
        """The client's body is complete."""
        if self.complete:
            return
        self.complete = True
        if self.upstream is not None and self.chunked:
            self.upstream.write(LAST_CHUNK)

    def attach(self, conn: UpstreamConnection, head: bytes) -> None:
        """Send ``head`` and the body held so far to ``conn`` in one write; the rest of the
        body follows it as it comes."""
        chunks = self.chunks
        if chunks:
            body = b"".join(chunk(c) for c in chunks) if self.chunked else b"".join(chunks)
            if self.complete and self.chunked:
                body += LAST_CHUNK
            conn.write(head + body)
            if self.size > REPLAY_LIMIT:
                self.spilled = True
                self.chunks = []
        elif self.complete and self.chunked:
            conn.write(head + LAST_CHUNK)
        else:
            conn.write(head)
        if not self.complete:
            self.upstream = conn

    def detach(self) -> None:
        """The attempt ended: later bytes are held again (or dropped, when spilled)."""
        self.upstream = None

    def drop(self) -> None:
        """The exchange ended: nothing will be replayed."""
        self.chunks = []


NO_BODY: Final = RequestBody(chunked=False, complete=True)
"""The body of every request that declares none (shared: complete, empty, never changed)."""
