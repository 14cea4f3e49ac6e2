#!/usr/bin/env bash
# Lint and type checks run in CI (docs/architecture.md, "Layers"): ruff, then mypy (config in pyproject.toml).
# Both always run so one pass shows every problem; the exit status is non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=""
if [ -x .venv/bin/ruff ] && [ -x .venv/bin/mypy ]; then
  bin=.venv/bin/
fi
status=0
echo "== ruff check engine tests benchmarks scripts"
"${bin}ruff" check engine tests benchmarks scripts || status=1
echo "== mypy (engine/)"
"${bin}mypy" || status=1
exit $status
