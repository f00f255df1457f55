#!/usr/bin/env bash
# Make the project's Python environment for this checkout: `.venv/` in the checkout.
#
# The dependencies (heavy: livekit-agents, faster-whisper, kopf, ...) live in a shared
# virtualenv outside the checkout, keyed by the hash of pyproject.toml and the extras, so
# a fresh clone takes seconds. `.venv` is a small venv of this checkout that sees the
# shared site-packages through a .pth file and has the project itself installed editable.
# Prints the path of `.venv` on stdout; progress on stderr.
# Usage: tools/install-python.sh [extras]   (default: operator,web,worker,test)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-operator,web,worker,test}"
VOICEFLEET_HOME="${VOICEFLEET_HOME:-$HOME/.cache/voicefleet}"
export PIP_CACHE_DIR="$VOICEFLEET_HOME/pip-cache"
export PIP_DISABLE_PIP_VERSION_CHECK=1
log() { printf '[install-python %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$VOICEFLEET_HOME/venvs"

key="$( (cat "$root/pyproject.toml"; echo "$extras") | sha256sum | cut -c1-12)"
deps="$VOICEFLEET_HOME/venvs/deps-$key"
if [ ! -f "$deps/.ready" ]; then
  log "installing dependencies into $deps (extras: $extras); a few minutes on a fresh machine"
  rm -rf "$deps"
  python3 -m venv "$deps"
  "$deps/bin/pip" install -q --upgrade pip >&2
  start=$SECONDS
  ( while sleep 30; do log "  ... pip still installing ($((SECONDS - start)) s)"; done ) &
  ticker=$!
  rc=0
  "$deps/bin/pip" install -q --progress-bar off "$root[$extras]" >&2 || rc=$?
  kill "$ticker" 2>/dev/null || true
  [ "$rc" -eq 0 ] || { log "pip install failed (exit $rc)"; exit "$rc"; }
  # Only the dependencies stay here; each checkout installs the project itself.
  "$deps/bin/pip" uninstall -q -y voicefleet >&2
  touch "$deps/.ready"
  log "dependencies ready in $((SECONDS - start)) s"
  # Keep the four newest dependency sets (other clones may be on other commits).
  ls -1dt "$VOICEFLEET_HOME"/venvs/deps-* 2>/dev/null | tail -n +5 | xargs -r rm -rf
fi

venv="$root/.venv"
site_of() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
echo "$(site_of "$deps")" > "$(site_of "$venv")/_voicefleet_deps.pth"
# The dependencies' commands (ruff, mypy, pytest, kopf, ...) next to this venv's python.
for tool in "$deps"/bin/*; do
  name="$(basename "$tool")"
  case "$name" in python*|pip*|activate*|Activate*) continue ;; esac
  # Links are renewed (a new dependency venv replaces the old one, which gets pruned);
  # this venv's own scripts (voicefleet, ...) are files, and are kept.
  if [ -e "$venv/bin/$name" ] && [ ! -L "$venv/bin/$name" ]; then continue; fi
  ln -sfn "$tool" "$venv/bin/$name"
done
"$venv/bin/python" -m pip install -q --no-deps -e "$root" >"$venv/editable.log" 2>&1 \
  || { cat "$venv/editable.log" >&2; exit 1; }
echo "$venv"
