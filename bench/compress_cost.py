"""What compression costs and saves (issue 23): CPU seconds per MiB of answer and the size
ratio, per coding, for the encoder of proxy/compress.py, on three bodies: an HTML page (the
project's own docs as HTML), a JSON API answer, and minified-looking JavaScript.

Two ways of streaming, as the exchange would: 16 KiB chunks with a flush only at the end
(a body the backend sends at once), and a flush after every chunk (a slow or streaming backend:
the worst case for the ratio).

    .venv/bin/python bench/compress_cost.py [--mib 32]

Figures go to docs/benchmarks.md ("Compression"). Caddy's `encode` on the same page is the
comparison the issue asks for: not measured yet (see the doc).
"""

from __future__ import annotations

import argparse
import html
import json
import random
import time
from pathlib import Path

from lbrec.proxy.compress import Encoder, available

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 16384


def page() -> bytes:
    """The docs as one HTML page (~ a documentation site's page: prose, code, tables)."""
    parts = ["<!doctype html><html><head><title>lbrec</title></head><body>"]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for line in doc.read_text(encoding="utf-8").splitlines():
            parts.append(f"<p class='line'>{html.escape(line)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts).encode()


def api_json() -> bytes:
    rng = random.Random(23)
    items = [
        {
            "id": i,
            "name": f"product-{rng.randrange(10**6)}",
            "price": round(rng.uniform(1, 500), 2),
            "tags": rng.sample(["red", "blue", "sale", "new", "eco", "xl", "s"], 3),
            "stock": rng.randrange(100),
            "updated": f"2025-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T10:00:00Z",
        }
        for i in range(4000)
    ]
    return json.dumps({"items": items}).encode()


def script() -> bytes:
    rng = random.Random(7)
    words = ["function", "return", "var", "const", "this", "if", "else", "for", "null"]
    out = []
    for i in range(30000):
        out.append(f"{rng.choice(words)} a{i % 97}=b{rng.randrange(1000)}({i});")
    return "".join(out).encode()


def measure(coding: str, body: bytes, mib: int, flush_each: bool) -> tuple[float, float]:
    """(CPU ms per MiB, compressed/original) over at least ``mib`` MiB of input."""
    rounds = max(1, (mib * 1024 * 1024) // len(body))
    out_size = 0
    started = time.process_time()
    for _ in range(rounds):
        encoder = Encoder(coding)
        for start in range(0, len(body), CHUNK):
            out_size += len(encoder.feed(body[start : start + CHUNK]))
            if flush_each:
                out_size += len(encoder.flush())
        out_size += len(encoder.finish())
    cpu = time.process_time() - started
    total = rounds * len(body)
    return cpu * 1000 / (total / 1024 / 1024), out_size / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=32, help="input per measurement")
    args = parser.parse_args()
    bodies = {"html": page(), "json": api_json(), "js": script()}
    print("| body | size | coding | CPU ms/MiB | ratio | CPU ms/MiB, flush/16 KiB | ratio |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, body in bodies.items():
        for coding in ("gzip", "br", "zstd"):
            if not available(coding):
                print(f"| {name} | | {coding} | not installed | | | |")
                continue
            cost, ratio = measure(coding, body, args.mib, flush_each=False)
            cost_f, ratio_f = measure(coding, body, args.mib, flush_each=True)
            print(
                f"| {name} | {len(body) // 1024} KiB | {coding} | {cost:.1f} | {ratio:.3f} "
                f"| {cost_f:.1f} | {ratio_f:.3f} |"
            )


if __name__ == "__main__":
    main()
