"""PURE. The frames of one HTTP/2 connection, counted as they arrive, before ``h2`` parses them.

``h2`` buffers a frame until it is whole before it looks at its length (a frame header that
announces 16 MiB is 16 MiB of memory), keeps up to 64 CONTINUATION frames of one header block
(about 1 MiB), and answers every PING and SETTINGS without counting them. :class:`FrameGuard`
reads each frame header (9 bytes) in the byte stream and ends the connection, before ``h2``
spends anything on the frame, when:

* a frame is longer than SETTINGS_MAX_FRAME_SIZE (FRAME_SIZE_ERROR, at its header);
* a header block (HEADERS and its CONTINUATION frames) is longer than ``max_header_block``
  bytes or has more than :data:`MAX_CONTINUATIONS` CONTINUATION frames (the 2024
  CONTINUATION flood; ENHANCE_YOUR_CALM);
* a kind of frame that does no work for a request comes faster than its budget within one
  :data:`WINDOW` (ENHANCE_YOUR_CALM): SETTINGS, PING, RST_STREAM (Rapid Reset, CVE-2023-44487),
  PRIORITY and PRIORITY_UPDATE, WINDOW_UPDATE beyond what the DATA frames sent call for, frames
  of unknown type, and (counted by the connection, which sees them decoded) empty DATA frames.

The cost of a flood is then at most one budget of frames per connection, each a few Python
operations here and never a backend request (tests/proxy/http2/test_floods.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "BUDGETS",
    "MAX_CONTINUATIONS",
    "PREFACE",
    "WINDOW",
    "FrameGuard",
    "Verdict",
]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6, RFC 9218 7.1)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
PRIORITY_UPDATE = 0x10
_END_STREAM = 0x1
_END_HEADERS = 0x4

# Error codes (RFC 9113 7)
PROTOCOL_ERROR = 0x1
FRAME_SIZE_ERROR = 0x6
ENHANCE_YOUR_CALM = 0xB

WINDOW: Final = 10.0  # seconds: every budget below is per connection and per window
MAX_CONTINUATIONS: Final = 64  # HEADERS and its CONTINUATIONs: h2's own backlog, counted first


@dataclass(frozen=True, slots=True)
class Budgets:
    """Frames of each kind one connection may send within one :data:`WINDOW`."""

    settings: int = 50  # a client sends one, or a few
    ping: int = 100  # keep-alive pings: one every few seconds
    rst_stream: int = 200  # cancelled requests: Rapid Reset is thousands a second
    priority: int = 1000  # plus 2 per stream opened: some browsers send them per request
    window_update: int = 1000  # plus 2 per DATA frame sent
    unknown: int = 200  # extension frames of unknown type, and GOAWAY
    empty_data: int = 100  # DATA frames without payload nor END_STREAM


BUDGETS: Final = Budgets()


@dataclass(frozen=True, slots=True)
class Verdict:
    """End the connection: GOAWAY with ``error_code``, then close."""

    error_code: int
    reason: str
    flood: bool  # a flood (counted as such), rather than a frame that breaks the protocol


class FrameGuard:
    """Frame headers of one connection's incoming byte stream, and the budgets."""

    __slots__ = (
        "_block_bytes",
        "_block_frames",
        "_counts",
        "_header",
        "_in_block",
        "_preface",
        "_since",
        "_skip",
        "budgets",
        "data_frames_sent",
        "max_frame_size",
        "max_header_block",
        "streams_opened",
    )

    def __init__(
        self,
        *,
        max_frame_size: int = 16384,
        max_header_block: int = 131072,
        budgets: Budgets = BUDGETS,
        now: float = 0.0,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.max_header_block = max_header_block
        self.budgets = budgets
        self._preface = len(PREFACE)  # bytes of the client preface still to skip
        self._header = b""  # a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to come
        self._in_block = False  # HEADERS without END_HEADERS seen: CONTINUATION must follow
        self._block_bytes = 0
        self._block_frames = 0
        self._since = now
        # settings, ping, rst_stream, priority, window_update, unknown, empty_data
        self._counts = [0, 0, 0, 0, 0, 0, 0]
        self.data_frames_sent = 0  # by this side, in the window (the connection counts them)
        self.streams_opened = 0

    @property
    def in_header_block(self) -> bool:
        """A HEADERS frame without END_HEADERS was read, and its block is not complete."""
        return self._in_block

    def scan(self, data: bytes, now: float) -> Verdict | None:
        """Read the frame headers in ``data`` (the next bytes of the connection)."""
        if now - self._since >= WINDOW:
            self._since = now
            self._counts = [0, 0, 0, 0, 0, 0, 0]
            self.data_frames_sent = 0
            self.streams_opened = 0
        at = 0
        end = len(data)
        if self._preface:  # h2 checks the preface itself
            step = min(self._preface, end)
            self._preface -= step
            at = step
        while at < end:
            if self._skip:
                step = min(self._skip, end - at)
                self._skip -= step
                at += step
                continue
            need = 9 - len(self._header)
            header = self._header + data[at : at + need]
            at += need
            if len(header) < 9:
                self._header = header
                return None
            self._header = b""
            verdict = self._frame(header)
            if verdict is not None:
                return verdict
        return None

    def _frame(self, header: bytes) -> Verdict | None:  # noqa: PLR0912
        length = int.from_bytes(header[:3], "big")
        kind = header[3]
        flags = header[4]
        if length > self.max_frame_size:
            return Verdict(FRAME_SIZE_ERROR, f"frame of {length} bytes", flood=False)
        self._skip = length
        if self._in_block:
            if kind != CONTINUATION:
                return None  # h2 refuses it (PROTOCOL_ERROR)
            self._block_frames += 1
            self._block_bytes += length
            if self._block_frames >= MAX_CONTINUATIONS:  # h2 keeps HEADERS + 63
                return Verdict(ENHANCE_YOUR_CALM, "CONTINUATION flood", flood=True)
            if self._block_bytes > self.max_header_block:
                return Verdict(ENHANCE_YOUR_CALM, "header block too large", flood=True)
            if flags & _END_HEADERS:
                self._in_block = False
            return None
        counts = self._counts
        budgets = self.budgets
        if kind == DATA:
            if length == 0 and not flags & _END_STREAM:
                return self.count_empty_data()
            return None
        if kind == HEADERS:
            self.streams_opened += 1
            if not flags & _END_HEADERS:
                self._in_block = True
                self._block_frames = 0
                self._block_bytes = length
                if length > self.max_header_block:
                    return Verdict(ENHANCE_YOUR_CALM, "header block too large", flood=True)
            return None
        if kind == SETTINGS:  # acknowledgements too: only as many as we sent are due
            counts[0] += 1
            if counts[0] > budgets.settings:
                return Verdict(ENHANCE_YOUR_CALM, "SETTINGS flood", flood=True)
        elif kind == PING:
            counts[1] += 1
            if counts[1] > budgets.ping:
                return Verdict(ENHANCE_YOUR_CALM, "PING flood", flood=True)
        elif kind == RST_STREAM:
            counts[2] += 1
            if counts[2] > budgets.rst_stream:
                return Verdict(ENHANCE_YOUR_CALM, "RST_STREAM flood (Rapid Reset)", flood=True)
        elif kind in (PRIORITY, PRIORITY_UPDATE):
            counts[3] += 1
            if counts[3] > budgets.priority + 2 * self.streams_opened:
                return Verdict(ENHANCE_YOUR_CALM, "PRIORITY flood", flood=True)
        elif kind == WINDOW_UPDATE:
            counts[4] += 1
            if counts[4] > budgets.window_update + 2 * self.data_frames_sent:
                return Verdict(ENHANCE_YOUR_CALM, "WINDOW_UPDATE flood", flood=True)
        elif kind == CONTINUATION:
            return None  # outside a header block: h2 refuses it (PROTOCOL_ERROR)
        elif kind != PUSH_PROMISE:  # GOAWAY and unknown types (h2 refuses PUSH_PROMISE)
            counts[5] += 1
            if counts[5] > budgets.unknown:
                return Verdict(ENHANCE_YOUR_CALM, "flood of frames of unknown type", flood=True)
        return None

    def count_empty_data(self) -> Verdict | None:
        """A DATA frame without payload nor END_STREAM (also one of padding only, which the
        connection sees decoded)."""
        self._counts[6] += 1
        if self._counts[6] > self.budgets.empty_data:
            return Verdict(ENHANCE_YOUR_CALM, "empty DATA flood", flood=True)
        return None
