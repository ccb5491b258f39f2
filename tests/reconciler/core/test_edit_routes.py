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
