"""HTTP/2 on the TLS listener (ALPN ``h2``), with the ``h2`` library; HTTP/1.1 to the backends.

* :mod:`.request`: PURE. An HTTP/2 request's decoded header list -> the
  :class:`~proxy.framing.RequestHead` the exchange forwards, or why it is refused (the
  downgrade-smuggling rules: docs/proxy.md, "HTTP/2").
* :mod:`.guard`: PURE. The frames as they arrive, counted before ``h2`` parses them: oversized
  frames, CONTINUATION floods and the control-frame floods end the connection with a bounded
  cost (GOAWAY ENHANCE_YOUR_CALM).
* :mod:`.limits`: the connection's numbers (streams, windows, back-pressure marks), RFC 9113's
  error codes and the ``h2`` state machine configured with them.
* :mod:`.connection`: the asyncio Protocol of one HTTP/2 connection (bytes in and out, the
  guard, GOAWAY and the end); :mod:`.events`: what each ``h2`` event does to it.
* :mod:`.stream`: one request stream, the :class:`~proxy.contracts.Downstream` of one
  :class:`~proxy.exchange.Exchange` (its body's window, its answer within the peer's);
  :mod:`.heads`: PURE, an answer's head as an HTTP/2 header list.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["REFUSALS"]

# What HTTP/2 refused, by reason (floods, protocol errors by h2's exception type, malformed
# requests, answered statuses): a bounded set of keys, never a field of the request. Per
# process; /metrics shows it as lbrec_proxy_http2_refusals (proxy/metrics.py).
REFUSALS: Counter[str] = Counter()
