"""Which code serves: the request path compiled by mypyc (a wheel, setup.py) or interpreted.

CI runs the proxy suite twice, on the checkout (interpreted) and on the wheel built from it
(compiled), and says which one each run must see with ``LBREC_EXPECT_CODE``: a wheel that
silently fell back to interpreted code (no compiler, a mypyc error) fails this test there."""

from __future__ import annotations

import os

from lbrec.proxy import exchange
from lbrec.proxy.server import code_kind


def test_the_code_that_serves_is_the_one_this_run_expects() -> None:
    kind = code_kind()
    assert kind == ("interpreted" if exchange.__file__.endswith(".py") else "mypyc")
    expected = os.environ.get("LBREC_EXPECT_CODE")
    if expected is not None:
        assert kind == expected, exchange.__file__
