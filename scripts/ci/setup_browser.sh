#!/usr/bin/env bash
# Install what the browser tests of engine.compare need: Debian's chromium and Python playwright.
# Idempotent: does nothing when both are present. Playwright's own browser download is never used
# (tests launch executable_path=/usr/bin/chromium).
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Another apt process (a concurrent installer) may hold the lock: wait for it rather than fail.
  apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
if ! "$PY" -c "import playwright" 2>/dev/null; then
  "$PY" -m pip install -q "playwright>=1.45"
fi
"$PY" -c "import playwright; from importlib.metadata import version; print('playwright', version('playwright'))"
