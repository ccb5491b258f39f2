#!/usr/bin/env bash
# Set everything up, then run the main job: `lbrec up` (apply desired-state.yaml, serve the
# proxy on its listen address, watch the file). Ctrl-C stops it; add --down to remove the
# containers on the way out. Extra arguments go to `lbrec up`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
export LBREC_BASE_IMAGE
exec .venv/bin/lbrec up -f desired-state.yaml "$@"
