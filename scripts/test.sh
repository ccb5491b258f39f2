#!/usr/bin/env bash
# Set everything up, then run the whole test suite: lint, types, unit, proxy and Docker tests.
# Tests marked `docker` FAIL (never skip) here when the engine cannot run them.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
export LBREC_BASE_IMAGE LBREC_REQUIRE_DOCKER=1
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
status=0
LBREC_EXPECT_CODE=interpreted .venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
if [ "$status" != 0 ]; then exit "$status"; fi

# The wheel compiles the request path with mypyc (setup.py): the proxy suite again, on it.
echo "== pytest tests/proxy on the wheel (request path compiled with mypyc)"
compiled=$(mktemp -d)
trap 'rm -rf "$compiled"' EXIT
.venv/bin/python -m pip wheel -q --no-deps -w "$compiled/dist" . >&2
.venv/bin/python -m pip install -q --no-deps --target "$compiled/site" "$compiled"/dist/lbrec-*.whl >&2
# -P and --import-mode=append: lbrec comes from the wheel, not from this checkout
PYTHONPATH="$compiled/site" LBREC_EXPECT_CODE=mypyc .venv/bin/python -P -m pytest \
  -p no:cacheprovider --import-mode=append -q -n 2 tests/proxy \
  --ignore=tests/proxy/test_dashboard.py --ignore=tests/proxy/test_grafana_dashboard.py
