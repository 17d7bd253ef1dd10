# Sourced by the scripts: which PostgreSQL major they work with, and how to run its programs.
#   QUANTOPS_PG=15 (default): the host's PostgreSQL 15 (Debian 12's packages)
#   QUANTOPS_PG=17: PostgreSQL 17 inside the Debian 13 root of scripts/trixie.sh
# Sets PG_MAJOR, BIN (the server's programs, a path as the server sees it), PG_SHAREDIR and
# PG_PKGLIBDIR (paths on the host), and defines:
#   as_pg CMD...    run CMD as the server's postgres OS user (inside the root for 17)
#   in_pg_root CMD  run CMD as root where the server's programs are (the host, or the root)
#   pg_chown PATH   give PATH to the server's postgres user (its uid differs in the root)
PG_MAJOR=${QUANTOPS_PG:-${PG_MAJOR:-15}}
case "$PG_MAJOR" in 15|17) ;; *) echo "QUANTOPS_PG is 15 or 17, not $PG_MAJOR" >&2; exit 2 ;; esac
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
_QO_ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$PG_MAJOR" = 15 ]; then
  PG_FS=""
  as_pg() { runuser -u postgres -- "$@"; }
  in_pg_root() { "$@"; }
else
  PG_FS=$(bash "$_QO_ROOT_DIR/scripts/trixie.sh" path)
  as_pg() { QUANTOPS_PG=17 bash "$_QO_ROOT_DIR/scripts/trixie.sh" run runuser -u postgres -- "$@"; }
  in_pg_root() { QUANTOPS_PG=17 bash "$_QO_ROOT_DIR/scripts/trixie.sh" run "$@"; }
fi
pg_chown() { in_pg_root chown postgres:postgres "$@"; }
PG_SHAREDIR=$PG_FS/usr/share/postgresql/$PG_MAJOR
PG_PKGLIBDIR=$PG_FS/usr/lib/postgresql/$PG_MAJOR/lib
# the default port and folder of each major's test cluster
if [ "$PG_MAJOR" = 15 ]; then QO_DEFAULT_PORT=55432; QO_DEFAULT_DIR=$_QO_ROOT_DIR/.cluster
else QO_DEFAULT_PORT=55442; QO_DEFAULT_DIR=$_QO_ROOT_DIR/.cluster17; fi
