#!/usr/bin/env bash
# A shared MLflow tracking server for many evalbench processes at once (sweeps, engine.watch, other
# machines): PostgreSQL as the backend store, a folder for the artifacts the server proxies.
#
#   bash scripts/tracking_server.sh [start|stop|status]      (`make tracking-server` starts it)
#   python -m engine task=mmlu tracking=server                (EVALBENCH_TRACKING_URI, default http://127.0.0.1:5000)
#
# Settings, from the environment:
#   EVALBENCH_TRACKING_HOME   folder of the database, logs and pid files   (default .cache/tracking-server)
#   EVALBENCH_ARTIFACTS       where the artifacts go (a shared path)        (default $EVALBENCH_TRACKING_HOME/artifacts)
#   EVALBENCH_TRACKING_HOST   address the server listens on                 (default 127.0.0.1)
#   EVALBENCH_TRACKING_PORT   its port                                      (default 5000)
#   EVALBENCH_PG_PORT         PostgreSQL's own port (socket in the home)    (default 55432)
#   PYTHON                    the Python with mlflow and psycopg (extra `scale`) (default .venv/bin/python)
# PostgreSQL refuses to run as root: as root, the database runs as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."

home=$(realpath -m "${EVALBENCH_TRACKING_HOME:-.cache/tracking-server}")
artifacts=$(realpath -m "${EVALBENCH_ARTIFACTS:-$home/artifacts}")
host=${EVALBENCH_TRACKING_HOST:-127.0.0.1}
port=${EVALBENCH_TRACKING_PORT:-5000}
pg_port=${EVALBENCH_PG_PORT:-55432}
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
pgdata=$home/pgdata
sock=$home/socket
logs=$home/logs
pidfile=$home/mlflow.pid
url="http://$host:$port"
backend="postgresql+psycopg://mlflow@127.0.0.1:$pg_port/mlflow"
pg_bin=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/local/bin/pg_ctl)")")

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_running() { as_pg "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; }
mlflow_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start_postgres() {
  mkdir -p "$home" "$sock" "$logs"
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$pgdata"
    chown postgres "$pgdata" "$sock" "$logs"
    chmod 700 "$pgdata"
    if ! runuser -u postgres -- test -x "$home"; then
      echo "error: the postgres user cannot reach $home (a folder above it is private to root). Fix: set" \
           "EVALBENCH_TRACKING_HOME to a folder under a world-readable path, e.g. /var/tmp/evalbench-tracking." >&2
      exit 2
    fi
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    as_pg "$pg_bin/initdb" -D "$pgdata" -U mlflow --auth=trust -E UTF8 >"$logs/initdb.log" 2>&1 ||
      { echo "error: initdb failed; see $logs/initdb.log" >&2; exit 1; }
  fi
  if ! pg_running; then
    as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$logs/postgres.log" -w -t 60 \
      -o "-p $pg_port -k $sock -c listen_addresses=127.0.0.1" start >/dev/null ||
      { echo "error: PostgreSQL did not start; see $logs/postgres.log" >&2; exit 1; }
  fi
  # The `mlflow` database, once (the server creates its tables in it).
  "$py" - "$pg_port" <<'EOF'
import sys
import psycopg
with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="mlflow", dbname="postgres", autocommit=True) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow'").fetchone() is None:
        conn.execute("CREATE DATABASE mlflow")
EOF
}

start_mlflow() {
  mkdir -p "$artifacts"
  if mlflow_running; then
    return
  fi
  # Its own session and process group (stop kills the group: uvicorn and its worker). One worker:
  # several would race to create the schema of a fresh database. No job runner (it needs extras).
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$py" - "$pidfile" "$logs/mlflow.log" "$py" -m mlflow server \
      --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
      --host "$host" --port "$port" --workers 1 <<'EOF'
import subprocess, sys
pidfile, log, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "ab") as out:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
open(pidfile, "w").write(f"{proc.pid}\n")
EOF
  for _ in $(seq 1 240); do
    if "$py" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$url" 2>/dev/null; then
      return
    fi
    if ! mlflow_running; then
      echo "error: the MLflow server exited; the end of $logs/mlflow.log:" >&2
      tail -n 20 "$logs/mlflow.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "error: the MLflow server did not answer on $url within 120 s; see $logs/mlflow.log" >&2
  exit 1
}

stop() {
  if mlflow_running; then
    pgid=$(cat "$pidfile")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  if [ -f "$pgdata/PG_VERSION" ] && pg_running; then
    as_pg "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
  fi
  echo "stopped the tracking server ($home)"
}

case "${1:-start}" in
  start)
    start_postgres
    start_mlflow
    printf 'url=%s\npg_port=%s\n' "$url" "$pg_port" >"$home/server.env"  # what `status` reports
    echo "MLflow tracking server on $url (process group $(cat "$pidfile"); PostgreSQL on port $pg_port, data in $pgdata;"
    echo "artifacts in $artifacts; logs in $logs)."
    echo "Use it:  python -m engine task=mmlu tracking=server$([ "$url" = http://127.0.0.1:5000 ] || echo "   (with EVALBENCH_TRACKING_URI=$url)")"
    echo "Stop it: bash scripts/tracking_server.sh stop$([ -z "${EVALBENCH_TRACKING_HOME:-}" ] || echo "   (with EVALBENCH_TRACKING_HOME=$home)")"
    ;;
  stop) stop ;;
  status)
    # shellcheck disable=SC1091
    [ -f "$home/server.env" ] && . "$home/server.env"
    if mlflow_running; then echo "mlflow: running on $url (pid $(cat "$pidfile"))"; else echo "mlflow: stopped"; fi
    if [ -f "$pgdata/PG_VERSION" ] && pg_running; then echo "postgres: running on port $pg_port"; else echo "postgres: stopped"; fi
    ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
