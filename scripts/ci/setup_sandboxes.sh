#!/usr/bin/env bash
# Prepare the sandbox backends used by engine/sandbox and tests/sandbox.
#
# Idempotent: installs bubblewrap, docker.io and debootstrap when missing, starts dockerd in the
# background when it is not running (and waits until `docker info` works), and builds the base
# image `evalbench-sandbox:latest` from a debootstrap rootfs (Debian bookworm minbase + python3)
# with `docker import` only when the image does not exist yet (no registry is reachable).
#
# Environment:
#   EVALBENCH_SANDBOX_IMAGE   image tag to build (default evalbench-sandbox:latest)
#   EVALBENCH_DEBIAN_MIRROR   debootstrap mirror (default: the first deb.debian.org-like apt source)
#   EVALBENCH_ROOTFS_CACHE    where the rootfs tarball is cached (default /var/cache/evalbench)
set -euo pipefail

IMAGE="${EVALBENCH_SANDBOX_IMAGE:-evalbench-sandbox:latest}"
CACHE="${EVALBENCH_ROOTFS_CACHE:-/var/cache/evalbench}"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

log() { echo "[setup_sandboxes] $*" >&2; }

# ---- 1. packages -------------------------------------------------------------------------------
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. dockerd ----------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  # setsid: its own session, so that it survives the caller and is not killed with its group.
  $SUDO setsid dockerd >/var/log/evalbench-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up; last log lines:"
    tail -n 30 /var/log/evalbench-dockerd.log >&2 || true
    exit 1
  fi
fi
log "docker is up ($(docker info --format '{{.ServerVersion}}' 2>/dev/null))"

# ---- 3. base image -------------------------------------------------------------------------------
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE exists"
  exit 0
fi

mirror="${EVALBENCH_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
            | head -n1 | tr -d ' ' || true)"
  if [ -z "$mirror" ]; then
    mirror="$(grep -rhoE '^URIs: *https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/ 2>/dev/null \
              | head -n1 | sed 's/^URIs: *//' || true)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

$SUDO mkdir -p "$CACHE"
tarball="$CACHE/bookworm-minbase-python3.tar"
if [ ! -s "$tarball" ]; then
  rootfs="$(mktemp -d /tmp/evalbench-rootfs.XXXXXX)"
  trap '$SUDO rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm (minbase + python3) from $mirror"
  $SUDO debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" >/dev/null
  $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  $SUDO tar -C "$rootfs" -cf "$tarball.tmp" .
  $SUDO mv "$tarball.tmp" "$tarball"
fi
log "docker import -> $IMAGE"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$tarball" "$IMAGE" >/dev/null
log "image $IMAGE built"
