#!/usr/bin/env bash
# Benchmark of the embedding refresh: 200,000 signals, 384 dimensions, `features` embedder.
#   A  quantops: quantops.refresh_embeddings() (in-process Rust, rayon), after set_embedder()
#      enqueued the stale rows
#   B  the seed's way: an external Python worker (psycopg 3, numpy) computing the same embedding:
#      keyset-paginated reads, binary COPY into a temp table, UPDATE ... FROM (bench/embedding_baseline.py)
#   C  the floor: one UPDATE ... SET embedding = <precomputed> over all rows
# All three in one run, each on freshly generated, identical data (same seed), in a database of
# its own (qo_bench) on the local cluster, with the IVFFlat index in place. Prints rows/s and ratios.
# usage: bash bench/embedding_refresh.sh [ROWS]        (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROWS=${1:-200000}
DIMS=384
NF=32
bash scripts/bootstrap.sh >/dev/null
bash scripts/install.sh >/dev/null
bash scripts/cluster.sh start >/dev/null
PORT=${QUANTOPS_PORT:-55432}
VENV=$ROOT/.cache/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import numpy, psycopg" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy "psycopg[binary]"
fi
q() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -d qo_bench -At "$@"; }
now() { date +%s.%N; }

bash scripts/cluster.sh psql -X -q -c "drop database if exists qo_bench" -c "create database qo_bench" >/dev/null
q -c "set client_min_messages = warning" -c "create schema extensions" -c "create extension vector schema extensions" \
  -c "create extension quantops" -c "select quantops.configure(dims => $DIMS, lists => 100)" >/dev/null
# the embedder: 32 named features, their stored statistics, a fixed projection to 384 dimensions
PARAMS=$(python3 -c "
import json
n=$NF
print(json.dumps({'features': ['f%02d' % k for k in range(n)], 'mean': [round(0.01*k, 4) for k in range(n)],
                  'std': [round(0.5 + 0.02*k, 4) for k in range(n)], 'seed': 20261125}))")
q -c "select quantops.register_embedder('bench-features', 'features', $DIMS, '$PARAMS'::jsonb)" >/dev/null

gen() {
  q -c "set client_min_messages = warning" \
    -c "update quantops.embedders set active = false where active" \
    -c "truncate quantops.signal_embeddings, quantops.signal_embedding_history restart identity cascade" \
    -c "select setseed(0.25)" \
    -c "insert into quantops.signal_embeddings (strategy, symbol, as_of, features)
        select 'bench', 'S' || (g % 500), timestamptz '2026-01-01' + g * interval '1 minute',
               (select jsonb_object_agg(format('f%s', lpad(k::text, 2, '0')), round((0.01 * k + (random() * 2 - 1) * (0.5 + 0.02 * k))::numeric, 6))
                  from generate_series(0, $NF - 1) k where g > 0)
        from generate_series(1, $ROWS) g" >/dev/null
  q -c "vacuum analyze quantops.signal_embeddings" -c "checkpoint" >/dev/null
}

echo "embedding refresh benchmark: $ROWS signals, $DIMS dims, features embedder ($NF features), $(nproc) cores"

# A: quantops
gen
t0=$(now)
q -c "select quantops.set_embedder('bench-features')" >/dev/null
t1=$(now)
read -r A_DONE A_FAILED A_LEFT < <(q -F ' ' -c "select done, failed, remaining from quantops.refresh_embeddings(max_rows => 10000000, time_budget_ms => 3600000, batch_size => 10000)")
t2=$(now)
A_ENQ=$(python3 -c "print($t1 - $t0)"); A_REF=$(python3 -c "print($t2 - $t1)")
[ "$A_DONE" = "$ROWS" ] && [ "$A_FAILED" = 0 ] && [ "$A_LEFT" = 0 ] || { echo "A did not embed every row: $A_DONE $A_FAILED $A_LEFT" >&2; exit 1; }
q -c "drop table if exists bench_pre" -c "create table bench_pre as select id, embedding from quantops.signal_embeddings" \
  -c "alter table bench_pre add primary key (id)" >/dev/null

# B: the external Python worker
gen
DSN="host=127.0.0.1 port=$PORT user=supabase_admin dbname=qo_bench"
read -r B_ROWS B_SEC < <(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" bench/embedding_baseline.py "$DSN" "$PARAMS" $DIMS 10000)
[ "$B_ROWS" = "$ROWS" ] || { echo "B embedded $B_ROWS rows" >&2; exit 1; }
# same embedding: compare B's vectors with A's
MAXDIFF=$(q -c "select max(abs(a - b)) from (select unnest(s.embedding::real[]) a, unnest(p.embedding::real[]) b
                from quantops.signal_embeddings s join bench_pre p using (id) where s.id % 97 = 0) x")

# C: the floor
gen
t0=$(now)
q -c "update quantops.signal_embeddings s set embedding = p.embedding, embedder = 'bench-features', embedder_version = '1',
      embedded_at = now() from bench_pre p where p.id = s.id" >/dev/null
t1=$(now)
C_SEC=$(python3 -c "print($t1 - $t0)")

python3 - "$ROWS" "$A_ENQ" "$A_REF" "$B_SEC" "$C_SEC" "$MAXDIFF" <<'PY'
import sys
rows, a_enq, a_ref, b, c, diff = int(sys.argv[1]), *map(float, sys.argv[2:6]), sys.argv[6]
a = a_ref
print(f"{'':34}{'seconds':>9}{'rows/s':>12}")
print(f"{'A quantops refresh_embeddings':34}{a:9.2f}{rows / a:12,.0f}")
print(f"{'  (+ set_embedder enqueue)':34}{a_enq:9.2f}{'':>12}")
print(f"{'B external Python (numpy, COPY)':34}{b:9.2f}{rows / b:12,.0f}")
print(f"{'C floor: one UPDATE, precomputed':34}{c:9.2f}{rows / c:12,.0f}")
print(f"A vs B: {b / a:.2f}x faster (goal >= 3); A vs C: {a / c:.2f}x the floor's time (goal <= 1.5)")
print(f"A including its enqueue: {b / (a + a_enq):.2f}x faster than B, {(a + a_enq) / c:.2f}x the floor")
print(f"B's vectors equal A's: max |difference| = {diff}")
PY
