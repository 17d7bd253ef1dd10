#!/usr/bin/env bash
# The local sentence model against Python's ONNX Runtime, side by side in one run: the same
# all-MiniLM-L6-v2 weights (fp32; exported to an ONNX graph by bench/model/onnx_reference.py), the
# same 1,000 short finance sentences (bench/model/finance_1000.txt), batches sorted by length,
# on 1 and on 2 threads; best of three runs each after a warm-up. Prints a table with the ratios.
# Then inside PostgreSQL: ROWS rows (default 5000, the same sentences cycled) embedded by the
# embedder worker from the commit of their insert to an empty queue (rows/s), and an edit of 100
# rows until all are fresh again (s). The cluster is its own (port $BENCH_PORT, default 55434, in
# .cache/bench-model-cluster), reset at every run and stopped at the end.
# Needs scripts/bootstrap.sh (the model); installs its Python packages in .cache/venv-model.
#
#   bash bench/model.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH=$HOME/.cargo/bin:$PATH
MODEL=${QUANTOPS_MODEL_DIR:-$ROOT/.cache/models/all-MiniLM-L6-v2}
SENTENCES=$ROOT/bench/model/finance_1000.txt
VENV=$ROOT/.cache/venv-model
[ -f "$MODEL/model.safetensors" ] || bash scripts/bootstrap.sh
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import onnx, onnxruntime, tokenizers, numpy, safetensors' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet onnx==1.23.2 onnxruntime==1.32.0 tokenizers==0.23.3 numpy==2.4.6 safetensors==0.8.0
fi
cargo build --quiet --release --example model_bench
out=()
for t in 1 2; do
  out+=("$("$ROOT/target/release/examples/model_bench" "$MODEL" "$SENTENCES" "$t")")
  out+=("$("$VENV/bin/python" bench/model/onnx_reference.py bench "$MODEL" "$SENTENCES" "$t")")
done
printf '%s\n' "${out[@]}" | python3 bench/model/table.py

# inside PostgreSQL: the embedder worker
ROWS=${1:-5000}
case "$ROWS" in ''|*[!0-9]*) echo "usage: bash bench/model.sh [ROWS]" >&2; exit 2;; esac
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
[ -f "$($PG_CONFIG --pkglibdir)/quantops.so" ] || bash scripts/install.sh
export QUANTOPS_PORT=${BENCH_PORT:-55434}
export QUANTOPS_CLUSTER_DIR=$ROOT/.cache/bench-model-cluster
[ "$QUANTOPS_PORT" != 55432 ] || { echo "model.sh: port 55432 belongs to the test cluster" >&2; exit 2; }
bash scripts/cluster.sh reset >/dev/null
trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
q() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
now() { date +%s.%N; }
q -c "set client_min_messages = warning" -c "create schema if not exists extensions" \
  -c "create extension if not exists vector with schema extensions" -c "create extension if not exists quantops" \
  -c "select quantops.configure(dims => 384)" \
  -c "select quantops.register_embedder('minilm', 'model', 384, '{\"model\": \"all-MiniLM-L6-v2\", \"template\": \"{rationale}\"}', activate => true)" >/dev/null
# the model loads once, on the first row
q -c "insert into quantops.signal_embeddings (strategy, symbol, as_of, rationale) values ('warm', 'W', now(), 'warm up')" >/dev/null
while [ "$(q -c "select count(*) from quantops.embedding_queue")" != 0 ]; do sleep 0.05; done
SQL_SENTENCES=$(python3 -c "import json,sys; print(json.dumps(open(sys.argv[1]).read().splitlines()))" "$SENTENCES" | sed "s/'/''/g")
t0=$(now)
q -c "insert into quantops.signal_embeddings (strategy, symbol, as_of, rationale)
      select 'bench', 'S' || g, now(), (s.a ->> ((g - 1) % jsonb_array_length(s.a)))
      from generate_series(1, $ROWS) g, (select '$SQL_SENTENCES'::jsonb a) s" >/dev/null
while [ "$(q -c "select count(*) from quantops.embedding_queue")" != 0 ]; do sleep 0.05; done
t1=$(now)
q -c "update quantops.signal_embeddings set rationale = rationale || ' (revised)' where strategy = 'bench' and id in (select id from quantops.signal_embeddings where strategy = 'bench' order by id limit 100)" >/dev/null
t2=$(now)
while [ "$(q -c "select count(*) from quantops.embedding_queue")" != 0 ]; do sleep 0.02; done
t3=$(now)
stale=$(q -c "select count(*) from quantops.signal_embeddings s where s.embedding is null or s.input_hash is distinct from quantops.embedding_input_hash(s.embedder, s.embedder_version::int, s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags)")
python3 -c "
rows, t0, t1, t2, t3 = $ROWS, $t0, $t1, $t2, $t3
print(f'inside PostgreSQL 15 (the embedder worker, quantops.model_threads = 0: {__import__(\"os\").cpu_count()} threads)')
print(f'  {rows:,} rows from the commit of their insert to an empty queue: {t1 - t0:.2f} s, {rows / (t1 - t0):.1f} rows/s')
print(f'  an edit of 100 rows until all are fresh again: {t3 - t2:.2f} s')
print(f'  rows whose vector is missing or not of their current input: $stale')
"
