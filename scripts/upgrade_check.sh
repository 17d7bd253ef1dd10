#!/usr/bin/env bash
# The upgrade check: for the release before this one, install its SQL, CREATE EXTENSION at that
# version, ALTER EXTENSION quantops UPDATE, and compare the schema with a fresh install of this
# version. The previous release's install script is built from the commit that declared it in
# Cargo.toml. Starts biting at the first release that has a predecessor (an upgrade script
# sql/quantops--<prev>--<this>.sql); until then it says so and compares nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH=$HOME/.cargo/bin:$PATH
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
EXTDIR=$($PG_CONFIG --sharedir)/extension
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
up=$(ls sql/quantops--*--"$VERSION".sql 2>/dev/null | head -1 || true)
if [ -z "$up" ]; then
  echo "upgrade check: $VERSION has no predecessor (no sql/quantops--*--$VERSION.sql); nothing to compare"
  exit 0
fi
PREV=$(basename "$up" .sql | sed "s/^quantops--\(.*\)--$VERSION\$/\1/")
echo "upgrade check: $PREV -> $VERSION"
# every upgrade script along the chain is installed next to the fresh script
cp sql/quantops--*--*.sql "$EXTDIR/"
# the previous release's install script, generated from its own commit
commit=$(git log --format=%H -G "^version = \"$PREV\"" -- Cargo.toml | tail -1)
[ -n "$commit" ] || { echo "upgrade check: no commit declares version $PREV" >&2; exit 1; }
wt=$ROOT/.cache/upgrade-$PREV
if [ ! -f "$EXTDIR/quantops--$PREV.sql" ]; then
  rm -rf "$wt"; git worktree add -f --detach "$wt" "$commit" >/dev/null
  (cd "$wt" && CARGO_TARGET_DIR=$ROOT/target/upgrade cargo pgrx schema pg15 --pg-config "$PG_CONFIG" --out "$EXTDIR/quantops--$PREV.sql" >/dev/null)
  git worktree remove --force "$wt"
fi
psql_() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 "$@"; }
dump() { runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_dump -h "$ROOT/.cluster/run" -p "${QUANTOPS_PORT:-55432}" -U postgres -s -n quantops "$1" | grep -v '^--' | sed '/^$/d' | sort; }
for db in qo_upgraded qo_fresh; do psql_ -c "drop database if exists $db" -c "create database $db"; done
runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 -h "$ROOT/.cluster/run" -p "${QUANTOPS_PORT:-55432}" -U postgres -d qo_upgraded \
  -c "create schema extensions; create extension vector schema extensions; create extension quantops version '$PREV'; alter extension quantops update"
runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 -h "$ROOT/.cluster/run" -p "${QUANTOPS_PORT:-55432}" -U postgres -d qo_fresh \
  -c "create schema extensions; create extension vector schema extensions; create extension quantops"
if diff <(dump qo_upgraded) <(dump qo_fresh) > "$ROOT/.cache/upgrade.diff"; then
  echo "upgrade check: $PREV -> $VERSION matches a fresh install"
else
  cat "$ROOT/.cache/upgrade.diff"; echo "upgrade check: $PREV -> $VERSION differs from a fresh install" >&2; exit 1
fi
for db in qo_upgraded qo_fresh; do psql_ -c "drop database $db"; done
