#!/usr/bin/env bash
# Tier 3: pg_regress, as the postgres user, in two shapes of PostgreSQL $QUANTOPS_PG (15 or 17):
#   supabase  the cluster of scripts/cluster.sh (Supabase's shape: `postgres` is not a superuser),
#             with the Supabase migrations applied (384 dims); every test file
#   plain     a plain cluster (bootstrap superuser postgres, no Supabase roles) on the port after
#             the Supabase cluster's (QUANTOPS_PLAIN_PORT), quantops created and configured there;
#             the files that need no Supabase role (security.sql impersonates anon and authenticated)
# Each test file runs in begin; ... rollback; so the database is left as it was. Where a shape's
# output differs (a superuser meets the append-only trigger, postgres on Supabase a missing
# grant), the other shape's output is the alternative file name_1.out, as pg_regress allows.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/pg.sh
PORT=${QUANTOPS_PORT:-$QO_DEFAULT_PORT}
DIR=${QUANTOPS_CLUSTER_DIR:-$QO_DEFAULT_DIR}
PLAIN_PORT=${QUANTOPS_PLAIN_PORT:-$((PORT + 1))}
PLAIN_DIR=$ROOT/.cache/plain-cluster$PG_MAJOR
PGXS=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs

run() { # name host port tests...
  local name=$1 host=$2 port=$3; shift 3
  local out=$ROOT/.cache/regress/$PG_MAJOR/$name
  rm -rf "$out"; mkdir -p "$out"; pg_chown "$ROOT/.cache/regress/$PG_MAJOR" "$out"
  echo "-- pg_regress, PostgreSQL $PG_MAJOR, $name shape"
  as_pg "$PGXS/src/test/regress/pg_regress" \
    --use-existing --host="$host" --port="$port" --user=postgres --dbname=postgres \
    --inputdir="$ROOT/tests/pg_regress" --outputdir="$out" "$@" || {
      [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
      return 1
    }
}

mkdir -p "$ROOT/.cache/regress/$PG_MAJOR"
all=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
run supabase "$DIR/run" "$PORT" $all

# the plain shape: a cluster of its own, started fresh, stopped afterwards
export QUANTOPS_SHAPE=plain QUANTOPS_PORT=$PLAIN_PORT QUANTOPS_CLUSTER_DIR=$PLAIN_DIR
bash scripts/cluster.sh reset >/dev/null
trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PLAIN_DIR/run" -p "$PLAIN_PORT" -U postgres -d postgres \
  -c "set client_min_messages = warning" -c "create extension vector" -c "create extension quantops" \
  -c "select quantops.configure(dims => 384)" >/dev/null
plain=$(echo "$all" | grep -vx security)
run plain "$PLAIN_DIR/run" "$PLAIN_PORT" $plain
