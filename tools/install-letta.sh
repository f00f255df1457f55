#!/usr/bin/env bash
# Install the Letta server (the last server release, pinned in versions.env) into its own
# virtualenv outside the checkout:
#
#   ${VOICEFLEET_HOME:-~/.cache/voicefleet}/letta-<LETTA_VERSION>/
#     venv/          letta[server] + asyncpg pg8000 pgvector psycopg2-binary + pgserver
#     src/           alembic/ and alembic.ini from the source archive (the wheel has no
#                    migrations), uv.lock and the constraints derived from it
#     .ready         written last; when present the script exits at once
#
# The dependency versions come from the uv.lock inside the letta source archive on PyPI
# (without those pins a newer `mcp` breaks the import); the lock's letta-client pin is
# replaced by LETTA_CLIENT_VERSION. Not the `[postgres]` extra: it compiles psycopg2.
# Idempotent; about 2 minutes and 1.2 GB cold, seconds warm (pip cache under
# $VOICEFLEET_HOME/pip-cache). Usage: tools/install-letta.sh   (LETTA_PYTHON picks the
# interpreter, 3.11 to 3.13; default python3)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

VOICEFLEET_HOME="${VOICEFLEET_HOME:-$HOME/.cache/voicefleet}"
DEST="$VOICEFLEET_HOME/letta-$LETTA_VERSION"
PYTHON="${LETTA_PYTHON:-python3}"
export PIP_CACHE_DIR="$VOICEFLEET_HOME/pip-cache"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[install-letta %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -f "$DEST/.ready" ]; then
  log "letta $LETTA_VERSION already installed in $DEST"
  exit 0
fi

# Run a long command, printing a heartbeat every 20 s so the install is never silent.
with_heartbeat() {
  local what="$1"; shift
  local start=$SECONDS
  ( while sleep 20; do log "  ... $what ($((SECONDS - start)) s)"; done ) &
  local ticker=$!
  local rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then log "FAILED: $what (exit $rc)"; return "$rc"; fi
  log "done: $what in $((SECONDS - start)) s"
}

"$PYTHON" - <<'EOF' || { log "need Python 3.11..3.13 as \$LETTA_PYTHON (or python3)"; exit 1; }
import sys
sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)
EOF

mkdir -p "$DEST" "$PIP_CACHE_DIR"
VENV="$DEST/venv"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  log "creating virtualenv $VENV ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
fi
with_heartbeat "upgrade pip" "$PY" -m pip install --quiet --upgrade pip

# The source archive: migrations and the lock file.
DL="$DEST/dl"
SRC="$DEST/src"
archive="$DL/letta-$LETTA_VERSION.tar.gz"
if [ ! -f "$archive" ]; then
  rm -rf "$DL"; mkdir -p "$DL"
  with_heartbeat "download letta-$LETTA_VERSION source archive" \
    "$PY" -m pip download --quiet --no-binary :all: --no-deps -d "$DL" "letta==$LETTA_VERSION"
fi
[ -f "$archive" ] || { log "expected $archive after pip download"; ls -l "$DL" >&2; exit 1; }
if [ ! -f "$SRC/alembic.ini" ] || [ ! -f "$SRC/uv.lock" ]; then
  log "unpacking alembic/, alembic.ini and uv.lock into $SRC"
  rm -rf "$SRC" "$DL/unpack"; mkdir -p "$DL/unpack"
  tar -xzf "$archive" -C "$DL/unpack" \
    "letta-$LETTA_VERSION/alembic" "letta-$LETTA_VERSION/alembic.ini" "letta-$LETTA_VERSION/uv.lock"
  mv "$DL/unpack/letta-$LETTA_VERSION" "$SRC.tmp"
  mv "$SRC.tmp" "$SRC"
  rm -rf "$DL/unpack"
fi

# Pins from uv.lock: every package from the registry, except letta itself and letta-client.
constraints="$SRC/constraints.txt"
"$PY" - "$SRC/uv.lock" "$constraints" "$LETTA_CLIENT_VERSION" <<'EOF'
import sys
import tomllib

lock, out, client_version = sys.argv[1], sys.argv[2], sys.argv[3]
with open(lock, "rb") as f:
    packages = tomllib.load(f)["package"]
pins: dict[str, str] = {}
for package in packages:
    name = package["name"]
    if "registry" not in package.get("source", {}) or name in ("letta", "letta-client"):
        continue
    if name in pins and pins[name] != package["version"]:
        sys.exit(f"uv.lock pins {name} twice ({pins[name]}, {package['version']})")
    pins[name] = package["version"]
pins["letta-client"] = client_version
with open(out, "w") as f:
    f.write("# derived from letta's uv.lock by tools/install-letta.sh\n")
    f.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
print(f"{len(pins)} pins", file=sys.stderr)
EOF
log "constraints: $constraints"

with_heartbeat "pip install letta[server]==$LETTA_VERSION and PostgreSQL drivers" \
  "$PY" -m pip install --quiet --constraint "$constraints" \
    "letta[server]==$LETTA_VERSION" "letta-client==$LETTA_CLIENT_VERSION" \
    asyncpg pg8000 pgvector psycopg2-binary "pgserver==$PGSERVER_VERSION"

log "checking the install"
# Importing letta writes $HOME/.letta and tries downloads: keep both inside a scratch folder.
check_home="$DEST/check-home"
rm -rf "$check_home"; mkdir -p "$check_home"
if ! (
  cd "$check_home"
  env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$check_home" LETTA_DIR="$check_home/.letta" \
    LANG=C.UTF-8 HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
    NO_PROXY=127.0.0.1,localhost COMPOSIO_DISABLE_VERSION_CHECK=true LETTA_DISABLE_TRACING=true \
    "$PY" - >"$check_home/check.log" 2>&1 <<'EOF'
import importlib.metadata as md
from pathlib import Path

import letta.server.rest_api.app  # noqa: F401  (fails on a wrong mcp and friends)
import pgserver

pg_bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
for tool in ("initdb", "postgres", "pg_ctl", "psql", "pg_isready"):
    assert (pg_bin / tool).exists(), f"pgserver lacks {tool} in {pg_bin}"
ext = Path(pgserver.__file__).parent / "pginstall" / "share" / "postgresql" / "extension"
assert (ext / "vector.control").exists(), f"pgserver lacks pgvector in {ext}"
for name in ("letta", "letta-client", "pgserver", "mcp"):
    print(f"  {name} {md.version(name)}")
EOF
); then
  tail -n 30 "$check_home/check.log" >&2
  log "letta does not import (see above)"
  exit 1
fi
grep -E '^  [a-z-]+ [0-9]' "$check_home/check.log" >&2 || true
rm -rf "$check_home"
[ -x "$VENV/bin/letta" ] || { log "no letta entry point in $VENV/bin"; exit 1; }
[ -x "$VENV/bin/alembic" ] || { log "no alembic in $VENV/bin"; exit 1; }

rm -rf "$DL"
date -u +%Y-%m-%dT%H:%M:%SZ > "$DEST/.ready"
log "letta $LETTA_VERSION ready in $DEST ($(du -sh "$DEST" | cut -f1))"
