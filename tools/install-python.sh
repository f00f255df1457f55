#!/usr/bin/env bash
# Make the project's Python environment: a virtualenv outside the checkout, keyed by the
# hash of pyproject.toml, with the extras the stack and tests need; then point it at this
# checkout (editable install, a second or so). Prints the venv folder on stdout.
# Usage: tools/install-python.sh [extras]   (default: operator,web,test)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-operator,web,test}"
VOICEFLEET_HOME="${VOICEFLEET_HOME:-$HOME/.cache/voicefleet}"
export PIP_CACHE_DIR="$VOICEFLEET_HOME/pip-cache"
export PIP_DISABLE_PIP_VERSION_CHECK=1
key="$( (cat "$root/pyproject.toml"; echo "$extras") | sha256sum | cut -c1-12)"
venv="$VOICEFLEET_HOME/venvs/py-$key"
log() { printf '[install-python %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
if [ ! -f "$venv/.ready" ]; then
  log "creating $venv (extras: $extras)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  # Dependencies only; the project itself is linked below.
  "$venv/bin/pip" install -q --progress-bar off "$root[$extras]" >&2
  touch "$venv/.ready"
  log "ready"
fi
"$venv/bin/pip" install -q --no-deps -e "$root" >"$venv/editable.log" 2>&1 || { cat "$venv/editable.log" >&2; exit 1; }
ln -sfn "$venv" "$VOICEFLEET_HOME/venvs/current"
echo "$venv"
