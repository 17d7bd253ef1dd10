#!/usr/bin/env bash
# Benchmark of the vector prune: ROWS signals of 384 dimensions with an IVFFlat index (lists
# ROWS/1000, cosine); the older half is archived.
#   F  the floor: the single statement
#        WITH moved AS (DELETE ... RETURNING *) INSERT INTO archive SELECT ... FROM moved
#   Q  quantops: set_retention(max_age) and CALL quantops.prune(batch_size => B), for B in BATCHES
#   both on identical fresh data in the same run (F twice: first, and before the last Q), while concurrent inserters (INSERTERS processes,
#   RATE rows/s each, one row per autocommit INSERT) record their latency: goal Q >= 80 % of F's
#   rows/s and the inserters' p99 under 100 ms during Q.
#   R  then half the live rows are replaced by rows from a shifted distribution, and recall@10 at
#   probes sqrt(lists) is measured before maintenance, after quantops' automatic maintenance (the
#   scheduler worker's 'maintain-index' job) and for a fresh build: goal |after - fresh| <= 0.01.
# It runs on a cluster of its own (port $BENCH_PORT, default 55433, in .cache/bench-cluster),
# reset at every run and stopped at the end (KEEP_CLUSTER=1 leaves it running), in database
# postgres (the quantops scheduler worker works in quantops.database = 'postgres' only).
# The measurements are in bench/prune_bench.py (python3 with numpy and psycopg 3, in .cache/bench-venv).
# usage: bash bench/prune.sh [ROWS]        (default 200000; bash bench/prune.sh 20000 is a quick run)
#   env: BATCHES=1000,5000,2000 (the last one feeds R)  INSERTERS=4  RATE=50  QUERIES=200  LISTS=ROWS/1000
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROWS=${1:-200000}
case "$ROWS" in ''|*[!0-9]*) echo "usage: bash bench/prune.sh [ROWS]" >&2; exit 2;; esac
[ "$ROWS" -ge 2000 ] || { echo "prune.sh: ROWS must be at least 2000" >&2; exit 2; }
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

bash scripts/bootstrap.sh >/dev/null
# install.sh restarts the main cluster when it runs: only when quantops is not installed at all
if [ ! -f "$($PG_CONFIG --pkglibdir)/quantops.so" ]; then
  bash scripts/install.sh
fi

# the benchmark's own cluster: never the one the tests use (55432, .cluster)
export QUANTOPS_PORT=${BENCH_PORT:-55433}
export QUANTOPS_CLUSTER_DIR=$ROOT/.cache/bench-cluster
[ "$QUANTOPS_PORT" != 55432 ] || { echo "prune.sh: port 55432 belongs to the test cluster" >&2; exit 2; }

VENV=$ROOT/.cache/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import numpy, psycopg" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy "psycopg[binary]"
fi

bash scripts/cluster.sh reset >/dev/null   # stop, remove, initdb, start, Supabase's roles and schemas
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
fi
q() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
# as the Supabase migration does (supabase/migrations/*_quantops_extensions.sql)
q -c "set client_min_messages = warning" -c "create schema if not exists extensions" \
  -c "create extension if not exists vector with schema extensions" -c "create extension if not exists quantops" >/dev/null
if [ "$(q -c "select count(*) from pg_proc where proname = 'prune_batch'")" = 0 ]; then
  echo "prune.sh: the installed quantops has no prune (quantops.prune_batch); build and install it: bash scripts/install.sh" >&2
  exit 1
fi
# the scheduler worker: up within a few naptimes
for _ in $(seq 1 30); do
  [ "$(q -c "select count(*) from quantops.workers where state = 'running' and heartbeat_at > now() - interval '30 seconds'")" != 0 ] && break
  sleep 1
done

URL=$(bash scripts/cluster.sh url)
args=(--dsn "$URL" --rows "$ROWS")
[ -n "${LISTS:-}" ] && args+=(--lists "$LISTS")
[ -n "${BATCHES:-}" ] && args+=(--batches "$BATCHES")
[ -n "${INSERTERS:-}" ] && args+=(--inserters "$INSERTERS")
[ -n "${RATE:-}" ] && args+=(--rate "$RATE")
[ -n "${QUERIES:-}" ] && args+=(--queries "$QUERIES")
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" bench/prune_bench.py "${args[@]}"
