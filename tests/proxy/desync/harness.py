"""The differential harness: a raw-socket client, a recording backend, and the oracle.

The recording backend parses what the proxy forwards with h11 (python-hyper's strict HTTP/1.1
parser), a different implementation from the proxy's llhttp: a request the two would frame
differently shows up as an h11 protocol error, an extra request, or a body of the wrong length.
Every answer carries ``X-Seen: <connection>/<sequence>`` so the client side can tell which
backend request each response belongs to.

The oracle (:func:`judge`): after the attack, a *victim* request on another client connection
must get its own answer; every request the backend completed for the attacker got exactly one
answer on the attacker's connection, in order; nothing the attacker sent reached the backend
with ambiguous framing (CL and TE together, a coding other than chunked, an underscore in a
name), and nothing of the attacker's (trailers, smuggled requests) reached the victim's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field

import h11

__all__ = [
    "Recorder",
    "Response",
    "ScriptedBackend",
    "exchange_raw",
    "parse_responses",
    "start_recorder",
    "start_scripted",
]

VICTIM = b"GET /victim HTTP/1.1\r\nHost: victim.example\r\nX-Victim: 1\r\n\r\n"


@dataclass
class Seen:
    """One request as the backend's h11 parser read it (complete: head, body, end)."""

    conn: int
    seq: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name.lower()]


@dataclass
class Recorder:
    """The recording backend: every complete request, and every framing error h11 saw."""

    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    truncated: int = 0
    server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_id = self.connections
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        seq = itertools.count(1)
        current: Seen | None = None
        eof = False
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    eof = not data
                    parser.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    current = Seen(
                        conn_id,
                        next(seq),
                        bytes(event.method),
                        bytes(event.target),
                        [(bytes(n), bytes(v)) for n, v in event.headers],
                    )
                elif isinstance(event, h11.Data) and current is not None:
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    self.requests.append(current)
                    body = json.dumps(
                        {
                            "target": current.target.decode("latin-1"),
                            "size": len(current.body),
                            "seen": f"{conn_id}/{current.seq}",
                        }
                    ).encode()
                    out = parser.send(
                        h11.Response(
                            status_code=200,
                            headers=[
                                ("Content-Length", str(len(body))),
                                ("X-Seen", f"{conn_id}/{current.seq}"),
                            ],
                        )
                    )
                    out = (out or b"") + (parser.send(h11.Data(data=body)) or b"")
                    out += parser.send(h11.EndOfMessage()) or b""
                    writer.write(out)
                    await writer.drain()
                    current = None
                    if parser.our_state is h11.MUST_CLOSE:
                        break
                    parser.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as err:
            if eof and current is not None:
                self.truncated += 1  # the proxy gave up on a request mid-body: not framing
            else:
                self.errors.append(f"backend connection {conn_id}: {err}")
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def start_recorder() -> Recorder:
    recorder = Recorder()
    recorder.server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.port = recorder.server.sockets[0].getsockname()[1]
    return recorder


@dataclass
class ScriptedBackend:
    """Answers the first request (other than health probes) with ``answer``, raw bytes, and
    every later request with a plain 200 naming its connection (``conn-<n>``), so a test can
    tell whether the proxy reused the connection that carried the scripted answer."""

    answer: bytes
    close_after: bool = False
    port: int = 0
    connections: int = 0
    scripted_conn: int | None = None
    server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_id = self.connections
        parser = h11.Connection(h11.SERVER)
        target = b""
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    parser.receive_data(data)
                    if not data:
                        break
                    continue
                if isinstance(event, h11.Request):
                    target = bytes(event.target)
                elif isinstance(event, h11.EndOfMessage):
                    if target != b"/health" and self.scripted_conn is None:
                        self.scripted_conn = conn_id
                        writer.write(self.answer)
                        await writer.drain()
                        if self.close_after:
                            break
                    else:
                        body = f"conn-{conn_id}".encode()
                        writer.write(
                            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
                        )
                        await writer.drain()
                    parser = h11.Connection(h11.SERVER)  # our raw writes bypass h11's state
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except (h11.RemoteProtocolError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def start_scripted(answer: bytes, *, close_after: bool = False) -> ScriptedBackend:
    backend = ScriptedBackend(answer, close_after=close_after)
    backend.server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    backend.port = backend.server.sockets[0].getsockname()[1]
    return backend


# -- the client side ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


class FramingError(AssertionError):
    """The proxy's answer itself is not well-framed HTTP/1.1."""


def parse_responses(data: bytes, *, head_request: bool = False) -> tuple[list[Response], bytes]:
    """Strict reader of what the proxy sent: final responses (1xx skipped) and leftover bytes.

    Raises FramingError for anything a careful client could read two ways.
    """
    responses: list[Response] = []
    pos = 0
    while pos < len(data):
        start = pos
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return responses, data[pos:]
        lines = data[pos:end].split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or status_line[0] != b"HTTP/1.1" or not status_line[1].isdigit():
            raise FramingError(f"bad status line {lines[0]!r}")
        status = int(status_line[1])
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b"\n" in line or b"\r" in line:
                raise FramingError(f"bad header line {line!r}")
            headers.append((name, value.strip(b" \t")))
        pos = end + 4
        if 100 <= status < 200:
            continue
        names = [n.lower() for n, _ in headers]
        lengths = [v for n, v in headers if n.lower() == b"content-length"]
        codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
        if lengths and codings:
            raise FramingError("response with Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or len(codings) > 1:
            raise FramingError(f"repeated framing headers {names}")
        body = b""
        if (head_request and not responses) or status in (204, 304):
            pass
        elif codings:
            if codings[0].lower() != b"chunked":
                raise FramingError(f"transfer coding {codings[0]!r}")
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    return responses, data[start:]
                size_text = data[pos:line_end].split(b";")[0]
                try:
                    size = int(size_text, 16)
                except ValueError as err:
                    raise FramingError(f"bad chunk size {size_text!r}") from err
                pos = line_end + 2
                if len(data) < pos + size + 2:
                    return responses, data[start:]
                if size == 0:
                    if data[pos : pos + 2] != b"\r\n":
                        raise FramingError("trailers or a missing CRLF after the last chunk")
                    pos += 2
                    break
                body += data[pos : pos + size]
                if data[pos + size : pos + size + 2] != b"\r\n":
                    raise FramingError("chunk data not followed by CRLF")
                pos += size + 2
        elif lengths:
            size = int(lengths[0])
            body = data[pos : pos + size]
            if len(body) < size:
                return responses, data[start:]
            pos += size
        else:
            connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
            if b"close" not in connection:
                raise FramingError("response without length on a kept-open connection")
            body = data[pos:]
            pos = len(data)
        responses.append(Response(status, headers, body))
    return responses, b""


async def exchange_raw(
    port: int, payload: bytes, *, want: int | None = None, idle: float = 0.3, total: float = 5.0
) -> tuple[bytes, bool]:
    """Send ``payload`` on a fresh connection; read until the proxy closes, ``want`` final
    answers have arrived (plus ``idle`` seconds of quiet), or ``total`` seconds. Returns the
    bytes and whether the proxy closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = b""
    closed = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    try:
        while loop.time() < deadline:
            enough = False
            if want is not None:
                with contextlib.suppress(FramingError):
                    enough = len(parse_responses(data)[0]) >= want
            wait = idle if enough or want is None else deadline - loop.time()
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.01, wait))
            except TimeoutError:
                if enough or want is None:
                    break
                continue
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return data, closed
