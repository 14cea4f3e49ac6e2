#!/usr/bin/env bash
# System services the full test suite needs: bubblewrap, a Docker engine with the sandbox image,
# and Chromium for the viewer's browser tests (idempotent; needs root, as on CI).
set -euo pipefail
cd "$(dirname "$0")/.."
for script in scripts/ci/setup_sandboxes.sh scripts/ci/setup_browser.sh; do
  if [ -x "$script" ] || [ -f "$script" ]; then
    bash "$script"
  fi
done
