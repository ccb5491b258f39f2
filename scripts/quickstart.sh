#!/usr/bin/env bash
# Set up what the main job needs, then run it: `lbrec up` (apply the desired state, serve the
# proxy on its listen address, watch the file). Ctrl-C stops it; add --down to remove the
# containers on the way out. Extra arguments go to `lbrec up`.
#
# It deploys from deploy/, a folder of this clone that git ignores, made from the repository's
# sample on the first run (deploy/desired-state.yaml is yours to edit from then on): the
# repository's own files are never rewritten, so `git status` stays clean and the tests keep
# passing. lbrec runs from .venv-run, a virtualenv holding lbrec's wheel (the proxy's request
# path compiled with mypyc, on uvloop: the build the benchmarks measure); .venv, the
# development one, stays editable for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[quickstart] %s\n' "$*" >&2; }
eval "$(bash scripts/setup.sh)"
export LBREC_BASE_IMAGE

# The fast build: a C compiler and Python's headers let the wheel compile the request path.
if ! command -v cc >/dev/null 2>&1 || [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing gcc and python3-dev (the wheel compiles the proxy's request path with mypyc)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc python3-dev >&2 \
      || log "could not install gcc/python3-dev"
  fi
fi
run=.venv-run
stamp=$run/.lbrec-built
if [ ! -f "$stamp" ] || [ -n "$(find proxy/ reconciler/ lbrec/ setup.py pyproject.toml mypyc.ini \
  -newer "$stamp" -name '*.py' -o -newer "$stamp" -name '*.toml' -o -newer "$stamp" -name '*.ini' | head -n1)" ]; then
  log "building lbrec's wheel into $run (the proxy compiled with mypyc: about a minute)"
  [ -x "$run/bin/python" ] || python3 -m venv "$run"
  rm -rf "$run/dist"
  .venv/bin/python -m pip wheel -q --no-deps -w "$run/dist" . >&2
  "$run/bin/python" -m pip install -q --upgrade pip >&2
  "$run/bin/python" -m pip install -q --force-reinstall --no-deps "$run"/dist/lbrec-*.whl >&2
  "$run/bin/python" -m pip install -q "$run"/dist/lbrec-*.whl >&2
  touch "$stamp"
fi
version=$("$run/bin/lbrec" proxy --version)
case "$version" in
  *mypyc*) log "$version" ;;
  *) log "NOTE: the proxy runs interpreted (no C compiler or Python headers when the wheel was built: install gcc and python3-dev, then rm -rf $run and run this again); it works, about a third slower per request" ;;
esac

# The deploy folder: the sample's desired state and the demo backend's build files.
mkdir -p deploy
[ -f deploy/desired-state.yaml ] || { cp desired-state.yaml deploy/; log "made deploy/ from the sample: edit deploy/desired-state.yaml"; }
for f in Dockerfile.backend Dockerfile.proxy .dockerignore backend; do
  [ -e "deploy/$f" ] || cp -R "$f" "deploy/$f"
done
rm -rf deploy/backend/__pycache__
cd deploy
exec "../$run/bin/lbrec" up -f desired-state.yaml "$@"
