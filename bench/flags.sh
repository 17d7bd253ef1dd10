#!/usr/bin/env bash
# Benchmark of the feature flags' evaluation speed. One flag, bench.flag:
#   {"environments": {"production": true}, "rules": [{"constraints": [{"attribute": "role",
#    "op": "in", "values": ["desk", "admin"]}], "rollout": {"percentage": 25, "stickiness": "user_id"}}]}
# written both in quantops (quantops.set_flag) and in a plain PL/pgSQL implementation of the same
# rule (bench/flags_baseline.sql: schema bench_flags, murmur3 in PL/pgSQL, the definition read by
# primary key on every call). First both are checked to agree on users 1..100000 (role desk, every
# 1000th viewer), against a third opinion (murmur3 in Python); any disagreement exits 1. Then,
# each twice in one session (the better run is reported; jit = off, one core, no parallelism):
#   E  select count(*) from generate_series(1, N) g
#        where quantops.flag_enabled('bench.flag', jsonb_build_object('user_id', g, 'role', 'desk'))
#   P  the same with bench_flags.flag_enabled (over N/10 rows, scaled, when N rows would take
#      more than 30 s)
#   X  the overhead alone: ... where jsonb_build_object('user_id', g, 'role', 'desk') is not null
#   R  cargo run --release --example flag_bench -- 20000000: the pure Rust evaluator alone, outside
#      PostgreSQL (one core; examples/flag_bench.rs)
# Goals: E >= 10 times P (evaluations per second from SQL); E <= 2 us per evaluation from SQL;
# R >= 5,000,000 evaluations per second per core. Times are psql's \timing (client round trip
# included, negligible at these sizes).
# Runs on a cluster of its own (port $BENCH_PORT, default 55433, in .cache/bench-cluster), reset at
# every run and stopped at the end (KEEP_CLUSTER=1 leaves it running). About 1 minute at N = 10^6.
# usage: bash bench/flags.sh [N]        (default 1000000 evaluations)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${1:-1000000}
case "$N" in ''|*[!0-9]*) echo "usage: bash bench/flags.sh [N]" >&2; exit 2;; esac
[ "$N" -ge 10000 ] || { echo "flags.sh: N must be at least 10000" >&2; exit 2; }
R_N=${R_EVALUATIONS:-20000000}
VERIFY_USERS=100000
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

# bootstrap.sh only when PostgreSQL or pgvector is missing (it is idempotent but slow to ask)
if [ ! -x "$PG_CONFIG" ] || [ ! -f "$($PG_CONFIG --pkglibdir)/vector.so" ]; then
  bash scripts/bootstrap.sh >/dev/null
fi
# install.sh restarts the main cluster when it runs: only when quantops is not installed at all
if [ ! -f "$($PG_CONFIG --pkglibdir)/quantops.so" ]; then
  bash scripts/install.sh
fi

# the benchmark's own cluster: never the one the tests use (55432, .cluster)
export QUANTOPS_PORT=${BENCH_PORT:-55433}
export QUANTOPS_CLUSTER_DIR=$ROOT/.cache/bench-cluster
[ "$QUANTOPS_PORT" != 55432 ] || { echo "flags.sh: port 55432 belongs to the test cluster" >&2; exit 2; }

VENV=$ROOT/.cache/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import numpy, psycopg" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy "psycopg[binary]"
fi
PY=$VENV/bin/python

bash scripts/cluster.sh reset >/dev/null
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT; fi
q() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

DEF='{"environments": {"production": true}, "rules": [{"constraints": [{"attribute": "role", "op": "in", "values": ["desk", "admin"]}], "rollout": {"percentage": 25, "stickiness": "user_id"}}]}'
q -c "set client_min_messages = warning" -c "create schema if not exists extensions" \
  -c "create extension if not exists vector with schema extensions" -c "create extension if not exists quantops" >/dev/null
q -c "set client_min_messages = warning" -f bench/flags_baseline.sql >/dev/null
q -c "select quantops.set_flag('bench.flag', '$DEF'::jsonb)" \
  -c "insert into bench_flags.flags (key, definition) values ('bench.flag', '$DEF'::jsonb)" >/dev/null

echo "feature flag benchmark: N = $N evaluations, $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(q -c 'select version()' | cut -d' ' -f1-2)"
echo "flag bench.flag: $DEF"
echo "environment: $(q -c 'show quantops.environment')"

# -- 1. the baseline's murmur3 against MurmurHash3_x86_32 reference values (SMHasher) ------------
MURMUR_BAD=$(q -c "
select count(*) filter (where bench_flags.murmur3_32(d, s) <> want) from (values
  (''::bytea, 0::bigint, 0::bigint), ('', 1, x'514e28b7'::bigint), ('', 4294967295, x'81f16f39'::bigint),
  ('\x00000000', 0, x'2362f9de'::bigint), ('aaaa', x'9747b28c'::bigint, x'5a97808a'::bigint),
  ('abc', 0, x'b3dd93fa'::bigint), ('Hello, world!', x'9747b28c'::bigint, x'24884cba'::bigint),
  ('The quick brown fox jumps over the lazy dog', x'9747b28c'::bigint, x'2fa826cd'::bigint)) v(d, s, want)")
echo
echo "== verification"
echo "baseline murmur3_32: $((8 - MURMUR_BAD))/8 reference values"

# -- 2. agreement: quantops, the baseline and a Python reference on users 1..VERIFY_USERS ---------
read -r V_ALL V_AGREE V_E V_P V_VIEWERS V_VIEWERS_ON < <(q -F ' ' -c "
with r as (
  select g, g % 1000 = 0 as viewer,
         quantops.flag_enabled('bench.flag', ctx) as e, bench_flags.flag_enabled('bench.flag', ctx) as p
  from (select g, jsonb_build_object('user_id', g, 'role', case when g % 1000 = 0 then 'viewer' else 'desk' end) as ctx
        from generate_series(1, $VERIFY_USERS) g) c)
select count(*), count(*) filter (where e is not distinct from p), count(*) filter (where e), count(*) filter (where p),
       count(*) filter (where viewer), count(*) filter (where viewer and (e or p)) from r")
# the reference: Unleash's formula, murmur3 in Python (independent of both implementations)
V_REF=$("$PY" - "$VERIFY_USERS" <<'EOF'
import sys
def murmur3_32(data: bytes, seed: int = 0) -> int:
    c1, c2, m = 0xcc9e2d51, 0x1b873593, 0xffffffff
    h = seed & m
    n = len(data) - len(data) % 4
    for i in range(0, n, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * c1) & m; k = ((k << 15) | (k >> 17)) & m; k = (k * c2) & m
        h ^= k; h = ((h << 13) | (h >> 19)) & m; h = (h * 5 + 0xe6546b64) & m
    k = 0
    tail = data[n:]
    if len(tail) >= 3: k ^= tail[2] << 16
    if len(tail) >= 2: k ^= tail[1] << 8
    if tail:
        k ^= tail[0]; k = (k * c1) & m; k = ((k << 15) | (k >> 17)) & m; k = (k * c2) & m; h ^= k
    h ^= len(data); h ^= h >> 16; h = (h * 0x85ebca6b) & m; h ^= h >> 13; h = (h * 0xc2b2ae35) & m; h ^= h >> 16
    return h
assert murmur3_32(b"abc") == 0xb3dd93fa and murmur3_32(b"Hello, world!", 0x9747b28c) == 0x24884cba
users = int(sys.argv[1])
print(sum(1 for g in range(1, users + 1) if g % 1000 != 0 and murmur3_32(f"bench.flag:{g}".encode()) % 100 + 1 <= 25))
EOF
)
pct() { "$PY" -c "import sys; print(f'{100 * int(sys.argv[1]) / int(sys.argv[2]):.3f} %')" "$1" "$2"; }
echo "agreement quantops / PL/pgSQL: $V_AGREE of $V_ALL contexts ($(pct "$V_AGREE" "$V_ALL")); $V_VIEWERS of them role viewer ($V_VIEWERS_ON on)"
echo "enabled: quantops $V_E, PL/pgSQL $V_P, reference (Python murmur3) $V_REF ($(pct "$V_REF" "$((V_ALL - V_VIEWERS))") of the desk users, rollout 25 %)"
if [ "$MURMUR_BAD" != 0 ] || [ "$V_AGREE" != "$V_ALL" ] || [ "$V_E" != "$V_REF" ] || [ "$V_P" != "$V_REF" ] || [ "$V_VIEWERS_ON" != 0 ]; then
  echo "VERIFICATION FAILED: the implementations disagree (a bug in one of them); first differences:" >&2
  q -c "
    select format('  user_id %s role %s: quantops %s, PL/pgSQL %s, bucket %s', g, ctx ->> 'role', e, p,
                  bench_flags.murmur3_32(convert_to('bench.flag:' || g, 'UTF8'), 0) % 100 + 1)
    from (select g, ctx, quantops.flag_enabled('bench.flag', ctx) e, bench_flags.flag_enabled('bench.flag', ctx) p
          from (select g, jsonb_build_object('user_id', g, 'role', case when g % 1000 = 0 then 'viewer' else 'desk' end) ctx
                from generate_series(1, $VERIFY_USERS) g) c) r
    where e is distinct from p or (ctx ->> 'role' = 'viewer' and (e or p)) limit 10" >&2
  exit 1
fi

# -- 3. timings -----------------------------------------------------------------------------------
# timed SQL: runs SQL twice in one session; prints "<result 1> <result 2> <ms 1> <ms 2>"
timed() {
  q -c "set jit = off" -c "set max_parallel_workers_per_gather = 0" -c '\timing on' -c "$1" -c "$1" |
    awk '/^Time: /{t[++n] = $2; next} {r[++m] = $0} END {print r[1], r[2], t[1], t[2]}'
}
E_SQL() { echo "select count(*) from generate_series(1, $1) g where quantops.flag_enabled('bench.flag', jsonb_build_object('user_id', g, 'role', 'desk'))"; }
P_SQL() { echo "select count(*) from generate_series(1, $1) g where bench_flags.flag_enabled('bench.flag', jsonb_build_object('user_id', g, 'role', 'desk'))"; }
X_SQL() { echo "select count(*) from generate_series(1, $1) g where jsonb_build_object('user_id', g, 'role', 'desk') is not null"; }

# P's size: N, or N/10 when N evaluations would take over 30 s (from a probe of 10000)
read -r _ _ PROBE_MS _ < <(timed "$(P_SQL 10000)")
P_N=$N
if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) * int(sys.argv[2]) / 10000 > 30000 else 1)" "$PROBE_MS" "$N"; then
  P_N=$((N / 10))
fi

read -r E_C1 E_C2 E_T1 E_T2 < <(timed "$(E_SQL "$N")")
read -r P_C1 P_C2 P_T1 P_T2 < <(timed "$(P_SQL "$P_N")")
read -r X_C1 X_C2 X_T1 X_T2 < <(timed "$(X_SQL "$N")")
cargo build --quiet --release --example flag_bench
R_OUT=$("$ROOT/target/release/examples/flag_bench" "$R_N"; "$ROOT/target/release/examples/flag_bench" "$R_N")
# E's count over P_N rows, to compare with P's when P ran on fewer rows
E_CP=$E_C1
if [ "$P_N" != "$N" ]; then E_CP=$(q -c "$(E_SQL "$P_N")"); fi

"$PY" - "$N" "$P_N" "$PROBE_MS" "$E_C1 $E_C2 $E_T1 $E_T2" "$P_C1 $P_C2 $P_T1 $P_T2" "$X_C1 $X_C2 $X_T1 $X_T2" "$E_CP" "$R_OUT" <<'EOF'
import json, sys
n, p_n, probe_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def runs(arg):
    c1, c2, t1, t2 = arg.split()
    return int(c1), int(c2), float(t1) / 1000, float(t2) / 1000
e, p, x = runs(sys.argv[4]), runs(sys.argv[5]), runs(sys.argv[6])
e_cp = int(sys.argv[7])
r = [json.loads(line) for line in sys.argv[8].splitlines() if line.strip()]
te, tp, tx = min(e[2:]), min(p[2:]), min(x[2:])
us = lambda t, k: t * 1e6 / k
e_us, p_us, x_us = us(te, n), us(tp, p_n), us(tx, n)
e_net, p_net = e_us - x_us, p_us - x_us
e_rate, p_rate = 1e6 / e_us, 1e6 / p_us
ratio, ratio_net = p_us / e_us, (p_net / e_net if e_net > 0 else float("inf"))
rb = max(r, key=lambda j: j["per_second"])
fmt = lambda v: f"{v:,.0f}"

print()
print("== timings (each statement run twice in one session, the better run; jit off, no parallel workers)")
print(f"  {'':44s} {'rows':>10s} {'run 1 s':>8s} {'run 2 s':>8s} {'evaluations/s':>14s} {'us/eval':>8s}  count")
def row(label, rows, rr, t, extra=""):
    print(f"  {label:44s} {rows:10,d} {rr[2]:8.3f} {rr[3]:8.3f} {fmt(rows / t):>14s} {us(t, rows):8.3f}  {rr[0]}{extra}")
row("E  quantops.flag_enabled", n, e, te)
row("P  bench_flags.flag_enabled (PL/pgSQL)", p_n, p, tp)
row("X  overhead (series + jsonb_build_object)", n, x, tx)
for i, j in enumerate(r, 1):
    print(f"  {'R  examples/flag_bench, run ' + str(i):44s} {j['evaluations']:10,d} {j['seconds']:8.3f} {'':8s} {fmt(j['per_second']):>14s} {j['ns_per_evaluation'] / 1000:8.3f}  {j['enabled']} enabled")
if p_n != n:
    print(f"  P ran over {p_n:,d} rows (N/10): a probe of 10,000 took {probe_ms:.0f} ms, so N rows would take about "
          f"{probe_ms * n / 10000 / 1000:.0f} s; its rate is per evaluation, scaled")
    print(f"  E over the same {p_n:,d} rows counts {e_cp} ({'same as P' if e_cp == p[0] else 'DIFFERENT from P'})")
else:
    print(f"  E and P count the same rows: {'yes' if e[0] == p[0] else 'NO'} ({e[0]} and {p[0]})")
print()
print("== results")
print(f"  E  {fmt(e_rate)} evaluations/s, {e_us:.3f} us/evaluation gross; net of X: {e_net:.3f} us/evaluation ({fmt(1e6 / e_net) if e_net > 0 else 'n/a'} evaluations/s)")
print(f"  P  {fmt(p_rate)} evaluations/s, {p_us:.3f} us/evaluation gross; net of X: {p_net:.3f} us/evaluation")
print(f"  X  {x_us:.3f} us per row (generate_series, jsonb_build_object, count)")
print(f"  E/P  {ratio:.1f}x in evaluations/s from SQL (gross); {ratio_net:.1f}x net of X")
print(f"  R  {fmt(rb['per_second'])} evaluations/s on one core ({rb['ns_per_evaluation']:.1f} ns/evaluation), best of {len(r)}")
print()
print("== summary")
ok = lambda b: "met" if b else "MISSED"
print(f"  E >= 10x PL/pgSQL (evaluations/s from SQL)     {ratio:6.1f}x         {ok(ratio >= 10):6s}  (net of X: {ratio_net:.1f}x)")
print(f"  E <= 2 us per evaluation from SQL             {e_us:6.3f} us      {ok(e_us <= 2):6s}  (net of X: {e_net:.3f} us)")
print(f"  pure Rust >= 5,000,000 evaluations/s per core {rb['per_second'] / 1e6:6.1f} M/s     {ok(rb['per_second'] >= 5e6)}")
EOF
