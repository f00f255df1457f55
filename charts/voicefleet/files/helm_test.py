"""`helm test` for voicefleet: create a VoiceSession, wait until it is Ready, delete it.

Runs as `python -c <this file>` in the test hook pod (templates/tests/session-ready.yaml),
standard library only, so any Python image works (the chart uses the operator image).
Ready means the whole path works: the operator created a LiveKit room and a worker pod,
the worker loaded the Letta agent and joined the room.

Environment (set by the chart):
  VF_NAMESPACE      namespace of the VoiceSessions
  VF_SESSION        name of the VoiceSession to create (a leftover one is deleted first)
  VF_API_SERVER     Kubernetes API URL; empty: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
  VF_TOKEN, VF_CA   the test ServiceAccount's token and the cluster CA (token Secret)
  VF_AGENT_ID       Letta agent id; empty: look it up by VF_AGENT_NAME (empty: first agent)
  LETTA_BASE_URL, LETTA_API_KEY   Letta, for that lookup
  VF_TIMEOUT        seconds to wait for Ready
Exit 0 on Ready, 1 otherwise (with the session's conditions printed).
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

GROUP_PATH = "/apis/voicefleet.dev/v1alpha1"


def log(message):
    print(f"[helm-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def api_server():
    url = os.environ.get("VF_API_SERVER", "")
    if url:
        return url.rstrip("/")
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def kube(method, path, body=None, ok=(200, 201)):
    """One Kubernetes API call with the test account's token; returns (status, json)."""
    context = ssl.create_default_context(cadata=os.environ["VF_CA"])
    request = urllib.request.Request(
        api_server() + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {os.environ['VF_TOKEN']}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in ok:
            return exc.code, {}
        detail = exc.read().decode(errors="replace")[:500]
        raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {detail}") from None


def letta_agent_id():
    agent_id = os.environ.get("VF_AGENT_ID", "")
    if agent_id:
        return agent_id
    name = os.environ.get("VF_AGENT_NAME", "")
    query = "?" + urllib.parse.urlencode({"name": name}) if name else ""
    url = os.environ["LETTA_BASE_URL"].rstrip("/") + "/v1/agents/" + query
    headers = {"Accept": "application/json"}
    if os.environ.get("LETTA_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['LETTA_API_KEY']}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=15) as r:
        agents = json.loads(r.read())
    if not agents:
        raise RuntimeError(
            f"no Letta agent {'named ' + repr(name) if name else 'at all'} at {url}: "
            "create one or set tests.agentId"
        )
    return agents[0]["id"]


def delete_session(base, name, wait=60):
    status, _ = kube("DELETE", f"{base}/{name}", ok=(200, 202, 404))
    deadline = time.monotonic() + wait
    while status != 404 and time.monotonic() < deadline:
        time.sleep(1)
        status, _ = kube("GET", f"{base}/{name}", ok=(200, 404))
    if status != 404:
        raise RuntimeError(f"VoiceSession {name} still exists {wait} s after deletion")


def main():
    namespace, name = os.environ["VF_NAMESPACE"], os.environ["VF_SESSION"]
    timeout = float(os.environ.get("VF_TIMEOUT", "180"))
    base = f"{GROUP_PATH}/namespaces/{namespace}/voicesessions"
    agent_id = letta_agent_id()
    log(f"Letta agent {agent_id}; VoiceSession {namespace}/{name}")
    delete_session(base, name)
    session = {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceSession",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "helm-test"}},
        "spec": {
            "agentId": agent_id,
            "userIdentity": "helm-test",
            "connection": 1,
            "joinTimeoutSeconds": max(30, int(timeout) + 30),
        },
    }
    kube("POST", base, session)
    started = time.monotonic()
    phase, last = "", {}
    try:
        while time.monotonic() - started < timeout:
            _, last = kube("GET", f"{base}/{name}")
            status = last.get("status") or {}
            if status.get("phase") != phase:
                phase = status.get("phase", "")
                log(f"phase {phase or '-'} connection {json.dumps(status.get('connection', {}))}")
            if phase == "Ready":
                log(f"Ready after {time.monotonic() - started:.1f} s")
                return 0
            if phase == "Failed":
                break
            time.sleep(1)
        conditions = (last.get("status") or {}).get("conditions", [])
        log(f"not Ready (phase {phase or '-'}) after {time.monotonic() - started:.0f} s")
        for c in conditions:
            log(f"  {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message', '')}")
        return 1
    finally:
        delete_session(base, name)
        log("VoiceSession deleted (room and worker torn down)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:
        log(f"error: {exc}")
        sys.exit(1)
