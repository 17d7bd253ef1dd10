#!/usr/bin/env bash
# Every test, in four tiers (see CONTRIBUTING.md "Test tiers"), on PostgreSQL 15 and 17 (QUANTOPS_MAJORS to
# choose: "15 17" by default). Installs what it needs (scripts/bootstrap.sh; 17 runs inside the
# Debian 13 root of scripts/trixie.sh), builds and installs quantops for each major, creates a
# fresh local cluster, then runs, per major:
#   tier 1+2  cargo pgrx test: pure unit tests and #[pg_test]s in a throwaway PostgreSQL
#   Supabase  the real Supabase CLI as postgres: db push (a fresh cluster, twice), lint, advisors
#   tier 3    pg_regress, in the Supabase and the plain shape
#   upgrade   the release discipline, and ALTER EXTENSION UPDATE from the last release with data
#   tier 4    integration tests through a real client, as PostgREST makes requests
# First, once: the lint step (cargo fmt --check; cargo clippy -D warnings on every target).
# Exits non-zero on the first failure; the last lines are the test runners' own summaries. Each
# tier's time goes to .cache/test-times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH=$HOME/.cargo/bin:$PATH
export CARGO_TERM_COLOR=never
TIMES=$ROOT/.cache/test-times.txt
mkdir -p "$ROOT/.cache"; : > "$TIMES"
t_last=$(date +%s); t_name="bootstrap"
tier() { # closes the previous tier's timing and announces the next
  local now; now=$(date +%s)
  echo "$t_name: $((now - t_last)) s" >> "$TIMES"
  t_last=$now; t_name="PostgreSQL ${QUANTOPS_PG:-}: $1"
  echo "== PostgreSQL ${QUANTOPS_PG:-}: $1"
}

bash scripts/bootstrap.sh
# a failure stops the run: leave no cluster of this checkout running (its ports belong to the next run)
trap 'for m in 15 17; do (export QUANTOPS_PG=$m; unset QUANTOPS_PORT QUANTOPS_CLUSTER_DIR QUANTOPS_SHAPE; bash scripts/cluster.sh stop >/dev/null 2>&1) || true; done' EXIT

now=$(date +%s); echo "bootstrap: $((now - t_last)) s" >> "$TIMES"; t_last=$now; t_name="lint"
echo "== lint: cargo fmt --check, cargo clippy -D warnings (pg15, every target)"
cargo fmt --check
cargo clippy --quiet --features "pg15 integration" --all-targets -- -D warnings
echo "lint: fmt and clippy clean"

for major in ${QUANTOPS_MAJORS:-15 17}; do
  export QUANTOPS_PG=$major
  unset QUANTOPS_PORT QUANTOPS_CLUSTER_DIR QUANTOPS_SHAPE
  source scripts/pg.sh
  bash scripts/cluster.sh stop >/dev/null 2>&1 || true

  tier "tier 1+2: cargo pgrx test (unit tests and #[pg_test])"
  bash scripts/cluster.sh prepare   # the postgres user must reach this folder
  mkdir -p "$ROOT/.cache/pgrx-data$major" && pg_chown "$ROOT/.cache/pgrx-data$major"
  # serial: the #[pg_test]s share one database, and DDL in one test can deadlock with writes in another
  if [ "$major" = 15 ]; then
    RUST_TEST_THREADS=1 cargo pgrx test pg15 --runas postgres --pgdata "$ROOT/.cache/pgrx-data15/data" 2>&1 \
      | grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading)'
  else
    in_pg_root env CARGO_TARGET_DIR="$ROOT/target/pg$major" RUST_TEST_THREADS=1 cargo pgrx test "pg$major" \
      --runas postgres --pgdata "$ROOT/.cache/pgrx-data$major/data" --no-default-features --features "pg$major" 2>&1 \
      | grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading)'
  fi

  tier "install the release build and start a fresh cluster"
  bash scripts/install.sh
  bash scripts/cluster.sh reset
  bash scripts/cluster.sh status

  tier "Supabase CLI, as postgres: db push (a fresh cluster, twice), db lint, db advisors"
  cargo test --quiet --features integration --test supabase_cli -- --test-threads=1

  tier "tier 3: pg_regress"
  bash scripts/regress.sh

  tier "upgrade check"
  bash scripts/upgrade_check.sh --self-test

  tier "tier 4: integration tests"
  for t in embedding prune registry flags backtest integration security hostile standby docs; do
    cargo test --features integration --test "$t" -- --test-threads=1
  done
  bash scripts/cluster.sh stop >/dev/null 2>&1 || true
done
now=$(date +%s); echo "$t_name: $((now - t_last)) s" >> "$TIMES"
bash scripts/trixie.sh umount 2>/dev/null || true
