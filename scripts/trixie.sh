#!/usr/bin/env bash
# PostgreSQL 17 on this Debian 12 machine. Debian 12 ships no PostgreSQL 17; Debian 13 (trixie)
# ships it as binary packages (postgresql-17, postgresql-server-dev-17, postgresql-17-pgvector,
# postgresql-17-cron, postgresql-17-plpgsql-check) that need trixie's glibc, and its archive does
# not serve their sources. So: a trixie root made with debootstrap, those packages and the build
# tools installed in it, the host's Rust toolchain and cargo home bound into it, the project folder
# at the same path. PostgreSQL 17 servers run inside it and listen on 127.0.0.1 like any other.
#
#   scripts/trixie.sh setup        create the root (cached; a second run checks and returns)
#   scripts/trixie.sh run CMD...   run CMD in the root (as root), mounting what it needs first
#   scripts/trixie.sh umount       undo the mounts (kept while a process, a 17 server, runs inside)
#   scripts/trixie.sh path         print the root's path
#
# The root lives outside the project folder (which is bound into it): QUANTOPS_TRIXIE, default
# /var/cache/quantops-trixie. Its postgres user has another uid than the host's: a 17 cluster's
# files belong to the root's postgres, never shared with a 15 cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$(pwd)
R=${QUANTOPS_TRIXIE:-/var/cache/quantops-trixie}
PKGS="postgresql-17 postgresql-server-dev-17 postgresql-17-pgvector postgresql-17-cron postgresql-17-plpgsql-check \
clang libclang-dev pkg-config sudo gcc make libc6-dev ca-certificates"
MARK=$R/.quantops-ready
log() { printf '[trixie] %s\n' "$*" >&2; }

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

do_mount() {
  mkdir -p "$R/proc" "$R/dev" "$R$PROJECT" "$R/root/.rustup" "$R/root/.cargo"
  is_mounted "$R/proc" || mount -t proc proc "$R/proc"
  is_mounted "$R/dev" || { mount --rbind /dev "$R/dev"; mount --make-rslave "$R/dev"; }
  is_mounted "$R$PROJECT" || mount --bind "$PROJECT" "$R$PROJECT"
  if [ -d "$HOME/.rustup" ] && ! is_mounted "$R/root/.rustup"; then
    mount --bind "$HOME/.rustup" "$R/root/.rustup"; mount -o remount,bind,ro "$R/root/.rustup"
  fi
  [ -d "$HOME/.cargo" ] && ! is_mounted "$R/root/.cargo" && mount --bind "$HOME/.cargo" "$R/root/.cargo"
  # crates.io over TLS needs the host's CA bundle (the sandbox may add its own authorities)
  mkdir -p "$R/etc/ssl/certs"
  cp -f /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/quantops-host-ca.crt"
  return 0
}

# processes whose root is this root (a PostgreSQL 17 server, say)
inside() { for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && return 0; done; return 1; }

do_umount() {
  if inside; then
    log "a process still runs inside $R (a PostgreSQL 17 server?): the mounts stay"
    return 0
  fi
  for m in "$R/root/.cargo" "$R/root/.rustup" "$R$PROJECT" "$R/dev" "$R/proc"; do
    is_mounted "$m" && umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

in_root() {
  chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/quantops-host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/quantops-host-ca.crt \
    PGRX_PG_CONFIG_PATH=/usr/lib/postgresql/17/bin/pg_config CARGO_TERM_COLOR=never \
    ${QUANTOPS_PG:+QUANTOPS_PG=$QUANTOPS_PG} \
    bash -c 'cd "$0" && exec "$@"' "$PROJECT" "$@"
}

setup() {
  if [ -f "$MARK" ] && [ "$(cat "$MARK")" = "$PKGS" ]; then
    return 0
  fi
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  if [ ! -x "$R/usr/bin/apt-get" ]; then
    log "debootstrap trixie into $R (about 30 s)"
    rm -rf "$R"; mkdir -p "$R"
    debootstrap --variant=minbase --include=ca-certificates trixie "$R" http://deb.debian.org/debian >/dev/null
  fi
  # no cluster on 5432, no services started by the packages
  mkdir -p "$R/etc/postgresql-common" "$R/usr/sbin"
  echo 'create_main_cluster = false' > "$R/etc/postgresql-common/createcluster.conf"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  cp -f /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
  do_mount
  trap do_umount EXIT
  log "installing PostgreSQL 17 and the build tools in the root (about 1 minute)"
  in_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
  echo "$PKGS" > "$MARK"
  log "ready: $(in_root /usr/lib/postgresql/17/bin/postgres --version)"
}

case "${1:-}" in
  setup) setup ;;
  run) shift; [ -f "$MARK" ] || { log "no root yet: bash scripts/trixie.sh setup"; exit 2; }; do_mount; in_root "$@" ;;
  mount) do_mount ;;
  umount) do_umount ;;
  path) echo "$R" ;;
  *) echo "usage: $0 setup|run CMD...|umount|path" >&2; exit 2 ;;
esac
