#!/usr/bin/env bash
# Set everything up, then run the whole test suite: lint, types, unit, proxy and Docker tests.
# Tests marked `docker` FAIL (never skip) here when the engine cannot run them.
#
#   bash scripts/test.sh --quick [pytest args]   the one-minute loop for your own edits: ruff, then
#       every pure and loopback test (not `docker`, `netns_engine` nor `slow`, see
#       tests/conftest.py) on two workers with hypothesis's small `dev` profile; no engine needed
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--quick" ]; then
  shift
  LBREC_SKIP_DOCKER=1 bash scripts/setup.sh --tests >/dev/null
  echo "== ruff"; .venv/bin/ruff check -q .
  echo "== pytest (quick: not docker, netns_engine or slow; hypothesis profile dev)"
  status=0
  HYPOTHESIS_PROFILE=dev .venv/bin/python -m pytest -p no:cacheprovider -q -n 2 \
    -m "not docker and not netns_engine and not slow" "$@" || status=$?
  if [ "$status" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
  exit "$status"
fi
eval "$(bash scripts/setup.sh --tests)"
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
