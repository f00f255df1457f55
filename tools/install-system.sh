#!/usr/bin/env bash
# Debian packages the stack and its tests need; installs only what is missing.
set -euo pipefail
need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
# Offline speech for the worker (TTS) and the tests (spoken questions).
command -v espeak-ng >/dev/null || need+=(espeak-ng)
if [ "${#need[@]}" -gt 0 ]; then
  echo "[install-system] apt-get install ${need[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
