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
.venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$status"
