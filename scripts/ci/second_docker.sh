#!/usr/bin/env bash
# A second Docker daemon on this machine: the stand-in for a remote Docker host in tests of pooled
# sandboxes (docs/architecture.md, "Sandboxes"). Idempotent: starts it only when it does not
# answer, then makes sure the sandbox image exists there (`docker save | docker load` from the
# first daemon). Prints the host URL on stdout.
#
# It has its own socket and TCP port, data root, exec root (its own containerd), pid file and cgroup
# parent, and no bridge: sandboxes without network run as on any host.
#
# Environment:
#   EVALBENCH_DOCKER2_PORT    TCP port on 127.0.0.1 (default 2376)
#   EVALBENCH_DOCKER2_ROOT    data root (default /var/lib/evalbench-docker2)
#   EVALBENCH_SANDBOX_IMAGE   image to copy from the first daemon (default evalbench-sandbox:latest)
#   stop as the only argument: stop the second daemon (containers and data root are kept).
set -euo pipefail

PORT="${EVALBENCH_DOCKER2_PORT:-2376}"
ROOT="${EVALBENCH_DOCKER2_ROOT:-/var/lib/evalbench-docker2}"
IMAGE="${EVALBENCH_SANDBOX_IMAGE:-evalbench-sandbox:latest}"
EXEC_ROOT=/run/evalbench-docker2
PIDFILE=/run/evalbench-docker2.pid
SOCK=/run/evalbench-docker2.sock
LOG=/var/log/evalbench-docker2.log
HOST="tcp://127.0.0.1:${PORT}"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

log() { echo "[second_docker] $*" >&2; }
up() { DOCKER_HOST="$HOST" docker info >/dev/null 2>&1; }

if [ "${1:-}" = "stop" ]; then
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    $SUDO kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$PIDFILE" 2>/dev/null || echo 0)" 2>/dev/null || break; sleep 0.5; done
  fi
  log "stopped"
  exit 0
fi

command -v dockerd >/dev/null 2>&1 || { log "dockerd is not installed: run scripts/ci/setup_sandboxes.sh"; exit 1; }
docker info >/dev/null 2>&1 || { log "the first Docker daemon is not up: run scripts/ci/setup_sandboxes.sh"; exit 1; }

if ! up; then
  log "starting a second dockerd on $HOST and unix://$SOCK"
  $SUDO mkdir -p "$ROOT" "$EXEC_ROOT"
  # setsid: its own session, so that it outlives the caller and is not killed with its group.
  $SUDO setsid dockerd -H "$HOST" -H "unix://$SOCK" --data-root "$ROOT" --exec-root "$EXEC_ROOT" \
    --pidfile "$PIDFILE" --bridge none --iptables=false --ip-masq=false \
    --cgroup-parent evalbench-docker2 >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 120); do up && break; sleep 0.5; done
  if ! up; then
    log "the second dockerd did not come up; last log lines:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
fi
log "second docker is up ($(DOCKER_HOST="$HOST" docker info --format '{{.ServerVersion}}'))"

if ! DOCKER_HOST="$HOST" docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "copying $IMAGE: docker save | docker load"
  docker save "$IMAGE" | DOCKER_HOST="$HOST" docker load >/dev/null
fi
echo "$HOST"
