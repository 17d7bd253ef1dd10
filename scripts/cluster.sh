#!/usr/bin/env bash
# A local PostgreSQL 15 cluster, in .cluster/ of this project.
#   scripts/cluster.sh init|start|stop|restart|reset|status|shape|psql [args]|url|prepare
#   scripts/cluster.sh replica start|stop|reset|promote|psql [args]|status
#   scripts/cluster.sh own FILE...   give files to the server's OS user
# QUANTOPS_PG=15 (default) or 17 (scripts/pg.sh): the major, each with its own folder and port
# (15: .cluster and 55432; 17: .cluster17 and 55442, run inside the root of scripts/trixie.sh).
# Runs as the postgres OS user (never root), on 127.0.0.1:$QUANTOPS_PORT (default 55432; never
# 5432, 54322 or 54320, which the Supabase CLI treats as its own), with
# shared_preload_libraries = 'quantops,pg_cron'. Idempotent: init and start skip what is done.
#
# QUANTOPS_SHAPE=supabase (default): shaped like Supabase's image. initdb's bootstrap superuser
#   is supabase_admin; `postgres` is NOT a superuser (CREATEDB CREATEROLE REPLICATION BYPASSRLS,
#   owner of the database, member of anon/authenticated/service_role); vector, pg_cron and
#   quantops are created as supabase_admin, the way supautils creates them when postgres asks
#   (scripts/sql/supabase_shape.sql).
# QUANTOPS_SHAPE=plain: plain PostgreSQL, bootstrap superuser postgres, no Supabase roles; nothing
#   is created in it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/pg.sh
PORT=${QUANTOPS_PORT:-$QO_DEFAULT_PORT}
DIR=${QUANTOPS_CLUSTER_DIR:-$QO_DEFAULT_DIR}
# an existing cluster keeps the shape it was made with
SHAPE=${QUANTOPS_SHAPE:-$(cat "$DIR/shape" 2>/dev/null || echo supabase)}
DATA=$DIR/data
RUN=$DIR/run
LOG=$DIR/postgres.log
case "$SHAPE" in
  supabase) SUPER=supabase_admin ;;
  plain) SUPER=postgres ;;
  *) echo "cluster.sh: QUANTOPS_SHAPE is supabase or plain, not $SHAPE" >&2; exit 2 ;;
esac
if [ -f "$DIR/shape" ] && [ "$(cat "$DIR/shape")" != "$SHAPE" ] && [ "${1:-}" != reset ]; then
  echo "cluster.sh: $DIR holds a $(cat "$DIR/shape") cluster, not $SHAPE; use reset" >&2; exit 2
fi

case "$PORT" in 5432|54322|54320) echo "cluster.sh: port $PORT is reserved (system or Supabase CLI); pick another" >&2; exit 2;; esac

# postgres must be able to reach the project folder (mktemp -d makes 0700 folders)
ensure_traversable() {
  local d=$ROOT
  while [ "$d" != "/" ]; do
    if ! as_pg test -x "$d"; then chmod o+x "$d"; fi
    d=$(dirname "$d")
  done
}

init() {
  if [ -f "$DATA/PG_VERSION" ]; then return 0; fi
  ensure_traversable
  mkdir -p "$DIR" "$RUN"
  pg_chown "$DIR" "$RUN"
  as_pg "$BIN/initdb" -D "$DATA" -U "$SUPER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  echo "$SHAPE" > "$DIR/shape"
  cat >> "$DATA/postgresql.conf" <<CONF
# quantops local cluster (scripts/cluster.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
shared_preload_libraries = 'quantops,pg_cron'
cron.database_name = 'postgres'
quantops.database = 'postgres'
quantops.naptime = 2
# the fake embedding provider of the tests and the demo listens on this machine only
quantops.embedding_allowed_hosts = '127.0.0.1'
quantops.model_dir = '$ROOT/.cache/models'
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

# What Supabase's image has, created where absent, then quantops the way the image creates an
# extension (as supabase_admin) when its files are installed. Idempotent.
shape() {
  [ "$SHAPE" = supabase ] || return 0
  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U supabase_admin -d postgres \
    -f "$ROOT/scripts/sql/supabase_shape.sql" >/dev/null
  # QUANTOPS_NO_EXTENSION=1: leave quantops out (the upgrade check creates an older version)
  if [ "${QUANTOPS_NO_EXTENSION:-0}" != 1 ] && [ -f "$PG_SHAREDIR/extension/quantops.control" ]; then
    as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U supabase_admin -d postgres \
      -c "set client_min_messages = warning" -c "create extension if not exists quantops" >/dev/null
  fi
}

stop() {
  if [ -f "$DATA/PG_VERSION" ] && running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m "${1:-fast}" -w stop >/dev/null
  fi
}

# A streaming replica of this cluster (pg_basebackup -R), quantops preloaded as on the primary, on
# 127.0.0.1:$QUANTOPS_REPLICA_PORT (default: the primary's port + 3). Its scheduler worker waits for
# the end of recovery (it starts after a promotion).
REPLICA_PORT=${QUANTOPS_REPLICA_PORT:-$((PORT + 3))}
RDATA=$DIR/replica-data
RRUN=$DIR/replica-run
RLOG=$DIR/replica.log
replica() {
  case "${1:-status}" in
    start)
      if [ ! -f "$RDATA/PG_VERSION" ]; then
        mkdir -p "$RRUN"; pg_chown "$RRUN"
        as_pg "$BIN/pg_basebackup" -h "$RUN" -p "$PORT" -U "$SUPER" -D "$RDATA" -R -X stream -c fast >/dev/null
        cat >> "$RDATA/postgresql.conf" <<CONF
# the replica (scripts/cluster.sh replica)
port = $REPLICA_PORT
unix_socket_directories = '$RRUN'
hot_standby = on
CONF
      fi
      as_pg "$BIN/pg_ctl" -D "$RDATA" status >/dev/null 2>&1 || as_pg "$BIN/pg_ctl" -D "$RDATA" -l "$RLOG" -w -t 60 start >/dev/null ;;
    stop) [ -f "$RDATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$RDATA" -m fast -w stop >/dev/null 2>&1 || true ;;
    reset) replica stop; rm -rf "$RDATA" "$RRUN"; replica start ;;
    promote) as_pg "$BIN/pg_ctl" -D "$RDATA" -w promote >/dev/null ;;
    psql) shift; as_pg "$BIN/psql" -X -h "$RRUN" -p "$REPLICA_PORT" -U "$SUPER" -d postgres "$@" ;;
    status) if [ -f "$RDATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$RDATA" status >/dev/null 2>&1; then echo "replica running on 127.0.0.1:$REPLICA_PORT"; else echo "replica stopped"; exit 3; fi ;;
    *) echo "usage: $0 replica start|stop|reset|promote|psql|status" >&2; exit 2 ;;
  esac
}

case "${1:-status}" in
  replica) shift; replica "$@" ;;
  init) init ;;
  prepare) ensure_traversable ;;
  start) start ;;
  stop) stop "${2:-fast}" ;;
  restart) stop; start ;;
  reset) replica stop || true; stop immediate || true; rm -rf "$DIR"; start ;;
  shape) shape ;;
  status) if [ -f "$DATA/PG_VERSION" ] && running; then echo "running on 127.0.0.1:$PORT ($DATA, $SHAPE shape)"; else echo "stopped"; exit 3; fi ;;
  # psql as the bootstrap superuser (supabase_admin, or postgres on a plain cluster); -U overrides
  psql) shift; as_pg "$BIN/psql" -X -h "$RUN" -p "$PORT" -U "$SUPER" -d postgres "$@" ;;
  # give a file to the server's OS user (its uid differs inside the root of PostgreSQL 17)
  own) shift; pg_chown "$@" ;;
  url) echo "postgresql://$SUPER@127.0.0.1:$PORT/postgres?sslmode=disable" ;;
  *) echo "usage: $0 init|start|stop|restart|reset|status|shape|psql|url" >&2; exit 2 ;;
esac
