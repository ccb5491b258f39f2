"""The numbers of an HTTP/2 connection, and the ``h2`` state machine configured with them.

What one client can make the proxy hold or do: streams at once, request body per stream and
per connection (the flow-control windows handed out), answer bytes waiting for the peer's
window before the backend is paused, header list size (HPACK bombs). The error codes are
RFC 9113's (section 7).
"""

from __future__ import annotations

from typing import Final

import h2.config
import h2.connection
import h2.settings

__all__ = [
    "CANCEL",
    "CONNECTION_WINDOW",
    "INTERNAL_ERROR",
    "MAX_CONCURRENT_STREAMS",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "STREAM_HIGH",
    "STREAM_LOW",
    "STREAM_WINDOW",
    "TICK",
    "server_h2",
]

MAX_CONCURRENT_STREAMS: Final = 100
STREAM_WINDOW: Final = 65535  # SETTINGS_INITIAL_WINDOW_SIZE: request body held per stream
CONNECTION_WINDOW: Final = 1024 * 1024  # request body held per connection, all streams
STREAM_HIGH: Final = 64 * 1024  # answer bytes waiting for the peer's window: pause the backend
STREAM_LOW: Final = 16 * 1024  # ... and resume it under this
TICK: Final = 1.0  # seconds between checks of the streams' timeouts (while there are streams)

# Error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0x0, 0x1, 0x2
REFUSED_STREAM, CANCEL = 0x7, 0x8


def server_h2(max_header_bytes: int) -> h2.connection.H2Connection:
    """The server side of one connection: the settings above, no push, header lists capped
    at ``max_header_bytes`` (announced) and decoding stopped at twice that (enforced)."""
    config = h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        # Every rule of h2's validation is request_head's too (tests/proxy/http2's suite
        # runs without h2's), which resets the one stream where h2 ends the connection,
        # for about 15% less CPU per request (docs/benchmarks.md).
        validate_inbound_headers=False,
        normalize_inbound_headers=False,  # cookies are joined by request_head
        validate_outbound_headers=False,  # answers are built clean here
        normalize_outbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.local_settings = h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        },
    )
    # HPACK bombs: decoding stops (and the connection ends) past twice the limit, from the
    # first header block on (the setting itself binds only once the client acknowledged it).
    conn.decoder.max_header_list_size = 2 * max_header_bytes
    return conn
