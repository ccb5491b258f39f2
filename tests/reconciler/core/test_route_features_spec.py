"""Issue 23's interface: the front door's features per route and at the top level, in
desired-state.yaml and, as render_pool writes them, in backends.json."""

from __future__ import annotations

import pytest

from lbrec.proxy.config import BackendsConfig, RouteFeatures, parse_config, parse_size
from lbrec.reconciler.core.errors import SpecError
from lbrec.reconciler.core.render import affinity_key, render_pool
from lbrec.reconciler.core.spec import parse_spec

# The issue's sample, as written there (with a backend so that the routes name one).
SAMPLE = """\
routes:
  - host: shop.example.com
    backends: [web]
    compress: true                 # gzip, br, zstd by Accept-Encoding; text types
    sticky: cookie:lb-web          # every request of a client to the same instance
    rate_limit: {requests: 100, per: 1s, burst: 200, by: client_ip}   # 429 + Retry-After
    max_body: 10m
  - host: admin.example.com
    backends: [web]
    auth:
      basic: {users_file: secrets/admin.htpasswd}   # bcrypt or argon2 htpasswd lines
      allow: [203.0.113.0/24, 2001:db8::/32]         # others get 403 before auth is asked
      forward: {url: http://127.0.0.1:9300/check, copy_headers: [X-User]}   # 2xx lets through
maintenance:                      # or per route; also `lbrec pause ROUTE|--all`
  page: errors/maintenance.html
error_pages: {502: errors/502.html, 503: errors/503.html}
backends:
  - {name: web, port: 8000}
"""


def test_the_issue_sample_validates() -> None:
    desired = parse_spec(SAMPLE)
    shop, admin = desired.routes
    assert shop.compress is True
    assert shop.sticky == "cookie:lb-web"
    assert shop.rate_limit is not None
    assert (shop.rate_limit.requests, shop.rate_limit.per, shop.rate_limit.burst) == (100, 1.0, 200)
    assert shop.max_body == 10 * 1024 * 1024
    assert admin.auth is not None and admin.auth.basic is not None
    assert admin.auth.basic.users_file == "secrets/admin.htpasswd"
    assert admin.auth.allow == ("203.0.113.0/24", "2001:db8::/32")
    assert admin.auth.forward is not None and admin.auth.forward.copy_headers == ("X-User",)
    assert desired.maintenance is not None
    assert desired.maintenance.page == "errors/maintenance.html"
    assert desired.error_pages == {502: "errors/502.html", 503: "errors/503.html"}


def test_a_route_takes_each_unset_feature_whole_from_the_top_level() -> None:
    desired = parse_spec(SAMPLE)
    shop, admin = desired.routes
    merged = admin.over(desired.features())
    assert merged.auth == admin.auth  # its own
    assert merged.maintenance == desired.maintenance  # the top level's
    assert merged.compress is None
    assert shop.over(desired.features()).error_pages == desired.error_pages
    assert not RouteFeatures().active and desired.features().active


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "routes: [{host: a.b, backends: [web], auth: {allow: [10.0.0.0/33]}}]",
            "routes[0].auth.allow: not an IP network (CIDR): '10.0.0.0/33'",
        ),
        ("max_body: 10q", "max_body: '10q': expected a size like 512k"),
        ("sticky: session", "sticky: String should match pattern"),
        (
            "rate_limit: {requests: 0}",
            "rate_limit.requests: Input should be greater than or equal to 1",
        ),
        ("rate_limit: {requests: 5, by: ip}", "rate_limit.by: String should match pattern"),
        ("rate_limit: {requests: 5, per: 1x}", "rate_limit.per: '1x': expected a duration"),
        ("error_pages: {500: e.html}", "error_pages: 500: lbrec answers only"),
        ("auth: {basic: {users_file: ''}}", "auth.basic.users_file: String should have at least"),
        ('auth: {basic: {users_file: u, realm: "a\\"b"}}', "auth.basic.realm"),
        ("auth: {forward: {url: ftp://x/}}", "auth.forward.url"),
        ("auth: {forward: {url: 'http://x/', copy_headers: ['X User']}}", "not a header name"),
        ("maintenance: {hold: 10m}", "maintenance.hold: Input should be less than or equal"),
        ("compress: {codings: [deflate]}", "compress"),
    ],
)
def test_bad_input_names_the_field_and_the_value(text: str, named: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text + "\nbackends: [{name: web, port: 8000}]\n")
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [("10m", 10 * 1024**2), ("512k", 512 * 1024), ("1g", 1024**3), ("2MiB", 2 * 1024**2), (7, 7)],
)
def test_sizes_are_nginx_style(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_render_pool_writes_the_features_with_paths_from_the_pool_folder() -> None:
    desired = parse_spec(SAMPLE)
    config = render_pool(desired, sticky_secret=b"k" * 32)
    shop, admin = config.routes or ()
    assert shop.sticky == "cookie:lb-web" and shop.max_body == 10 * 1024**2
    assert admin.auth is not None and admin.auth.basic is not None
    assert admin.auth.basic.users_file == "../secrets/admin.htpasswd"  # the path, not the hashes
    assert config.defaults is not None and config.defaults.maintenance is not None
    assert config.defaults.maintenance.page == "../errors/maintenance.html"
    assert config.defaults.error_pages == {502: "../errors/502.html", 503: "../errors/503.html"}
    assert config.affinity_key == affinity_key(b"k" * 32, desired)
    # backends.json reads back as written (error_pages' keys are strings in JSON)
    assert parse_config(config.to_json()) == config


def test_absolute_paths_stay_and_the_key_is_only_there_with_sticky() -> None:
    desired = parse_spec("error_pages: {504: /srv/504.html}\nbackends: [{name: web, port: 8000}]\n")
    config = render_pool(desired, sticky_secret=b"k" * 32)
    assert config.defaults is not None and config.defaults.error_pages == {504: "/srv/504.html"}
    assert config.affinity_key is None  # nothing sticky
    sticky = parse_spec("sticky: cookie:s\nbackends: [{name: web, port: 8000}]\n")
    assert render_pool(sticky).affinity_key is None  # no secret: the proxy draws one
    key = render_pool(sticky, sticky_secret=b"k" * 32).affinity_key
    assert key is not None and len(key) == 64
    assert key != render_pool(sticky, sticky_secret=b"j" * 32).affinity_key
    assert "affinity_key" not in repr(render_pool(sticky, sticky_secret=b"k" * 32))


def test_a_file_without_features_renders_as_before() -> None:
    desired = parse_spec("backends: [{name: web, port: 8000}]\n")
    text = render_pool(desired, sticky_secret=b"k" * 32).to_json()
    for word in ("defaults", "affinity_key", "compress", "auth", "maintenance"):
        assert word not in text
    assert BackendsConfig().defaults is None
