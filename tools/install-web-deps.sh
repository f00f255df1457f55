#!/usr/bin/env bash
# The gateway's browser client and the browser tests' tools, installed only when missing:
#   - Debian `chromium` (the e2e tests' browser; never a Playwright browser download),
#   - npm dependencies of web/client and tests/e2e (`npm ci`, offline after the first run:
#     npm's cache lives in ${VOICEFLEET_HOME}/npm, keyed by nothing but content),
#   - the client bundle in web/voicefleet_web/static/, rebuilt only when its sources or the
#     lockfile changed (a hash stamp next to the output).
# Idempotent: a second run prints what it skipped and takes a second or two.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VOICEFLEET_HOME="${VOICEFLEET_HOME:-$HOME/.cache/voicefleet}"
NPM_HOME="$VOICEFLEET_HOME/npm"
CLIENT="$REPO/web/client"
E2E="$REPO/tests/e2e"
STATIC="$REPO/web/voicefleet_web/static"
say() { echo "[install-web-deps $(date +%H:%M:%S)] $*" >&2; }

# -- chromium ------------------------------------------------------------------------------
if [ "${VOICEFLEET_SKIP_CHROMIUM:-0}" = 1 ]; then
  say "chromium: skipped (VOICEFLEET_SKIP_CHROMIUM=1)"
elif [ -x /usr/bin/chromium ]; then
  say "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
else
  mkdir -p "$VOICEFLEET_HOME/logs"
  apt_log="$VOICEFLEET_HOME/logs/apt-chromium.log"
  say "chromium: installing the Debian package (apt-get; log in $apt_log)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install \
      -y -qq --no-install-recommends chromium fonts-liberation; } >"$apt_log" 2>&1; then
    tail -20 "$apt_log" >&2
    say "chromium: apt-get failed (see $apt_log)"
    exit 1
  fi
  say "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
fi

# -- npm -----------------------------------------------------------------------------------
command -v npm >/dev/null || { say "npm is missing: install Debian nodejs/npm (Node >= 18)"; exit 1; }
mkdir -p "$NPM_HOME/cache"
export npm_config_cache="$NPM_HOME/cache" npm_config_update_notifier=false \
  npm_config_fund=false npm_config_audit=false

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

npm_ci() {  # npm_ci <folder>: `npm ci` unless node_modules matches the lockfile already
  local dir="$1" want stamp
  want="$(hash_of "$dir/package-lock.json")-$(node --version)"
  stamp="$dir/node_modules/.voicefleet-lock"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "npm: ${dir#"$REPO"/} up to date (lock $want)"
    return
  fi
  say "npm: ci in ${dir#"$REPO"/} (cache $npm_config_cache)"
  (cd "$dir" && npm ci --prefer-offline --no-progress --loglevel=error >&2)
  echo "$want" > "$stamp"
}

npm_ci "$CLIENT"
[ -f "$E2E/package-lock.json" ] && npm_ci "$E2E"

# -- the bundle ----------------------------------------------------------------------------
want="$(cd "$CLIENT" && hash_of package-lock.json build.mjs $(find src -type f | sort))"
if [ -f "$STATIC/.voicefleet-build" ] && [ -f "$STATIC/app.js" ] \
    && [ "$(cat "$STATIC/.voicefleet-build")" = "$want" ]; then
  say "client: bundle up to date ($want)"
else
  say "client: building the bundle into ${STATIC#"$REPO"/}"
  (cd "$CLIENT" && npm run --silent build >&2)
  echo "$want" > "$STATIC/.voicefleet-build"
fi
say "done"
