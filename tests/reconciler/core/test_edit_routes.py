"""`lbrec add NAME:PORT:W --host H [--path P]` and `lbrec remove` keep routes: in step, with
the user's comments."""

from __future__ import annotations

from lbrec.reconciler.core.edit import add_backend, add_route, remove_backend
from lbrec.reconciler.core.spec import parse_backend_arg, parse_spec

FILE = """\
# my front door
listen: 0.0.0.0:80
backends:
  - {name: web, port: 8000, weight: 1}   # the shop
"""


def _add(text: str, arg: str, host: str, path: str = "/") -> str:
    backend = parse_backend_arg(arg)
    text, _ = add_backend(text, backend, source="f")
    text, _ = add_route(text, backend.name, host=host, path=path, source="f")
    return text


def test_add_with_a_host_writes_a_route_and_keeps_comments() -> None:
    text = _add(FILE, "api:8100:1", "api.example.com", "/v1/")
    assert "# my front door" in text and "# the shop" in text
    desired = parse_spec(text)
    assert [(r.host, r.path, r.backends) for r in desired.routes] == [
        ("api.example.com", "/v1/", ("api",))
    ]
    assert text.index("routes:") < text.index("backends:")
    # the same route again is unchanged; another backend on it joins the route
    again, what = add_route(text, "api", host="api.example.com", path="/v1", source="f")
    assert (again, what) == (text, "unchanged")
    text = _add(text, "api2:8101:1", "api.example.com", "/v1/")
    assert [r.backends for r in parse_spec(text).routes] == [("api", "api2")]
    text = _add(text, "web2:8001:1", "shop.example.com")
    assert [(r.host, r.path) for r in parse_spec(text).routes] == [
        ("api.example.com", "/v1/"),
        ("shop.example.com", "/"),
    ]


def test_remove_takes_the_backend_out_of_its_routes() -> None:
    text = _add(_add(FILE, "api:8100:1", "api.example.com"), "api2:8101:1", "api.example.com")
    text = _add(text, "solo:8102:1", "solo.example.com")
    text, _ = remove_backend(text, "api", source="f")
    assert [(r.host, r.backends) for r in parse_spec(text).routes] == [
        ("api.example.com", ("api2",)),
        ("solo.example.com", ("solo",)),
    ]
    text, _ = remove_backend(text, "8102", source="f")  # by port; its route goes with it
    assert [r.host for r in parse_spec(text).routes] == ["api.example.com"]
    text, _ = remove_backend(text, "api2", source="f")
    assert "routes" not in text and parse_spec(text).routes == ()


def test_the_command_line(tmp_path: object) -> None:
    from pathlib import Path

    from lbrec.reconciler.commands.cli import main

    assert isinstance(tmp_path, Path)
    spec = tmp_path / "desired-state.yaml"
    assert main(["init", "web:9101:1", "--no-apply", "-f", str(spec)]) == 0
    args = ["add", "api:9102:1", "--host", "api.example.com", "--path", "/v1/", "--no-apply"]
    assert main([*args, "-f", str(spec)]) == 0
    routes = parse_spec(spec.read_text()).routes
    assert [(r.host, r.path, r.backends) for r in routes] == [("api.example.com", "/v1/", ("api",))]
    before = spec.read_text()
    assert main(["add", "x:9103:1", "--path", "/v1/", "--no-apply", "-f", str(spec)]) == 2
    assert main(["add", "x:9103:1", "--host", "Bad_Host", "--no-apply", "-f", str(spec)]) == 2
    assert spec.read_text() == before  # a refused edit leaves the file as it was


def test_add_sets_the_routes_features_from_flags(tmp_path: object, capsys: object) -> None:
    """`lbrec add ... --host H --compress --sticky ... --rate-limit ...` (issue 23): the
    route's fields written in the route's own line, checked with the whole file; a bad value
    is refused with its field named and the file left as it was."""
    from pathlib import Path

    import pytest

    from lbrec.reconciler.commands.cli import main

    assert isinstance(tmp_path, Path) and isinstance(capsys, pytest.CaptureFixture)
    spec = tmp_path / "desired-state.yaml"
    (tmp_path / "users.htpasswd").write_text(
        "ann:$2y$05$2hOyh0Gm0YXGbSKE3bN1/eDsycm9pqPzwNE6a/fMNtj0bq0bPIc9e\n"
    )
    assert main(["init", "web:9101:1", "--no-apply", "-f", str(spec)]) == 0
    flags = [
        "--host",
        "shop.example.com",
        "--compress",
        "--sticky",
        "cookie:lb-web",
        "--rate-limit",
        "100/1s",
        "--burst",
        "200",
        "--max-body",
        "10m",
        "--allow",
        "203.0.113.0/24",
        "--allow",
        "2001:db8::/32",
        "--basic-auth",
        "users.htpasswd",
    ]
    assert main(["add", "web:9101:1", *flags, "--no-apply", "-f", str(spec)]) == 0
    (route,) = parse_spec(spec.read_text()).routes
    assert route.compress is True and route.sticky == "cookie:lb-web"
    assert route.rate_limit is not None
    assert (route.rate_limit.requests, route.rate_limit.per, route.rate_limit.burst) == (
        100,
        1.0,
        200,
    )
    assert route.max_body == 10 * 1024 * 1024
    assert route.auth is not None and route.auth.allow == ("203.0.113.0/24", "2001:db8::/32")
    assert route.auth.basic is not None and route.auth.basic.users_file == "users.htpasswd"
    # a second add updates only the flags it gives
    assert main(["add", "web:9101:1", "--host", "shop.example.com", "--sticky", "header:X-U",
                 "--no-apply", "-f", str(spec)]) == 0  # fmt: skip
    (route,) = parse_spec(spec.read_text()).routes
    assert route.sticky == "header:X-U" and route.compress is True
    capsys.readouterr()

    before = spec.read_text()
    refused = {
        ("--compress",): "--compress: a route's feature: give the route's --host too",
        ("--host", "a.example.com", "--rate-limit", "100"): "--rate-limit: '100'",
        ("--host", "a.example.com", "--rate-limit", "5/xs"): "routes[1].rate_limit.per: 'xs'",
        ("--host", "a.example.com", "--allow", "10.0.0.0/33"): "routes[1].auth.allow",
        ("--host", "a.example.com", "--sticky", "ip"): "routes[1].sticky",
        ("--host", "a.example.com", "--basic-auth", "no.htpasswd"): "no.htpasswd: cannot read",
        ("--host", "a.example.com", "--burst", "5"): "--burst: give --rate-limit too",
    }
    for args, message in refused.items():
        assert main(["add", "x:9103:1", *args, "--no-apply", "-f", str(spec)]) == 2, args
        assert message in capsys.readouterr().err, args
        assert spec.read_text() == before  # nothing written
