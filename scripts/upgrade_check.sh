#!/usr/bin/env bash
# The release discipline, checked:
#  1. A released install script never changes: each sql/quantops--<v>.sql named in sql/RELEASES
#     has the sha256 recorded there and, where the tag v<v> exists, the tag's content.
#  2. If Cargo.toml's version is released, the install script the build generates is exactly
#     the released one (a change to the SQL surface belongs in the next version's upgrade script).
#  3. The upgrade, from the newest release before this version, on a cluster of its own shaped
#     like Supabase's: CREATE EXTENSION at that version, data written through every capability
#     (scripts/sql/upgrade_data.sql), ALTER EXTENSION quantops UPDATE; then every row is kept
#     (a digest per table), the audit chains verify, the extension's objects equal a fresh
#     install's (scripts/sql/describe_extension.sql), and the worker runs its jobs.
# For PostgreSQL $QUANTOPS_PG (15 by default, 17 in the root of scripts/trixie.sh).
# It fails when it has nothing to compare: no release, or no release before this version while
# this version is not released either. With --self-test it also shows that it fails when a
# released script is edited and when an upgrade loses a row.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH=$HOME/.cargo/bin:$PATH
source scripts/pg.sh
EXTDIR=$PG_SHAREDIR/extension
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
PORT=${QUANTOPS_UPGRADE_PORT:-$((QO_DEFAULT_PORT + 2))}
DIR=$ROOT/.cache/upgrade-cluster$PG_MAJOR
OUT=$ROOT/.cache/upgrade$PG_MAJOR
SELF_TEST=0; [ "${1:-}" = --self-test ] && SELF_TEST=1
fail() { echo "upgrade check: FAILED: $*" >&2; exit 1; }
say() { echo "upgrade check: $*"; }
mkdir -p "$OUT"

# 1. released scripts are frozen ---------------------------------------------------------------
[ -f sql/RELEASES ] || fail "sql/RELEASES is missing: nothing is released, nothing to compare"
mapfile -t RELEASED < <(awk '!/^#/ && NF {print $1}' sql/RELEASES | sort -V)
[ ${#RELEASED[@]} -gt 0 ] || fail "sql/RELEASES names no release: nothing to compare"
frozen_ok() { # version file
  local want got
  want=$(awk -v v="$1" '$1 == v {print $2}' sql/RELEASES)
  got=$(sha256sum "$2" | cut -d' ' -f1)
  [ -n "$want" ] && [ "$want" = "$got" ] || { echo "  $2: sha256 $got, released as ${want:-nothing}"; return 1; }
  if git rev-parse -q --verify "refs/tags/v$1" >/dev/null; then
    git show "v$1:sql/quantops--$1.sql" | cmp -s - "$2" || { echo "  $2 differs from the tag v$1"; return 1; }
  fi
}
for v in "${RELEASED[@]}"; do
  f=sql/quantops--$v.sql
  [ -f "$f" ] || fail "release $v has no install script $f"
  frozen_ok "$v" "$f" || fail "the released install script of $v was edited; released scripts never change"
  say "release $v: install script unchanged (sha256 as released)"
done

# 2. this version, if released, generates exactly its released script ---------------------------
is_released() { printf '%s\n' "${RELEASED[@]}" | grep -qx "$1"; }
[ -f "$EXTDIR/quantops--$VERSION.sql" ] || fail "quantops $VERSION is not installed (bash scripts/install.sh)"
if is_released "$VERSION"; then
  if ! cmp -s "$EXTDIR/quantops--$VERSION.sql" "sql/quantops--$VERSION.sql"; then
    diff "sql/quantops--$VERSION.sql" "$EXTDIR/quantops--$VERSION.sql" | head -40
    fail "the install script that $VERSION generates differs from the released sql/quantops--$VERSION.sql: put the change in the next version's upgrade script"
  fi
  say "$VERSION is released and generates exactly its released install script"
fi
# the released scripts of other versions and every upgrade script, next to the generated one
for v in "${RELEASED[@]}"; do [ "$v" = "$VERSION" ] || cp "sql/quantops--$v.sql" "$EXTDIR/"; done
cp sql/quantops--*--*.sql "$EXTDIR/" 2>/dev/null || true

# 3. the upgrade with data ---------------------------------------------------------------------
PREV=""
for v in "${RELEASED[@]}"; do
  if [ "$v" != "$VERSION" ] && [ "$(printf '%s\n%s\n' "$v" "$VERSION" | sort -V | tail -1)" = "$VERSION" ]; then PREV=$v; fi
done
if [ -z "$PREV" ]; then
  is_released "$VERSION" || fail "no release before $VERSION and $VERSION is not released: nothing to compare"
  say "$VERSION is the first release: no upgrade path yet; the data check runs on its own install script"
fi

export QUANTOPS_SHAPE=supabase QUANTOPS_PORT=$PORT QUANTOPS_CLUSTER_DIR=$DIR QUANTOPS_NO_EXTENSION=1
bash scripts/cluster.sh reset >/dev/null
trap 'bash scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
psql_() { as_pg env PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/run" -p "$PORT" -U supabase_admin "$@"; }

# one run of the data phase: create at FROM, write, snapshot, update to TO, snapshot; the
# snapshots must be equal and not empty. Returns 2 when rows changed across the update, 1 when
# anything else failed (every step is checked: the function also runs inside `if`, where set -e
# does not apply).
data_phase() { # from to label
  local from=$1 to=$2 label=$3
  # the worker off first, so that nothing of it holds the extension's objects while it is dropped
  psql_ -d postgres -c "alter system set quantops.enabled = off" -c "select pg_reload_conf()" >/dev/null || return 1
  # a worker pass that was under way may still hold a lock the drop needs (a deadlock is possible):
  # try again, and say why when it keeps failing
  local try
  for try in 1 2 3 4 5; do
    psql_ -d postgres -c "drop extension if exists quantops cascade" >/dev/null 2>"$OUT/drop.err" && break
    [ $try = 5 ] && { echo "  could not drop quantops: $(cat "$OUT/drop.err")"; return 1; }
    sleep 1
  done
  psql_ -d postgres -c "create extension quantops version '$from'" >/dev/null || { echo "  could not create quantops $from"; return 1; }
  psql_ -d postgres -f scripts/sql/upgrade_data.sql >/dev/null || { echo "  the data script failed"; return 1; }
  local jobs
  jobs=$(psql_ -d postgres -At -c "select string_agg(name, ',' order by name) from quantops.jobs") || return 1
  psql_ -d postgres -At -v jobs="$jobs" -f scripts/sql/upgrade_snapshot.sql > "$OUT/$label.before" || return 1
  if [ "$from" != "$to" ]; then
    psql_ -d postgres -c "alter extension quantops update to '$to'" >/dev/null || { echo "  the update to $to failed"; return 1; }
  fi
  [ "$(psql_ -d postgres -At -c "select extversion from pg_extension where extname = 'quantops'")" = "$to" ] \
    || { echo "  not at $to after the update"; return 1; }
  psql_ -d postgres -At -v jobs="$jobs" -f scripts/sql/upgrade_snapshot.sql > "$OUT/$label.after.all" || return 1
  # the tables the update added (empty: there was nothing to keep) are listed, not compared
  awk -F'|' 'NR == FNR { had[$1] = 1; next } !index($0, "|") || had[$1]' "$OUT/$label.before" "$OUT/$label.after.all" > "$OUT/$label.after"
  local added
  added=$(awk -F'|' 'NR == FNR { had[$1] = 1; next } index($0, "|") && !had[$1] { printf "%s ", $1 }' "$OUT/$label.before" "$OUT/$label.after.all")
  [ -n "$added" ] && echo "  tables the update added: $added"
  # nothing compared is no pass
  local rows
  rows=$(awk -F'|' '$1 ~ /^(signal_embeddings|signal_embeddings_archive|signal_embedding_history|model_aliases|alias_history|flags|audit_log|backtest_results)$/ && $2 > 0' "$OUT/$label.before" | wc -l)
  [ "$rows" = 8 ] || { echo "  the data phase wrote rows into only $rows of the 8 tables it writes"; return 1; }
  grep -q '^verify_audit .* f ' "$OUT/$label.after" && { echo "  an audit chain does not verify after the update"; return 1; }
  if ! diff "$OUT/$label.before" "$OUT/$label.after" > "$OUT/$label.diff"; then
    cat "$OUT/$label.diff" | head -20
    echo "  rows changed across the update"
    return 2
  fi
}

FROM=${PREV:-$VERSION}
data_phase "$FROM" "$VERSION" upgrade || fail "$FROM -> $VERSION: the upgrade lost or changed data"
say "$FROM -> $VERSION: every row kept ($(awk -F'|' '/\|/ {s += $2} END {print s}' "$OUT/upgrade.after") rows in $(grep -c '|' "$OUT/upgrade.after") tables), audit chains verify"

# the schema after the update is a fresh install's
psql_ -d postgres -c "drop database if exists qo_fresh" -c "create database qo_fresh" >/dev/null
psql_ -d qo_fresh -c "create schema extensions" -c "create extension vector schema extensions" -c "create extension quantops" >/dev/null
# the fresh install is configured the same way: configure() changes the column types and index
psql_ -d qo_fresh -c "select quantops.configure(dims => 8, lists => 2)" -c "select quantops.set_artifact_check('off')" >/dev/null
psql_ -d postgres -At -f scripts/sql/describe_extension.sql > "$OUT/upgraded.schema"
psql_ -d qo_fresh -At -f scripts/sql/describe_extension.sql > "$OUT/fresh.schema"
[ "$(wc -l < "$OUT/fresh.schema")" -gt 100 ] || fail "the description of a fresh install is empty: nothing compared"
if ! diff "$OUT/upgraded.schema" "$OUT/fresh.schema" > "$OUT/schema.diff"; then
  head -40 "$OUT/schema.diff"
  fail "$FROM -> $VERSION: the upgraded extension differs from a fresh install of $VERSION ($OUT/schema.diff)"
fi
say "$FROM -> $VERSION: the upgraded extension equals a fresh install ($(wc -l < "$OUT/fresh.schema") objects and properties compared)"

# the worker runs its jobs after the update
psql_ -d postgres -c "alter system reset quantops.enabled" -c "select pg_reload_conf()" >/dev/null
psql_ -d postgres -c "update quantops.jobs set next_run_at = now() where name = 'verify-audit'" -c "select quantops._wake_worker()" >/dev/null
ok=0
for _ in $(seq 1 60); do
  n=$(psql_ -d postgres -At -c "select count(*) from quantops.job_runs where job = 'verify-audit' and runner = 'worker' and status = 'succeeded'")
  [ "$n" -gt 0 ] && { ok=1; break; }
  sleep 0.5
done
[ $ok = 1 ] || fail "the worker ran no job after the update"
say "$FROM -> $VERSION: the worker ran verify-audit after the update"

if [ $SELF_TEST = 1 ]; then
  # a released script edited by one comment line is caught
  v=${RELEASED[0]}
  cp "sql/quantops--$v.sql" "$OUT/tampered.sql"; echo "-- edited" >> "$OUT/tampered.sql"
  if frozen_ok "$v" "$OUT/tampered.sql" >/dev/null; then fail "self-test: an edited release script passed"; fi
  say "self-test: an edited release script is caught"
  # an upgrade that loses a row is caught
  if [ -n "$PREV" ]; then
    up="$EXTDIR/quantops--$PREV--$VERSION.sql"
    cp "$up" "$OUT/upgrade-script.orig"
    echo "delete from quantops.flags where key = 'up.other';" >> "$up"
    rc=0; data_phase "$PREV" "$VERSION" selftest > "$OUT/selftest.log" 2>&1 || rc=$?
    cp "$OUT/upgrade-script.orig" "$up"
    [ $rc = 2 ] || { cat "$OUT/selftest.log"; fail "self-test: an upgrade that loses a row was not caught as lost rows (data phase: $rc; $OUT/selftest.*)"; }
    say "self-test: an upgrade that loses a row is caught"
  fi
fi
