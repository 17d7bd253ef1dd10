#!/usr/bin/env bash
# The backtest benchmark (issue 15), side by side in one run, against vectorbt from PyPI (its numba
# and rust engines): seeded GBM daily bars, a moving-average crossover grid, fees 0.1 %, slippage
# 0.05 %, fills at the next open (vectorbt: signals shifted one bar, price=-inf with open=,
# size=inf), 252-day annualisation.
#   (a) the engine alone, three sizes: 10 symbols x 190 pairs (5..100 step 5), 100 x 190, and
#       3 x 4,851 (2..100): quantops on 1 thread and on every core against vectorbt, after
#       checking that both agree (order counts, total return, Sharpe, Sortino, CAGR, max drawdown,
#       fees within 1e-9 relative);
#   (b) end to end on a cluster: run_backtest_grid in SQL against a Python flow (psycopg reads the
#       bars, vectorbt runs warm, record_backtest writes the 10 best pairs a symbol).
# Runs on its own cluster (port $BENCH_PORT, default 55433, .cache/bench-cluster), reset each run.
# usage: bash bench/backtest.sh [quick]   (quick: the smallest size only; SKIP_ENGINE=1: part (b) only)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
bash scripts/bootstrap.sh >/dev/null
export PATH=$HOME/.cargo/bin:$PATH
if [ ! -f "$($PG_CONFIG --pkglibdir)/quantops.so" ]; then bash scripts/install.sh; fi
VENV=$ROOT/.cache/venv-vbt
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vectorbt, vectorbt_rust, psycopg" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "vectorbt==1.2.0" "vectorbt-rust==1.2.0" "psycopg[binary]"
fi
OUT=$ROOT/.cache/bench-backtest
mkdir -p "$OUT"
cargo build -q --release --features pg15 --example backtest_bench
BIN=$ROOT/target/release/examples/backtest_bench
PY="$VENV/bin/python bench/backtest_vbt.py"
sizes="10:2520:5:100:5 100:2520:5:100:5 3:2520:2:100:1"
[ "${1:-}" = quick ] && sizes="10:2520:5:100:5"
echo "== (a) the engine alone"
[ "${SKIP_ENGINE:-0}" = 1 ] && sizes=""
for s in $sizes; do
  IFS=: read -r syms bars lo hi step <<< "$s"
  $PY gen "$OUT/bars-$syms.bin" "$syms" "$bars" 20261128
  "$BIN" "$OUT/bars-$syms.bin" "$lo" "$hi" "$step" "$OUT/ours-$syms.csv" 3 > "$OUT/ours-$syms.json"
  $PY engine "$OUT/bars-$syms.bin" "$lo" "$hi" "$step" "$OUT/ours-$syms.csv" > "$OUT/vbt-$syms.json"
  "$VENV/bin/python" - "$OUT/ours-$syms.json" "$OUT/vbt-$syms.json" <<'PY'
import json, sys
ours, vbt = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
n = ours["symbols"] * ours["pairs"]
print(f"{ours['symbols']} symbols x {ours['pairs']} pairs x {ours['bars']} bars = {n} backtests")
ok = True
for name, e in vbt["engines"].items():
    w = e["worst_relative_difference"]
    agree = e["order_count_mismatches"] == 0 and all(v <= 1e-9 for v in w.values())
    ok &= agree
    print(f"  agreement with vectorbt {name}: {'yes' if agree else 'NO'} (order counts differing: {e['order_count_mismatches']}, "
          f"worst relative difference {max(w.values()):.2e})")
fastest = max(e["per_second"] for e in vbt["engines"].values())
for name, e in vbt["engines"].items():
    print(f"  vectorbt {name:5}: {e['per_second']:10.0f} backtests/s ({e['seconds']:.3f} s, of which from_signals {e['from_signals_seconds']:.3f} s)")
for r in ours["runs"]:
    print(f"  quantops {r['threads']} thread{'s' if r['threads'] > 1 else ' '}: {r['per_second']:10.0f} backtests/s ({r['seconds']:.3f} s) "
          f"= {r['per_second'] / fastest:.2f}x vectorbt's fastest")
if not ok:
    print("  THE ENGINES DISAGREE: the figures above compare different things")
    sys.exit(1)
PY
done
echo "== (b) end to end: run_backtest_grid against a Python flow (psycopg + vectorbt rust + record_backtest)"
export QUANTOPS_PORT=${BENCH_PORT:-55433}
export QUANTOPS_CLUSTER_DIR=$ROOT/.cache/bench-cluster
[ "$QUANTOPS_PORT" != 55432 ] || { echo "backtest.sh: port 55432 belongs to the test cluster" >&2; exit 2; }
bash scripts/cluster.sh reset >/dev/null
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT; fi
bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -c "set client_min_messages = warning" -c "create schema if not exists extensions" \
  -c "create extension if not exists vector with schema extensions" -c "create extension if not exists quantops" >/dev/null
e2e="10:2520:5:100:5 100:2520:5:100:5"
[ "${1:-}" = quick ] && e2e="10:2520:5:100:5"
for s in $e2e; do
  IFS=: read -r syms bars lo hi step <<< "$s"
  $PY e2e "$(bash scripts/cluster.sh url)" "$syms" "$bars" 7 "$lo" "$hi" "$step" > "$OUT/e2e-$syms.json"
  "$VENV/bin/python" - "$OUT/e2e-$syms.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['symbols']} symbols x {r['pairs']} pairs, the 10 best a symbol recorded: Python flow {r['python_seconds']:.2f} s, "
      f"run_backtest_grid {r['quantops_seconds']:.2f} s = {r['ratio']:.1f}x (rows written: {r['written']})")
PY
done
