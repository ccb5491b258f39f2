"""Pages of lbrec's own answers (issue 23): ``error_pages`` (502, 503, 504 and the other
statuses the proxy answers itself) and the maintenance page.

A page is a small file read once per reload (at most :data:`MAX_PAGE` bytes, a regular file),
its content type taken from its extension; choosing one for an answer is a dictionary lookup
(:meth:`ErrorPages.page`). The reconciler checks every named page when it loads the
desired-state file (reconciler/adapters/workspace.py), so a missing page is refused there, with
the field named; at a reload the proxy keeps serving, with the built-in text for a page it can
no longer read (:func:`load_error_pages` returns the problems for the log).
"""

from __future__ import annotations

import html
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONTENT_TYPES",
    "MAX_PAGE",
    "ErrorPages",
    "Page",
    "PageError",
    "load_error_pages",
    "load_page",
]

MAX_PAGE = 256 * 1024
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".htm": b"text/html; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
    ".json": b"application/json",
    ".xml": b"application/xml",
}
MESSAGE = b"{{message}}"  # where a maintenance page shows `lbrec pause --message`


class PageError(ValueError):
    """A page that cannot be served: the message names the file."""


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    content_type: bytes

    def with_message(self, message: str | None) -> bytes:
        """The body, with ``{{message}}`` replaced by ``message`` (HTML-escaped in HTML)."""
        if MESSAGE not in self.body:
            return self.body
        text = message or ""
        if self.content_type.startswith(b"text/html"):
            text = html.escape(text)
        return self.body.replace(MESSAGE, text.encode("utf-8"))


def load_page(path: Path) -> Page:
    """Read one page; PageError names the file and what is wrong."""
    kind = CONTENT_TYPES.get(path.suffix.lower())
    if kind is None:
        raise PageError(
            f"{path}: the extension {path.suffix or '(none)'!r} gives no content type; use "
            f"one of {', '.join(CONTENT_TYPES)}"
        )
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # never open a FIFO or a device
            raise PageError(f"{path}: not a regular file")
        with path.open("rb") as handle:
            body = handle.read(MAX_PAGE + 1)
    except FileNotFoundError as err:
        raise PageError(f"{path}: no such file") from err
    except OSError as err:
        raise PageError(f"{path}: cannot read: {err.strerror or err}") from err
    if len(body) > MAX_PAGE:
        raise PageError(f"{path}: over {MAX_PAGE // 1024} KiB: a page must be small")
    return Page(body, kind)


@dataclass(frozen=True, slots=True)
class ErrorPages:
    """A route's pages by status, and its maintenance page."""

    by_status: Mapping[int, Page]
    maintenance: Page | None = None

    def page(self, status: int) -> Page | None:
        """PURE. The page for one of lbrec's own answers; None: the built-in text."""
        return self.by_status.get(status)

    def maintenance_page(self) -> Page | None:
        """The maintenance page, else the 503 page."""
        return self.maintenance if self.maintenance is not None else self.by_status.get(503)


NO_PAGES = ErrorPages({})


def load_error_pages(
    error_pages: Mapping[int, str] | None, maintenance: str | None, base: Path
) -> tuple[ErrorPages, list[str]]:
    """A route's pages, paths relative to ``base`` (backends.json's folder), and the problems
    met (one line each; such a page is left out: the built-in text serves instead)."""
    problems: list[str] = []
    loaded: dict[int, Page] = {}
    cache: dict[str, Page] = {}

    def one(name: str) -> Page | None:
        if name not in cache:
            try:
                cache[name] = load_page(base / name)
            except PageError as err:
                problems.append(str(err))
                return None
        return cache[name]

    for status, name in sorted((error_pages or {}).items()):
        page = one(name)
        if page is not None:
            loaded[status] = page
    main = one(maintenance) if maintenance else None
    if not loaded and main is None:
        return NO_PAGES, problems
    return ErrorPages(loaded, main), problems
