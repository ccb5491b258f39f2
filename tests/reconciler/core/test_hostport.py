"""HOST:PORT has one parser (proxy.config.split_hostport) that both programs import."""

from __future__ import annotations

import pytest

from lbrec.proxy.app import parse_hostport as app_parse
from lbrec.proxy.config import parse_hostport, split_hostport
from lbrec.reconciler.runtime.options import hostport_arg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:9464", ("::1", 9464)),
        ("shop.example.com:443", ("shop.example.com", 443)),
        (":8080", ("", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_one_parser(value: str, expected: tuple[str, int]) -> None:
    assert split_hostport(value) == expected


@pytest.mark.parametrize("value", ["8080", "host:", "host:http", "host:65536", ""])
def test_what_it_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_hostport(value)


def test_each_side_adds_its_own_rule_only() -> None:
    assert app_parse is parse_hostport  # the proxy's listeners: an empty host is every one
    assert parse_hostport(":8080") == ("0.0.0.0", 8080)
    assert hostport_arg("[::1]:9464") == ("::1", 9464)  # a flag: a host is required
    with pytest.raises(Exception, match="HOST:PORT"):
        hostport_arg(":9464")
