"""Issue 22: routes and tls in desired-state.yaml, rendered into backends.json; bad input names
the field and value."""

from __future__ import annotations

import pytest

from lbrec.reconciler.core.errors import SpecError
from lbrec.reconciler.core.plan import _settings_diff
from lbrec.reconciler.core.render import render_pool
from lbrec.reconciler.core.spec import parse_spec

SAMPLE = """\
listen: 0.0.0.0:80
tls:
  listen: 0.0.0.0:443
  acme:
    email: ops@example.com
    directory: https://acme-v02.api.letsencrypt.org/directory
    ca_bundle: certs/private-ca.pem
  certificates:
    - {cert: certs/example.pem, key: certs/example.key}
  redirect_http: true
  hsts: 180d
routes:
  - {host: shop.example.com, backends: [web]}
  - {host: shop.example.com, path: /api/, backends: [api], strip_prefix: false}
  - {host: admin.example.com, backends: [web], tls: required}
backends:
  - {name: web, image: acme/web:1.4.2, port: 8000, replicas: 2, weight: 1}
  - {name: api, build: {context: ./api}, port: 8100}
"""


def test_the_issues_sample_validates_and_renders() -> None:
    desired = parse_spec(SAMPLE)
    pool = render_pool(desired)
    assert pool.routes is not None
    assert [(r.host, r.path, r.backends, r.tls) for r in pool.routes] == [
        ("shop.example.com", "/", ("web",), "auto"),
        ("shop.example.com", "/api/", ("api",), "auto"),
        ("admin.example.com", "/", ("web",), "required"),
    ]
    assert pool.tls is not None
    assert pool.tls.listen == "0.0.0.0:443"
    assert pool.tls.hsts == 180 * 86400
    # relative to the desired-state file, written relative to config/backends.json's folder
    assert [(c.cert, c.key) for c in pool.tls.certificates] == [
        ("../certs/example.pem", "../certs/example.key")
    ]


def test_a_file_without_routes_renders_as_before() -> None:
    pool = render_pool(parse_spec("backends: [{name: a, port: 9001}]\n"))
    assert pool.routes is None and pool.tls is None
    assert '"routes"' not in pool.to_json() and '"tls"' not in pool.to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("routes: [{host: a.example, backends: [nope]}]", "routes[0].backends: 'nope' is not"),
        (
            "routes: [{host: a.example, path: /x/, backends: [web]}, "
            "{host: a.example, path: /x, backends: [web]}]",
            "routes[1]: host a.example path /x is already routes[0]",
        ),
        ("routes: [{host: 'A.example', backends: [web]}]", "'A.example': write host names in"),
        ("routes: [{host: '*.*.example', backends: [web]}]", "expected a host name"),
        ("routes: [{host: a.example, path: api, backends: [web]}]", "absolute path prefix"),
        (
            "routes: [{host: a.example, backends: []}]",
            "routes[0].backends: Tuple should have at least 1",
        ),
        ("routes: [{host: a.example, backends: [web], tls: required}]", "needs a `tls:` section"),
        ("tls: {acme: {email: ops@example.com}}", "tls.listen"),
        ("tls: {listen: '0.0.0.0:8080'}", "tls.listen: 0.0.0.0:8080 overlaps listen"),
        (
            "tls: {listen: '0.0.0.0:443', acme: {email: ops@example.com, "
            "directory: 'http://acme.example/dir'}}",
            "is not https",
        ),
        ("tls: {listen: '0.0.0.0:443', acme: {email: nobody}}", "tls.acme.email"),
        ("tls: {listen: '0.0.0.0:443', hsts: forever}", "tls.hsts"),
    ],
)
def test_bad_front_door_input_names_the_field(change: str, message: str) -> None:
    text = f"listen: 0.0.0.0:8080\n{change}\nbackends: [{{name: web, port: 9001}}]\n"
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    assert message in caught.value.message, caught.value.message


def test_a_private_acme_ca_on_loopback_may_be_plain_http() -> None:
    desired = parse_spec(
        "tls: {listen: '127.0.0.1:8443', acme: {email: ops@example.com, "
        "directory: 'http://127.0.0.1:14000/dir', ca_bundle: pebble.pem}}\nbackends: []\n"
    )
    assert desired.tls is not None and desired.tls.acme is not None


def test_a_route_change_is_a_pool_setting_in_the_plan() -> None:
    before = render_pool(parse_spec(SAMPLE))
    after = render_pool(
        parse_spec(
            SAMPLE.replace("path: /api/, backends: [api]", "path: /api/, backends: [api, web]")
            .replace("  - {host: admin.example.com, backends: [web], tls: required}\n", "")
            .replace("routes:\n", "routes:\n  - {host: '*.example.com', backends: [web]}\n")
        )
    )
    assert _settings_diff(before, after) == (
        "route + *.example.com/ -> web",
        "route - admin.example.com/",
        "route ~ shop.example.com/api/: backends ['api'] -> ['api', 'web']",
    )
