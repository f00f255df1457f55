#!/usr/bin/env bash
# Debian packages the stack and its tests need; installs only what is missing.
set -euo pipefail
need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
# Offline speech for the worker (TTS) and the tests (spoken questions).
command -v espeak-ng >/dev/null || need+=(espeak-ng)
# The real node (voicefleet up --real-node): runc, the CNI plugins, ip; gcc -static for the
# pause image and a static busybox for the node's test image (tools/images/build-images.sh).
[ -x /usr/sbin/runc ] || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v ip >/dev/null || need+=(iproute2)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)  # the worker image's Debian base
command -v gcc >/dev/null || need+=(gcc)
[ -f "/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)/libc.a" ] || need+=(libc6-dev)
if [ "${#need[@]}" -gt 0 ]; then
  echo "[install-system] apt-get install ${need[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
