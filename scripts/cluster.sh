#!/usr/bin/env bash
# A local PostgreSQL 15 cluster shaped like Supabase's, in .cluster/ of this project.
#   scripts/cluster.sh init|start|stop|restart|reset|status|psql [args]|url|prepare
# Runs as the postgres user (never root), on 127.0.0.1:$QUANTOPS_PORT (default 55432; never 5432,
# 54322 or 54320, which the Supabase CLI treats as its own), with
# shared_preload_libraries = 'quantops,pg_cron'. Idempotent: init and start skip what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PORT=${QUANTOPS_PORT:-55432}
DIR=${QUANTOPS_CLUSTER_DIR:-$ROOT/.cluster}
DATA=$DIR/data
RUN=$DIR/run
LOG=$DIR/postgres.log
as_pg() { runuser -u postgres -- "$@"; }

case "$PORT" in 5432|54322|54320) echo "cluster.sh: port $PORT is reserved (system or Supabase CLI); pick another" >&2; exit 2;; esac

# postgres must be able to reach the project folder (mktemp -d makes 0700 folders)
ensure_traversable() {
  local d=$ROOT
  while [ "$d" != "/" ]; do
    if ! runuser -u postgres -- test -x "$d"; then chmod o+x "$d"; fi
    d=$(dirname "$d")
  done
}

init() {
  if [ -f "$DATA/PG_VERSION" ]; then return 0; fi
  ensure_traversable
  mkdir -p "$DIR" "$RUN"
  chown postgres:postgres "$DIR" "$RUN"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  cat >> "$DATA/postgresql.conf" <<CONF
# quantops local cluster (scripts/cluster.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
shared_preload_libraries = 'quantops,pg_cron'
cron.database_name = 'postgres'
quantops.database = 'postgres'
quantops.naptime = 2
max_worker_processes = 16
log_min_messages = log
fsync = off
full_page_writes = off
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_connections = 200
CONF
}

running() { as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  init
  if ! running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null
  fi
  shape
}

# What Supabase's image has, created where absent. Idempotent.
shape() {
  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres \
    -f "$ROOT/scripts/sql/supabase_shape.sql" >/dev/null
}

stop() {
  if [ -f "$DATA/PG_VERSION" ] && running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m "${1:-fast}" -w stop >/dev/null
  fi
}

case "${1:-status}" in
  init) init ;;
  prepare) ensure_traversable ;;
  start) start ;;
  stop) stop "${2:-fast}" ;;
  restart) stop; start ;;
  reset) stop immediate || true; rm -rf "$DIR"; start ;;
  status) if [ -f "$DATA/PG_VERSION" ] && running; then echo "running on 127.0.0.1:$PORT ($DATA)"; else echo "stopped"; exit 3; fi ;;
  psql) shift; exec runuser -u postgres -- "$BIN/psql" -X -h "$RUN" -p "$PORT" -U postgres -d postgres "$@" ;;
  url) echo "postgresql://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" ;;
  *) echo "usage: $0 init|start|stop|restart|reset|status|psql|url" >&2; exit 2 ;;
esac
