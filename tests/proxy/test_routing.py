"""The route table (proxy/routing.py): host and path matching, most specific first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbrec.proxy.config import ConfigError, RouteEntry, parse_config
from lbrec.proxy.routing import Router, normalize_path, split_host
from tests.support.examples import examples


def _router(*routes: tuple[str | None, str, str]) -> Router:
    return Router([RouteEntry(host=h, path=p, backends=(b,)) for h, p, b in routes])


SITES = _router(
    ("shop.example.com", "/", "web"),
    ("shop.example.com", "/api/", "api"),
    ("shop.example.com", "/api/v2", "api2"),
    ("*.example.com", "/", "wild"),
    ("shop.example.com:8443", "/", "alt"),
    (None, "/static", "cdn"),
)


def _to(router: Router, host: str, target: str) -> str | None:
    match = router.match(host.encode(), target.encode())
    return None if match is None else match.route.backends[0]


@pytest.mark.parametrize(
    ("host", "target", "backend"),
    [
        ("shop.example.com", "/", "web"),
        ("Shop.Example.COM.", "/cart?id=1", "web"),
        ("shop.example.com:80", "/x", "web"),
        ("shop.example.com", "/api", "api"),
        ("shop.example.com", "/api/", "api"),
        ("shop.example.com", "/api/orders?x=1", "api"),
        ("shop.example.com", "/apix", "web"),  # segment-wise, never a string prefix
        ("shop.example.com", "/api/v2/items", "api2"),  # longest prefix first
        ("shop.example.com", "/api/v20", "api"),
        ("shop.example.com:8443", "/", "alt"),  # host with its port before host alone
        ("admin.example.com", "/", "wild"),
        ("a.b.example.com", "/", None),  # a wildcard covers exactly one label
        ("example.com", "/", None),
        ("other.org", "/static/app.js", "cdn"),
        ("shop.example.com", "/static/x", "web"),  # a host's own routes before the catch-all
        ("other.org", "/", None),
        ("[::1]:8080", "/static", "cdn"),
    ],
)
def test_the_most_specific_route_wins(host: str, target: str, backend: str | None) -> None:
    assert _to(SITES, host, target) == backend


@pytest.mark.parametrize(
    "target",
    [
        "/admin",
        "/admin/",
        "/%61dmin/x",
        "/%61%64%6D%69%6e",
        "/x/../admin",
        "/./admin",
        "/static/../admin/users",
        "http://shop.example.com/admin",
    ],
)
def test_no_spelling_of_a_path_goes_around_its_route(target: str) -> None:
    router = _router(("shop.example.com", "/", "web"), ("shop.example.com", "/admin", "locked"))
    assert _to(router, "shop.example.com", target) == "locked"


def test_encoded_slashes_and_reserved_characters_stay_encoded() -> None:
    assert normalize_path(b"/a%2Fb") == b"/a%2Fb"
    assert normalize_path(b"/a%3Fb?c") == b"/a%3Fb"
    assert normalize_path(b"*") == b"/*"
    assert normalize_path(b"/../..") == b"/"


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "%61", "%2e", ""]), max_size=8))
@settings(max_examples=examples(300))
def test_normalize_path_is_idempotent_and_absolute(parts: list[str]) -> None:
    once = normalize_path(("/" + "/".join(parts)).encode())
    assert once.startswith(b"/")
    assert normalize_path(once) == once
    segments = once.split(b"/")
    assert b"." not in segments and b".." not in segments


def test_strip_prefix() -> None:
    router = Router(
        [
            RouteEntry(host="h", path="/api/", backends=("api",), strip_prefix=True),
            RouteEntry(host="h", backends=("web",), strip_prefix=True),
        ]
    )
    for target, forwarded in [
        (b"/api/orders?x=1", b"/orders?x=1"),
        (b"/api", b"/"),
        (b"/api?x", b"/?x"),
        (b"/other", b"/other"),
    ]:
        match = router.match(b"h", target)
        assert match is not None and match.forwarded_target(target) == forwarded


def test_split_host() -> None:
    assert split_host(b"Shop.Example.com.:8443") == ("shop.example.com", "8443")
    assert split_host(b"[::1]:80") == ("[::1]", "80")
    assert split_host(b"localhost") == ("localhost", None)


def test_two_routes_for_one_host_and_path_are_refused() -> None:
    text = (
        '{"routes": [{"host": "h.example", "path": "/api/", "backends": ["a"]},'
        ' {"host": "h.example", "path": "/api", "backends": ["b"]}]}'
    )
    with pytest.raises(ConfigError, match=r"routes\[1\]: a second route for h.example/api"):
        parse_config(text)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("host", "Shop.example.com", "lower case"),
        ("host", "shop..example.com", "expected a host name"),
        ("host", "*.*.example.com", "expected a host name"),
        ("host", "shop.example.com:0", "the port must be 1-65535"),
        ("path", "api/", "absolute path prefix"),
        ("path", "/a/../b", "no '.' or '..' segments"),
        ("path", "/a b", "absolute path prefix"),
    ],
)
def test_a_bad_route_names_the_field(field: str, value: str, message: str) -> None:
    route = {"host": "h.example", "path": "/", "backends": ["a"], field: value}
    import json

    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps({"routes": [route]}), source="backends.json")
    assert f"backends.json: routes[0].{field}: " in str(caught.value)
    assert message in str(caught.value)
