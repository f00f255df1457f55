#!/usr/bin/env bash
# The end-to-end job on a kind cluster, step by step; `make kind-e2e` runs them all, CI runs
# them one by one (.github/workflows/ci.yaml) so a failure names its step.
#
#   .github/kind/e2e.sh cluster   create the kind cluster (kind-config.yaml)
#   .github/kind/e2e.sh images    docker build the operator, gateway and worker images (tag e2e)
#   .github/kind/e2e.sh load      load them into the kind node
#   .github/kind/e2e.sh deps      LiveKit, PostgreSQL + pgvector, Letta 0.16.8, the scripted model
#   .github/kind/e2e.sh install   helm install voicefleet (values-kind.yaml) and wait
#   .github/kind/e2e.sh test      helm test --logs (a VoiceSession gets Ready: room + worker)
#   .github/kind/e2e.sh suite     the end-to-end suite against the cluster (env file + port-forwards)
#   .github/kind/e2e.sh down      delete the cluster
#   .github/kind/e2e.sh all       every step above but `down`
#
# Needs docker, kind, kubectl and helm on PATH (CI installs them). It cannot run on the
# project's own machines (no Docker engine there); the chart, values-kind.yaml and deps.yaml
# are checked there by tests/unit/chart and tests/integration/chart instead.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/.github/kind"
CLUSTER="${KIND_CLUSTER:-voicefleet-e2e}"
WORK="${E2E_WORK:-$REPO/test-artifacts/kind}"
CTX="kind-$CLUSTER"
K=(kubectl --context "$CTX")
say() { echo "[kind-e2e $(date +%H:%M:%S)] $*" >&2; }
mkdir -p "$WORK"

# Generated once per run and kept in $WORK so later steps (and a rerun of one) agree.
secret_value() {  # secret_value <name> <length>
  local file="$WORK/$1"
  [ -s "$file" ] || head -c 256 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c "$2" >"$file"
  cat "$file"
}

step_cluster() {
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" && { say "cluster $CLUSTER exists"; return; }
  kind create cluster --name "$CLUSTER" --config "$HERE/kind-config.yaml" --wait 120s
}

step_images() {
  for part in operator web worker; do
    local tag="voicefleet-${part/web/gateway}:e2e"
    say "docker build $tag"
    docker build -f "$REPO/$part/Dockerfile" -t "$tag" "$REPO"
  done
}

step_load() {
  kind load docker-image --name "$CLUSTER" voicefleet-operator:e2e voicefleet-gateway:e2e voicefleet-worker:e2e
}

step_deps() {
  local key secret
  key="vf$(secret_value livekit-key 12)"
  secret="$(secret_value livekit-secret 40)"
  "${K[@]}" apply -f - <<<"$("${K[@]}" create namespace voicefleet-deps --dry-run=client -o yaml)"
  "${K[@]}" -n voicefleet-deps create secret generic livekit-config --dry-run=client -o yaml \
    --from-literal=config.yaml="$(cat <<YAML
port: 7880
rtc: {tcp_port: 7881, port_range_start: 50000, port_range_end: 50100, use_external_ip: false}
keys: {$key: $secret}
room: {empty_timeout: 300, departure_timeout: 20}
webhook:
  api_key: $key
  urls: [http://voicefleet-operator-webhook.voicefleet-system.svc/livekit/webhook]
YAML
)" | "${K[@]}" apply -f -
  "${K[@]}" -n voicefleet-deps create secret generic postgres --dry-run=client -o yaml \
    --from-literal=password="$(secret_value postgres-password 24)" | "${K[@]}" apply -f -
  "${K[@]}" -n voicefleet-deps create configmap scripted-model --dry-run=client -o yaml \
    --from-file=scripted_model.py="$REPO/tools/voicefleet_stack/scripted_model.py" | "${K[@]}" apply -f -
  "${K[@]}" apply -f "$HERE/deps.yaml"
  for d in livekit postgres model letta; do
    "${K[@]}" -n voicefleet-deps rollout status "deployment/$d" --timeout 600s
  done
  # Letta's schema and the demo agent, as `voicefleet up` makes them.
  "${K[@]}" -n voicefleet-deps port-forward svc/letta 18283:8283 >"$WORK/pf-letta.log" 2>&1 &
  local pf=$!
  sleep 3
  "${PYTHON:-python3}" - <<'PY'
import json, urllib.request
base = "http://127.0.0.1:18283/v1"
agents = json.load(urllib.request.urlopen(f"{base}/agents/?name=Agent_66"))
if not agents:
    body = json.dumps({
        "name": "Agent_66", "model": "openai-proxy/scripted", "embedding": "openai/text-embedding-3-small",
        "memory_blocks": [{"label": "human", "value": ""}, {"label": "persona", "value": "Agent 66"}],
    }).encode()
    req = urllib.request.Request(f"{base}/agents/", data=body, headers={"Content-Type": "application/json"})
    print("created", json.load(urllib.request.urlopen(req))["id"])
PY
  kill "$pf"
}

step_install() {
  "${K[@]}" create namespace voicefleet-system --dry-run=client -o yaml | "${K[@]}" apply -f -
  "${K[@]}" -n voicefleet-system create secret generic voicefleet-livekit --dry-run=client -o yaml \
    --from-literal=LIVEKIT_API_KEY="vf$(secret_value livekit-key 12)" \
    --from-literal=LIVEKIT_API_SECRET="$(secret_value livekit-secret 40)" | "${K[@]}" apply -f -
  "${K[@]}" -n voicefleet-system create secret generic voicefleet-gateway-dev-token --dry-run=client -o yaml \
    --from-literal=GATEWAY_TOKEN="vfdev-$(secret_value gateway-token 32)" | "${K[@]}" apply -f -
  helm upgrade --install voicefleet "$REPO/charts/voicefleet" --kube-context "$CTX" \
    --namespace voicefleet-system -f "$HERE/values-kind.yaml" --wait --timeout 5m
}

step_test() {
  helm test voicefleet --kube-context "$CTX" --namespace voicefleet-system --logs --timeout 5m
}

step_suite() {
  # The suite reads a stack env file (SPEC "Local stack"); this one describes the kind cluster.
  "${K[@]}" -n voicefleet-system port-forward svc/voicefleet-gateway 18080:80 >"$WORK/pf-gw.log" 2>&1 &
  local pf_gw=$!
  "${K[@]}" -n voicefleet-deps port-forward svc/letta 18283:8283 >"$WORK/pf-letta.log" 2>&1 &
  local pf_letta=$!
  trap 'kill $pf_gw $pf_letta 2>/dev/null || true' RETURN
  kind get kubeconfig --name "$CLUSTER" >"$WORK/kubeconfig"
  cat >"$WORK/env" <<ENV
KUBECONFIG=$WORK/kubeconfig
NAMESPACE=voicefleet
OPERATOR_NAMESPACE=voicefleet-system
LIVEKIT_URL=ws://127.0.0.1:7880
LIVEKIT_API_KEY=vf$(secret_value livekit-key 12)
LIVEKIT_API_SECRET=$(secret_value livekit-secret 40)
LETTA_BASE_URL=http://127.0.0.1:18283
GATEWAY_URL=http://127.0.0.1:18080
GATEWAY_TOKEN=vfdev-$(secret_value gateway-token 32)
WEBHOOK_URL=http://voicefleet-operator-webhook.voicefleet-system.svc/livekit/webhook
VOICEFLEET_BIN=$(dirname "$(command -v kubectl)")
PYTHON=${PYTHON:-python3}
ENV
  sleep 3
  VOICEFLEET_STACK_ENV="$WORK/env" "${PYTHON:-python3}" -m pytest -ra tests/e2e
}

step_down() { kind delete cluster --name "$CLUSTER"; }

case "${1:-all}" in
  cluster | images | load | deps | install | test | suite | down) "step_$1" ;;
  all) for s in cluster images load deps install test suite; do say "step $s"; "step_$s"; done ;;
  *) echo "usage: $0 cluster|images|load|deps|install|test|suite|down|all" >&2; exit 2 ;;
esac
