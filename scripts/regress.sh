#!/usr/bin/env bash
# Tier 3: pg_regress against the running cluster (scripts/cluster.sh), as the postgres user.
# Each test file runs in begin; ... rollback; so the database is left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${QUANTOPS_PORT:-55432}
PGXS=$(/usr/lib/postgresql/15/bin/pg_config --pkglibdir)/pgxs
OUT=$ROOT/.cache/regress
rm -rf "$OUT"; mkdir -p "$OUT"; chown postgres:postgres "$OUT"
tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
runuser -u postgres -- "$PGXS/src/test/regress/pg_regress" \
  --use-existing --host="$ROOT/.cluster/run" --port="$PORT" --user=postgres --dbname=postgres \
  --inputdir="$ROOT/tests/pg_regress" --outputdir="$OUT" $tests || {
    [ -f "$OUT/regression.diffs" ] && cat "$OUT/regression.diffs"
    exit 1
  }
