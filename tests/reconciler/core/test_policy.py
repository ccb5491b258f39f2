"""The operator's policy (core/policy.py): each rule, its defaults, and its errors."""

from __future__ import annotations

import pytest

from lbrec.reconciler.core.errors import SpecError
from lbrec.reconciler.core.policy import (
    DEFAULT_POLICY,
    Policy,
    Violation,
    check,
    parse_policy,
    syntax_directive,
)
from lbrec.reconciler.core.spec import parse_spec

PLAIN = "backends:\n  - {name: a, port: 9001}\n"


def _rules(text: str, policy: Policy = DEFAULT_POLICY, **files: str) -> list[tuple[str, str]]:
    return [(v.field, v.rule) for v in check(parse_spec(text), policy, dockerfiles=files)]


def test_the_default_policy_allows_an_ordinary_commit() -> None:
    text = (
        "listen: 0.0.0.0:8080\nadmin: 127.0.0.1:8081\n"
        "backends:\n  - {name: a, port: 9001, image: 'acme/web:1.4'}\n"
        "  - {name: b, port: 9002, build: {context: api, args: {VERSION: '2'}}}\n"
    )
    assert _rules(text, b="FROM python:3.12-slim\n") == []


@pytest.mark.parametrize(
    ("line", "field", "rule"),
    [
        ("base_image: attacker/onbuild:1", "base_image", "base_images"),
        ("proxy: {mode: container}", "proxy.mode", "proxy_modes"),
        ("admin: 127.0.0.1:32768", "admin", "admin"),  # where Docker publishes a commit's image
        ("admin: 0.0.0.0:8081", "admin", "admin"),
        ("publish_host: 0.0.0.0", "publish_host", "publish_hosts"),
        ("proxy: {trusted_proxies: [0.0.0.0/0]}", "proxy.trusted_proxies[0]", "trusted_proxies"),
        ("notify: {url: 'http://127.0.0.1:2375/containers/create'}", "notify.url", "notify_hosts"),
    ],
)
def test_the_default_policy_keeps_the_host_out_of_a_commits_reach(
    line: str, field: str, rule: str
) -> None:
    assert _rules(line + "\n" + PLAIN) == [(field, rule)]


def test_a_build_cannot_choose_its_frontend() -> None:
    text = (
        "backends:\n  - {name: b, port: 9002, build: {context: api, "
        "args: {BUILDKIT_SYNTAX: 'evil/frontend:1'}}}\n"
    )
    assert _rules(text) == [("backends[0].build.args.BUILDKIT_SYNTAX", "dockerfile_syntax")]
    text = "backends:\n  - {name: b, port: 9002, build: {context: api}}\n"
    dockerfile = "# escape=\\\n#  syntax = evil/frontend:1\nFROM scratch\n"
    assert _rules(text, b=dockerfile) == [("backends[0].build.dockerfile", "dockerfile_syntax")]
    allowed = Policy(dockerfile_syntax=True)
    assert _rules(text, allowed, b=dockerfile) == []
    assert _rules(text, Policy(builds=False)) == [("backends[0].build", "builds")]


def test_syntax_directive_only_at_the_top() -> None:
    assert syntax_directive("# syntax=docker/dockerfile:1\nFROM x\n") == "docker/dockerfile:1"
    assert syntax_directive("\n#syntax=a/b\n") == "a/b"
    assert syntax_directive("FROM x\n# syntax=a/b\n") is None
    assert syntax_directive("# a comment\n# syntax=a/b\n") is None
    assert syntax_directive("") is None


def test_an_operator_policy_widens_and_narrows() -> None:
    policy = parse_policy(
        "images: ['registry.example.com/team/*']\n"
        "base_images: ['lbrec-base:bookworm']\n"
        "proxy_modes: [host, container]\n"
        "listen: ['0.0.0.0:80', '0.0.0.0:443']\n"
        "admin: ['127.0.0.1:8081']\n"
        "trusted_proxies: [10.0.0.0/8]\n"
        "limits: {max_body_bytes: 1048576}\n"
        "notify_hosts: ['hooks.example.com']\n",
        source="policy.yaml",
    )
    good = (
        "listen: 0.0.0.0:80\nadmin: 127.0.0.1:8081\nbase_image: lbrec-base:bookworm\n"
        "proxy: {mode: container, trusted_proxies: [10.1.0.0/16], limits: {max_body_bytes: 1000}}\n"
        "notify: {url: 'https://hooks.example.com/lbrec'}\n"
        "backends:\n  - {name: a, port: 9001, image: registry.example.com/team/web:2}\n"
    )
    assert _rules(good, policy) == []
    bad = (
        "listen: 0.0.0.0:8080\nadmin: 127.0.0.1:8082\n"
        "proxy: {trusted_proxies: [10.0.0.0/7], limits: {max_body_bytes: 0}}\n"
        "backends:\n  - {name: a, port: 9001, image: docker.io/attacker/miner}\n"
    )
    assert _rules(bad, policy) == [
        ("listen", "listen"),
        ("admin", "admin"),
        ("proxy.trusted_proxies[0]", "trusted_proxies"),
        ("proxy.limits.max_body_bytes", "limits"),
        ("backends[0].image", "images"),
    ]


def test_a_violation_names_field_value_and_rule() -> None:
    assert str(Violation("admin", "127.0.0.1:9", "admin")) == (
        "admin: '127.0.0.1:9' is not allowed by the policy's 'admin'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("admin: ['localhost']", "admin: 'localhost': expected HOST:PORT"),
        ("listen: ['*:70000']", "ports are 1-65535"),
        (
            "trusted_proxies: [10.0.0.0/33]",
            "trusted_proxies: not an IP network (CIDR): '10.0.0.0/33'",
        ),
        ("limits: {max_bodies: 1}", "'max_bodies': not a proxy limit"),
        ("imagez: ['*']", "imagez"),
        ("- a list", "the policy must be a mapping"),
    ],
)
def test_a_bad_policy_file_names_the_field(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_policy(text, source="/etc/lbrec/policy.yaml")
    assert "/etc/lbrec/policy.yaml" in caught.value.message
    assert message in caught.value.message
