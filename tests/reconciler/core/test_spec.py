"""desired-state.yaml: defaults, and errors that name the file, the field path and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbrec.reconciler.core.errors import SpecError
from lbrec.reconciler.core.spec import (
    BackendSpec,
    DesiredState,
    load_spec,
    parse_backend_arg,
    parse_spec,
)

SOURCE = "conf/desired-state.yaml"


def _error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source=SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: "), message
    return message


# --- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "\n", "# only a comment\n", "---\n", "project: web\nlisten: 127.0.0.1:8080\n"],
    ids=["empty", "newline", "comment", "document-start", "no-backends-key"],
)
def test_empty_or_truncated_file_is_refused(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source=SOURCE)
    assert "nothing was applied" in str(info.value)
    assert info.value.hint is not None and "backends: []" in info.value.hint


def test_explicit_empty_backends_is_the_defaults() -> None:
    state = parse_spec("backends: []\n", source=SOURCE)
    assert state == DesiredState()
    assert state.project == "lbrec"
    assert state.listen == "127.0.0.1:8080"
    assert state.admin == "127.0.0.1:8081"
    assert state.publish_host == "127.0.0.1"
    assert state.base_image is None
    assert state.backends == ()
    assert state.proxy.mode == "host"
    assert state.proxy.passive.max_fails == 3
    assert state.proxy.passive.cooldown == 10.0
    health = state.health
    assert (health.path, health.interval, health.timeout, health.rise, health.fall) == (
        "/health",
        2.0,
        1.0,
        2,
        3,
    )
    assert health.wait_healthy_on_add is True


def test_backend_defaults_and_order() -> None:
    state = parse_spec(
        "backends:\n  - {name: b2, port: 9002}\n  - {name: b1, port: 9001, weight: 0}\n"
    )
    assert state.backends == (
        BackendSpec(name="b2", port=9002, weight=1, env={}),
        BackendSpec(name="b1", port=9001, weight=0, env={}),
    )
    assert state.backend("b1") == state.backends[1]
    assert state.backend("nope") is None


def test_full_document_round_trips_through_the_model() -> None:
    text = """\
project: shop
listen: 0.0.0.0:80
admin: "[::1]:9090"
publish_host: 0.0.0.0
base_image: python:3.12-slim
health: {path: /ready, interval: 0.5, timeout: 0.2, rise: 1, fall: 5, wait_healthy_on_add: false}
proxy: {mode: container, passive: {max_fails: 0, cooldown: 1}}
backends:
  - {name: web-1, port: 9001, weight: 1000, env: {MODE: fast, _X9: "y"}}
"""
    state = parse_spec(text)
    assert state.listen == "0.0.0.0:80"
    assert state.admin == "[::1]:9090"
    assert state.health.path == "/ready"
    assert state.health.wait_healthy_on_add is False
    assert state.proxy.mode == "container"
    assert state.proxy.passive.max_fails == 0
    assert state.backends[0].env == {"MODE": "fast", "_X9": "y"}
    assert DesiredState.model_validate(state.model_dump()) == state


def test_same_port_on_different_hosts_is_allowed() -> None:
    state = parse_spec("listen: 10.0.0.1:8081\nadmin: 127.0.0.1:8081\nbackends: []\n")
    assert (state.listen, state.admin) == ("10.0.0.1:8081", "127.0.0.1:8081")


def test_models_are_frozen() -> None:
    state = parse_spec("backends:\n  - {name: a, port: 9001}\n")
    with pytest.raises(ValueError, match="frozen"):
        state.backends[0].weight = 3  # type: ignore[misc]


# --- validation errors: file, field path, bad value --------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "backends:\n  - {name: a, port: 9001}\n  - {name: b, port: 9002, weight: 5000}\n",
            "backends[1].weight: Input should be less than or equal to 1000 (got 5000)",
            id="weight-too-big",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, weight: -1}\n",
            "backends[0].weight: Input should be greater than or equal to 0 (got -1)",
            id="weight-negative",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, weight: 2.5}\n",
            "backends[0].weight: Input should be a valid integer",
            id="weight-fraction",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001}\n  - {name: Bad_Name, port: 9002}\n",
            "backends[1].name: must be a DNS label: a-z, 0-9 and '-', at most 63 characters"
            " (got 'Bad_Name')",
            id="name-not-dns-label",
        ),
        pytest.param(
            "backends:\n  - {name: -a, port: 9001}\n",
            "backends[0].name: must be a DNS label",
            id="name-leading-dash",
        ),
        pytest.param(
            f"backends:\n  - {{name: {'a' * 64}, port: 9001}}\n",
            "backends[0].name: must be a DNS label",
            id="name-too-long",
        ),
        pytest.param(
            "project: My_Project\n",
            "project: ",
            id="project-not-dns-label",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001}\n  - {name: a, port: 9002}\n",
            "backends[1].name: 'a' is already used by backends[0]",
            id="duplicate-name",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001}\n  - {name: b, port: 9001}\n",
            "backends[1].port: 9001 is already used by backend 'a'",
            id="duplicate-port",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 0}\n",
            "backends[0].port: Input should be greater than or equal to 1 (got 0)",
            id="port-0",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001}\n  - {name: b, port: 70000}\n",
            "backends[1].port: Input should be less than or equal to 65535 (got 70000)",
            id="port-70000",
        ),
        pytest.param(
            "backends:\n  - {name: a}\n",
            "backends[0].port: Field required",
            id="port-missing",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, image: 'x:1', build: {context: a}}\n",
            "backends[0]: image and build: set one",
            id="image-and-build",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, replicas: 0}\n",
            "backends[0].replicas: Input should be greater than or equal to 1 (got 0)",
            id="replicas-0",
        ),
        pytest.param(
            "rollout: {min_healthy_time: 10s, healthy_deadline: 5s}\nbackends: []\n",
            "rollout: healthy_deadline: 5s must be longer than min_healthy_time 10s",
            id="deadline-before-min-healthy",
        ),
        pytest.param(
            "rollout: {drain_timeout: soon}\nbackends: []\n",
            "rollout.drain_timeout: 'soon': expected a duration",
            id="drain-timeout-not-a-duration",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, build: {context: ../elsewhere}}\n",
            "backends[0].build.context: must be a folder inside the deploy folder "
            "(got '../elsewhere')",
            id="build-context-outside",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, command: []}\n",
            "backends[0].command: must name a program",
            id="command-empty",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, rollout: {max_parallel: 0}}\n",
            "backends[0].rollout.max_parallel: Input should be greater than or equal to 1",
            id="max-parallel-0",
        ),
        pytest.param(
            "admin: 127.0.0.1:8080\n",
            "admin: 127.0.0.1:8080 overlaps listen 127.0.0.1:8080: use another port",
            id="admin-equals-listen",
        ),
        pytest.param(
            "listen: 0.0.0.0:8081\n",
            "admin: 127.0.0.1:8081 overlaps listen 0.0.0.0:8081: use another port",
            id="admin-under-wildcard-listen",
        ),
        pytest.param(
            "listen: localhost\n",
            "listen: must be HOST:PORT like 127.0.0.1:8080 (got 'localhost')",
            id="listen-no-port",
        ),
        pytest.param(
            "listen: 127.0.0.1:99999\n",
            "listen: must be HOST:PORT like 127.0.0.1:8080 (got '127.0.0.1:99999')",
            id="listen-port-range",
        ),
        pytest.param(
            "listen: 127.0.0.1:0\n",
            "listen: must be HOST:PORT",
            id="listen-port-0",
        ),
        pytest.param(
            "admin: 'http://127.0.0.1:8081'\n",
            "admin: must be HOST:PORT like 127.0.0.1:8080 (got 'http://127.0.0.1:8081')",
            id="admin-url",
        ),
        pytest.param(
            "publish_host: 'a b'\n",
            "publish_host: must be a host address like 127.0.0.1, 0.0.0.0 or [::1] (got 'a b')",
            id="publish-host",
        ),
        pytest.param(
            "listen: 8080\n",
            "listen: Input should be a valid string (got 8080)",
            id="listen-int",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, env: {1X: y}}\n",
            "backends[0].env: environment variable name '1X' is not valid",
            id="env-name",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, env: {PORT: '8000'}}\n",
            "backends[0].env: PORT is set by lbrec (from name, port and health)",
            id="env-reserved-port",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, env: {HEALTH_PATH: /x}}\n",
            "backends[0].env: HEALTH_PATH is set by lbrec",
            id="env-reserved-health-path",
        ),
        pytest.param(
            "backends:\n  - {name: a, port: 9001, env: {X: 1}}\n",
            "backends[0].env.X: Input should be a valid string (got 1)",
            id="env-value-not-string",
        ),
        pytest.param(
            "health: {interval: 0}\n",
            "health.interval: Input should be greater than 0 (got 0)",
            id="health-interval",
        ),
        pytest.param(
            "health: {path: health}\n",
            "health.path: String should match pattern '^/' (got 'health')",
            id="health-path",
        ),
        pytest.param(
            "proxy: {mode: sidecar}\n",
            "proxy.mode: Input should be 'host' or 'container' (got 'sidecar')",
            id="proxy-mode",
        ),
        pytest.param(
            "backends: {a: 1}\n",
            "backends: Input should be a valid",
            id="backends-not-a-list",
        ),
    ],
)
def test_validation_error_names_file_field_and_value(text: str, expected: str) -> None:
    message = _error(text)
    assert f"{SOURCE}: {expected}" in message


def test_project_error_shows_the_bad_value() -> None:
    assert _error("project: My_Project\n").endswith("(got 'My_Project')")


def test_unknown_keys_are_named_each_on_its_own_line() -> None:
    message = _error(
        "backends:\n  - {name: a, port: 9001, wieght: 2}\nhelth: {path: /x}\nhealth: {pth: /}\n"
    )
    assert sorted(message.splitlines()) == [
        f"{SOURCE}: backends[0].wieght: unknown key",
        f"{SOURCE}: health.pth: unknown key",
        f"{SOURCE}: helth: unknown key",
    ]


def test_every_error_is_reported_not_only_the_first() -> None:
    message = _error("backends:\n  - {name: A, port: 0, weight: 5000}\n")
    lines = message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{SOURCE}: backends[0].") for line in lines)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(
            "backends:\n  - {name: a, port: 9001\n", "line 3 column 1", id="unclosed-flow"
        ),
        pytest.param("backends: [\n  x: : y\n", "line 2 column 6", id="stray-colon"),
        pytest.param("project: a\nbackends:\n\t- a\n", "line 3 column 1", id="tab"),
        pytest.param("a: b: c\n", "line 1 column 5", id="nested-colon"),
    ],
)
def test_malformed_yaml_gives_line_and_column(text: str, where: str) -> None:
    message = _error(text)
    assert message.startswith(f"{SOURCE}: {where}: malformed YAML: "), message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    message = _error(text)
    assert message == (
        f"{SOURCE}: the top level must be a mapping with a 'backends' list, got {kind}"
    )


def test_spec_error_is_a_usage_error_exit_code() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("backends: 3\n")
    assert info.value.exit_code == 2
    assert str(info.value).startswith("desired-state.yaml: ")  # the default source


def test_load_spec_names_a_missing_file_and_hints(tmp_path: Path) -> None:
    path = tmp_path / "desired-state.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: no such file"
    assert info.value.hint is not None and "lbrec init" in info.value.hint
    path.write_text("backends:\n  - {name: a, port: 0}\n")
    with pytest.raises(SpecError, match=rf"^{path}: backends\[0\]\.port: "):
        load_spec(path)


# --- NAME:PORT:WEIGHT on the command line ------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("a:9001", BackendSpec(name="a", port=9001, weight=1)),
        ("a:9001:3", BackendSpec(name="a", port=9001, weight=3)),
        ("backend-1:65535:0", BackendSpec(name="backend-1", port=65535, weight=0)),
        ("b:1:1000", BackendSpec(name="b", port=1, weight=1000)),
    ],
)
def test_parse_backend_arg_ok(arg: str, expected: BackendSpec) -> None:
    assert parse_backend_arg(arg) == expected


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("a:b:c", "backend 'a:b:c': port must be a whole number, got 'b'"),
        ("x:9001:-1", "backend 'x:9001:-1': weight must be a whole number, got '-1'"),
        ("x:9001:1.5", "backend 'x:9001:1.5': weight must be a whole number, got '1.5'"),
        ("x:+9001:1", "backend 'x:+9001:1': port must be a whole number, got '+9001'"),
        (
            "Bad:9001:1",
            "backend 'Bad:9001:1': name: must be a DNS label: a-z, 0-9 and '-', at most 63"
            " characters (got 'Bad')",
        ),
        ("a", "backend 'a': expected NAME:PORT:WEIGHT, e.g. backend1:9001:2"),
        ("a::1", "backend 'a::1': expected NAME:PORT:WEIGHT, e.g. backend1:9001:2"),
        (":9001:1", "backend ':9001:1': expected NAME:PORT:WEIGHT, e.g. backend1:9001:2"),
        ("a:9001:1:2", "backend 'a:9001:1:2': expected NAME:PORT:WEIGHT, e.g. backend1:9001:2"),
        ("a:0:1", "backend 'a:0:1': port: Input should be greater than or equal to 1 (got 0)"),
        (
            "a:70000",
            "backend 'a:70000': port: Input should be less than or equal to 65535 (got 70000)",
        ),
        (
            "a:9001:1001",
            "backend 'a:9001:1001': weight: Input should be less than or equal to 1000 (got 1001)",
        ),
    ],
)
def test_parse_backend_arg_bad(arg: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_backend_arg(arg)
    assert str(info.value) == expected


@pytest.mark.parametrize("arg", ["a:\u0663:1", "a:9001:\u00b2", "a:\uff19\uff10\uff10\uff11"])
def test_parse_backend_arg_accepts_only_ascii_digits(arg: str) -> None:
    """str.isdigit() is true for '٣', '²' and fullwidth digits; none of them is a port."""
    with pytest.raises(SpecError, match="must be a whole number"):
        parse_backend_arg(arg)


def test_duplicate_key_is_an_error_not_a_silent_override() -> None:
    """PyYAML keeps the last of two `backends:` keys; the first list must not vanish silently."""
    message = _error(
        "backends:\n  - {name: a, port: 9001}\nproject: x\nbackends:\n  - {name: b, port: 9002}\n"
    )
    assert message == f"{SOURCE}: line 4 column 1: malformed YAML: duplicate key 'backends'"
    nested = _error("backends:\n  - {name: a, port: 9001, name: b}\n")
    assert "line 2 column 27: malformed YAML: duplicate key 'name'" in nested


def test_yaml_merge_keys_still_work() -> None:
    state = parse_spec("health: {<<: {path: /a, rise: 4}, path: /b}\nbackends: []\n")
    assert (state.health.path, state.health.rise) == ("/b", 4)


def test_load_spec_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "desired-state.yaml"
    path.write_bytes(b"# caf\xe9\nbackends: []\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 5: invalid continuation byte)"


def test_bad_value_is_shown_once() -> None:
    message = _error("listen: localhost\n")
    assert message.count("'localhost'") == 1, message
