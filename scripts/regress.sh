#!/usr/bin/env bash
# Tier 3: pg_regress, as the postgres user, in two shapes of PostgreSQL:
#   supabase  the cluster of scripts/cluster.sh (Supabase's shape: `postgres` is not a superuser),
#             with the Supabase migrations applied (384 dims); every test file
#   plain     a plain cluster (bootstrap superuser postgres, no Supabase roles) on port
#             QUANTOPS_PLAIN_PORT (default 55433), quantops created and configured there; the
#             files that need no Supabase role (security.sql impersonates anon and authenticated)
# Each test file runs in begin; ... rollback; so the database is left as it was. Where a shape's
# output differs (a superuser meets the append-only trigger, postgres on Supabase a missing
# grant), the other shape's output is the alternative file name_1.out, as pg_regress allows.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${QUANTOPS_PORT:-55432}
PLAIN_PORT=${QUANTOPS_PLAIN_PORT:-55433}
PLAIN_DIR=$ROOT/.cache/plain-cluster
PGXS=$(/usr/lib/postgresql/15/bin/pg_config --pkglibdir)/pgxs
BIN=/usr/lib/postgresql/15/bin

run() { # name host port tests...
  local name=$1 host=$2 port=$3; shift 3
  local out=$ROOT/.cache/regress/$name
  rm -rf "$out"; mkdir -p "$out"; chown postgres:postgres "$ROOT/.cache/regress" "$out"
  echo "-- pg_regress, $name shape"
  runuser -u postgres -- "$PGXS/src/test/regress/pg_regress" \
    --use-existing --host="$host" --port="$port" --user=postgres --dbname=postgres \
    --inputdir="$ROOT/tests/pg_regress" --outputdir="$out" "$@" || {
      [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
      return 1
    }
}

mkdir -p "$ROOT/.cache/regress"
all=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
run supabase "$ROOT/.cluster/run" "$PORT" $all

# the plain shape: a cluster of its own, started fresh, stopped afterwards
export QUANTOPS_SHAPE=plain QUANTOPS_PORT=$PLAIN_PORT QUANTOPS_CLUSTER_DIR=$PLAIN_DIR
bash scripts/cluster.sh reset >/dev/null
trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
runuser -u postgres -- "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PLAIN_DIR/run" -p "$PLAIN_PORT" -U postgres -d postgres \
  -c "set client_min_messages = warning" -c "create extension vector" -c "create extension quantops" \
  -c "select quantops.configure(dims => 384)" >/dev/null
plain=$(echo "$all" | grep -vx security)
run plain "$PLAIN_DIR/run" "$PLAIN_PORT" $plain
