"""The front door's decision (proxy/front.py): routes, redirects to HTTPS, ACME challenges,
421 for a connection made for another name."""

from __future__ import annotations

import pytest

from lbrec.proxy.config import RouteEntry, TlsSettings
from lbrec.proxy.front import Answer, Front, Pass
from lbrec.proxy.routing import Router

ROUTES = Router(
    [
        RouteEntry(host="shop.example.com", backends=("web",)),
        RouteEntry(host="shop.example.com", path="/api/", backends=("api",)),
        RouteEntry(host="admin.example.com", backends=("web",), tls="required"),
        RouteEntry(host="plain.example.com", backends=("web",), tls="off"),
    ]
)
TLS = TlsSettings(listen="0.0.0.0:443", hsts=15552000, acme_dir="../.lbrec/acme")
CHALLENGES = {"tok_EN-1": b"tok_EN-1.thumbprint"}


def _front(routes: Router = ROUTES, tls: TlsSettings | None = TLS, **kw: object) -> Front:
    return Front(routes, tls, challenge=CHALLENGES.get, **kw)  # type: ignore[arg-type]


def _plain(front: Front, host: str, target: str, method: str = "GET") -> object:
    return front.decide(
        secure=False,
        sni=None,
        authority=host.encode(),
        method=method.encode(),
        target=target.encode(),
    )


def _secure(front: Front, sni: str | None, host: str, target: str = "/") -> object:
    return front.decide(
        secure=True, sni=sni, authority=host.encode(), method=b"GET", target=target.encode()
    )


def test_no_routes_and_no_tls_is_the_whole_pool() -> None:
    front = Front(Router([]), None)
    assert front.trivial
    assert _plain(front, "anything", "/x") == Pass(None)


@pytest.mark.parametrize(
    ("method", "status"), [("GET", 301), ("HEAD", 301), ("POST", 308), ("DELETE", 308)]
)
def test_plain_http_is_redirected_to_https(method: str, status: int) -> None:
    decision = _plain(_front(), "Shop.Example.com:80", "/cart?x=1", method)
    assert decision == Answer(
        status, "redirect to https", location=b"https://shop.example.com/cart?x=1"
    )


def test_the_redirect_keeps_a_non_default_https_port() -> None:
    tls = TlsSettings(listen="127.0.0.1:8443")
    decision = _plain(_front(tls=tls), "shop.example.com:8080", "http://shop.example.com/a?b")
    assert (
        isinstance(decision, Answer) and decision.location == b"https://shop.example.com:8443/a?b"
    )


def test_a_plain_only_route_and_no_redirect() -> None:
    assert isinstance(_plain(_front(), "plain.example.com", "/"), Pass)
    no_redirect = TlsSettings(listen="0.0.0.0:443", redirect_http=False)
    front = _front(tls=no_redirect)
    assert isinstance(_plain(front, "shop.example.com", "/"), Pass)
    assert _plain(front, "admin.example.com", "/") == Answer(
        421, "this site is served over HTTPS only"
    )


def test_an_unknown_host_gets_404_on_plain_http() -> None:
    assert _plain(_front(), "other.org", "/") == Answer(404, "no route for this host and path")


def test_acme_http_01_challenges_are_answered_before_any_redirect() -> None:
    front = _front()
    assert _plain(front, "new.example.com", "/.well-known/acme-challenge/tok_EN-1") == Answer(
        200, "acme challenge", body=b"tok_EN-1.thumbprint"
    )
    for token in ("missing", "../../etc/passwd", "a%2Fb", ""):
        decision = _plain(front, "new.example.com", "/.well-known/acme-challenge/" + token)
        assert decision == Answer(404, "no such ACME challenge"), token
    # without ACME the path is an ordinary one
    assert isinstance(
        _plain(_front(tls=None), "shop.example.com", "/.well-known/acme-challenge/x"), Pass
    )


def test_over_tls_the_route_and_hsts() -> None:
    decision = _secure(_front(), "shop.example.com", "shop.example.com", "/api/orders")
    assert isinstance(decision, Pass)
    assert decision.route is not None and decision.route.backends == ("api",)
    assert decision.hsts == b"Strict-Transport-Security: max-age=15552000\r\n"


def test_a_host_that_is_not_the_sni_name_is_421_never_routed_by_host() -> None:
    decision = _secure(_front(), "shop.example.com", "admin.example.com")
    assert decision == Answer(421, "this connection is for shop.example.com, not admin.example.com")
    assert isinstance(_secure(_front(), "SHOP.example.com.", "shop.example.com:443"), Pass)


def test_over_tls_an_unknown_site_is_421_and_an_unknown_path_404() -> None:
    routes = Router([RouteEntry(host="shop.example.com", path="/api/", backends=("api",))])
    front = _front(routes)
    assert _secure(front, "other.example.com", "other.example.com") == Answer(
        421, "no site other.example.com on this listener"
    )
    assert _secure(front, "shop.example.com", "shop.example.com", "/x") == Answer(
        404, "no route for this host and path"
    )
    assert _secure(_front(), "plain.example.com", "plain.example.com") == Answer(
        421, "this site is served over plain HTTP only"
    )


def test_without_routes_tls_serves_the_whole_pool_and_redirects_covered_hosts() -> None:
    front = Front(Router([]), TLS, has_certificate=lambda host: host == "a.example")
    assert _secure(front, "a.example", "a.example") == Pass(
        None, b"Strict-Transport-Security: max-age=15552000\r\n"
    )
    assert isinstance(_plain(front, "a.example", "/"), Answer)
    assert _plain(front, "b.example", "/") == Pass(None)
