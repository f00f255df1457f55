#!/usr/bin/env bash
# Build and cache the Go servers of the local stack from the Go module proxy.
#
# Every binary lands in ${VOICEFLEET_HOME:-~/.cache/voicefleet}/bin/<name>-<version>
# (outside the checkout, keyed by version) and is linked into .../bin/current/<name>,
# the folder the stack exports as VOICEFLEET_BIN. Idempotent: a binary that exists is
# not rebuilt. Usage: tools/build-bins.sh [name ...]   (default: all, kubelet and containerd too)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

VOICEFLEET_HOME="${VOICEFLEET_HOME:-$HOME/.cache/voicefleet}"
BIN="$VOICEFLEET_HOME/bin"
CUR="$BIN/current"
WORK="$VOICEFLEET_HOME/build"
export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$VOICEFLEET_HOME/go/mod}"
export GOCACHE="${GOCACHE_OVERRIDE:-$VOICEFLEET_HOME/go/build}"
export GOFLAGS="-modcacherw"
export GOTOOLCHAIN=local
mkdir -p "$BIN" "$CUR" "$WORK"

log() { printf '[build-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Run a long command, printing a heartbeat every 30 s so a build is never silent.
with_heartbeat() {
  local what="$1"; shift
  local start=$SECONDS
  ( while sleep 30; do log "  ... $what still building ($((SECONDS - start)) s)"; done ) &
  local ticker=$!
  local rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then log "FAILED: $what (exit $rc)"; return "$rc"; fi
  log "done: $what in $((SECONDS - start)) s"
}

have() { [ -x "$BIN/$1-$2" ]; }
link() { ln -sfn "$BIN/$1-$2" "$CUR/$1"; }

build_etcd() {
  local name=etcd v=$ETCD_VERSION
  if ! have $name $v; then
    local d="$WORK/etcd-$v"; mkdir -p "$d"
    (
      cd "$d"
      [ -f go.mod ] || go mod init voicefleet.local/etcd-build >/dev/null 2>&1
      go get -tool "go.etcd.io/etcd/server/v3@$v" >/dev/null
      CGO_ENABLED=0 go build -trimpath -o "$BIN/$name-$v.tmp" go.etcd.io/etcd/server/v3
    )
    mv "$BIN/$name-$v.tmp" "$BIN/$name-$v"
  fi
  link $name $v
}

k8s_module() {
  # Wrapper module that requires k8s.io/kubernetes and replaces every staging module
  # with its published twin (the upstream go.mod points them at ./staging).
  local d="$WORK/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$d"
  if [ ! -f "$d/.ready" ]; then
    (
      cd "$d"
      rm -f go.mod go.sum
      local gomod
      gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
      {
        echo "module voicefleet.local/kubernetes-build"
        echo
        echo "go 1.26.0"
        echo
        echo "godebug default=go1.26"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$KUBERNETES_STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
        echo ")"
      } > go.mod
      cat > tools.go <<'EOF'
//go:build tools

package tools
EOF
      go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
             "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
             "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
             "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES_VERSION" \
             "k8s.io/kubernetes/cmd/kubelet@$KUBERNETES_VERSION" >/dev/null
      touch .ready
    )
  fi
  echo "$d"
}

build_k8s() {
  local want=() c
  for c in "$@"; do have "$c" "$KUBERNETES_VERSION" || want+=("$c"); done
  if [ "${#want[@]}" -gt 0 ]; then
    local d; d="$(k8s_module)"
    local ld="-s -w"
    local p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
      ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    for c in "${want[@]}"; do
      local cgo=0
      [ "$c" = kubelet ] && cgo=1
      (
        cd "$d"
        CGO_ENABLED=$cgo go build -trimpath -tags selinux,notest -ldflags "$ld" \
          -o "$BIN/$c-$KUBERNETES_VERSION.tmp" "k8s.io/kubernetes/cmd/$c"
      )
      mv "$BIN/$c-$KUBERNETES_VERSION.tmp" "$BIN/$c-$KUBERNETES_VERSION"
      log "built $c $KUBERNETES_VERSION"
    done
  fi
  for c in "$@"; do link "$c" "$KUBERNETES_VERSION"; done
}

build_kwok() {
  local v=$KWOK_VERSION
  if ! have kwok $v; then
    GOBIN="$WORK/kwok-$v" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$v"
    mv "$WORK/kwok-$v/kwok" "$BIN/kwok-$v"
  fi
  # The Stage configs ship in the module; copy them next to the binary.
  local stages="$BIN/kwok-stages-$v"
  if [ ! -d "$stages" ]; then
    local src; src="$(go mod download -json "sigs.k8s.io/kwok@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    mkdir -p "$stages.tmp"
    cp "$src"/kustomize/stage/node/heartbeat-with-lease/*.yaml "$stages.tmp"/ 2>/dev/null || true
    cp "$src"/kustomize/stage/node/fast/*.yaml "$stages.tmp"/ 2>/dev/null || true
    cp "$src"/kustomize/stage/pod/general/*.yaml "$stages.tmp"/ 2>/dev/null || true
    rm -f "$stages.tmp"/kustomization.yaml
    mv "$stages.tmp" "$stages"
  fi
  link kwok $v
  ln -sfn "$stages" "$CUR/kwok-stages"
}

build_livekit() {
  local v=$LIVEKIT_VERSION
  if ! have livekit-server $v; then
    GOBIN="$WORK/livekit-$v" CGO_ENABLED=0 go install -trimpath "github.com/livekit/livekit-server/cmd/server@$v"
    mv "$WORK/livekit-$v/server" "$BIN/livekit-server-$v"
  fi
  link livekit-server $v
}

build_helm() {
  local v=$HELM_VERSION
  if ! have helm $v; then
    GOBIN="$WORK/helm-$v" CGO_ENABLED=0 go install -trimpath \
      -ldflags "-X helm.sh/helm/v3/internal/version.version=$v" "helm.sh/helm/v3/cmd/helm@$v"
    mv "$WORK/helm-$v/helm" "$BIN/helm-$v"
  fi
  link helm $v
}

build_containerd() {
  # containerd, its runc shim and ctr for the real node (tools/voicefleet_stack/node.py).
  # Pure Go like the upstream static release: no cgo, so no btrfs snapshotter.
  local v=$CONTAINERD_VERSION pkg=github.com/containerd/containerd/v2
  local ld="-s -w -X $pkg/version.Version=$v -X $pkg/version.Revision=go-proxy -X $pkg/version.Package=$pkg"
  if ! have containerd $v || ! have ctr $v; then
    GOBIN="$WORK/containerd-$v" CGO_ENABLED=0 go install -trimpath -tags "urfave_cli_no_docs no_btrfs" \
      -ldflags "$ld" "$pkg/cmd/containerd@$v" "$pkg/cmd/ctr@$v"
    mv "$WORK/containerd-$v/containerd" "$BIN/containerd-$v"
    mv "$WORK/containerd-$v/ctr" "$BIN/ctr-$v"
  fi
  if ! have containerd-shim-runc-v2 $v; then
    GOBIN="$WORK/containerd-$v" CGO_ENABLED=0 go install -trimpath -tags "urfave_cli_no_docs no_btrfs no_grpc" \
      -ldflags "$ld" "$pkg/cmd/containerd-shim-runc-v2@$v"
    mv "$WORK/containerd-$v/containerd-shim-runc-v2" "$BIN/containerd-shim-runc-v2-$v"
  fi
  link containerd $v
  link ctr $v
  # containerd finds its shim by this exact name on PATH.
  link containerd-shim-runc-v2 $v
}

targets=("$@")
[ "${#targets[@]}" -eq 0 ] && targets=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kwok livekit-server helm containerd images)

k8s_wanted=()
for t in "${targets[@]}"; do
  case "$t" in
    etcd) with_heartbeat "etcd $ETCD_VERSION" build_etcd ;;
    kwok) with_heartbeat "kwok $KWOK_VERSION" build_kwok ;;
    livekit-server) with_heartbeat "livekit-server $LIVEKIT_VERSION" build_livekit ;;
    helm) with_heartbeat "helm $HELM_VERSION" build_helm ;;
    containerd) with_heartbeat "containerd $CONTAINERD_VERSION" build_containerd ;;
    # The real node's images (pause from k8s.io/kubernetes' source, the test box), by content.
    images) with_heartbeat "node images" bash "$here/images/build-images.sh" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet) k8s_wanted+=("$t") ;;
    *) log "unknown target: $t"; exit 2 ;;
  esac
done
if [ "${#k8s_wanted[@]}" -gt 0 ]; then
  with_heartbeat "kubernetes $KUBERNETES_VERSION (${k8s_wanted[*]})" build_k8s "${k8s_wanted[@]}"
fi
log "all binaries ready in $CUR"
