#!/usr/bin/env bash
# Builds quantops (release) and installs it into PostgreSQL 15. The cluster is stopped while the
# shared library is replaced (a running server must never see its .so overwritten) and started
# again if it was running.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:$PATH
PG_CONFIG=/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config
was_running=0
if bash scripts/cluster.sh status >/dev/null 2>&1; then was_running=1; bash scripts/cluster.sh stop; fi
cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 | grep -E "error|warning: unused|Finished installing" || true
test -f "$($PG_CONFIG --pkglibdir)/quantops.so"
# the released install scripts of earlier versions (frozen in sql/, listed in sql/RELEASES), so an
# installation at an older version can be created and updated; pgrx generates this version's
# own script and copies the upgrade scripts sql/quantops--<from>--<to>.sql
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [ -f sql/RELEASES ]; then
  for v in $(awk '!/^#/ && NF {print $1}' sql/RELEASES); do
    [ "$v" = "$VERSION" ] || cp "sql/quantops--$v.sql" "$($PG_CONFIG --sharedir)/extension/"
  done
fi
if [ $was_running = 1 ]; then bash scripts/cluster.sh start; fi
