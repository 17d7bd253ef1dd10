#!/usr/bin/env bash
# Every test, in four tiers (see README "Tests"). Installs what it needs (scripts/bootstrap.sh),
# builds and installs quantops, creates a fresh local cluster, then runs:
#   tier 1+2  cargo pgrx test: pure unit tests and #[pg_test]s in a throwaway PostgreSQL
#   Supabase  the real Supabase CLI: db push --include-seed, db reset, db lint, db advisors
#   tier 3    pg_regress against the cluster
#   upgrade   ALTER EXTENSION UPDATE from the previous release against a fresh install
#   tier 4    integration tests through a real client, as PostgREST makes requests
# Exits non-zero on the first failure; the last lines are the test runners' own summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH=$HOME/.cargo/bin:$PATH
export CARGO_TERM_COLOR=never

bash scripts/bootstrap.sh
bash scripts/cluster.sh stop >/dev/null 2>&1 || true

echo "== tier 1+2: cargo pgrx test (unit tests and #[pg_test])"
bash scripts/cluster.sh prepare   # the postgres user must reach this folder
mkdir -p .cache/pgrx-data && chown postgres:postgres .cache/pgrx-data
# serial: the #[pg_test]s share one database, and DDL in one test can deadlock with writes in another
RUST_TEST_THREADS=1 cargo pgrx test pg15 --runas postgres --pgdata "$ROOT/.cache/pgrx-data/data" 2>&1 | grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading)' 

echo "== install the release build into PostgreSQL 15 and start a fresh cluster"
bash scripts/install.sh
bash scripts/cluster.sh reset
bash scripts/cluster.sh status

echo "== Supabase CLI, as postgres: db push (a fresh cluster, twice), db lint, db advisors"
cargo test --quiet --features integration --test supabase_cli -- --test-threads=1

echo "== tier 3: pg_regress"
bash scripts/regress.sh

echo "== upgrade check"
bash scripts/upgrade_check.sh --self-test

echo "== tier 4: integration tests"
cargo test --features integration --test embedding -- --test-threads=1
cargo test --features integration --test prune -- --test-threads=1
cargo test --features integration --test registry -- --test-threads=1
cargo test --features integration --test flags -- --test-threads=1
cargo test --features integration --test integration -- --test-threads=1
cargo test --features integration --test security -- --test-threads=1
cargo test --features integration --test hostile -- --test-threads=1
cargo test --features integration --test standby -- --test-threads=1
