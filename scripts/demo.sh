#!/usr/bin/env bash
# The demo: a local Supabase-shaped cluster with quantops, the research platform's data applied by
# the real Supabase CLI (migrations + seed), one maintenance cycle, and a readable report.
# Installs what it needs first (idempotent). Re-running starts again from a reset database.
# PostgreSQL 17 by default (inside the Debian 13 root of scripts/trixie.sh); QUANTOPS_PG=15 for 15.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:$PATH
# PostgreSQL 17 by default, as new Supabase projects; QUANTOPS_PG=15 for 15
export QUANTOPS_PG=${QUANTOPS_PG:-17}
bash scripts/bootstrap.sh
source scripts/pg.sh
echo "[demo] PostgreSQL $PG_MAJOR"
echo "[demo] building and installing quantops"
bash scripts/install.sh
# a fresh cluster shaped like Supabase's image: supabase_admin is the superuser and creates
# vector, pg_cron and quantops (as supautils does); postgres is not a superuser
echo "[demo] a fresh Supabase-shaped cluster"
bash scripts/cluster.sh reset
PORT=${QUANTOPS_PORT:-$QO_DEFAULT_PORT}
echo "[demo] supabase db push: migrations and seed through the Supabase CLI, as postgres"
tools/node_modules/.bin/supabase db push --include-seed --yes \
  --db-url "postgresql://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" 2>&1 | sed 's/^/[supabase] /'
echo "[demo] waiting for the quantops scheduler worker"
for _ in $(seq 1 30); do
  alive=$(bash scripts/cluster.sh psql -At -c "select coalesce((quantops.status()->'workers'->0->>'alive')::bool, false)")
  [ "$alive" = t ] && break
  sleep 1
done
psql_() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"; }
echo "[demo] waiting for the worker to embed the seeded signals"
for _ in $(seq 1 60); do
  [ "$(psql_ -At -c "select backlog from quantops.embedding_status")" = 0 ] && break
  sleep 0.5
done
psql_ -f scripts/sql/demo.sql
BEFORE=$(psql_ -At -c "select clock_timestamp()")
psql_ -f scripts/sql/demo_embeddings.sql
echo "the worker drains the backlog (woken at commit, up to 5 batches of 2,000 per transaction):"
for _ in $(seq 1 40); do
  line=$(psql_ -At -F ' ' -c "select backlog, coverage::text from quantops.embedding_status")
  echo "  $(date +%T.%2N)  backlog ${line%% *}  coverage ${line#* }"
  [ "${line%% *}" = 0 ] && break
  sleep 0.5
done
psql_ -v before="$BEFORE" -f scripts/sql/demo_embeddings_after.sql
psql_ -f scripts/sql/demo_prune.sql
echo "the worker rebuilds the index without blocking writes (REINDEX / CREATE INDEX CONCURRENTLY):"
for _ in $(seq 1 120); do
  st=$(psql_ -At -c "select coalesce(string_agg(status, ','), 'none') from quantops.index_builds where status in ('queued', 'running')")
  [ "$st" = none ] && break
  sleep 0.5
done
psql_ -f scripts/sql/demo_prune_after.sql
psql_ -f scripts/sql/demo_registry.sql
psql_ -f scripts/sql/demo_flags.sql
psql_ -f scripts/sql/demo_backtest.sql
echo
echo "done. psql: scripts/cluster.sh psql     tests: scripts/test.sh"
