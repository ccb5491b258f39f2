"""proxy/pages.py: pages of lbrec's own answers, loaded with a size cap and a content type."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lbrec.proxy.pages import MAX_PAGE, ErrorPages, Page, PageError, load_error_pages, load_page


def test_content_type_by_extension(tmp_path: Path) -> None:
    for name, kind in [
        ("a.html", b"text/html; charset=utf-8"),
        ("a.HTM", b"text/html; charset=utf-8"),
        ("a.txt", b"text/plain; charset=utf-8"),
        ("a.json", b"application/json"),
    ]:
        (tmp_path / name).write_bytes(b"x")
        assert load_page(tmp_path / name) == Page(b"x", kind)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(b"x" * (MAX_PAGE + 1)), "over 256 KiB"),
        (os.mkfifo, "not a regular file"),
    ],
)
def test_pages_that_cannot_be_served(tmp_path: Path, make, named: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "502.html"
    make(path)
    with pytest.raises(PageError, match=named) as caught:
        load_page(path)
    assert str(path) in str(caught.value)


def test_an_unknown_extension_is_refused(tmp_path: Path) -> None:
    (tmp_path / "page.php").write_text("x")
    with pytest.raises(PageError, match=r"'.php' gives no content type"):
        load_page(tmp_path / "page.php")


def test_choosing_by_status(tmp_path: Path) -> None:
    (tmp_path / "502.html").write_text("<h1>bad gateway</h1>")
    (tmp_path / "down.html").write_text("<p>{{message}}</p>")
    pages, problems = load_error_pages(
        {502: "502.html", 504: "missing.html"}, "down.html", tmp_path
    )
    assert problems == [f"{tmp_path / 'missing.html'}: no such file"]
    page = pages.page(502)
    assert page is not None and page.body == b"<h1>bad gateway</h1>"
    assert pages.page(504) is None and pages.page(503) is None  # the built-in text
    main = pages.maintenance_page()
    assert main is not None and main.with_message("<b>db</b> migration") == (
        b"<p>&lt;b&gt;db&lt;/b&gt; migration</p>"
    )


def test_the_503_page_serves_maintenance_without_its_own(tmp_path: Path) -> None:
    (tmp_path / "503.txt").write_text("later: {{message}}")
    pages, _ = load_error_pages({503: "503.txt"}, None, tmp_path)
    page = pages.maintenance_page()
    assert page is not None and page.with_message("<b>") == b"later: <b>"  # text: as is
    assert load_error_pages(None, None, tmp_path) == (ErrorPages({}), [])
