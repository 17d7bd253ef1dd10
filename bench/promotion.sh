#!/usr/bin/env bash
# Benchmark of the registry's promotion: latency of quantops.promote() (compare-and-set, gates
# against backtest_results and storage.objects, history, outbox, audit) with CLIENTS concurrent
# clients (default 8), each its own connection, for SECONDS seconds (default 20):
#   own    each client promotes its own model back and forth (no conflicts): the cost of a promotion
#   shared all clients promote one model with expected_current (conflicts: 40001, then retry)
# Baseline in the same run: a bare UPDATE of one alias row per call (no gates, no history, no
# outbox), the floor of any promotion. Goal: p99 under 10 ms with 8 clients.
# Runs on its own cluster (port $BENCH_PORT, default 55433, .cache/bench-cluster), reset each run.
# usage: bash bench/promotion.sh [SECONDS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_=${1:-20}
CLIENTS=${2:-8}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
bash scripts/bootstrap.sh >/dev/null
if [ ! -f "$($PG_CONFIG --pkglibdir)/quantops.so" ]; then bash scripts/install.sh; fi
export QUANTOPS_PORT=${BENCH_PORT:-55433}
export QUANTOPS_CLUSTER_DIR=$ROOT/.cache/bench-cluster
[ "$QUANTOPS_PORT" != 55432 ] || { echo "promotion.sh: port 55432 belongs to the test cluster" >&2; exit 2; }
VENV=$ROOT/.cache/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import numpy, psycopg" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy "psycopg[binary]"
fi
bash scripts/cluster.sh reset >/dev/null
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT; fi
q() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
q -c "set client_min_messages = warning" -c "create schema if not exists extensions" \
  -c "create extension if not exists vector with schema extensions" -c "create extension if not exists quantops" \
  -c "insert into storage.buckets (id, name) values ('model-artifacts', 'model-artifacts') on conflict do nothing" >/dev/null
"$VENV/bin/python" bench/promotion_bench.py --url "$(bash scripts/cluster.sh url)" --seconds "$SECONDS_" --clients "$CLIENTS"
