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
# Three groups, so that independent suites run side by side where they can: the pure and
# loopback tests on two workers (own ports, no shared state); the tests of the machine's
# engine one at a time (they share its CPU, port range and image builds); the tests that make
# Docker engines of their own in network namespaces, one at a time. Extra arguments go to each.
ran=0
group() {  # NAME MARKER [pytest args]: fails the script on a failure; counts what ran
  local name=$1 marker=$2 status=0
  shift 2
  echo "== pytest: $name"
  LBREC_EXPECT_CODE=interpreted .venv/bin/python -m pytest -p no:cacheprovider -m "$marker" \
    "$@" || status=$?
  if [ "$status" = 5 ]; then return 0; fi  # nothing of this group selected (args narrowed it)
  if [ "$status" != 0 ]; then exit "$status"; fi
  ran=$((ran + 1))
}
group "pure and loopback tests (2 workers)" "not docker and not netns_engine" -n 2 "$@"
group "tests on the machine's Docker engine" "docker and not netns_engine" "$@"
group "tests on engines of their own (network namespaces)" "netns_engine" "$@"
if [ "$ran" = 0 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi

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
