#!/usr/bin/env bash
# Set up a machine for lbrec, idempotently: a virtualenv with lbrec and its dev tools, then a
# Docker engine, Compose v2 and the offline base image (scripts/docker-dev.sh): what the main
# job (scripts/quickstart.sh) needs. With --tests, also the tests' own tools: Debian's chromium
# (the browser test), zsh and fish (completion), systemd's tools (the units) and prometheus
# (the dashboard test); scripts/test.sh asks for them.
# Debian as root (or a machine that already has Docker and python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*" >&2; }
tests=0
[ "${1:-}" = "--tests" ] && tests=1

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  log "installing python3-venv"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >&2
fi
if [ "$tests" = 1 ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  log "installing chromium (the status page's browser test drives it)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
# systemd's tools (the shipped units are checked with systemd-analyze) and the shells whose
# completion is tested (bash is there already).
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v fish >/dev/null 2>&1 || missing+=(fish)
# Debian's pebble: a real ACME server and its DNS, offline (tests/support/pebble.py, issue 22)
[ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ] || missing+=(pebble)
# Debian's htpasswd (apache2-utils): the basic-auth tests check real htpasswd files with it.
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
# nghttp2-client's h2load: the HTTP/2 load test and benchmark (curl --http2 is Debian's curl).
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
# sslscan: the TLS listener's protocols, ciphers and chain checked by a real scanner (issue 22)
command -v sslscan >/dev/null 2>&1 || missing+=(sslscan)
# curl: the HTTPS tests' client (HTTP/1.1 and HTTP/2)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Debian's docker-registry (the CNCF distribution registry): engine: swarm's build-push-pull
# on a multi-node test swarm (tests/integration/test_swarm_nodes.py starts it; no service).
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
if [ "$tests" = 1 ] && [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing ${missing[*]} (systemd-analyze checks the units; completion is tested in zsh and fish; htpasswd files for basic auth)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# Prometheus and promtool: unpacked from Debian's package into .venv/tools, not installed, so
# that no Prometheus service is started on this machine.
if [ "$tests" = 1 ] && [ ! -x /usr/bin/prometheus ] && [ ! -x .venv/tools/usr/bin/prometheus ] \
  && command -v apt-get >/dev/null 2>&1; then
  log "unpacking prometheus into .venv/tools (the Grafana dashboard test scrapes with it)"
  scratch=$(mktemp -d)
  if ! (cd "$scratch" && apt-get download -qq prometheus >&2 2>/dev/null); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    (cd "$scratch" && apt-get download -qq prometheus >&2)
  fi
  mkdir -p .venv/tools
  dpkg-deb -x "$scratch"/prometheus_*.deb .venv/tools
  rm -rf "$scratch"
fi
stamp=.venv/.lbrec-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing lbrec and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e '.[dev]' >&2
  touch "$stamp"
fi

if [ "${LBREC_SKIP_DOCKER:-}" != 1 ]; then
  eval "$(bash scripts/docker-dev.sh)"
  echo "export LBREC_BASE_IMAGE=${LBREC_BASE_IMAGE}"
fi
