#!/usr/bin/env bash
# Builds quantops (release) and installs it into PostgreSQL $QUANTOPS_PG (15 by default; 17 is
# built and installed inside the root of scripts/trixie.sh, in a target folder of its own). The
# clusters of that major are stopped while the shared library is replaced (a running server must
# never see its .so overwritten) and started again if they were running.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:$PATH
source scripts/pg.sh
was_running=0
if bash scripts/cluster.sh status >/dev/null 2>&1; then was_running=1; bash scripts/cluster.sh stop; fi
if [ "$PG_MAJOR" = 15 ]; then
  cargo pgrx install --release --pg-config "$BIN/pg_config" 2>&1 | grep -E "error|warning: unused|Finished installing" || true
else
  in_pg_root env CARGO_TARGET_DIR="$(pwd)/target/pg$PG_MAJOR" cargo pgrx install --release --pg-config "$BIN/pg_config" \
    --no-default-features --features "pg$PG_MAJOR" 2>&1 | grep -E "error|warning: unused|Finished installing" || true
fi
test -f "$PG_PKGLIBDIR/quantops.so"
# the released install scripts of earlier versions (frozen in sql/, listed in sql/RELEASES), so an
# installation at an older version can be created and updated; pgrx generates this version's
# own script and copies the upgrade scripts sql/quantops--<from>--<to>.sql
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [ -f sql/RELEASES ]; then
  for v in $(awk '!/^#/ && NF {print $1}' sql/RELEASES); do
    [ "$v" = "$VERSION" ] || cp "sql/quantops--$v.sql" "$PG_SHAREDIR/extension/"
  done
fi
if [ $was_running = 1 ]; then bash scripts/cluster.sh start; fi
